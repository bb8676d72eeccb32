"""Config building, round trips, and the exact messages users see for bad configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ragkit import registry
from ragkit.cli import main
from ragkit.config import apply_overrides, build, load_yaml, to_config
from ragkit.errors import ConfigError
from ragkit.pipeline import RAGPipeline
from ragkit.registry import imports_allowed

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
    with imports_allowed():
        obj = build("chunker", spec)
    assert isinstance(obj, ShoutChunker) and obj.upper is True
    assert to_config(obj, "chunker") == spec


IMPORT_REFUSED = ("chunker.name: chunker 'tests.kernel.test_config:ShoutChunker' is an import path, "
                  "and importing a module runs its code; allow it with --allow-import (CLI), "
                  "RAGKIT_ALLOW_IMPORT=1, or allow_import=True (Python), or use a registered name")


def test_an_import_path_is_refused_unless_allowed(monkeypatch):
    monkeypatch.delenv("RAGKIT_ALLOW_IMPORT", raising=False)
    spec = {"chunker": {"name": "tests.kernel.test_config:ShoutChunker"}, "embedder": "hash"}
    with pytest.raises(ConfigError) as exc:
        RAGPipeline.from_config(spec)
    assert str(exc.value) == IMPORT_REFUSED
    assert isinstance(RAGPipeline.from_config(spec, allow_import=True).chunker, ShoutChunker)
    monkeypatch.setenv("RAGKIT_ALLOW_IMPORT", "1")
    assert isinstance(RAGPipeline.from_config(spec).chunker, ShoutChunker)
    # ragkit's own modules run no foreign code: always allowed
    monkeypatch.delenv("RAGKIT_ALLOW_IMPORT")
    built = build("chunker", {"name": "ragkit.chunkers.fixed:FixedChunker"})
    assert type(built).__name__ == "FixedChunker"


def test_a_saved_index_never_imports_what_was_not_allowed(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAGKIT_ALLOW_IMPORT", raising=False)
    spec = {"chunker": {"name": "tests.kernel.test_config:ShoutChunker"}, "embedder": "hash"}
    RAGPipeline.from_config(spec, allow_import=True).save(tmp_path / "idx")
    with pytest.raises(ConfigError, match="is an import path"):
        RAGPipeline.load(tmp_path / "idx")
    assert isinstance(RAGPipeline.load(tmp_path / "idx", allow_import=True).chunker, ShoutChunker)
    assert main(["query", "anything", "--index", str(tmp_path / "idx")]) == 2
    assert "is an import path" in capsys.readouterr().err
    assert main(["query", "anything", "--index", str(tmp_path / "idx"), "--allow-import"]) == 0


def test_an_allowed_import_path_that_does_not_exist_names_the_module():
    with imports_allowed(), pytest.raises(ConfigError) as exc:
        build("chunker", {"name": "mypkg.nowhere:MyChunker"})
    assert str(exc.value) == ("chunker.name: chunker 'mypkg.nowhere:MyChunker': module "
                              "'mypkg.nowhere' not found")


def test_required_key_missing_names_it():
    with imports_allowed(), pytest.raises(ConfigError) as exc:
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
