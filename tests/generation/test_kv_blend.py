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


@pytest.mark.parametrize("select", ["kv", "stored", "query"])
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
        for select in ("kv", "stored", "query"):
            gen.blend_select = select
            _, _, stats = gen.first_logits(layout, "blend")
            n_select = round(0.1 * (layout.context_len - len(layout.prefix)))
            assert stats["blend_recomputed"] == 3 * (len(TEXTS) - 1) + n_select, select
    finally:
        gen.blend_ratio, gen.blend_boundary, gen.blend_select = 0.15, 0, "kv"


def test_query_attention_is_the_models_own_attention_of_the_question():
    """On the exact (full-prefill) KV, the question's attention mass over chunks 2..n computed by
    hand equals the one the model's eager attention reports, summed over layers and heads."""
    from ragkit.generation import context
    from ragkit.generation.blend import query_attention
    from ragkit.generation.testing import smollm2_tokenizer, tiny_llama
    from ragkit.generation.transformers_backend import TransformersGenerator

    lm = tiny_llama(3, layers=3, attn="eager")
    eager = TransformersGenerator.from_model(lm, smollm2_tokenizer(), kv_store=None)
    layout = eager.layout(QUERY, TEXTS)
    first, total, end = layout.chunk_starts()[1], layout.context_len, len(layout.ids)
    with torch.inference_mode():
        out = lm(torch.tensor([layout.ids]), output_attentions=True, use_cache=True)
        want = sum(a[0, :, total:end, first:total].sum((0, 1)) for a in out.attentions)
        kv = context.kv_of(out.past_key_values)
        kv[:, :, :, total:] = 0  # the question's KV is recomputed by query_attention itself
        got = query_attention(lm, kv, list(layout.question), first, total)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


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
    ({"blend_ratio": 1.5}, "generator.blend_ratio"),
    ({"blend_boundary": -1}, "generator.blend_boundary"),
    ({"warm_batch": 0}, "generator.warm_batch"),
])
def test_bad_blend_config_names_the_field(bad, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        build("generator", {"name": PATH, **bad})


@pytest.fixture(scope="module")
def gemma():
    from ragkit.generation.kv_store import TieredKVStore
    from ragkit.generation.testing import smollm2_tokenizer, tiny_gemma3
    from ragkit.generation.transformers_backend import TransformersGenerator

    return TransformersGenerator.from_model(tiny_gemma3(0), smollm2_tokenizer(),
                                            kv_store=TieredKVStore(disk=False), kv_reuse="blend")


def test_gemma3_sliding_windows_and_per_layer_rope(gemma):
    """Gemma 3 (q/k norms, sandwich norms, sliding-window layers shorter than the prompt, a RoPE
    base per layer type): the preallocated cache equals a plain forward, a lone chunk moved by
    RoPE is exact, and every blend selection at ratio 1.0 equals the full prefill."""
    layout = gemma.layout(QUERY, TEXTS)
    assert len(layout.ids) > 2 * gemma.lm.config.sliding_window
    with torch.inference_mode():
        plain = gemma.lm(torch.tensor([layout.ids])).logits[0, -1]
        one = gemma.layout(QUERY, TEXTS[:1])
        plain_one = gemma.lm(torch.tensor([one.ids])).logits[0, -1]
    none, _, _ = gemma.first_logits(layout, "none")
    assert torch.allclose(none, plain, atol=ATOL)
    alone, _, _ = gemma.first_logits(one, "independent")
    assert torch.allclose(alone, plain_one, atol=ATOL)
    for select in ("kv", "stored", "query"):
        _check_equal_to_full(gemma, blend_ratio=1.0, blend_select=select)
    _check_equal_to_full(gemma, blend_ratio=0.0, blend_boundary=10_000)
