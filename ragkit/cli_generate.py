"""The ``ragkit`` commands that need a generator: ``ask``, ``serve`` and ``cache warm/stats/clear``,
and the one place that builds that generator (once a command) for a saved pipeline.

Each takes the parsed arguments and returns an exit code; it must not parse arguments or chunk a
corpus (``ragkit.cli_corpus``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ragkit.cli_support import (
    print_json,
    source_dict,
)
from ragkit.errors import ConfigError, RagkitError
from ragkit.protocols import LoadsModel

DEFAULT_GENERATOR = {"name": "transformers"}


def pipeline_with_generator(args: argparse.Namespace):
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
    pipe = pipeline_with_generator(args)
    if isinstance(pipe.generator, LoadsModel):
        pipe.generator.load_model()  # load (or convert, the first time) before answering
    if args.json:
        answer = pipe.answer(args.question, k=args.k)
        print_json({"answer": answer.text, "sources": [source_dict(h) for h in answer.hits],
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
    with pipeline_with_generator(args) as pipe:  # the folder's log is released on the way out
        return run(pipe, folder=args.index, host=args.host, port=args.port, api_key=key,
                   limits=limits)


def cmd_cache_warm(args: argparse.Namespace) -> int:
    pipe = pipeline_with_generator(args)
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


def kv_disk(args: argparse.Namespace) -> Any:
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
    store = kv_disk(args)
    entries, used = store.usage()
    limit = store.max_disk_gb
    if args.json:
        print_json({"path": str(store.root), "entries": entries, "bytes": used,
                     "max_bytes": None if limit is None else int(limit * 1e9)})
        return 0
    cap = "no limit" if limit is None else f"limit {limit:g} GB ({used / (limit * 1e9):.1%} used)"
    print(f"chunk-KV disk store {store.root}: {entries} entries, {used / 1e9:.3f} GB on disk; {cap}")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    store = kv_disk(args)
    entries, freed = store.clear()
    if args.json:
        print_json({"path": str(store.root), "deleted": entries, "bytes": freed})
    else:
        print(f"deleted {entries} entries ({freed / 1e9:.3f} GB) from {store.root}")
    return 0
