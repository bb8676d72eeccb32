"""Load documents from plain-text, Markdown and JSON Lines files.

    docs = load_documents("docs/")                          # every allowed file, recursively
    docs = load_documents(["faq.jsonl", "guide/"], text_field="body")

    problems: list[LoadProblem] = []
    docs = load_documents("docs/", on_error="skip", problems=problems)   # what was skipped, and why

What becomes a document
    ``.txt``, ``.md``, ``.markdown`` (and any other allowed suffix that is not JSON Lines): one
    document per file. Its id is the path relative to the folder passed (``"guide/intro.md"``,
    posix form), or the file name for a file passed directly; its metadata is
    ``{"source": <that relative path, or the path as passed>, "path": <absolute path>}``.

    ``.jsonl`` (and ``.ndjson``): one document per non-blank line, each a JSON object whose
    ``text_field`` holds the text. Its id is the ``id_field`` value (a string, or an integer turned
    into one) or else ``"<relative path>#<line>"`` (lines count from 1, blank ones included); its
    metadata is every other key of the object plus ``"source": "<relative path>#<line>"`` and
    ``"path"``, which win over keys of the same name.

    An empty file is a document with empty text (chunkers return ``[]`` for it), so every file in
    a folder is accounted for; an empty JSONL file has no lines and gives no documents.

Text is the file's bytes decoded strictly as UTF-8 with a leading BOM dropped. Newlines are left
alone (``\\r\\n`` stays ``\\r\\n``), so chunk offsets index the text exactly as the file holds it.

Folders are walked recursively in sorted order (by path components); hidden files and folders
(names starting with ``.``) are skipped, and suffixes match case-insensitively. A file passed by
name must have an allowed suffix, and a folder must hold at least one such file.

Errors
    ``on_error="raise"`` (default): every file is read and checked before anything is returned,
    and one ``LoadError`` (a ``DocumentError``) lists every problem, so a run never dies halfway
    through a folder. ``iter_documents`` keeps this promise by checking in a first pass and
    yielding in a second, so each file is read twice.

    ``on_error="skip"``: a bad file, folder or JSONL line is skipped with a logged warning and
    the rest is loaded. Pass ``problems=[]`` (either mode) to get what was wrong as
    ``LoadProblem`` values; ``LoadError.problems`` holds the same list.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from ragkit.errors import ConfigError, DocumentError
from ragkit.types import Document

__all__ = [
    "DEFAULT_SUFFIXES",
    "DocumentLoader",
    "LoadError",
    "LoadProblem",
    "SourceFile",
    "iter_documents",
    "load_documents",
    "path_list",
]

log = logging.getLogger(__name__)

DEFAULT_SUFFIXES = (".txt", ".md", ".markdown", ".jsonl")
JSONL_SUFFIXES = (".jsonl", ".ndjson")  # parsed line by line; any other allowed suffix is text
ON_ERROR = ("raise", "skip")

_SNIFF_BYTES = 8192  # a NUL byte in the first 8 KiB marks a file as binary
_BOM = b"\xef\xbb\xbf"
_SHOWN = 5  # problems spelled out in a LoadError message; the rest are counted

PathArg = Union[str, "os.PathLike[str]"]


# -- what went wrong ------------------------------------------------------------------------------


def _where(path: str, line: int | None) -> str:
    return path if line is None else f"{path} line {line}"


@dataclass(frozen=True)
class LoadProblem:
    """A file, folder or JSONL line that was not loaded, and why."""

    path: str  # as the user can find it: the path passed, or a folder passed joined with the file
    reason: str  # what is wrong and what is allowed
    line: int | None = None  # 1-based JSONL line; None for a whole file or folder

    def __str__(self) -> str:
        return f"{_where(self.path, self.line)}: {self.reason}"


class LoadError(DocumentError):
    """Raised under ``on_error="raise"``: ``problems`` holds every problem, the message a few."""

    def __init__(self, problems: Sequence[LoadProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__(_summary(self.problems))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the custom __init__
        return type(self), (self.problems,)


def _summary(problems: Sequence[LoadProblem]) -> str:
    if len(problems) == 1:
        return str(problems[0])
    n_paths = len({p.path for p in problems})
    shown = "; ".join(str(p) for p in problems[:_SHOWN])
    more = f"; ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    files = "file" if n_paths == 1 else "files"
    return (
        f"{len(problems)} problems in {n_paths} {files}, nothing was loaded: {shown}{more} "
        "(pass on_error='skip' to load the rest)"
    )


# -- the loader -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """A file to read, as ``DocumentLoader.files`` finds it; ``parse`` makes its documents."""

    path: Path  # to open, and (as str) to name in messages
    name: str  # base of the document id: path relative to its folder, or the file name
    source: str  # base of metadata["source"]: that relative path, or the path as passed


@dataclass(kw_only=True)
class DocumentLoader:
    """The settings of ``load_documents`` / ``iter_documents``; see the module docstring."""

    text_field: str = "text"  # JSONL key holding the text
    id_field: str = "id"  # JSONL key holding the id; lines without it get "<path>#<line>"
    on_error: str = "raise"  # "raise": check everything, then fail listing all; "skip": log, go on
    suffixes: Sequence[str] = DEFAULT_SUFFIXES  # a tuple or list, matched case-insensitively

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ConfigError(
                f"unknown {self.on_error!r}; choose one of {', '.join(ON_ERROR)}", path="on_error"
            )
        for name in ("text_field", "id_field"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"must be a non-empty string; got {value!r}", path=name)
        if self.text_field == self.id_field:
            raise ConfigError(
                f"text_field and id_field are both {self.text_field!r}; they must differ",
                path="id_field",
            )
        if isinstance(self.suffixes, str):
            raise ConfigError(
                f"got the string {self.suffixes!r}; pass a tuple such as ({self.suffixes!r},)",
                path="suffixes",
            )
        if not isinstance(self.suffixes, (tuple, list)):
            raise ConfigError(
                f"must be a tuple of suffixes like ('.md',); got {self.suffixes!r}",
                path="suffixes",
            )
        bad = [s for s in self.suffixes if not (isinstance(s, str) and len(s) > 1 and s[0] == ".")]
        if bad or not self.suffixes:
            raise ConfigError(
                f"each must be a string starting with '.', like '.md'; got {list(self.suffixes)!r}",
                path="suffixes",
            )

    # -- the two verbs ----------------------------------------------------------------------------

    def load(self, paths: PathArg | Iterable[PathArg], *,
             problems: list[LoadProblem] | None = None) -> list[Document]:
        """Every document under ``paths``, in order; one pass over the files."""
        targets = path_list(paths)
        docs: list[Document] = []
        found: list[LoadProblem] = []
        for item in self._scan(targets):
            (found if isinstance(item, LoadProblem) else docs).append(item)
        self._report(found, problems)
        return docs

    def iter(self, paths: PathArg | Iterable[PathArg], *,
             problems: list[LoadProblem] | None = None) -> Iterator[Document]:
        """The documents of ``load``, one at a time (arguments are checked now, files on first
        ``next``). Under ``on_error="raise"`` a first pass checks every file before any yield."""
        return self._iter(path_list(paths), problems)

    def _iter(self, targets: list[Path], problems: list[LoadProblem] | None) -> Iterator[Document]:
        if self.on_error == "raise":
            self._report([p for p in self._scan(targets) if isinstance(p, LoadProblem)], problems)
        for item in self._scan(targets):
            if isinstance(item, LoadProblem):  # "skip", or a file that changed since the check
                self._report([item], problems)
                continue
            yield item

    def _report(self, found: list[LoadProblem], problems: list[LoadProblem] | None) -> None:
        if problems is not None:
            problems.extend(found)
        if found and self.on_error == "raise":
            raise LoadError(found)
        for problem in found:
            log.warning("skipped %s", problem)

    # -- paths -> files -> documents --------------------------------------------------------------

    def _scan(self, targets: list[Path]) -> Iterator[Document | LoadProblem]:
        """Every document and problem under ``targets``, in order; a repeated id is a problem."""
        id_first_seen: dict[str, str] = {}  # document id -> where it was loaded from
        file_first_seen: dict[Path, str] = {}  # real path -> the file as first named
        for file in self.files(targets):
            if isinstance(file, LoadProblem):
                yield file
                continue
            real = file.path.resolve()
            if real in file_first_seen:
                yield LoadProblem(
                    str(file.path), f"is the same file as {file_first_seen[real]}; pass it once"
                )
                continue
            file_first_seen[real] = str(file.path)
            for item in self._read(file):
                if isinstance(item, LoadProblem):
                    yield item
                    continue
                doc, line = item
                where = _where(str(file.path), line)
                if doc.id in id_first_seen:
                    yield LoadProblem(
                        str(file.path),
                        f"duplicate document id {doc.id!r}, already used by "
                        f"{id_first_seen[doc.id]}; ids must be unique (pass a common parent "
                        f"folder so ids include the folder, or fix the {self.id_field!r} values)",
                        line,
                    )
                    continue
                id_first_seen[doc.id] = where
                yield doc

    def files(self, targets: list[Path]) -> Iterator[SourceFile | LoadProblem]:
        """The files to read under ``targets`` (files and folders, as ``path_list`` gives them),
        in a stable order, or a problem for a target that cannot be used."""
        for target in targets:
            shown = os.fspath(target)
            if target.is_dir():
                yield from self._walk(target, shown)
            elif target.is_file():
                if self._allowed(target.name):
                    yield SourceFile(target, target.name, shown)
                else:
                    suffix = f"suffix {target.suffix!r}" if target.suffix else "no suffix"
                    yield LoadProblem(
                        shown, f"has {suffix}; allowed: {', '.join(self.suffixes)} "
                        "(set suffixes= to load other files)"
                    )
            elif target.is_symlink():
                yield LoadProblem(shown, "is a broken symbolic link")
            elif target.exists():
                yield LoadProblem(shown, "is neither a file nor a folder")
            else:
                looked = "" if target.is_absolute() else f" (looked for {os.path.abspath(target)})"
                yield LoadProblem(shown, f"does not exist{looked}")

    def _walk(self, root: Path, shown: str) -> Iterator[SourceFile | LoadProblem]:
        found: list[Path] = []  # relative to root
        others: Counter[str] = Counter()  # suffixes of visible files not loaded
        errors: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                if self._allowed(name):
                    found.append(Path(dirpath, name).relative_to(root))
                else:
                    others[Path(name).suffix or "(no suffix)"] += 1
        for exc in errors:
            yield LoadProblem(exc.filename or shown, f"folder cannot be read: {exc.strerror}")
        if not found and not errors:
            if others:
                seen = ", ".join(f"{s} ({n})" for s, n in others.most_common(5))
                has = f"it has only {seen} (set suffixes= to load them)"
            else:
                has = "it has no files (names starting with '.' are skipped)"
            yield LoadProblem(
                shown, f"folder has no files ending in {', '.join(self.suffixes)}; {has}"
            )
        for rel in sorted(found, key=lambda r: r.parts):
            yield SourceFile(root / rel, rel.as_posix(), rel.as_posix())

    def _read(self, file: SourceFile) -> Iterator[tuple[Document, int | None] | LoadProblem]:
        """The file's documents, each with its JSONL line (None for a whole-file document)."""
        try:
            data = file.path.read_bytes()
        except OSError as exc:
            yield LoadProblem(str(file.path), f"cannot be read: {exc.strerror or exc}")
            return
        items = self.parse(file, data)
        del data  # parse drops the bytes once decoded: not held while the document is worked on
        yield from items

    def parse(self, file: SourceFile,
               data: bytes) -> Iterator[tuple[Document, int | None] | LoadProblem]:
        """The documents of ``file`` from its bytes ``data``, already read (distributed
        ingestion hashes them first), each with its JSONL line (None for a whole-file one)."""
        shown = str(file.path)
        try:
            text = _decode(data)
        except DocumentError as exc:
            yield LoadProblem(shown, str(exc))
            return
        data = None  # this frame's hold on the bytes (a 50 MB file's while it is chunked)
        absolute = os.path.abspath(file.path)
        if file.path.name.lower().endswith(JSONL_SUFFIXES):
            yield from self._jsonl(file, text, absolute)
        else:
            yield Document(file.name, text, {"source": file.source, "path": absolute}), None

    def _jsonl(self, file: SourceFile, text: str,
               absolute: str) -> Iterator[tuple[Document, int] | LoadProblem]:
        for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is JSON
            if not line.strip():
                continue
            try:
                doc = self._record(file, line, lineno, absolute)
            except DocumentError as exc:
                yield LoadProblem(str(file.path), str(exc), lineno)
                continue
            yield doc, lineno

    def _record(self, file: SourceFile, line: str, lineno: int, absolute: str) -> Document:
        """One JSONL line as a document; a ``DocumentError`` says what is wrong with it."""
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocumentError(
                f"is not valid JSON ({exc.msg} at column {exc.colno}); "
                "each line must be one JSON object"
            ) from None
        except RecursionError:
            raise DocumentError("is JSON nested too deeply to parse") from None
        if not isinstance(obj, dict):
            raise DocumentError(
                f"is a JSON {_kind(obj)}, not an object; each line must be an object like "
                f'{{"{self.text_field}": "..."}}'
            )
        if self.text_field not in obj:
            keys = ", ".join(repr(k) for k in list(obj)[:10]) + (", ..." if len(obj) > 10 else "")
            raise DocumentError(
                f"has no {self.text_field!r} field (its keys: {keys or 'none'}); "
                "set text_field to the key that holds the text"
            )
        text = obj[self.text_field]
        if not isinstance(text, str):
            raise DocumentError(f"field {self.text_field!r} must be a string; got {_kind(text)}")
        if self.id_field in obj:
            raw = obj[self.id_field]
            if isinstance(raw, bool) or not isinstance(raw, (str, int)) or raw == "":
                got = "an empty string" if raw == "" else _kind(raw)
                raise DocumentError(
                    f"field {self.id_field!r} must be a non-empty string or an integer; got {got}"
                )
            doc_id = str(raw)
        else:
            doc_id = f"{file.name}#{lineno}"
        metadata = {k: v for k, v in obj.items() if k not in (self.text_field, self.id_field)}
        metadata.update(source=f"{file.source}#{lineno}", path=absolute)
        return Document(doc_id, text, metadata)

    def _allowed(self, name: str) -> bool:
        return name.lower().endswith(tuple(s.lower() for s in self.suffixes))


