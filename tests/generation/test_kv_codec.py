"""Chunk-KV codecs (generation.kv_codec): round trips, sizes, and the answers they give.

A codec stores a chunk KV ``(layers, 2, kv_heads, seq, head_dim)`` in fewer bytes; decoding must
give back the shape, stay within the quantization step, and an ``independent`` answer read from
coded entries must stay close to the one from float32 entries (tiny random Llama).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ragkit.config import build  # noqa: E402
from ragkit.errors import ConfigError  # noqa: E402
from ragkit.generation.kv_codec import CODECS, bytes_per_token, decode, encode  # noqa: E402
from ragkit.generation.testing import SAMPLE_QUERY, SAMPLE_TEXTS, tiny_generator  # noqa: E402

SHAPE = (3, 2, 2, 37, 16)  # layers, k/v, kv_heads, seq, head_dim


@pytest.fixture(scope="module")
def kv():
    torch.manual_seed(0)
    x = torch.randn(SHAPE)
    x[:, 0, :, :, 3] *= 20  # an outlier key channel, as real keys have
    return x


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_keeps_shape_and_stays_within_the_step(kv, codec):
    stored = encode(kv, codec)
    back = decode(stored, codec, SHAPE)
    assert back.shape == SHAPE and back.dtype == torch.float32
    err = (back - kv).abs()
    if codec == "float32":
        assert torch.equal(back, kv)
    elif codec in ("float16", "bfloat16"):
        assert float((err / kv.abs().clamp_min(1e-3)).max()) < (1e-3 if codec == "float16" else 1e-2)
    else:
        key_step = kv[:, 0].abs().amax(dim=2, keepdim=True) / 127  # per channel, over tokens
        assert bool((err[:, 0] <= key_step / 2 + 1e-3 * key_step + 1e-6).all())
        if codec == "int8":
            val_step = kv[:, 1].abs().amax(dim=2, keepdim=True) / 127
        elif codec == "k8v4":  # 4-bit values, a scale per token
            val_step = kv[:, 1].abs().amax(dim=3, keepdim=True) / 7
        else:  # 4- or 6-bit values over each group's own range (one group: head_dim 16 < 32)
            v = kv[:, 1]
            levels = 15 if codec == "k8v4g" else 63
            val_step = (v.amax(dim=3, keepdim=True) - v.amin(dim=3, keepdim=True)) / levels
        # the step is stored in float16: a rounding of up to ~1e-3 of it per level
        assert bool((err[:, 1] <= val_step / 2 + 1e-2 * val_step + 1e-3).all())


def test_grouped_values_have_a_smaller_error_than_per_token_absmax():
    torch.manual_seed(1)
    kv = torch.randn(2, 2, 3, 50, 64)
    kv[:, 1] += 0.5  # values off centre: an asymmetric range wastes half of absmax's levels
    err = {c: float((decode(encode(kv, c), c, kv.shape) - kv)[:, 1].pow(2).mean())
           for c in ("k8v4", "k8v4g", "k8v6")}
    assert err["k8v4g"] < 0.5 * err["k8v4"]
    assert err["k8v6"] < err["k8v4g"] / 10  # a quarter of the step: ~1/16 of the squared error


@pytest.mark.parametrize("codec, levels", [("k8v4g", 15), ("k8v6", 63)])
def test_grouped_values_use_groups_of_32_channels(codec, levels):
    kv = torch.zeros(1, 2, 1, 1, 64)
    kv[0, 1, 0, 0, :32] = torch.linspace(0, 1, 32)  # first group: range 1
    kv[0, 1, 0, 0, 32:] = torch.linspace(0, 0.01, 32)  # second group: a hundredth of it
    back = decode(encode(kv, codec), codec, kv.shape)
    second = (back - kv)[0, 1, 0, 0, 32:].abs().max()
    assert float(second) <= 0.01 / levels / 2 * 1.02 + 1e-6  # its own step, not the first group's


def test_six_bit_values_round_trip_every_level():
    # each token's group spans 0..63, so the step is exactly 1 and every level is an integer
    rows = [[0, 63, *range(1, 31)], [0, 63, *range(31, 61)], [0, 63, 61, 62, *[0] * 28]]
    kv = torch.zeros(1, 2, 1, 3, 32)
    kv[0, 1, 0] = torch.tensor(rows, dtype=torch.float32)
    back = decode(encode(kv, "k8v6"), "k8v6", kv.shape)
    assert torch.equal(back[0, 1], kv[0, 1])


@pytest.mark.parametrize("codec", CODECS)
def test_stored_bytes_match_bytes_per_token(kv, codec):
    stored = encode(kv, codec)
    layers, _, heads, seq, dim = SHAPE
    assert stored.numel() * stored.element_size() == bytes_per_token(codec, layers, heads, dim,
                                                                      seq) * seq


@pytest.mark.parametrize("codec", ["k8v4", "k8v4g", "k8v6"])
def test_4bit_values_are_under_a_quarter_of_float32_at_chunk_sizes(codec):
    # SmolLM2-135M: 30 layers, 3 kv heads, head_dim 64; a 256-token chunk
    ratio = bytes_per_token(codec, 30, 3, 64, 256) / bytes_per_token("float32", 30, 3, 64, 256)
    assert ratio <= 0.25
    assert bytes_per_token("int8", 30, 3, 64, 256) / bytes_per_token("float32", 30, 3, 64, 256) \
        > 0.25  # int8 with its scales is just over: why k8v4 exists


def test_a_truncated_entry_is_refused(kv):
    stored = encode(kv, "k8v4")
    with pytest.raises(ValueError, match="k8v4 KV entry"):
        decode(stored[:-1], "k8v4", SHAPE)


@pytest.mark.parametrize("codec", ["float16", "int8", "k8v4", "k8v4g", "k8v6"])
def test_independent_answer_from_coded_entries_stays_close(codec):
    ref = tiny_generator(1, layers=2, kv_reuse="independent")
    coded = tiny_generator(1, layers=2, kv_reuse="independent", kv_codec=codec)
    layout = ref.layout(SAMPLE_QUERY, list(SAMPLE_TEXTS))
    a, _, _ = ref.first_logits(layout)
    b, _, stats = coded.first_logits(layout)
    b2, _, stats2 = coded.first_logits(layout)  # from the store this time
    assert stats2["reused"] > stats["reused"]
    assert torch.equal(b, b2)  # a hit reads what the miss used
    pa, pb = a.log_softmax(-1), b.log_softmax(-1)
    assert float((pa.exp() * (pa - pb)).sum()) < 0.05


@pytest.mark.parametrize("codec", ["float16", "int8", "k8v6"])
def test_coded_entries_count_every_reused_chunk_token_as_approximate(codec):
    # float32: only chunks after the first are approximate; a lossy codec changes the first too
    plain = tiny_generator(1, layers=2, kv_reuse="independent")
    coded = tiny_generator(1, layers=2, kv_reuse="independent", kv_codec=codec)
    layout = plain.layout(SAMPLE_QUERY, list(SAMPLE_TEXTS))
    assert plain.first_logits(layout)[2]["approximate"] == (
        layout.context_len - layout.chunk_starts()[1])
    assert coded.first_logits(layout)[2]["approximate"] == layout.context_len - len(layout.prefix)
    one = plain.layout(SAMPLE_QUERY, list(SAMPLE_TEXTS)[:1])
    assert plain.first_logits(one)[2]["approximate"] == 0
    assert coded.first_logits(one)[2]["approximate"] == one.context_len - len(one.prefix) > 0


def test_a_codec_entry_is_made_from_a_cached_float32_entry_without_a_forward():
    gen = tiny_generator(2, layers=2, kv_reuse="independent")
    gen.warm(list(SAMPLE_TEXTS))
    gen.kv_codec = "k8v4"
    calls = []
    hook = gen.lm.register_forward_hook(lambda *a: calls.append(1))
    try:
        report = gen.warm(list(SAMPLE_TEXTS))
    finally:
        hook.remove()
    assert report["cached"] == len(SAMPLE_TEXTS)
    assert not calls  # no forward: the prefix and the float32 chunk entries are cached


def test_unknown_codec_names_the_field():
    with pytest.raises(ConfigError, match=r"generator\.kv_codec.*k8v4"):
        build("generator", {"name": "ragkit.generation.transformers_backend:TransformersGenerator",
                            "kv_codec": "int3"})
