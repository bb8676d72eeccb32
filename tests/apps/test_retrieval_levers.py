"""benchmarks/retrieval_levers.py: its scoring matches the evaluation's and its cross-validation
chooses on the training corpora only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from ragkit.evaluation.data import EvalDataset, Question
from ragkit.types import Chunk, Document, Hit

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "retrieval_levers.py"


def load():
    spec = importlib.util.spec_from_file_location("retrieval_levers", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["retrieval_levers"] = module
    spec.loader.exec_module(module)
    return module


def test_scores_are_chromas_metrics_on_exact_spans():
    lev = load()
    doc = Document("c", "x" * 100)
    ds = EvalDataset(corpora={"c": doc},
                     questions=[Question("q", "c", ((10, 20),)), Question("r", "c", ((0, 10),))])
    answers = [[Hit(Chunk.of(doc, 0, 40, 0), 1.0)], [Hit(Chunk.of(doc, 50, 60, 1), 1.0)]]
    vals = lev.scores(ds, answers)
    assert np.allclose(vals["recall"], [1.0, 0.0])
    assert np.allclose(vals["iou"], [10 / 40, 0.0])  # covered / (retrieved + uncovered)
    assert np.allclose(vals["chars"], [40, 10])


def test_choose_maximises_the_weaker_side_on_the_masked_questions_only():
    lev = load()

    def row(recall, iou):
        return {"recall": np.array(recall), "precision": np.array(iou), "iou": np.array(iou),
                "chars": np.zeros(len(recall)), "hits": np.zeros(len(recall))}

    rows = {  # two questions: the first is "training", the second held out
        "high recall": row([0.99, 0.0], [0.06, 0.5]),
        "balanced": row([0.92, 0.0], [0.085, 0.0]),
        "high iou": row([0.70, 1.0], [0.15, 0.5]),
    }
    train = np.array([True, False])
    assert lev.choose(rows, train) == "balanced"  # min(0.92/0.9, 8.5/8) beats 6/8 and 70/90
    assert lev.choose(rows, ~train) == "high iou"