def path_list(paths: PathArg | Iterable[PathArg]) -> list[Path]:
    """``paths`` (one path or an iterable of them) as a list of ``Path``; a ConfigError at
    ``paths`` for anything else."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    elif isinstance(paths, bytes) or not isinstance(paths, Iterable):
        raise ConfigError(
            f"must be a path or a list of paths (str or pathlib.Path); got {type(paths).__name__}",
            path="paths",
        )
    out = []
    for i, p in enumerate(paths):
        if not isinstance(p, (str, os.PathLike)) or p == "":
            raise ConfigError(
                f"each must be a non-empty str or pathlib.Path; got {p!r}", path=f"paths[{i}]"
            )
        out.append(Path(p))
    if not out:
        raise ConfigError("is empty; pass at least one file or folder", path="paths")
    return out


def _decode(data: bytes) -> str:
    """The file's text: strict UTF-8, a leading BOM dropped, newlines untouched."""
    nul = data.find(b"\x00", 0, _SNIFF_BYTES)
    if nul != -1:
        hint = (
            "it looks like UTF-16; convert it to UTF-8"
            if data[:2] in (b"\xff\xfe", b"\xfe\xff")
            else "only UTF-8 text files can be loaded"
        )
        raise DocumentError(f"is binary (NUL byte at byte offset {nul}); {hint}")
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return str(memoryview(data)[skip:], "utf-8")
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        line = data.count(b"\n", 0, at) + 1
        raise DocumentError(
            f"is not valid UTF-8 ({exc.reason}: byte 0x{data[at]:02X} at byte offset {at}, "
            f"line {line}); convert it to UTF-8, e.g. iconv -f <its encoding> -t UTF-8"
        ) from None


