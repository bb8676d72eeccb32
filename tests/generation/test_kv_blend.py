"""Blend options (generation.blend) against a trusted full prefill on a random-init tiny Llama.

Every option degenerates to the full prefill when it recomputes every token: LegoLink with k
covering every chunk token, each selection rule at ratio 1.0.
Partial settings record their drift (no equality: they are approximations).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ragkit.config import build  # noqa: E402
from ragkit.errors import ConfigError  # noqa: E402
from ragkit.generation.blend import boundary_positions, pick  # noqa: E402
from ragkit.generation.testing import SAMPLE_QUERY, SAMPLE_TEXTS, tiny_generator  # noqa: E402

TEXTS = list(SAMPLE_TEXTS)
QUERY = SAMPLE_QUERY
N = 12
ATOL = 1e-4
PATH = "ragkit.generation.transformers_backend:TransformersGenerator"


def kl(p_logits, q_logits) -> float:
    p, q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return float((p.exp() * (p - q)).sum())


@pytest.fixture(scope="module")
def gen():
    return tiny_generator(2, layers=4, kv_reuse="blend")


def _check_equal_to_full(gen, **settings):
    layout = gen.layout(QUERY, TEXTS)
    ref_ids, ref_logits = gen.greedy_ids(layout, N, "none")
    old = {k: getattr(gen, k) for k in settings}
    try:
        for k, v in settings.items():
            setattr(gen, k, v)
        ids, logits = gen.greedy_ids(layout, N, "blend")
        _, _, stats = gen.first_logits(layout, "blend")
    finally:
        for k, v in old.items():
            setattr(gen, k, v)
    assert torch.allclose(logits, ref_logits, atol=ATOL, rtol=1e-4), settings
    assert ids == ref_ids, settings
    first = layout.chunk_starts()[1]
    assert stats["blend_recomputed"] == layout.context_len - first  # every token of chunks 2..n


def test_legolink_with_k_covering_every_token_equals_full_prefill(gen):
    _check_equal_to_full(gen, blend_ratio=0.0, blend_boundary=10_000)


@pytest.mark.parametrize("select", ["kv", "stored"])
def test_every_selection_at_ratio_one_equals_full_prefill(gen, select):
    _check_equal_to_full(gen, blend_ratio=1.0, blend_select=select)


def test_boundary_and_selection_counts(gen):
    layout = gen.layout(QUERY, TEXTS)
    starts, lengths = layout.chunk_starts(), [len(c) for c in layout.chunks]
    must = boundary_positions(starts[1:], lengths[1:], 3)
    assert must.tolist() == [p for s in starts[1:] for p in range(s, s + 3)]
    gen.blend_ratio, gen.blend_boundary = 0.0, 3
    try:
        _, _, stats = gen.first_logits(layout, "blend")
        assert stats["blend_recomputed"] == 3 * (len(TEXTS) - 1)
        gen.blend_ratio = 0.1
        for select in ("kv", "stored"):
            gen.blend_select = select
            _, _, stats = gen.first_logits(layout, "blend")
            n_select = round(0.1 * (layout.context_len - len(layout.prefix)))
            assert stats["blend_recomputed"] == 3 * (len(TEXTS) - 1) + n_select, select
    finally:
        gen.blend_ratio, gen.blend_boundary, gen.blend_select = 0.15, 0, "kv"


def test_pick_keeps_the_must_rows_and_the_best_others():
    scores = torch.tensor([0.5, 9.0, 0.1, 3.0, 7.0])
    assert pick(scores, 2, torch.tensor([2])).tolist() == [1, 2, 4]
    assert pick(scores, 10, torch.tensor([0])).tolist() == [0, 1, 2, 3, 4]


def test_stored_scores_are_kept_with_the_chunk_entries():
    gen = tiny_generator(0, kv_reuse="blend", blend_select="stored")
    report = gen.warm(TEXTS)
    assert report["computed"] == 4
    from ragkit.generation import context

    layout = gen.layout(QUERY, TEXTS)
    for ids in layout.chunks:
        score = gen.kv_store.get(context.chunk_key(gen, layout.prefix, ids, meta=True))
        assert score is not None and score.shape == (len(ids),)
        assert bool(((score >= 0) & (score <= 1)).all())
    assert gen.warm(TEXTS)["cached"] == 4


def test_decoding_past_the_buffer_capacity_grows_it():
    gen = tiny_generator(0, max_new_tokens=1)  # capacity: the prompt plus one token
    layout = gen.layout(QUERY, TEXTS[:2])
    ids, _ = gen.greedy_ids(layout, N, "none")
    roomy = tiny_generator(0, max_new_tokens=64)
    assert ids == roomy.greedy_ids(layout, N, "none")[0]


def test_independent_plus_legolink_drift_is_recorded(gen, record_property):
    layout = gen.layout(QUERY, TEXTS)
    _, ref = gen.greedy_ids(layout, N, "none")
    _, ind = gen.greedy_ids(layout, N, "independent")
    gen.blend_ratio, gen.blend_boundary = 0.0, 4
    try:
        _, lego = gen.greedy_ids(layout, N, "blend")
    finally:
        gen.blend_ratio, gen.blend_boundary = 0.15, 0
    record_property("kl_independent", kl(ref, ind))
    record_property("kl_legolink_4", kl(ref, lego))
    assert kl(ref, lego) == kl(ref, lego) and kl(ref, lego) >= -1e-6  # finite


@pytest.mark.parametrize("bad, where", [
    ({"blend_select": "attention"}, "generator.blend_select"),
    ({"blend_boundary": -1}, "generator.blend_boundary"),
    ({"warm_batch": 0}, "generator.warm_batch"),
])
def test_bad_blend_config_names_the_field(bad, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        build("generator", {"name": PATH, **bad})
