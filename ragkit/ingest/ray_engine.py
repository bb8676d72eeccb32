"""The Ray engine: the ingestion work as a Ray Data pipeline on a local or existing Ray cluster.

    shard rows --map_batches(read_shards: tasks)--> document rows
               --map_batches(ChunkEmbed: actor pool of ``workers``)--> result rows --> the driver

Reading is a task stage with bounded concurrency (``readers``) that asks Ray for no CPU: it is
light next to embedding, and an actor pool holding every CPU would otherwise starve it (on a
2-CPU machine with 2 workers the pipeline would wait forever). ``ChunkEmbed`` runs as an actor
pool (one CPU each), so each worker builds its chunker and embedder, and loads the model, once.
Results stream back to the driver, which writes the ledger and the parts (or, for a Chroma
server, the workers write the chunks themselves and send back counts).

Ray is imported here only, when a run starts. The cluster is the one already initialised in this
process, else the one at ``address`` (or ``RAY_ADDRESS``; ``"auto"`` is one started with
``ray start`` on this machine), else a local one started for the run and shut down after it.
Every node must import ragkit (the same version) and read the input paths at the same place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragkit._deps import require
from ragkit.errors import ConfigError, RagkitError
from ragkit.ingest.work import COLUMNS, SHARD_INPUT, ChunkEmbed, read_shards
from ragkit.protocols import Closes

log = logging.getLogger(__name__)

# passed to the workers of a cluster this run starts, when set here: nothing may reach a hub
_PASS_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME",
             "TOKENIZERS_PARALLELISM", "SENTENCE_TRANSFORMERS_HOME")


@dataclass(kw_only=True)
class RayEngine:
    """Chunk and embed on Ray; see the module docstring.

    ``workers``: chunk-and-embed actors (default: the cluster's CPUs); ``readers``: read tasks
    at a time (default: ``workers``); ``read_batch``: shards per read task; ``address``: the
    cluster to connect to when this process has none (None: ``RAY_ADDRESS`` or a new local one);
    ``num_cpus``: CPUs of a local cluster this run starts (default: all).
    """

    workers: int | None = None
    readers: int | None = None
    read_batch: int = 8
    address: str | None = None
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        for name, low in (("workers", 1), ("readers", 1), ("read_batch", 1), ("num_cpus", 1)):
            value = getattr(self, name)
            if value is None and name != "read_batch":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"must be an int >= {low}" + (" or null" if name != "read_batch"
                                  else "") + f"; got {value!r}", path=name)
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise ConfigError(f"must be a Ray address such as 'auto' or 'ray://host:10001', or "
                              f"null; got {self.address!r}", path="address")

    def run(self, shards: Sequence[Mapping[str, Any]], job: Mapping[str, Any]) -> Iterator[dict]:
        """Result batches (see ``ragkit.ingest.work``) for the plan's ``shards`` rows."""
        ray = require("ray", extra="ray", component="engine 'ray'")
        require("ray.data", extra="ray", component="engine 'ray'")
        pa = require("pyarrow", extra="ray", component="engine 'ray'")
        started = self._connect(ray)
        ctx = ray.data.DataContext.get_current()
        saved = {k: getattr(ctx, k) for k in _QUIET}
        for key, value in _QUIET.items():
            setattr(ctx, key, value)
        ray_data_log = logging.getLogger("ray.data")  # Ray Data's per-run INFO banners
        level = ray_data_log.level
        ray_data_log.setLevel(max(level, logging.WARNING))
        from ray.util.debug import log_once

        log_once("ray_data_progress_manager_disabled")  # "progress bars disabled": we know
        it = None
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            workers = self.workers or max(1, cpus)
            if workers > cpus:  # each worker holds a CPU: more would wait for ever
                raise ConfigError(
                    f"{workers} workers need {workers} CPUs but the Ray cluster has {cpus}; use "
                    "at most that many (start the other nodes first on a growing cluster)",
                    path="engine.workers",
                )
            readers = self.readers or workers
            log.info("ray: %d shards, %d workers, %d readers on %d CPUs", len(shards), workers,
                     readers, cpus)
            packed = _packed_schema(pa)
            rows = [{k: s[k] for k in SHARD_INPUT} for s in shards]
            ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * readers)))
            ds = ds.map_batches(
                _read_packed, fn_kwargs={"loader": dict(job["loader"]), "schema": packed,
                                         "size": int(job["batch_size"])},
                batch_size=self.read_batch, batch_format="pyarrow", num_cpus=0,
                compute=ray.data.TaskPoolStrategy(size=readers),
            )
            ds = ds.map_batches(
                _PackedChunkEmbed, fn_constructor_kwargs={"job": dict(job), "schema": packed},
                batch_size=1, batch_format="pyarrow", num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=workers),
            )
            it = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1))
            for table in it:
                yield from _unpack(table)
        except RagkitError:
            raise
        except Exception as exc:  # a worker failed: RayTaskError, UserCodeException, ...
            cause = _user_error(exc)
            if isinstance(cause, RagkitError):
                raise cause from None
            raise RagkitError(f"the Ray run failed: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from exc
        finally:
            if isinstance(it, Closes):
                it.close()
            for key, value in saved.items():
                setattr(ctx, key, value)
            ray_data_log.setLevel(level)
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Initialise Ray unless this process already has; whether this call started it."""
        if ray.is_initialized():
            return False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline machines: no reporting
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING, "runtime_env":
                                  {"env_vars": env} if env else None}
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            kwargs["address"] = address
        elif self.num_cpus is not None:
            kwargs["num_cpus"] = self.num_cpus
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or "a new local cluster"
            raise RagkitError(f"cannot start or reach Ray at {where}: {_first_line(exc)}; start "
                              "a cluster with `ray start --head` and pass its address, e.g. "
                              "--ray-address auto") from None
        return True


# Ray Data settings for a run: no progress bars or execution banners of Ray's own (the CLI
# draws one bar from the driver's progress callbacks); errors raised as the worker raised them;
# and a tiny block size, so that every batch of documents (one packed row) is a block of its own.
# Ray hands whole blocks to workers: with the default (128 MiB) one block could hold a whole
# shard's documents and keep every other worker idle.
_QUIET = {"enable_progress_bars": False, "print_on_execution_start": False,
          "raise_original_map_exception": True, "target_max_block_size": 1}


def _packed_schema(pa: Any) -> Any:
    """One row per batch: each column of ``COLUMNS`` as a list of the batch's values."""
    types = {str: pa.string(), int: pa.int64(), bytes: pa.binary(), float: pa.float64()}
    return pa.schema([(name, pa.list_(types[type(default)])) for name, default in COLUMNS.items()])


def _pack(pa: Any, batch: Mapping[str, list], schema: Any) -> Any:
    return pa.Table.from_pydict({name: [batch[name]] for name in COLUMNS}, schema=schema)


def _unpack(table: Any) -> Iterator[dict[str, list]]:
    columns = table.to_pydict()
    for i in range(table.num_rows):
        yield {name: columns[name][i] for name in COLUMNS}


def _read_packed(table: Any, *, loader: Mapping[str, Any], schema: Any, size: int) -> Any:
    """Read the shards of ``table``; yield their documents ``size`` at a time, one batch per
    row (and, as the block size is tiny, per block: each one can go to any worker)."""
    import pyarrow as pa

    from ragkit.ingest.work import batch_of, rows_of

    rows = rows_of(read_shards(table.to_pydict(), loader=loader))
    for start in range(0, len(rows), size):
        yield _pack(pa, batch_of(rows[start : start + size]), schema)


class _PackedChunkEmbed:
    """``ChunkEmbed`` on packed batches (one per actor: the model loads once per worker)."""

    def __init__(self, job: Mapping[str, Any], schema: Any) -> None:
        self.work = ChunkEmbed(job)
        self.schema = schema

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa

        for batch in _unpack(table):
            yield _pack(pa, self.work(batch), self.schema)


def _user_error(exc: BaseException) -> BaseException | None:
    """The exception a worker's code raised, unwrapped from Ray's wrappers, if it is there."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, RagkitError):
            return exc
        cause = getattr(exc, "cause", None)  # RayTaskError keeps the original as .cause
        exc = cause if isinstance(cause, BaseException) else (exc.__cause__ or exc.__context__)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
