"""The transformers generator: config, prompt layout, decoding, streaming, stops, timings."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ragkit.generation.base import Generator, WarmableGenerator  # noqa: E402
from ragkit.generation.testing import smollm2_tokenizer, tiny_generator  # noqa: E402
from ragkit.generation.transformers_backend import TransformersGenerator  # noqa: E402
from ragkit.config import build, to_config  # noqa: E402
from ragkit.errors import ConfigError  # noqa: E402
from ragkit.types import Answer, Chunk, Hit  # noqa: E402

PATH = "ragkit.generation.transformers_backend:TransformersGenerator"
TEXTS = [
    "The Eiffel Tower was completed on 31 March 1889, in time for the World's Fair in Paris.",
    "Bananas are yellow when ripe and grow in hanging clusters called hands.",
]


def _hits(texts=TEXTS):
    return [Hit(Chunk(f"doc{i}.txt", 0, len(t), t, 0, {"source": f"doc{i}.txt"}), 1.0 - i / 10, i)
            for i, t in enumerate(texts)]


def test_config_round_trip_and_lazy_init():
    spec = {"name": PATH, "kv_reuse": "blend", "blend_ratio": 0.2, "stop": ["\n\n"],
            "kv_store": {"name": "ragkit.generation.kv_store:TieredKVStore", "disk": False}}
    gen = build("generator", spec)
    assert "_loaded" not in gen.__dict__  # nothing loaded until the first answer
    assert build("generator", to_config(gen, "generator")) == gen
    assert gen.stop == ("\n\n",)


@pytest.mark.parametrize("bad, where", [
    ({"kv_reuse": "turbo"}, "generator.kv_reuse"),
    ({"blend_ratio": 1.5}, "generator.blend_ratio"),
    ({"top_p": 0}, "generator.top_p"),
    ({"max_new_tokens": 0}, "generator.max_new_tokens"),
    ({"stop": [""]}, "generator.stop"),
    ({"chunk_format": "no slot"}, "generator.chunk_format"),
])
def test_bad_config_names_the_field(bad, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        build("generator", {"name": PATH, **bad})


def test_protocols():
    gen = TransformersGenerator(kv_store=None)
    assert isinstance(gen, Generator) and isinstance(gen, WarmableGenerator)


def test_chunk_segments_do_not_depend_on_neighbours_or_rank():
    gen = tiny_generator(0)
    a = gen.layout("q?", [TEXTS[0], TEXTS[1]])
    b = gen.layout("other question?", [TEXTS[1], "Something else entirely.", TEXTS[0]])
    assert a.chunks[0] == b.chunks[2] and a.chunks[1] == b.chunks[0]
    assert a.prefix == b.prefix
    assert a.ids == [*a.prefix, *a.chunks[0], *a.chunks[1], *a.question]
    tok = smollm2_tokenizer()
    text = tok.decode(a.ids)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert TEXTS[0] in text and "Question: q?" in text
    assert a.chunk_starts() == [len(a.prefix), len(a.prefix) + len(a.chunks[0])]


@pytest.mark.parametrize("mode", ["none", "prefix", "independent", "blend"])
def test_generate_returns_answer_with_hits_and_timings(mode):
    gen = tiny_generator(0, kv_reuse=mode, max_new_tokens=6)
    hits = _hits()
    pieces = []
    answer = gen.generate("When was the Eiffel Tower completed?", hits, stream=pieces.append)
    assert isinstance(answer, Answer) and list(answer.hits) == hits
    assert "".join(pieces) == answer.text and answer.text
    t = answer.timings
    assert {"ttft_s", "tokens_per_s", "prefill_tokens_computed", "prefill_tokens_reused",
            "prefill_tokens_approximate"} <= set(t)
    layout = gen.layout("When was the Eiffel Tower completed?", TEXTS)
    exact = mode in ("none", "prefix")  # two chunks: the second one's KV is approximate
    want = 0 if exact else len(layout.chunks[1]) - t.get("blend_tokens_recomputed", 0)
    assert t["prefill_tokens_approximate"] == want
    assert t["new_tokens"] <= 6 and t["ttft_s"] > 0
    layout = gen.layout(answer.query, TEXTS)
    assert t["prefill_tokens_computed"] + t["prefill_tokens_reused"] >= len(layout.ids)
    again = gen.generate(answer.query, hits)  # warm: the context is reused
    if mode != "none":
        assert again.timings["prefill_tokens_reused"] > 0
    assert again.text == answer.text  # greedy is deterministic


def test_stream_iterator_returns_the_answer():
    gen = tiny_generator(0, max_new_tokens=5)
    it = gen.stream("q?", _hits())
    pieces = []
    while True:
        try:
            pieces.append(next(it))
        except StopIteration as done:
            answer = done.value
            break
    assert "".join(pieces) == answer.text


@pytest.mark.parametrize("mode", ["none", "independent"])
def test_a_stream_resumed_on_another_thread_decodes_the_same_answer(mode):
    """A server takes the next piece on whichever worker thread is free: inference mode (which
    is per thread) must not be held across a ``yield``, or the later steps run outside it."""
    import threading

    gen = tiny_generator(0, kv_reuse=mode, max_new_tokens=12, stop=[])
    want = gen.generate("q?", _hits())
    it = gen.stream("q?", _hits())
    pieces, result = [next(it)], {}

    def rest():
        try:
            while True:
                pieces.append(next(it))
        except StopIteration as done:
            result["answer"] = done.value
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    other = threading.Thread(target=rest)
    other.start()
    other.join()
    assert "error" not in result, result.get("error")
    assert result["answer"].text == "".join(pieces) == want.text


def test_stop_strings_and_max_new_tokens():
    gen = tiny_generator(0, max_new_tokens=20)
    full = gen.generate("q?", _hits()).text
    assert gen.generate("q?", _hits()).timings["new_tokens"] == 20
    stop = full[len(full) // 2: len(full) // 2 + 3]
    cut = tiny_generator(0, max_new_tokens=20, stop=(stop,))
    pieces = []
    answer = cut.generate("q?", _hits(), stream=pieces.append)
    assert answer.text == full[: full.index(stop)]
    assert "".join(pieces) == answer.text


def test_sampling_is_seeded():
    a = tiny_generator(0, temperature=1.0, top_p=0.9, seed=7, max_new_tokens=10)
    b = tiny_generator(0, temperature=1.0, top_p=0.9, seed=7, max_new_tokens=10)
    c = tiny_generator(0, temperature=1.0, top_p=0.9, seed=8, max_new_tokens=10)
    ta, tb, tc = (g.generate("q?", _hits()).text for g in (a, b, c))
    assert ta == tb and ta != tc
    greedy = tiny_generator(0, max_new_tokens=10).generate("q?", _hits()).text
    assert ta != greedy


def test_eos_stops_generation():
    gen = tiny_generator(0, max_new_tokens=50)
    with torch.no_grad():  # make <|im_end|> the most likely token everywhere
        gen.lm.lm_head.weight[gen.tokenizer.eos_token_id] += 100.0 * gen.lm.lm_head.weight.std()
        gen.lm.lm_head.bias = None
    answer = gen.generate("q?", _hits())
    assert answer.timings["new_tokens"] < 50


EIFFEL = ("The Eiffel Tower is a wrought-iron lattice tower in Paris. It was completed on "
          "31 March 1889 and opened for the 1889 World's Fair.")
BANANAS = "Bananas are yellow when ripe and grow in hanging clusters called hands."


@pytest.mark.slow
def test_smollm2_answers_from_the_given_context(tmp_path):
    """The packaged SmolLM2 answers a simple question from its context: full prefill over two
    chunks, and from the chunk cache (cold, then warm) over the one chunk that holds the answer.
    (Approximate reuse over several chunks can change this small model's answer: see the
    benchmark's quality columns.)"""
    store = {"name": "ragkit.generation.kv_store:TieredKVStore", "path": str(tmp_path)}
    gen = TransformersGenerator(kv_reuse="independent", max_new_tokens=40, kv_store=store)
    question = "In which year was the Eiffel Tower completed?"
    for _ in range(2):  # cold, then from the chunk cache
        answer = gen.generate(question, _hits([EIFFEL]))
        assert "1889" in answer.text, answer.text
    assert answer.timings["prefill_tokens_reused"] > 0
    full = TransformersGenerator(max_new_tokens=40, kv_store=None)
    assert full.lm is gen.lm  # same model, dtype and attention: one shared copy
    assert "1889" in full.generate(question, _hits([EIFFEL, BANANAS])).text
    assert TransformersGenerator(dtype="bfloat16", kv_store=None).lm is not gen.lm


def test_the_cache_goes_under_the_models_own_argument_name():
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` and warns (a FutureWarning
    printed into the middle of every CLI answer) when the old name is used."""
    import inspect
    import warnings

    from ragkit.generation.transformers_backend import cache_kwarg

    gen = tiny_generator(0, max_new_tokens=3)
    assert cache_kwarg(gen.lm) in inspect.signature(type(gen.lm).forward).parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        gen.complete("Say hi.")
        gen.token_logprobs(["one two", " three"], window=64)


def test_complete_matches_a_manual_greedy_decode():
    """``complete`` is the chat-templated prompt decoded greedily: check it against argmax steps
    run by hand with a fresh forward over the growing sequence (no cache)."""
    gen = tiny_generator(0, max_new_tokens=8)
    ids = gen.chat_ids("Grade this passage.")
    tok = smollm2_tokenizer()
    assert tok.decode(ids).startswith("<|im_start|>system")
    assert tok.decode(ids).endswith("Grade this passage.<|im_end|>\n<|im_start|>assistant\n")
    seq, new = list(ids), []
    with torch.no_grad():
        for _ in range(5):
            token = int(gen.lm(torch.tensor([seq])).logits[0, -1].argmax())
            if token in gen._eos:
                break
            seq.append(token)
            new.append(token)
    assert gen.complete("Grade this passage.", max_new_tokens=5) == tok.decode(
        new, skip_special_tokens=True)
    with pytest.raises(Exception, match="non-empty"):
        gen.complete("")


def test_score_is_the_log_probability_of_each_option():
    gen = tiny_generator(0)
    ids = gen.chat_ids("Pick a digit.")
    options = ["3", "7", "10", " maybe"]
    got = gen.score("Pick a digit.", options)
    tok = smollm2_tokenizer()
    with torch.no_grad():
        for option in options:
            opt = tok.encode(option, add_special_tokens=False)
            logp = torch.log_softmax(gen.lm(torch.tensor([ids + opt])).logits[0].float(), -1)
            want = sum(float(logp[len(ids) - 1 + i, t]) for i, t in enumerate(opt))
            assert got[option] == pytest.approx(want, abs=1e-4), option


class _BaseTokenizer:
    """A tokenizer without a chat template (a base model's), adding BOS or not."""

    chat_template = None
    bos_token, bos_token_id = "<bos>", 2

    def __init__(self, adds_bos: bool) -> None:
        self.adds_bos = adds_bos

    def encode(self, text, add_special_tokens=True):
        return ([2] if self.adds_bos and add_special_tokens else []) + [ord(c) for c in text]


@pytest.mark.parametrize("adds_bos", [True, False])
def test_a_base_model_prompt_starts_with_the_bos_its_tokenizer_adds(adds_bos):
    from ragkit.generation.prompt import chat_frame

    head, tail = chat_frame(_BaseTokenizer(adds_bos), None)
    assert head == ("<bos>" if adds_bos else "") and tail == "\nAnswer:"
    assert chat_frame(_BaseTokenizer(adds_bos), "Be brief.")[0].endswith("Be brief.\n\n")
