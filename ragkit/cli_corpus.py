"""The ``ragkit`` commands over a corpus and an index: ``chunk``, ``index``, ``docs list/delete``,
``query`` and ``eval chunking/retrieval``.

Each takes the parsed arguments and returns an exit code; errors propagate to ``ragkit.cli.main``,
which turns them into messages. Nothing here generates an answer (``ragkit.cli_generate``).
"""

from __future__ import annotations

import argparse
import array
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ragkit.cli_support import (
    DEFAULT_NAMES,
    args_config,
    args_documents,
    describe_sizes,
    print_json,
    source_dict,
    stream_documents,
    utf8_len,
    tqdm_bar,
)
from ragkit.errors import ConfigError
from ragkit.protocols import CountsInTokenizer, NamesTokenizer, provides


def cmd_chunk(args: argparse.Namespace) -> int:
    from ragkit import progress as component_progress
    from ragkit.chunkers.base import check_workers, cpu_count, iter_chunk_many
    from ragkit.config import build

    workers = cpu_count() if args.workers is None else args.workers
    check_workers(workers, path="--workers")
    if args.out is not None and args.format != "html":
        raise ConfigError(f"only with --format html; got --format {args.format}", path="--out")
    if args.json and args.format != "stats":
        raise ConfigError(f"prints the statistics (--format stats); got --format {args.format}",
                          path="--json")
    config = args_config(args)
    if config:  # the whole file is checked, as by every other command (typos, unknown names)
        from ragkit.pipeline import RAGPipeline

        chunker = RAGPipeline.from_config(config).chunker
    else:
        chunker = build("chunker", DEFAULT_NAMES["chunker"], path="chunker")
    if args.format == "html":  # the page draws every document: it needs them all
        from ragkit.view import Chunks

        docs: Iterable[Any] = args_documents(args, chunker)
        view = Chunks(docs=docs)
        input_bytes = sum(utf8_len(d.text) for d in docs)
    else:  # streamed: one document (or one worker batch) in memory at a time
        docs, input_bytes = stream_documents(args, chunker)
    # every chunk's size, for the statistics: 8 bytes each (a list of ints held ~85 MB for the
    # 1.2 M chunks of a 1 GB folder)
    sizes = array.array("q")
    chars = array.array("q")
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
            pending.append(utf8_len(d.text))
            yield d

    def listen(fraction: float) -> None:  # the chunker's word on the document in hand
        if len(pending) > n_docs:  # in this process, the document after the n_docs done
            bar.update(int(total_bytes + fraction * pending[n_docs]) - bar.n)

    with component_progress.listening(listen if bar is not None else None):
        # lazy: a document's chunks are made as they are written out (its spans first), so a
        # huge one's chunks are never all held (~115 MB of texts for a 50 MB file)
        for chunks in iter_chunk_many(chunker, sized(docs), workers=workers,
                                      lazy=args.format != "html"):
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
        secs = max(seconds, 1e-9)
        if args.json:
            def summary(values: list[int]) -> dict[str, Any]:
                return {"total": sum(values), "min": min(values, default=0),
                        "mean": sum(values) / len(values) if values else 0.0,
                        "max": max(values, default=0)}

            print(json.dumps({"chunker": spec, "documents": n_docs, "bytes": total_bytes,
                              "chunks": len(sizes), "tokens": summary(sizes),
                              "chars": summary(chars), "seconds": seconds,
                              "chunks_per_s": len(sizes) / secs,
                              "mb_per_s": total_bytes / 1e6 / secs}, ensure_ascii=False))
            return 0
        print(f"chunker    {json.dumps(spec, ensure_ascii=False)}")
        print(f"documents  {n_docs}  ({total_bytes / 1e6:.2f} MB)")
        print(f"chunks     {len(sizes)}")
        if sizes:
            tok_unit = chunker.resolved_tokenizer if provides(chunker, CountsInTokenizer) else None
            if not tok_unit:
                tok_unit = chunker.tokenizer if provides(chunker, NamesTokenizer) else "tokens"
            print(f"tokens     total {sum(sizes)}  ({tok_unit})")
            print("size       " + describe_sizes(sizes, "tokens"))
            print("chars      " + describe_sizes(chars, "chars"))
        print(f"time       {seconds:.2f} s  ({len(sizes) / secs:.1f} chunks/s, "
              f"{total_bytes / 1e6 / secs:.2f} MB/s)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from ragkit.ingest import ingest
    from ragkit.pipeline import CONFIG_FILE, RAGPipeline

    config = args_config(args)
    if args.mode in ("append", "sync") and not args.config and (Path(args.out) /
                                                                 CONFIG_FILE).is_file():
        from ragkit.config import apply_overrides, load_yaml

        config = apply_overrides(load_yaml(Path(args.out) / CONFIG_FILE), args.override)
    pipe = RAGPipeline.from_config(config)  # validates everything before any work
    engine: dict[str, Any] = {"name": args.engine, "workers": args.workers}
    if args.engine == "ray":
        engine |= {"address": args.ray_address}
    elif args.ray_address is not None:
        raise ConfigError("only with --engine ray", path="--ray-address")
    if args.workers is not None:
        from ragkit.chunkers.base import check_workers

        check_workers(args.workers, path="--workers")
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
        print_json(data)
    else:
        print(report.summary())
    return 0


def cmd_docs_list(args: argparse.Namespace) -> int:
    from ragkit.pipeline import RAGPipeline

    with RAGPipeline.load(args.index) as pipe:
        docs = pipe.documents()
    if args.json:
        print_json([d.to_dict() for d in docs])
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
        return delete_docs(pipe, args)


def delete_docs(pipe: Any, args: argparse.Namespace) -> int:
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
        print_json({"deleted": ids, "chunks": removed})
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
        print_json({"query": args.question, "sources": [source_dict(h) for h in hits],
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

    data = args_config(args)
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
    progress = None if args.no_progress else tqdm_bar
    results = evaluate_chunking(dataset, config, cache=cache, progress=progress)
    paths = report.write(results, config, args.out, dataset, with_plot=not args.no_plot)
    notes = sys.stderr if args.json else sys.stdout  # --json: stdout holds results.json only
    print(paths["json"].read_text(encoding="utf-8") if args.json
          else report.markdown(results, config), end="\n" if not args.json else "")
    if cache is not None:
        print(f"embedding cache: {cache.hits} hits, {cache.misses} computed ({cache.path})",
              file=notes)
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=notes)
    return 0


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ragkit.config import build_dataclass
    from ragkit.evaluation.data import load_dataset
    from ragkit.evaluation.retrieval import RetrievalEval, evaluate_retrieval, markdown

    if not args.config:
        raise ConfigError("needs --config FILE with `paths:` (label -> pipeline config) and `ks:`",
                          path="--config")
    config = build_dataclass(RetrievalEval, args_config(args))  # builds every path before any work
    if args.subset is not None and args.subset < 1:
        raise ConfigError(f"must be an int >= 1; got {args.subset}", path="--subset")
    dataset = load_dataset(args.data)
    if args.subset:
        dataset = dataset.subset(args.subset)
    results = evaluate_retrieval(dataset, config, progress=None if args.no_progress else tqdm_bar)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, config)
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({
        "dataset": dataset.name, "ks": list(config.ks),
        "questions": [{"question": q.text, "corpus_id": q.corpus_id} for q in dataset.questions],
        "runs": [asdict(r) for r in results]}, indent=1) + "\n", encoding="utf-8")
    if args.json:  # stdout holds results.json only
        print((out / "results.json").read_text(encoding="utf-8"), end="")
    else:
        print(table)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}",
          file=sys.stderr if args.json else sys.stdout)
    return 0
