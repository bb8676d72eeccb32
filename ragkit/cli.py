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

from ragkit.errors import ConfigError, DocumentError, IndexExistsError, RagkitError

DEFAULT_INDEX = ".ragkit/index"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _log_to_stderr()
    try:
        if getattr(args, "allow_import", False):
            from ragkit.registry import allow_imports

            allow_imports(True)
        return args.func(args)
    except BrokenPipeError:  # `ragkit ... | head`: the reader has gone; nothing to report
        _quiet_stdout()
        return 0
    except ConfigError as exc:
        config = getattr(args, "config", None)
        where = f"{config}: " if config and not str(exc).startswith(str(config)) else ""
        print(f"ragkit: error: {where}{exc}", file=sys.stderr)
        return 2
    except (DocumentError, IndexExistsError) as exc:
        print(f"ragkit: error: {exc}", file=sys.stderr)
        return 2
    except RagkitError as exc:
        print(f"ragkit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ragkit: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    from ragkit import __version__

    p = argparse.ArgumentParser(prog="ragkit", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"ragkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", "-c", help="YAML config file (see configs/)")
        sp.add_argument(
            "-o", "--override", action="append", default=[], metavar="KEY=VALUE",
            help="override a config key, e.g. -o chunker.chunk_size=256 (repeatable)",
        )
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")
        _allow_import(sp)

    def inputs(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("paths", nargs="+", help=".txt/.md/.jsonl files or folders of them "
                        "(source files too with the code chunker)")
        sp.add_argument("--text-field", default="text", help="JSONL key holding the text")
        sp.add_argument("--skip-bad-files", action="store_true",
                        help="skip unreadable files with a warning instead of failing")
        sp.add_argument("--suffixes", type=_suffixes, metavar=".md,.txt",
                        help="which files a folder yields (default: .txt,.md,.markdown,.jsonl, or "
                        "the code chunker's source suffixes)")

    c = sub.add_parser("chunk", help="chunk files and print chunks or size statistics")
    inputs(c)
    common(c)
    c.add_argument("--format", choices=("stats", "jsonl", "text", "html"), default="stats",
                   help="stats (default): counts and sizes; jsonl: one chunk per line; text: "
                        "readable; html: the chunks drawn over each document as a standalone page")
    c.add_argument("--out", metavar="FILE", help="--format html: write the page here (default: "
                   "standard output)")
    c.add_argument("--workers", type=int, default=None,
                   help="chunking processes (default: this machine's cores); same chunks as 1. "
                        "A worker takes at least 25 M chars, so smaller inputs run in-process")
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
    existing = i.add_mutually_exclusive_group()
    existing.add_argument("--append", dest="mode", action="store_const", const="append",
                          help="--out holds an index: add new and changed documents, keep the rest")
    existing.add_argument("--sync", dest="mode", action="store_const", const="sync",
                          help="like --append, and delete documents whose files are gone")
    existing.add_argument("--replace", dest="mode", action="store_const", const="replace",
                          help="build a new index beside the one in --out and swap it in when done")
    i.add_argument("--json", action="store_true", help="print the report as one JSON document")
    i.set_defaults(func=cmd_index, mode="new")

    d = sub.add_parser("docs", help="list or delete the documents of an index")
    dsub = d.add_subparsers(dest="what", required=True)
    dl = dsub.add_parser("list", help="one line per document: id, source, chunks, content hash")
    dl.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default {DEFAULT_INDEX})")
    dl.add_argument("--json", action="store_true", help="print a JSON list")
    _allow_import(dl)
    dl.set_defaults(func=cmd_docs_list)
    dd = dsub.add_parser("delete", help="delete documents (all their chunks) by id or by source")
    dd.add_argument("ids", nargs="*", help="document ids")
    dd.add_argument("--source", action="append", default=[], metavar="SOURCE",
                    help="delete the documents from this source file (repeatable)")
    dd.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default {DEFAULT_INDEX})")
    dd.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    _allow_import(dd)
    dd.set_defaults(func=cmd_docs_delete)

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
    _allow_import(q)
    q.set_defaults(func=cmd_query)

    a = sub.add_parser("ask", help="answer a question from an index with a generator, citing chunks")
    a.add_argument("question")
    a.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default {DEFAULT_INDEX})")
    a.add_argument("-k", type=int, help="number of chunks (default: the config's k)")
    a.add_argument("--json", action="store_true", help="print the answer, sources and timings as "
                   "one JSON document (no streaming)")
    common(a)
    a.set_defaults(func=cmd_ask)

    sv = sub.add_parser("serve", help="serve an index: OpenAI-compatible chat completions with "
                        "citations, retrieval, documents, metrics and a web page")
    sv.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default {DEFAULT_INDEX})")
    common(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/* (default: "
                    "$RAGKIT_API_KEY; needed to bind a non-loopback address)")
    sv.add_argument("--insecure", action="store_true",
                    help="allow a non-loopback --host without an API key (prints a warning)")
    for flag, default, what in (("--max-body-bytes", 10 * 1024 * 1024, "request body size"),
                                ("--max-question-chars", 8000, "question length"),
                                ("--max-tokens", 1024, "max_tokens of a completion"),
                                ("--max-documents", 256, "documents per POST /v1/documents"),
                                ("--max-k", 50, "k of a request"),
                                ("--max-queue", 64, "completions waiting for the model")):
        sv.add_argument(flag, type=int, default=default, metavar="N",
                        help=f"limit: {what} (default {default})")
    sv.set_defaults(func=cmd_serve)

    cw = sub.add_parser("cache", help="chunk-KV cache commands").add_subparsers(dest="what", required=True)
    w = cw.add_parser("warm", help="precompute the KV cache of every chunk of an index")
    w.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default {DEFAULT_INDEX})")
    common(w)
    w.set_defaults(func=cmd_cache_warm)
    for name, helptext, func in (
        ("stats", "entries, bytes on disk and the size limit of the chunk-KV disk store",
         cmd_cache_stats),
        ("clear", "delete every entry of the chunk-KV disk store", cmd_cache_clear)):
        cs = cw.add_parser(name, help=helptext)
        cs.add_argument("--index", help="the store this index's generator uses (default: the "
                        "default store, $RAGKIT_CACHE/kv)")
        cs.add_argument("--json", action="store_true", help="print one JSON document")
        cs.set_defaults(func=func)

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


def _allow_import(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--allow-import", action="store_true",
                    help="let configs (and saved indexes) name components by import path "
                    "'pkg.module:Class', which runs that module's code (also RAGKIT_ALLOW_IMPORT=1)")


def _suffixes(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if not v.startswith(".") or len(v) < 2]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"--suffixes: {value!r}: give file suffixes with their dot, comma-separated, e.g. "
            ".md,.txt,.rst")
    return items


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the interpreter's final flush is quiet."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def source_dict(hit: Any) -> dict[str, Any]:
    """A hit as the CLI's --json and the server's ``ragkit.sources`` show it."""
    c = hit.chunk
    return {"id": c.id, "doc_id": c.doc_id, "source": c.metadata.get("source", c.doc_id),
            "start": c.start, "end": c.end, "score": hit.score, "text": c.text}


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


# -- commands -------------------------------------------------------------------------------------


def cmd_chunk(args: argparse.Namespace) -> int:
    from ragkit import progress
    from ragkit.chunkers.base import check_workers, cpu_count, iter_chunk_many
    from ragkit.config import build

    workers = cpu_count() if args.workers is None else args.workers
    check_workers(workers, path="--workers")
    if args.out is not None and args.format != "html":
        raise ConfigError(f"only with --format html; got --format {args.format}", path="--out")
    config = _config(args)
    if config:  # the whole file is checked, as by every other command (typos, unknown names)
        from ragkit.pipeline import RAGPipeline

        chunker = RAGPipeline.from_config(config).chunker
    else:
        chunker = build("chunker", DEFAULT_NAMES["chunker"], path="chunker")
    if args.format == "html":  # the page draws every document: it needs them all
        from ragkit.view import Chunks

        docs: Iterable[Any] = _documents(args, chunker)
        view = Chunks(docs=docs)
        input_bytes = sum(_utf8_len(d.text) for d in docs)
    else:  # streamed: one document (or one worker batch) in memory at a time
        docs, input_bytes = _stream_documents(args, chunker)
    sizes: list[int] = []
    chars: list[int] = []
    n_docs = 0
    total_bytes = 0
    t0 = time.perf_counter()
    out = sys.stdout
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=input_bytes, desc="chunking", unit="B", unit_scale=True,
                   file=sys.stderr)
    pending: list[int] = []  # the UTF-8 size of the document being chunked, once it is known

    def sized(items: Iterable[Any]) -> Iterator[Any]:
        for d in items:
            pending.append(_utf8_len(d.text))
            yield d

    def listen(fraction: float) -> None:  # the chunker's word on the document in hand
        if len(pending) > n_docs:  # in this process, the document after the n_docs done
            bar.update(int(total_bytes + fraction * pending[n_docs]) - bar.n)

    with progress.listening(listen if bar is not None else None):
        for chunks in iter_chunk_many(chunker, sized(docs), workers=workers):
            total_bytes += pending[n_docs] if len(pending) > n_docs else 0
            n_docs += 1
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
            if bar is not None:
                bar.update(total_bytes - bar.n)
    if bar is not None:
        bar.close()
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
        secs = max(seconds, 1e-9)
        print(f"time       {seconds:.2f} s  ({len(sizes) / secs:.1f} chunks/s, "
              f"{total_bytes / 1e6 / secs:.2f} MB/s)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from ragkit.ingest import ingest
    from ragkit.pipeline import CONFIG_FILE, RAGPipeline

    config = _config(args)
    if args.mode in ("append", "sync") and not args.config and (Path(args.out) /
                                                                 CONFIG_FILE).is_file():
        from ragkit.config import apply_overrides, load_yaml

        config = apply_overrides(load_yaml(Path(args.out) / CONFIG_FILE), args.override)
    pipe = RAGPipeline.from_config(config)  # validates everything before any work
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
            restart=args.restart, mode=args.mode, suffixes=args.suffixes,
            progress=progress if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    if report.failures:
        print(f"ragkit: skipped {len(report.failures)} bad file(s), line(s) or document(s); see "
              "warnings above", file=sys.stderr)
    if args.json:
        from dataclasses import asdict

        data = asdict(report)
        data["failures"] = [str(f) for f in report.failures]
        _print_json(data)
    else:
        print(report.summary())
    return 0


def cmd_docs_list(args: argparse.Namespace) -> int:
    from ragkit.pipeline import RAGPipeline

    with RAGPipeline.load(args.index) as pipe:
        docs = pipe.documents()
    if args.json:
        _print_json([d.to_dict() for d in docs])
        return 0
    for d in docs:
        print(f"{d.id}\t{d.source or '-'}\t{d.chunks} chunks\t{(d.content_hash or '-')[:12]}")
    print(f"{len(docs)} documents", file=sys.stderr)
    return 0


def cmd_docs_delete(args: argparse.Namespace) -> int:
    from ragkit.pipeline import RAGPipeline

    if not args.ids and not args.source:
        raise ConfigError("name the documents to delete: ids, or --source FILE", path="ids")
    with RAGPipeline.load(args.index) as pipe:
        return _delete_docs(pipe, args)


def _delete_docs(pipe: Any, args: argparse.Namespace) -> int:
    docs = {d.id: d for d in pipe.documents()}
    unknown = [i for i in args.ids if i not in docs]
    if unknown:
        raise ConfigError(f"no document {unknown[0]!r} in {args.index} (see `ragkit docs list "
                          f"--index {args.index}`); nothing was deleted", path="ids")
    by_source = [d.id for d in docs.values() if d.source is not None and (
        d.source in args.source or d.source.rpartition("#")[0] in args.source)]
    missing = [s for s in args.source if not any(
        d.source in (s,) or (d.source or "").rpartition("#")[0] == s for d in docs.values())]
    if missing:
        raise ConfigError(f"no document from source {missing[0]!r} in {args.index}; nothing was "
                          "deleted", path="--source")
    ids = list(dict.fromkeys([*args.ids, *by_source]))
    removed = pipe.delete(ids)
    pipe.save(args.index)
    if args.json:
        _print_json({"deleted": ids, "chunks": removed})
    else:
        print(f"deleted {len(ids)} documents ({removed} chunks) from {args.index}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from ragkit.pipeline import RAGPipeline

    if args.k is not None and args.k < 1:
        raise ConfigError(f"must be an int >= 1; got {args.k}", path="-k")
    pipe = RAGPipeline.load(args.index, args.override)
    t0 = time.perf_counter()
    hits = pipe.retrieve(args.question, k=args.k)  # retrieval only, whatever the saved generator
    if args.json:
        _print_json({"query": args.question, "sources": [source_dict(h) for h in hits],
                     "timings": {"retrieve_s": time.perf_counter() - t0}})
        return 0
    print(f"Q: {args.question}")
    print("(retrieval only: `ragkit ask` answers with a generator)")
    for h in hits:
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
    from ragkit.pipeline import CONFIG_FILE, RAGPipeline

    def is_gen(item: str) -> bool:
        return item.partition("=")[0].split(".")[0] == "generator"

    # the saved generator is not built here: it may be replaced below (one generator a command)
    pipe = RAGPipeline.load(args.index, [*(o for o in args.override if not is_gen(o)),
                                         "generator=null"])
    spec = load_yaml(Path(args.index) / CONFIG_FILE).get("generator") or DEFAULT_GENERATOR
    if args.config:
        spec = load_yaml(args.config).get("generator", spec)
    overrides = [o for o in args.override if is_gen(o)]
    if overrides:  # in full (nested components named), so -o generator.kv_store.path=... has a base
        full = to_plain(build("generator", spec, path="generator"))
        spec = apply_overrides({"generator": full}, overrides)["generator"]
    pipe.generator = build("generator", spec, path="generator")
    return pipe


def to_plain(component: Any) -> dict[str, Any]:
    from ragkit.config import to_config

    return to_config(component, "generator")


def cmd_ask(args: argparse.Namespace) -> int:
    if args.k is not None and args.k < 1:
        raise ConfigError(f"must be an int >= 1; got {args.k}", path="-k")
    pipe = _pipeline_with_generator(args)
    getattr(pipe.generator, "lm", None)  # load (or convert, the first time) before answering
    if args.json:
        answer = pipe.answer(args.question, k=args.k)
        _print_json({"answer": answer.text, "sources": [source_dict(h) for h in answer.hits],
                     "timings": dict(answer.timings)})
        return 0
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


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from ragkit.serve import check_bind, run
    from ragkit.serve.app import Limits

    key = args.api_key or os.environ.get("RAGKIT_API_KEY") or None
    check_bind(args.host, key, args.insecure)  # before loading anything
    names = ("max_body_bytes", "max_question_chars", "max_tokens", "max_documents", "max_k",
             "max_queue")
    for name in names:
        if getattr(args, name) < 1:
            raise ConfigError(f"must be an int >= 1; got {getattr(args, name)}",
                              path="--" + name.replace("_", "-"))
    limits = Limits(**{name: getattr(args, name) for name in names})
    with _pipeline_with_generator(args) as pipe:  # the folder's log is released on the way out
        return run(pipe, folder=args.index, host=args.host, port=args.port, api_key=key,
                   limits=limits)


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


def _kv_disk(args: argparse.Namespace) -> Any:
    """The disk tier a generator would use: the --index's saved ``generator.kv_store``, else
    the default."""
    from ragkit.generation.kv_store import DEFAULT_MAX_DISK_GB, DiskKVStore

    spec: Any = {}
    if args.index:
        from ragkit.config import load_yaml
        from ragkit.pipeline import CONFIG_FILE

        file = Path(args.index) / CONFIG_FILE
        if not file.is_file():
            raise RagkitError(f"{str(args.index)!r} is not a saved ragkit index (no "
                              f"{CONFIG_FILE})")
        gen = load_yaml(file).get("generator")
        spec = (gen.get("kv_store") if isinstance(gen, dict) else None) or {}
        spec = {} if not isinstance(spec, dict) else spec
        if spec.get("disk") is False:
            raise RagkitError(f"the KV store of {args.index}'s generator keeps no disk tier "
                              "(kv_store.disk: false)")
    return DiskKVStore(path=spec.get("path"), max_disk_gb=spec.get("max_disk_gb",
                                                                   DEFAULT_MAX_DISK_GB))


def cmd_cache_stats(args: argparse.Namespace) -> int:
    store = _kv_disk(args)
    entries, used = store.usage()
    limit = store.max_disk_gb
    if args.json:
        _print_json({"path": str(store.root), "entries": entries, "bytes": used,
                     "max_bytes": None if limit is None else int(limit * 1e9)})
        return 0
    cap = "no limit" if limit is None else f"limit {limit:g} GB ({used / (limit * 1e9):.1%} used)"
    print(f"chunk-KV disk store {store.root}: {entries} entries, {used / 1e9:.3f} GB on disk; {cap}")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    store = _kv_disk(args)
    entries, freed = store.clear()
    if args.json:
        _print_json({"path": str(store.root), "deleted": entries, "bytes": freed})
    else:
        print(f"deleted {entries} entries ({freed / 1e9:.3f} GB) from {store.root}")
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
    for name in ("ragkit",):
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
        suffixes=args.suffixes or getattr(chunker, "file_suffixes", DEFAULT_SUFFIXES),
        on_error="skip" if args.skip_bad_files else "raise",
        **({"problems": problems} if args.skip_bad_files else {}),
    )
    if args.skip_bad_files and problems:
        print(f"ragkit: skipped {len(problems)} bad file(s) or line(s); see warnings above",
              file=sys.stderr)
    return docs


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _stream_documents(args: argparse.Namespace, chunker: Any = None) -> tuple[Iterator[Any], int]:
    """``_documents`` one at a time, and the input files' total size in bytes (the bar's
    total: for JSONL files a little more than their texts)."""
    import os

    from ragkit.loaders import DEFAULT_SUFFIXES, DocumentLoader, iter_documents, path_list

    suffixes = args.suffixes or getattr(chunker, "file_suffixes", DEFAULT_SUFFIXES)
    on_error = "skip" if args.skip_bad_files else "raise"
    loader = DocumentLoader(text_field=args.text_field, on_error=on_error, suffixes=suffixes)
    size = 0
    for f in loader.files(path_list(args.paths)):
        try:
            size += os.path.getsize(f.path)
        except (AttributeError, OSError):  # a problem row, or a file gone since
            pass
    problems: list = []
    docs = iter_documents(args.paths, text_field=args.text_field, suffixes=suffixes,
                          on_error=on_error, problems=problems)

    def stream() -> Iterator[Any]:
        yield from docs
        if args.skip_bad_files and problems:
            print(f"ragkit: skipped {len(problems)} bad file(s) or line(s); see warnings above",
                  file=sys.stderr)

    return stream(), size


def _describe(values: Iterable[int], unit: str) -> str:
    vals = sorted(values)
    p95 = vals[min(len(vals) - 1, int(0.95 * len(vals)))]
    return (f"min {vals[0]}  mean {statistics.fmean(vals):.1f}  median {statistics.median(vals):g}  "
            f"p95 {p95}  max {vals[-1]}  ({unit})")


if __name__ == "__main__":
    sys.exit(main())
