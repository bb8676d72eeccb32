"""``ragkit`` command line: chunk, index and query, configured by YAML plus dotted overrides.

Exit codes: 0 success, 1 a runtime failure with a one-line message, 2 a bad config, a bad input
file or bad arguments (nothing was done).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ragkit.errors import ConfigError, DocumentError, RagkitError

DEFAULT_INDEX = ".ragkit/index"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _log_to_stderr()
    try:
        return args.func(args)
    except ConfigError as exc:
        config = getattr(args, "config", None)
        where = f"{config}: " if config and not str(exc).startswith(str(config)) else ""
        print(f"ragkit: error: {where}{exc}", file=sys.stderr)
        return 2
    except DocumentError as exc:
        print(f"ragkit: error: {exc}", file=sys.stderr)
        return 2
    except RagkitError as exc:
        print(f"ragkit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ragkit: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragkit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", "-c", help="YAML config file (see configs/)")
        sp.add_argument(
            "-o", "--override", action="append", default=[], metavar="KEY=VALUE",
            help="override a config key, e.g. -o chunker.chunk_size=256 (repeatable)",
        )
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")

    def inputs(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("paths", nargs="+", help=".txt/.md/.jsonl files or folders of them "
                        "(source files too with the code chunker)")
        sp.add_argument("--text-field", default="text", help="JSONL key holding the text")
        sp.add_argument("--skip-bad-files", action="store_true",
                        help="skip unreadable files with a warning instead of failing")

    c = sub.add_parser("chunk", help="chunk files and print chunks or size statistics")
    inputs(c)
    common(c)
    c.add_argument("--format", choices=("stats", "jsonl", "text", "html"), default="stats",
                   help="stats (default): counts and sizes; jsonl: one chunk per line; text: "
                        "readable; html: the chunks drawn over each document as a standalone page")
    c.add_argument("--out", metavar="FILE", help="--format html: write the page here (default: "
                   "standard output)")
    c.set_defaults(func=cmd_chunk)

    i = sub.add_parser("index", help="chunk, embed and index files into a folder")
    inputs(i)
    common(i)
    i.add_argument("--out", default=DEFAULT_INDEX, help=f"index folder (default {DEFAULT_INDEX})")
    i.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where to read, chunk and embed: this process (default) or a Ray cluster")
    i.add_argument("--workers", type=int, metavar="N",
                   help="--engine ray: chunk-and-embed workers (default: the cluster's CPUs)")
    i.add_argument("--ray-address", metavar="ADDR",
                   help="--engine ray: the cluster to use, e.g. auto or ray://head:10001 "
                        "(default: RAY_ADDRESS, else a local cluster started for the run)")
    i.add_argument("--batch-size", type=int, default=64, metavar="N",
                   help="documents per chunk-and-embed batch (default 64)")
    i.add_argument("--restart", action="store_true",
                   help="forget the shards an earlier (killed) run into --out finished")
    i.set_defaults(func=cmd_index)

    q = sub.add_parser("query", help="retrieve the chunks that answer a question, with citations")
    q.add_argument("question")
    q.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default {DEFAULT_INDEX})")
    q.add_argument("-k", type=int, help="number of chunks (default: the config's k)")
    q.add_argument("--json", action="store_true", help="print the answer as JSON")
    q.add_argument(
        "-o", "--override", action="append", default=[], metavar="KEY=VALUE",
        help="change a query-time key of the saved pipeline, e.g. -o selector.name=mmr or "
             "-o index.ef_search=256 (repeatable; keys fixed at build time are refused)",
    )
    q.set_defaults(func=cmd_query)

    a = sub.add_parser("ask", help="answer a question from an index with a generator, citing chunks")
    a.add_argument("question")
    a.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default {DEFAULT_INDEX})")
    a.add_argument("-k", type=int, help="number of chunks (default: the config's k)")
    common(a)
    a.set_defaults(func=cmd_ask)

    cw = sub.add_parser("cache", help="chunk-KV cache commands").add_subparsers(dest="what", required=True)
    w = cw.add_parser("warm", help="precompute the KV cache of every chunk of an index")
    w.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default {DEFAULT_INDEX})")
    common(w)
    w.set_defaults(func=cmd_cache_warm)

    e = sub.add_parser("eval", help="measure chunkers (and later whole retrieve paths)")
    esub = e.add_subparsers(dest="what", required=True)
    ec = esub.add_parser("chunking", help="Chroma's chunking metrics for several chunkers in one run")
    ec.add_argument("data", help="dataset folder: corpora/ and questions.csv or questions.jsonl")
    common(ec)
    ec.add_argument("--mode", choices=("exact", "chroma-compat"), help="overrides the config's mode")
    ec.add_argument("--unit", choices=("char", "token"), help="overrides the config's unit")
    ec.add_argument("--out", default="runs/eval", help="folder for results.md/.json and the plot")
    ec.add_argument("--subset", type=int, metavar="N", help="only the first N questions per corpus")
    ec.add_argument("--corpora", metavar="A,B", help="only these corpora (file stems) and their "
                    "questions")
    ec.add_argument("--cache", help="embedding cache file (default ~/.cache/ragkit/embeddings.sqlite)")
    ec.add_argument("--no-cache", action="store_true", help="embed everything again")
    ec.add_argument("--no-plot", action="store_true", help="skip the plot")
    ec.set_defaults(func=cmd_eval_chunking)

    er = esub.add_parser("retrieval", help="score whole retrieve paths (chunker to selector)")
    er.add_argument("data", help="dataset folder: corpora/ and questions.csv or questions.jsonl")
    common(er)
    er.add_argument("--out", default="runs/eval-retrieval", help="folder for results.md/.json")
    er.add_argument("--subset", type=int, metavar="N", help="only the first N questions per corpus")
    er.set_defaults(func=cmd_eval_retrieval)
    return p


# -- commands -------------------------------------------------------------------------------------


def cmd_chunk(args: argparse.Namespace) -> int:
    from ragkit.config import build

    if args.out is not None and args.format != "html":
        raise ConfigError(f"only with --format html; got --format {args.format}", path="--out")
    config = _config(args)
    chunker = build("chunker", config.get("chunker", DEFAULT_NAMES["chunker"]), path="chunker")
    docs = _documents(args, chunker)
    if args.format == "html":
        from ragkit.view import Chunks

        view = Chunks(docs=docs)
    total_bytes = sum(len(d.text.encode("utf-8")) for d in docs)
    sizes: list[int] = []
    chars: list[int] = []
    n_docs = 0
    t0 = time.perf_counter()
    out = sys.stdout
    for doc in _progress(docs, args, "chunking", unit="B", total=total_bytes,
                         weight=lambda d: len(d.text.encode("utf-8"))):
        n_docs += 1
        chunks = chunker.chunk(doc)
        if args.format == "html":
            view.extend(chunks)
        for c in chunks:
            sizes.append(int(c.metadata.get("tokens", c.metadata.get("nws_chars", 0))))
            chars.append(c.end - c.start)
            if args.format == "jsonl":
                out.write(json.dumps({"id": c.id, "doc_id": c.doc_id, "index": c.index,
                                      "start": c.start, "end": c.end, "text": c.text,
                                      "metadata": dict(c.metadata)}, ensure_ascii=False) + "\n")
            elif args.format == "text":
                out.write(f"--- {c.id} ({sizes[-1]} tokens)\n{c.text}\n")
    seconds = time.perf_counter() - t0
    if args.format == "html":
        html = view.page(title="ragkit chunks: " + ", ".join(args.paths))
        if args.out is None:
            out.write(html)
        else:
            Path(args.out).write_text(html, encoding="utf-8")
            print(f"wrote {len(view)} chunks of {n_docs} documents to {args.out}", file=sys.stderr)
    if args.format == "stats":
        from ragkit.config import to_config

        spec = to_config(chunker, "chunker")
        print(f"chunker    {json.dumps(spec, ensure_ascii=False)}")
        print(f"documents  {n_docs}  ({total_bytes / 1e6:.2f} MB)")
        print(f"chunks     {len(sizes)}")
        if sizes:
            tok_unit = getattr(chunker, "resolved_tokenizer", None) or getattr(
                chunker, "tokenizer", "tokens")
            print(f"tokens     total {sum(sizes)}  ({tok_unit})")
            print("size       " + _describe(sizes, "tokens"))
            print("chars      " + _describe(chars, "chars"))
        print(f"time       {seconds:.2f} s  ({total_bytes / 1e6 / max(seconds, 1e-9):.2f} MB/s)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from ragkit.ingest import ingest
    from ragkit.pipeline import RAGPipeline

    pipe = RAGPipeline.from_config(_config(args))  # validates everything before any work
    engine: dict[str, Any] = {"name": args.engine}
    if args.engine == "ray":
        engine |= {"workers": args.workers, "address": args.ray_address}
    elif args.workers is not None or args.ray_address is not None:
        raise ConfigError("only with --engine ray", path="--workers" if args.workers is not None
                          else "--ray-address")
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=0, desc="indexing", unit="B", unit_scale=True, file=sys.stderr)

    def progress(p) -> None:
        bar.total = p.bytes_total
        bar.update(p.bytes_done - bar.n)
        bar.set_postfix(docs=p.documents, chunks=p.chunks, shards=f"{p.shards_done}/"
                        f"{p.shards_total}", failed=p.failures, refresh=False)

    try:
        report = ingest(
            args.paths, pipe, args.out, engine=engine, batch_size=args.batch_size,
            on_error="skip" if args.skip_bad_files else "raise", text_field=args.text_field,
            restart=args.restart, progress=progress if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    if report.failures:
        print(f"ragkit: skipped {len(report.failures)} bad file(s), line(s) or document(s); see "
              "warnings above", file=sys.stderr)
    print(report.summary())
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from ragkit.pipeline import RAGPipeline

    if args.k is not None and args.k < 1:
        raise ConfigError(f"must be an int >= 1; got {args.k}", path="-k")
    pipe = RAGPipeline.load(args.index, args.override)
    answer = pipe.answer(args.question, k=args.k)
    if args.json:
        print(json.dumps({
            "query": answer.query,
            "answer": answer.text,
            "hits": [{"rank": h.rank, "score": h.score, "citation": h.citation, "chunk_id": h.chunk.id,
                      "start": h.chunk.start, "end": h.chunk.end, "text": h.chunk.text}
                     for h in answer.hits],
        }, ensure_ascii=False, indent=2))
        return 0
    print(f"Q: {answer.query}")
    if answer.text is not None:
        print(f"A: {answer.text}")
    else:
        print("(no generator configured: the cited chunks are the answer)")
    for h in answer.hits:
        print(f"\n[{h.rank + 1}] {h.citation}  score={h.score:.3f}")
        print("    " + h.chunk.text.strip().replace("\n", "\n    "))
    return 0


def cmd_eval_chunking(args: argparse.Namespace) -> int:
    from ragkit.config import build_dataclass
    from ragkit.evaluation import report
    from ragkit.evaluation.chunking import ChunkingEval, evaluate_chunking
    from ragkit.evaluation.data import load_dataset

    data = _config(args)
    if not args.config and "chunkers" not in data:
        data["chunkers"] = {"recursive": {"name": "recursive"}}
    for key in ("mode", "unit"):
        if getattr(args, key):
            data[key] = getattr(args, key)
    config = build_dataclass(ChunkingEval, data)  # validates every chunker before any work
    if args.subset is not None and args.subset < 1:
        raise ConfigError(f"must be an int >= 1; got {args.subset}", path="--subset")
    dataset = load_dataset(args.data)
    if args.corpora:
        dataset = dataset.only([c.strip() for c in args.corpora.split(",") if c.strip()])
    if args.subset:
        dataset = dataset.subset(args.subset)
    cache = None
    if not args.no_cache:
        from ragkit.retrieval.cache import EmbeddingCache

        cache = EmbeddingCache(args.cache)
    progress = None if args.no_progress else _bar
    results = evaluate_chunking(dataset, config, cache=cache, progress=progress)
    paths = report.write(results, config, args.out, dataset, with_plot=not args.no_plot)
    print(report.markdown(results, config))
    if cache is not None:
        print(f"embedding cache: {cache.hits} hits, {cache.misses} computed ({cache.path})")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ragkit.config import build_dataclass
    from ragkit.evaluation.data import load_dataset
    from ragkit.evaluation.retrieval import RetrievalEval, evaluate_retrieval, markdown

    if not args.config:
        raise ConfigError("needs --config FILE with `paths:` (label -> pipeline config) and `ks:`",
                          path="--config")
    config = build_dataclass(RetrievalEval, _config(args))  # builds every path before any work
    if args.subset is not None and args.subset < 1:
        raise ConfigError(f"must be an int >= 1; got {args.subset}", path="--subset")
    dataset = load_dataset(args.data)
    if args.subset:
        dataset = dataset.subset(args.subset)
    results = evaluate_retrieval(dataset, config, progress=None if args.no_progress else _bar)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, config)
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({
        "dataset": dataset.name, "ks": list(config.ks),
        "questions": [{"question": q.text, "corpus_id": q.corpus_id} for q in dataset.questions],
        "runs": [asdict(r) for r in results]}, indent=1) + "\n", encoding="utf-8")
    print(table)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}")
    return 0


def _bar(items: Iterable[Any], desc: str, total: int) -> Iterator[Any]:
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, total=total, file=sys.stderr)


DEFAULT_GENERATOR = {"name": "transformers"}


def _pipeline_with_generator(args: argparse.Namespace):
    """The saved pipeline (-o keys outside ``generator`` change its query-time settings) with a
    generator: the saved one, or the ``generator`` section of --config, or the default, with the
    -o generator.* overrides applied on top."""
    from ragkit.config import apply_overrides, build, load_yaml
    from ragkit.pipeline import RAGPipeline

    def is_gen(item: str) -> bool:
        return item.partition("=")[0].split(".")[0] == "generator"

    pipe = RAGPipeline.load(args.index, [o for o in args.override if not is_gen(o)])
    spec = pipe.generator if pipe.generator is not None else DEFAULT_GENERATOR
    if args.config:
        spec = load_yaml(args.config).get("generator", spec)
    # in full (nested components named), so that -o generator.kv_store.path=... has a base
    spec = to_plain(build("generator", spec, path="generator"))
    spec = apply_overrides({"generator": spec}, [o for o in args.override if is_gen(o)])
    pipe.generator = build("generator", spec["generator"], path="generator")
    return pipe


def to_plain(component: Any) -> dict[str, Any]:
    from ragkit.config import to_config

    return to_config(component, "generator")


def cmd_ask(args: argparse.Namespace) -> int:
    if args.k is not None and args.k < 1:
        raise ConfigError(f"must be an int >= 1; got {args.k}", path="-k")
    pipe = _pipeline_with_generator(args)
    getattr(pipe.generator, "lm", None)  # load (or convert, the first time) before answering
    print(f"Q: {args.question}\nA: ", end="", flush=True)
    answer = pipe.answer(args.question, k=args.k,
                         stream=lambda piece: print(piece, end="", flush=True))
    print("\n\nSources:")
    for h in answer.hits:
        print(f"  [{h.rank + 1}] {h.citation}  score={h.score:.3f}")
    t = answer.timings
    first = ("retrieve_s", "ttft_s", "tokens_per_s", "prefill_tokens_computed", "prefill_tokens_reused")
    keys = [k for k in first if k in t] + [k for k in t if k not in first]  # then backend extras
    print("timings: " + "  ".join(f"{k}={t[k]:.3g}" if isinstance(t[k], float) else f"{k}={t[k]}"
                                  for k in keys))
    return 0


def cmd_cache_warm(args: argparse.Namespace) -> int:
    pipe = _pipeline_with_generator(args)
    chunks = list(pipe.index.chunks())
    if args.no_progress:
        stats = pipe.generator.warm(chunks)
    else:
        from tqdm import tqdm

        with tqdm(total=len(chunks), desc="warming chunk KVs", unit="chunk", file=sys.stderr) as bar:
            def progress(done: int, total: int) -> None:
                bar.update(done - bar.n)

            stats = pipe.generator.warm(chunks, progress=progress)
    print(f"chunk KVs: {stats}")
    return 0


# -- helpers --------------------------------------------------------------------------------------


DEFAULT_NAMES = {"chunker": "recursive", "embedder": "sentence-transformers", "index": "memory",
                 "generator": "transformers"}


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """The config file (or an empty one) with the overrides applied. An override of a section the
    file does not have (``-o chunker.chunk_size=64`` with no config) starts from the default
    component of that section."""
    from ragkit.config import apply_overrides, load_yaml

    data = load_yaml(args.config) if args.config else {}
    for item in args.override:
        section = item.partition("=")[0].split(".")[0]
        if section in DEFAULT_NAMES and "." in item.partition("=")[0] and section not in data:
            data[section] = {"name": DEFAULT_NAMES[section]}
    return apply_overrides(data, args.override)


def _log_to_stderr() -> None:
    """Library warnings (e.g. skipped files) go to the current stderr, once."""
    fmt = logging.Formatter("ragkit: %(levelname)s: %(message)s")
    for name in ("ragkit", "chunkers", "retrieval", "generation"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, "_ragkit_cli", False)]:
            logger.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler._ragkit_cli = True  # type: ignore[attr-defined]
        handler.setFormatter(fmt)
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def _documents(args: argparse.Namespace, chunker: Any = None) -> list:
    """The documents under ``args.paths``: the files the chunker takes (its ``file_suffixes``,
    e.g. source files for the code chunker), else .txt/.md/.jsonl."""
    from ragkit.loaders import DEFAULT_SUFFIXES, load_documents

    problems: list = []
    docs = load_documents(
        args.paths, text_field=args.text_field,
        suffixes=getattr(chunker, "file_suffixes", DEFAULT_SUFFIXES),
        on_error="skip" if args.skip_bad_files else "raise",
        **({"problems": problems} if args.skip_bad_files else {}),
    )
    if args.skip_bad_files and problems:
        print(f"ragkit: skipped {len(problems)} bad file(s) or line(s); see warnings above",
              file=sys.stderr)
    return docs


def _progress(items: Sequence[Any], args: argparse.Namespace, desc: str, *, unit: str,
              total: int, weight=None) -> Iterator[Any]:
    if args.no_progress:
        yield from items
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", file=sys.stderr,
              disable=False) as bar:
        for item in items:
            yield item
            bar.update(weight(item) if weight else 1)


def _describe(values: Iterable[int], unit: str) -> str:
    vals = sorted(values)
    p95 = vals[min(len(vals) - 1, int(0.95 * len(vals)))]
    return (f"min {vals[0]}  mean {statistics.fmean(vals):.1f}  median {statistics.median(vals):g}  "
            f"p95 {p95}  max {vals[-1]}  ({unit})")


if __name__ == "__main__":
    sys.exit(main())
