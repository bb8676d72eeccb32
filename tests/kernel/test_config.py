"""Config building, round trips, and the exact messages users see for bad configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ragkit import registry
from ragkit.cli import main
from ragkit.config import apply_overrides, build, load_yaml, to_config
from ragkit.errors import ConfigError

BAD = Path(__file__).parents[1] / "bad_configs"
CONFIGS = Path(__file__).parents[2] / "configs"


def _expected(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path} must start with '# expect: <message>'"
    return first[len("# expect: "):].replace("{file}", str(path))


@pytest.mark.parametrize("path", sorted(BAD.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_config_gives_exact_one_line_error_and_exit_2(path, capsys, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("some text to index", encoding="utf-8")
    out_dir = tmp_path / "index"
    code = main(["index", str(doc), "--config", str(path), "--out", str(out_dir), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"ragkit: error: {_expected(path)}"
    assert "\n" not in err
    assert not out_dir.exists(), "a bad config must fail before any work starts"


def test_bad_configs_folder_is_not_empty():
    assert len(list(BAD.glob("*.yaml"))) >= 10


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_validate(path):
    from ragkit.pipeline import RAGPipeline

    pipe = RAGPipeline.from_config(load_yaml(path))
    assert RAGPipeline.from_config(pipe.to_config()) == pipe


@pytest.mark.parametrize("name", registry.names("chunker"))
def test_chunker_round_trip_with_non_default_values(name):
    cls = registry.resolve("chunker", name)
    fields = {f.name for f in dataclasses.fields(cls)}
    if not {"chunk_size", "tokenizer"} <= fields:
        pytest.skip(f"{name} has no budget of its own (its round trip is tested with it)")
    obj = cls(**{k: v for k, v in {"chunk_size": 77, "overlap": 1, "tokenizer": "whitespace"}.items()
                 if k in fields})
    spec = to_config(obj, "chunker")
    assert spec["name"] == name and spec["chunk_size"] == 77
    assert build("chunker", spec) == obj


def test_overrides_apply_dotted_keys_and_parse_yaml_values(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("chunker: recursive\nembedder: {name: hash}\nk: 5\n", encoding="utf-8")
    data = load_yaml(cfg, ["chunker.chunk_size=64", "embedder.dim=32", "k=2", "chunker.tokenizer=whitespace"])
    assert data == {
        "chunker": {"name": "recursive", "chunk_size": 64, "tokenizer": "whitespace"},
        "embedder": {"name": "hash", "dim": 32},
        "k": 2,
    }


@pytest.mark.parametrize("bad", ["chunker.chunk_size", "=3", "a..b=1"])
def test_malformed_override_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="must look like 'key.subkey=value'"):
        apply_overrides({}, [bad])


def test_override_cli_wrong_type_is_exit_2(tmp_path, capsys):
    doc = tmp_path / "d.txt"
    doc.write_text("hello", encoding="utf-8")
    code = main(["chunk", str(doc), "-o", "chunker.chunk_size=abc", "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "ragkit: error: chunker.chunk_size: expected int; got 'abc' (str)"
    )


def test_out_of_tree_component_by_import_path():
    spec = {"name": "tests.kernel.test_config:ShoutChunker", "upper": True}
    obj = build("chunker", spec)
    assert isinstance(obj, ShoutChunker) and obj.upper is True
    assert to_config(obj, "chunker") == spec


def test_required_key_missing_names_it():
    with pytest.raises(ConfigError) as exc:
        build("chunker", {"name": "tests.kernel.test_config:NeedsModel"})
    assert str(exc.value) == "chunker.model: required key is missing"


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match=r"chunker.chunk_size: expected int; got True \(bool\)"):
        build("chunker", {"name": "fixed", "chunk_size": True})


def test_built_objects_pass_through_build():
    obj = build("chunker", {"name": "fixed", "chunk_size": 10})
    assert build("chunker", obj) is obj


@dataclasses.dataclass(kw_only=True)
class ShoutChunker:
    upper: bool = False

    def chunk(self, doc):
        return []


@dataclasses.dataclass(kw_only=True)
class NeedsModel:
    model: str
