"""Blend options (generation.blend) against a trusted full prefill on a random-init tiny Llama.

``blend`` degenerates to the full prefill when it recomputes every token (ratio 1.0) and to
``independent`` when it recomputes none (ratio 0); partial ratios recompute exactly the share
asked for. The rankings and LegoLink that were measured and deleted are refused by name.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ragkit.config import build  # noqa: E402
from ragkit.errors import ConfigError  # noqa: E402
from ragkit.generation.blend import pick  # noqa: E402
from ragkit.generation.testing import SAMPLE_QUERY, SAMPLE_TEXTS, tiny_generator  # noqa: E402

TEXTS = list(SAMPLE_TEXTS)
QUERY = SAMPLE_QUERY
N = 12
ATOL = 1e-4
PATH = "ragkit.generation.transformers_backend:TransformersGenerator"


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


def test_blend_at_ratio_one_equals_full_prefill(gen):
    _check_equal_to_full(gen, blend_ratio=1.0)


def _blend_at(gen, layout, ratio: float):
    """``first_logits`` of ``blend`` at ``ratio`` (the fixture's default put back)."""
    gen.blend_ratio = ratio
    try:
        return gen.first_logits(layout, "blend")
    finally:
        gen.blend_ratio = 0.15


def test_blend_at_ratio_zero_is_independent(gen):
    layout = gen.layout(QUERY, TEXTS)
    logits, _, stats = _blend_at(gen, layout, 0.0)
    ind, _, _ = gen.first_logits(layout, "independent")
    assert stats["blend_recomputed"] == 0
    assert torch.equal(logits, ind)


def test_blend_recomputes_the_share_of_chunk_tokens_asked_for(gen):
    layout = gen.layout(QUERY, TEXTS)
    _, _, stats = _blend_at(gen, layout, 0.1)
    assert stats["blend_recomputed"] == round(0.1 * (layout.context_len - len(layout.prefix)))


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


def test_pick_gives_the_best_in_position_order():
    scores = torch.tensor([0.5, 9.0, 0.1, 3.0, 7.0])
    assert pick(scores, 2).tolist() == [1, 4]
    assert pick(scores, 10).tolist() == [0, 1, 2, 3, 4]


def test_decoding_past_the_buffer_capacity_grows_it():
    gen = tiny_generator(0, max_new_tokens=1)  # capacity: the prompt plus one token
    layout = gen.layout(QUERY, TEXTS[:2])
    ids, _ = gen.greedy_ids(layout, N, "none")
    roomy = tiny_generator(0, max_new_tokens=64)
    assert ids == roomy.greedy_ids(layout, N, "none")[0]


@pytest.mark.parametrize("bad, where", [
    ({"blend_select": "attention"}, "generator.blend_select"),
    ({"blend_ratio": 1.5}, "generator.blend_ratio"),
    ({"warm_batch": 0}, "generator.warm_batch"),
])
def test_bad_blend_config_names_the_field(bad, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        build("generator", {"name": PATH, **bad})


@pytest.mark.parametrize("removed", ["kv", "stored"])
def test_a_removed_blend_ranking_is_refused_with_the_one_left(removed):
    """``kv`` and ``stored`` were deleted (dominated by ``query`` on the 50-question frontier)."""
    with pytest.raises(ConfigError, match=rf"generator\.blend_select: expected one of 'query'; "
                                          rf"got '{removed}'"):
        build("generator", {"name": PATH, "blend_select": removed})


def test_legolink_was_removed_and_its_key_is_refused():
    with pytest.raises(ConfigError, match=r"generator\.blend_boundary: unknown key"):
        build("generator", {"name": PATH, "blend_boundary": 8})


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
    RoPE is exact, and blend at ratio 1.0 equals the full prefill."""
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
    _check_equal_to_full(gemma, blend_ratio=1.0)
