"""Evaluation datasets: corpora plus questions whose answers are character spans of a corpus.

A dataset folder holds ``corpora/`` (``.md``/``.txt`` files; a corpus id is the file's stem) and
either ``questions.csv`` (columns ``question``, ``references`` as a JSON list of
``{content, start_index, end_index}``, ``corpus_id``) or ``questions.jsonl`` (one object a line
with the same keys, ``references`` a list). This is the layout of Chroma's chunking benchmark.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragkit.errors import DocumentError
from ragkit.types import Document

Span = tuple[int, int]


@dataclass(frozen=True)
class Question:
    text: str
    corpus_id: str
    references: tuple[Span, ...]  # half-open char spans into the corpus text


@dataclass(frozen=True)
class EvalDataset:
    corpora: dict[str, Document]
    questions: tuple[Question, ...]
    name: str = ""

    def subset(self, n: int) -> EvalDataset:
        """The first ``n`` questions of every corpus (for smoke runs and notebooks in CI)."""
        seen: dict[str, int] = {}
        keep = []
        for q in self.questions:
            if seen.get(q.corpus_id, 0) < n:
                seen[q.corpus_id] = seen.get(q.corpus_id, 0) + 1
                keep.append(q)
        return EvalDataset(self.corpora, tuple(keep), self.name)

    def only(self, corpora: list[str] | tuple[str, ...]) -> EvalDataset:
        """Only the named corpora and their questions (an unknown name is an error)."""
        unknown = [c for c in corpora if c not in self.corpora]
        if unknown:
            raise DocumentError(
                f"unknown corpus {unknown[0]!r}; the dataset has {', '.join(self.corpora)}"
            )
        keep = set(corpora)
        return EvalDataset({c: d for c, d in self.corpora.items() if c in keep},
                           tuple(q for q in self.questions if q.corpus_id in keep), self.name)


def load_dataset(folder: str | Path) -> EvalDataset:
    """Load a dataset folder (see the module docstring); every reference is checked against its
    corpus, and any mismatch is an error naming the question's row and the span."""
    folder = Path(folder)
    corpora_dir = folder / "corpora"
    if not corpora_dir.is_dir():
        raise DocumentError(f"{str(folder)!r}: no corpora/ folder (expected corpora/*.md or *.txt)")
    corpora: dict[str, Document] = {}
    for path in sorted(corpora_dir.iterdir()):
        if path.suffix.lower() not in (".md", ".txt"):
            continue
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentError(f"{path}: not valid UTF-8 at byte {exc.start}") from None
        corpora[path.stem] = Document(path.stem, text, {"source": path.name})
    if not corpora:
        raise DocumentError(f"{corpora_dir}: no .md or .txt corpus files")
    if (folder / "questions.csv").is_file():
        rows = _csv_rows(folder / "questions.csv")
    elif (folder / "questions.jsonl").is_file():
        rows = _jsonl_rows(folder / "questions.jsonl")
    else:
        raise DocumentError(f"{str(folder)!r}: no questions.csv or questions.jsonl")
    questions = tuple(_question(where, row, corpora) for where, row in rows)
    if not questions:
        raise DocumentError(f"{str(folder)!r}: the questions file has no questions")
    return EvalDataset(corpora, questions, folder.name)


def _csv_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"question", "references", "corpus_id"} - set(reader.fieldnames or ())
        if missing:
            raise DocumentError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        rows = []
        for i, row in enumerate(reader, start=2):
            try:
                row["references"] = json.loads(row["references"])
            except json.JSONDecodeError as exc:
                raise DocumentError(f"{path} line {i}: references is not JSON ({exc.msg})") from None
            rows.append((f"{path} line {i}", row))
        return rows


def _jsonl_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append((f"{path} line {i}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DocumentError(f"{path} line {i}: not valid JSON ({exc.msg})") from None
    return rows


def _question(where: str, row: dict[str, Any], corpora: dict[str, Document]) -> Question:
    corpus_id = row.get("corpus_id")
    if corpus_id not in corpora:
        raise DocumentError(
            f"{where}: corpus_id {corpus_id!r} is not a corpus; have {', '.join(corpora)}"
        )
    text = corpora[corpus_id].text
    refs = row.get("references")
    if not isinstance(refs, list) or not refs:
        raise DocumentError(f"{where}: references must be a non-empty list; got {refs!r}")
    spans = []
    for ref in refs:
        try:
            s, e = int(ref["start_index"]), int(ref["end_index"])
        except (KeyError, TypeError, ValueError):
            raise DocumentError(
                f"{where}: each reference needs integer start_index and end_index; got {ref!r}"
            ) from None
        if not 0 <= s < e <= len(text):
            raise DocumentError(f"{where}: reference span [{s}, {e}) is outside {corpus_id!r}")
        if "content" in ref and text[s:e] != ref["content"]:
            raise DocumentError(
                f"{where}: reference [{s}, {e}) of {corpus_id!r} reads {text[s:e][:40]!r}, "
                f"not its content {str(ref['content'])[:40]!r}"
            )
        spans.append((s, e))
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DocumentError(f"{where}: question must be a non-empty string")
    return Question(question, corpus_id, tuple(spans))
