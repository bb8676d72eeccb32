"""The chunking evaluation: metric arithmetic by hand, datasets, runs, and the reproduction of
Chroma's reference table (slow: real MiniLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragkit.cli import main
from ragkit.errors import ConfigError, DocumentError
from ragkit.evaluation.chunking import ChunkingEval, evaluate_chunking
from ragkit.evaluation.data import load_dataset
from ragkit.evaluation.metrics import omega, retrieval_scores, union

from tests.dev_data import DEV, require
ROOT = Path(__file__).parents[2]


# -- metrics by hand ------------------------------------------------------------------------------


def test_union_merges_overlapping_and_contiguous():
    assert union([(5, 8), (0, 3), (3, 4), (7, 10)]) == [(0, 4), (5, 10)]


def test_recall_precision_iou_by_hand():
    refs = [(10, 20), (30, 40)]  # 20 chars of excerpt
    own = [(0, 15), (12, 35)]  # covers 10-20 and 30-35 -> 15 chars; the chunks overlap
    sizes = [15, 23, 50]  # the third retrieved chunk is from another corpus
    r, p, iou = retrieval_scores(refs, own, sizes)
    assert r == pytest.approx(15 / 20)
    assert p == pytest.approx(15 / (15 + 23 + 50))  # a sum: overlap counted twice
    assert iou == pytest.approx(15 / (88 + 5))  # 35-40 left uncovered


def test_touching_only_matters_in_compat():
    refs = [(10, 20)]
    corpus = [(0, 10), (10, 30), (30, 40)]  # the first ends exactly where the excerpt starts
    w_exact, n_exact = omega(refs, corpus, touching=False)
    w_compat, n_compat = omega(refs, corpus, touching=True)
    assert (n_exact, n_compat) == (1, 2)
    assert w_exact == pytest.approx(10 / 20)
    assert w_compat == pytest.approx(10 / 30)  # union of (0,10) and (10,30)


def test_omega_counts_uncovered_excerpt_in_denominator():
    w, n = omega([(0, 10), (100, 110)], [(0, 20)])
    assert n == 1 and w == pytest.approx(10 / (20 + 10))


def test_no_retrieval_scores_zero():
    assert retrieval_scores([(0, 5)], [], []) == (0.0, 0.0, 0.0)


# -- datasets -------------------------------------------------------------------------------------


def _tiny(tmp_path: Path, fmt: str = "csv") -> Path:
    (tmp_path / "corpora").mkdir(parents=True)
    a = "Alpha bravo charlie. Delta echo foxtrot. Golf hotel india."
    b = "Juliet kilo lima. Mike november oscar. Papa quebec romeo."
    (tmp_path / "corpora" / "a.md").write_text(a, encoding="utf-8")
    (tmp_path / "corpora" / "b.txt").write_text(b, encoding="utf-8")
    rows = [
        {"question": "delta echo", "corpus_id": "a",
         "references": [{"content": "Delta echo foxtrot.", "start_index": 21, "end_index": 40}]},
        {"question": "papa quebec", "corpus_id": "b",
         "references": [{"content": "Papa quebec romeo.", "start_index": 39, "end_index": 57}]},
    ]
    if fmt == "csv":
        import csv

        with (tmp_path / "questions.csv").open("w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["question", "references", "corpus_id"])
            w.writeheader()
            for r in rows:
                w.writerow({**r, "references": json.dumps(r["references"])})
    else:
        (tmp_path / "questions.jsonl").write_text(
            "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return tmp_path


def test_csv_and_jsonl_load_the_same(tmp_path):
    a = load_dataset(_tiny(tmp_path / "c", "csv"))
    b = load_dataset(_tiny(tmp_path / "j", "jsonl"))
    assert a.questions == b.questions and a.corpora == b.corpora
    assert a.questions[0].references == ((21, 40),)


def test_reference_that_does_not_match_its_content_is_named(tmp_path):
    folder = _tiny(tmp_path, "jsonl")
    text = (folder / "questions.jsonl").read_text(encoding="utf-8").replace('"start_index": 21', '"start_index": 22')
    (folder / "questions.jsonl").write_text(text, encoding="utf-8")
    with pytest.raises(DocumentError, match=r"questions.jsonl line 1: reference \[22, 40\) of 'a' reads"):
        load_dataset(folder)


def test_unknown_corpus_is_named(tmp_path):
    folder = _tiny(tmp_path, "jsonl")
    text = (folder / "questions.jsonl").read_text(encoding="utf-8").replace('"corpus_id": "b"', '"corpus_id": "zz"')
    (folder / "questions.jsonl").write_text(text, encoding="utf-8")
    with pytest.raises(DocumentError, match="corpus_id 'zz' is not a corpus; have a, b"):
        load_dataset(folder)


# -- runs -----------------------------------------------------------------------------------------


def test_sentence_chunks_on_tiny_data_give_exact_scores(tmp_path):
    ds = load_dataset(_tiny(tmp_path))
    cfg = ChunkingEval(chunkers={"s": {"name": "sentence", "chunk_size": 4, "tokenizer": "whitespace"}},
                       embedder={"name": "hash", "dim": 64}, ks=("min", 1, 6))
    (res,) = evaluate_chunking(ds, cfg)
    assert res.n_chunks == 6  # one chunk per sentence
    # each excerpt is exactly one sentence chunk: omega = 1, one chunk meets it
    assert res.per_question["min"]["precision_omega"] == [1.0, 1.0]
    # the hash embedder puts the sentence sharing the query's words first
    assert res.per_question["1"]["recall"] == [1.0, 1.0]
    assert res.per_question["1"]["iou"] == [1.0, 1.0]
    # k=6 retrieves every chunk: full recall, precision = excerpt / all chunk chars
    assert res.per_question["6"]["recall"] == [1.0, 1.0]
    assert res.per_question["6"]["precision"][0] < 0.2
    assert res.results["1"]["recall"] == {"mean": 100.0, "std": 0.0}
    assert set(res.results["1"]["per_corpus"]) == {"a", "b"}


def test_progress_has_a_chunking_bar_per_chunker(tmp_path):
    """The LLM chunkers take minutes per corpus: the run shows a bar over corpora while it chunks,
    then one while it embeds."""
    ds = load_dataset(_tiny(tmp_path))
    cfg = ChunkingEval(chunkers={"s": {"name": "sentence", "chunk_size": 4, "tokenizer": "whitespace"}},
                       embedder={"name": "hash", "dim": 64}, ks=(1,))
    seen = []

    def progress(items, desc, total):
        items = list(items)
        seen.append((desc, total, len(items)))
        yield from items

    evaluate_chunking(ds, cfg, progress=progress)
    assert ("chunking s", 2, 2) in seen  # two corpora
    assert [d for d, _, _ in seen].index("chunking s") < [d for d, _, _ in seen].index("embedding s")


def test_token_unit_changes_the_numbers_not_their_range(tmp_path):
    ds = load_dataset(_tiny(tmp_path))
    base = dict(chunkers={"f": {"name": "fixed", "chunk_size": 5, "tokenizer": "character"}},
                embedder={"name": "hash", "dim": 64}, ks=(3,))
    (c,) = evaluate_chunking(ds, ChunkingEval(**base))
    (t,) = evaluate_chunking(ds, ChunkingEval(**base, unit="token", unit_tokenizer="whitespace"))
    assert c.per_question["3"]["precision_omega"] != t.per_question["3"]["precision_omega"]
    assert all(0 <= v <= 1 for v in t.per_question["3"]["iou"] + t.per_question["3"]["recall"])


def test_eval_config_errors_name_the_path():
    with pytest.raises(ConfigError, match=r"^chunkers.big.chunk_size: expected int; got 'x' \(str\)$"):
        ChunkingEval(chunkers={"big": {"name": "fixed", "chunk_size": "x"}}, embedder="hash")
    with pytest.raises(ConfigError, match="ks: each k must be 'min' or an int >= 1; got 0"):
        ChunkingEval(chunkers={"f": "fixed"}, embedder="hash", ks=(0,))


def test_embedding_cache_serves_a_rerun(tmp_path):
    from ragkit.retrieval.cache import EmbeddingCache

    ds = load_dataset(_tiny(tmp_path / "d"))
    cfg = ChunkingEval(chunkers={"s": {"name": "sentence", "chunk_size": 4, "tokenizer": "whitespace"}},
                       embedder={"name": "hash", "dim": 64}, ks=(2,))
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    (first,) = evaluate_chunking(ds, cfg, cache=cache)
    assert cache.hits == 0 and cache.misses == 8  # 2 questions + 6 chunks
    again = EmbeddingCache(tmp_path / "cache.sqlite")
    (second,) = evaluate_chunking(ds, cfg, cache=again)
    assert again.misses == 0 and again.hits == 8
    assert first.results == second.results


def test_cli_eval_writes_table_json_and_plot(tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        "embedder: {name: hash, dim: 128}\n"
        "chunkers:\n"
        "  fixed-100: {name: fixed, chunk_size: 100, tokenizer: whitespace}\n"
        "  recursive-100: {name: recursive, chunk_size: 100, tokenizer: whitespace}\n"
        "ks: [min, 5]\n", encoding="utf-8")
    out = tmp_path / "out"
    code = main(["eval", "chunking", str(require(DEV)), "--config", str(cfg), "--out", str(out),
                 "--subset", "4", "--no-cache", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| fixed-100 |" in printed and "| recursive-100 |" in printed
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert len(data["questions"]) == 12
    assert [r["label"] for r in data["runs"]] == ["fixed-100", "recursive-100"]
    assert len(data["runs"][0]["per_question"]["5"]["iou"]) == 12
    assert (out / "recall_iou_vs_size.png").stat().st_size > 10_000
    assert (out / "results.md").read_text(encoding="utf-8").count("| chunker |") == 2


def test_cli_eval_json_prints_results_json_alone(tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("embedder: {name: hash, dim: 64}\n"
                   "chunkers:\n  fixed-100: {name: fixed, chunk_size: 100, tokenizer: whitespace}\n"
                   "ks: [5]\n", encoding="utf-8")
    out = tmp_path / "out"
    code = main(["eval", "chunking", str(require(DEV)), "--config", str(cfg), "--out", str(out),
                 "--subset", "2", "--no-cache", "--no-progress", "--no-plot", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out) == json.loads((out / "results.json").read_text("utf-8"))
    assert "wrote " in captured.err
    rcfg = tmp_path / "retrieval.yaml"
    rcfg.write_text("ks: [5]\npaths:\n  plain:\n    chunker: {name: fixed, chunk_size: 100, "
                    "tokenizer: whitespace}\n    embedder: {name: hash, dim: 64}\n",
                    encoding="utf-8")
    code = main(["eval", "retrieval", str(require(DEV)), "--config", str(rcfg), "--out",
                 str(tmp_path / "r"), "--subset", "2", "--no-progress", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert [r["label"] for r in report["runs"]] == ["plain"]


def test_cli_eval_bad_chunker_fails_before_work(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["eval", "chunking", str(require(DEV)), "-o", "chunkers.x.name=nope", "--out", str(out),
                 "--no-progress"])
    assert code == 2
    assert "chunkers.x.name: unknown chunker 'nope'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_chroma_compat_reproduces_reference_json(tmp_path):
    """The issue's acceptance test: the report's six MiniLM settings, compat mode, dev split."""
    pytest.importorskip("langchain_text_splitters")
    from ragkit.config import load_yaml
    from ragkit.retrieval.cache import EmbeddingCache

    data = load_yaml(ROOT / "configs" / "eval" / "chroma_report.yaml")
    data["mode"] = "chroma-compat"
    cfg = ChunkingEval(**data)
    results = {r.label: r for r in evaluate_chunking(load_dataset(DEV), cfg, cache=EmbeddingCache())}
    reference = json.loads((DEV / "reference.json").read_text(encoding="utf-8"))
    overall = {"precision_omega": 0.05, "precision": 0.2, "iou": 0.2, "recall": 1.0}
    per_corpus = {"precision_omega": 0.05, "precision": 0.5, "iou": 0.5, "recall": 2.0}
    checked = 0
    for run in reference["runs"]:
        got = results[run["chunker"]]
        assert got.n_chunks == run["n_chunks"]
        for k in reference["ks"]:
            want = run["results"][k]
            for m, tol in overall.items():
                assert got.results[k][m]["mean"] == pytest.approx(want[m]["mean"], abs=tol), (run["chunker"], k, m)
                checked += 1
            for corpus, vals in want["per_corpus"].items():
                for m, tol in per_corpus.items():
                    assert got.results[k]["per_corpus"][corpus][m]["mean"] == pytest.approx(
                        vals[m]["mean"], abs=tol), (run["chunker"], k, corpus, m)
                    checked += 1
    assert checked == 6 * 3 * 4 * 4


# -- retrieval paths ------------------------------------------------------------------------------


def test_eval_retrieval_scores_paths_like_the_chunking_eval(tmp_path):
    from ragkit.evaluation.retrieval import RetrievalEval, evaluate_retrieval

    ds = load_dataset(_tiny(tmp_path))
    path = {"chunker": {"name": "sentence", "chunk_size": 4, "tokenizer": "whitespace"},
            "embedder": {"name": "hash", "dim": 64}, "index": {"name": "memory"}}
    cfg = RetrievalEval(paths={"dense": path}, ks=(1, 6))
    (res,) = evaluate_retrieval(ds, cfg)
    # the same numbers as the chunking evaluation of the same chunker and embedder
    (ref,) = evaluate_chunking(ds, ChunkingEval(chunkers={"s": path["chunker"]},
                                                embedder=path["embedder"], ks=(1, 6)))
    for k in ("1", "6"):
        for m in ("recall", "precision", "iou", "precision_omega"):
            assert res.per_question[k][m] == pytest.approx(ref.per_question[k][m]), (k, m)
    assert res.mean_hits == {"1": 1.0, "6": 6.0}


def test_eval_retrieval_reports_the_rerankers_counts(tmp_path):
    """A reranker's unreadable grades are counted in the path's results, next to its scores."""
    from ragkit.evaluation.retrieval import RetrievalEval, evaluate_retrieval, markdown

    ds = load_dataset(_tiny(tmp_path))
    base = {"chunker": {"name": "sentence", "chunk_size": 4, "tokenizer": "whitespace"},
            "embedder": {"name": "hash", "dim": 64}, "index": {"name": "memory"}, "candidates": 3}
    llm = {"name": "ragkit.testing:ScriptedLLM", "answers": ["7", "no idea", "2"] * 2}
    cfg = RetrievalEval(paths={"plain": base, "graded": {**base, "reranker": {"name": "llm",
                                                                              "llm": llm}}},
                        ks=(2,))
    plain, graded = evaluate_retrieval(ds, cfg)  # two questions, three candidates each
    assert plain.reranker_stats is None
    assert graded.reranker_stats == {"graded": 6, "unparsed": 2, "cached": 0}
    assert "- graded: graded 6, unparsed 2, cached 0" in markdown([plain, graded], cfg)


def test_eval_retrieval_config_errors_name_the_path():
    from ragkit.evaluation.retrieval import RetrievalEval

    with pytest.raises(ConfigError, match=r"^paths.bad.index.name: unknown index 'nope'"):
        RetrievalEval(paths={"bad": {"chunker": "fixed", "embedder": "hash",
                                     "index": {"name": "nope"}}})