def _kind(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


# -- the functions most callers use ---------------------------------------------------------------


def load_documents(
    paths: PathArg | Iterable[PathArg],
    *,
    text_field: str = "text",
    id_field: str = "id",
    on_error: str = "raise",
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,  # tuple or list
    problems: list[LoadProblem] | None = None,
) -> list[Document]:
    """The documents in ``paths`` (files and folders), in order; see the module docstring.

    Raises ``LoadError`` listing every problem (``on_error="raise"``), or skips and logs them
    (``"skip"``); either way they are appended to ``problems`` when it is given.
    """
    loader = DocumentLoader(
        text_field=text_field, id_field=id_field, on_error=on_error, suffixes=suffixes
    )
    return loader.load(paths, problems=problems)


def iter_documents(
    paths: PathArg | Iterable[PathArg],
    *,
    text_field: str = "text",
    id_field: str = "id",
    on_error: str = "raise",
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,  # tuple or list
    problems: list[LoadProblem] | None = None,
) -> Iterator[Document]:
    """``load_documents`` one document at a time. Arguments are checked on the call; under
    ``on_error="raise"`` every file is checked on the first ``next`` (a first pass over the
    files), so the ``LoadError`` comes before any document."""
    loader = DocumentLoader(
        text_field=text_field, id_field=id_field, on_error=on_error, suffixes=suffixes
    )
    return loader.iter(paths, problems=problems)
