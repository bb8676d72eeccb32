"""``ragkit`` command line: chunk, index and query, configured by YAML plus dotted overrides.

Exit codes: 0 success, 1 a runtime failure with a one-line message, 2 a bad config, a bad input
file or bad arguments (nothing was done).

This module holds the argument parser and ``main`` (errors -> messages and exit codes); the
commands live in ``ragkit.cli_corpus`` (chunk, index, docs, query, eval) and
``ragkit.cli_generate`` (ask, serve, cache), their shared helpers in ``ragkit.cli_support``.
It must not do a command's work itself.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ragkit.cli_corpus import (
    cmd_chunk,
    cmd_docs_delete,
    cmd_docs_list,
    cmd_eval_chunking,
    cmd_eval_retrieval,
    cmd_index,
    cmd_query,
)
from ragkit.cli_generate import cmd_ask, cmd_cache_clear, cmd_cache_stats, cmd_cache_warm, cmd_serve
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
    c.add_argument("--json", action="store_true", help="print the statistics as one JSON document")
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
                   help="local engine: chunk-and-embed processes (default: this machine's "
                        "cores); --engine ray: chunk-and-embed workers (default: the "
                        "cluster's CPUs)")
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
    ec.add_argument("--json", action="store_true", help="print results.json on stdout")
    ec.set_defaults(func=cmd_eval_chunking)

    er = esub.add_parser("retrieval", help="score whole retrieve paths (chunker to selector)")
    er.add_argument("data", help="dataset folder: corpora/ and questions.csv or questions.jsonl")
    common(er)
    er.add_argument("--out", default="runs/eval-retrieval", help="folder for results.md/.json")
    er.add_argument("--subset", type=int, metavar="N", help="only the first N questions per corpus")
    er.add_argument("--json", action="store_true", help="print results.json on stdout")
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


if __name__ == "__main__":
    sys.exit(main())
