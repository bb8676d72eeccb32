"""What a run has finished, kept on disk next to the index so a killed run resumes where it was.

``OUT/ingest/`` holds::

    run.json       the pipeline the shards were processed with (a resumed run must use the same)
    ledger.jsonl   one line per finished shard: its key, sha256, counts, problems and parts
    parts/         the chunks and vectors of finished shards, one or more .npz files per shard
    lock           the pid of the run writing here

A shard is finished once every one of its documents is in its parts, written and ``fsync``ed
(the part file, then its folder after the rename): only then is its line appended, with a single ``write`` + ``fsync``. A
run killed halfway leaves at most a torn last line, which ``Ledger`` ignores, and parts no line
names, which the next run deletes. Parts are written to a temporary name and renamed, so a part a
line names is always whole. The index itself is rebuilt from the parts of the run's shards at the
end of every run: a chunk id appears once however many times its shard was started.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ragkit.errors import IndexMismatchError, RagkitError

FORMAT = "ragkit.ingest"
VERSION = 1
DIR = "ingest"


class Ledger:
    """The finished shards of the ingestion state folder ``root`` (``OUT/ingest``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.parts = self.root / "parts"
        self.file = self.root / "ledger.jsonl"
        self.entries: dict[str, dict[str, Any]] = {}  # shard key -> its last line
        self.torn = 0  # lines that did not parse (a run killed while appending)

    # -- the run's identity ---------------------------------------------------------------------

    def open(self, pipeline: Mapping[str, Any], *, restart: bool = False) -> None:
        """Create the folder, or check that the run recorded here used ``pipeline`` (the
        chunker, embedder and index specs); ``restart`` forgets every finished shard first."""
        if restart:  # everything but the lock this run holds
            shutil.rmtree(self.parts, ignore_errors=True)
            for name in ("run.json", "ledger.jsonl"):
                (self.root / name).unlink(missing_ok=True)
        self.parts.mkdir(parents=True, exist_ok=True)
        run = self.root / "run.json"
        want = {"format": FORMAT, "version": VERSION, "pipeline": dict(pipeline)}
        if run.exists():
            try:
                have = json.loads(run.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise RagkitError(f"{run}: not valid JSON ({exc}); delete {self.root} to start "
                                  "over") from None
            if have.get("format") != FORMAT or have.get("version") != VERSION:
                raise RagkitError(f"{run}: not a {FORMAT} v{VERSION} run file; delete "
                                  f"{self.root} to start over")
            for key in sorted(set(have["pipeline"]) | set(want["pipeline"])):
                if have["pipeline"].get(key) != want["pipeline"].get(key):
                    raise IndexMismatchError(
                        f"{self.root.parent}: its finished shards were made with {key} "
                        f"{have['pipeline'].get(key)}, but this run uses "
                        f"{want['pipeline'].get(key)}; use the same {key}, another output "
                        "folder, or restart (CLI: --restart) to redo every shard"
                    )
        else:
            _write_atomic(run, json.dumps(want, indent=2) + "\n")
        self.entries = self.load_entries()

    def made_with(self, pipeline: Mapping[str, Any]) -> bool:
        """Whether the shards recorded here were processed with ``pipeline`` (so another run
        with it may keep them); ``False`` if there is no readable run file."""
        try:
            have = json.loads((self.root / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (have.get("format"), have.get("version"), have.get("pipeline")) == (
            FORMAT, VERSION, dict(pipeline))

    def load_entries(self) -> dict[str, dict[str, Any]]:
        """The finished shards on disk now: shard key -> its last line."""
        return dict(self._read())

    def _read(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if not self.file.exists():
            return
        data = self.file.read_bytes()
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                yield entry["shard"], entry
            except (ValueError, KeyError, TypeError):
                self.torn += 1

    # -- finished shards ------------------------------------------------------------------------

    def finish(self, entry: dict[str, Any]) -> None:
        """Record a finished shard (one append, flushed to disk before returning)."""
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with open(self.file, "ab") as f:
            new = not f.tell()
            if not new and not _ends_with_newline(self.file):
                f.write(b"\n")  # after a torn line: start a fresh one
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        if new:  # the file's own entry in its folder
            fsync_dir(self.root)
        self.entries[entry["shard"]] = entry

    def part_path(self, name: str) -> Path:
        return self.parts / f"{name}.npz"

    def write_part(self, name: str, records: list[str], pos: list[int], vecs: Any) -> None:
        """Write a part: chunk records (JSON strings, or blocks of JSON lines), their documents'
        positions in the shard and their vectors ``(n, d)``; renamed into place once complete
        and on disk (the file ``fsync``ed before the rename, the folder after it), so that a
        ledger line written after this names a part that survives a power cut, not only a
        killed process."""
        import numpy as np

        blob = np.frombuffer(("\n".join(records)).encode("utf-8"), dtype=np.uint8)
        tmp = self.parts / f".{name}.tmp.npz"
        with open(tmp, "wb") as f:
            np.savez(f, chunks=blob, pos=np.asarray(pos, dtype=np.int64),
                     vecs=np.ascontiguousarray(vecs, dtype=np.float32))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.part_path(name))
        fsync_dir(self.parts)

    def read_part(self, name: str) -> tuple[list[dict[str, Any]], Any, Any]:
        """A part's chunk records, positions ``(n,)`` and vectors ``(n, d)``."""
        import numpy as np

        file = self.part_path(name)
        try:
            with np.load(file, allow_pickle=False) as z:
                text = z["chunks"].tobytes().decode("utf-8")
                pos, vecs = z["pos"], z["vecs"]
        except (OSError, ValueError, KeyError) as exc:
            raise RagkitError(
                f"{file}: a finished shard's part cannot be read ({exc}); restart the run "
                "(CLI: --restart) to redo every shard"
            ) from None
        records = [json.loads(line) for line in text.split("\n")] if text else []
        if not len(records) == len(pos) == len(vecs):
            raise RagkitError(f"{file}: {len(records)} chunks but {len(pos)} positions and "
                              f"{len(vecs)} vectors; restart the run (CLI: --restart)")
        return records, pos, vecs

    def drop_orphans(self) -> int:
        """Delete the parts no finished shard names (left by a killed run); how many."""
        named = {p for e in self.entries.values() for p in e.get("parts", ())}
        dropped = 0
        for file in self.parts.iterdir():
            stem = file.name[: -len(".npz")] if file.name.endswith(".npz") else None
            if stem is None or stem not in named:
                file.unlink()
                dropped += 1
        return dropped

    # -- one run at a time ----------------------------------------------------------------------

    def lock(self) -> None:
        """Take the run lock, or fail naming the live run that holds it; a lock left by a run
        that died (its pid is gone) is taken over."""
        file = self.root / "lock"
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    held = json.loads(file.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    held = {}
                if held.get("host") == me["host"] and not _alive(held.get("pid")):
                    file.unlink(missing_ok=True)
                    continue
                raise RagkitError(
                    f"{self.root.parent}: another ingestion run (pid {held.get('pid')} on "
                    f"{held.get('host')}) is writing here; wait for it, or delete {file} if "
                    "that run is gone"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return
        raise RagkitError(f"{file}: cannot take the run lock")

    def unlock(self) -> None:
        (self.root / "lock").unlink(missing_ok=True)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_dir(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename into it) durable, where the OS allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_with_newline(file: Path) -> bool:
    with open(file, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _write_atomic(file: Path, text: str) -> None:
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, file)
