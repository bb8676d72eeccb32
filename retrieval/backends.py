"""Run a sentence-transformers model on ONNX Runtime or OpenVINO instead of torch.

sentence-transformers' own ``backend="onnx"`` / ``"openvino"`` load through Optimum, whose
packages cannot share an environment with transformers 5.x (``optimum-onnx`` requires
``transformers<4.58``; ``optimum-intel[openvino]`` resolves to transformers 5.5 and a CUDA torch
2.14). This module does the same job with the runtimes alone: the model's transformer is exported
once, offline, with ``torch.onnx.export`` (the dynamo exporter) into a cache folder; int8 is
ONNX Runtime's dynamic quantisation of that file (``quantize_dynamic``: int8 weights, activations
quantised per batch at run time, nothing to calibrate and nothing downloaded); OpenVINO compiles
the fp32 ONNX file, and its int8 is NNCF's data-free int8 weight compression of it. Tokenizing, pooling and normalising stay those of the sentence-transformers
model: its tokenizer, and its Pooling module's mean or CLS mode.

Export folder: ``<root>/<model folder name>-<key>/`` where ``key`` hashes the model folder's
path, its weights' size and mtime, and the torch version; files are written to a temporary name
and renamed, so concurrent first uses never read half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
EXPORT_ROOT_VARIABLE = "RAGKIT_EXPORT_DIR"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def default_export_root() -> Path:
    env = os.environ.get(EXPORT_ROOT_VARIABLE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ragkit" / "exports"


def export_folder(model_dir: Path, root: Path) -> Path:
    """Where the exports of the model in ``model_dir`` live under ``root``."""
    import torch

    weights = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin"))
    stamp = [str(model_dir.resolve()), torch.__version__]
    stamp += [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights]
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]
    return root / f"{model_dir.name}-{key}"


class Runtime:
    """One exported model on one runtime: ``hidden(features) -> (batch, seq, dim)`` float32."""

    def __init__(self, st_model: Any, backend: str, folder: Path, threads: int | None) -> None:
        if backend not in BACKENDS[1:]:
            raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}",
                              path="backend")
        self.backend = backend
        self.names = _input_names(st_model)
        if backend.startswith("onnx"):
            onnx_file = ensure_onnx(st_model, folder, int8=backend == "onnx-int8")
            ort = require("onnxruntime", extra="onnx", component=f"embedder backend {backend!r}")
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self._session = ort.InferenceSession(
                str(onnx_file), options, providers=["CPUExecutionProvider"]
            )
            self._run = lambda feed: self._session.run(None, feed)[0]
        else:
            ov = require("openvino", extra="openvino", component=f"embedder backend {backend!r}")
            core = ov.Core()
            config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
            model = ensure_openvino(core, st_model, folder, int8=backend == "openvino-int8")
            compiled = core.compile_model(model, "CPU", config)
            self._run = lambda feed: compiled(feed)[0]

    def hidden(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: np.ascontiguousarray(features[name], dtype=np.int64) for name in self.names}
        return np.asarray(self._run(feed), dtype=np.float32)  # (batch, seq, dim)


def _input_names(st_model: Any) -> tuple[str, ...]:
    """The inputs the model's tokenizer gives (BERT-like models: all three, others: two)."""
    out = st_model.tokenizer(["x"], return_tensors="np")
    names = tuple(n for n in _INPUTS if n in out)
    if names[:2] != _INPUTS[:2]:
        raise ConfigError(
            f"the model's tokenizer gives {sorted(out)}; backends other than torch need "
            "input_ids and attention_mask", path="backend"
        )
    return names


def ensure_onnx(st_model: Any, folder: Path, *, int8: bool) -> Path:
    """The model's transformer as ONNX in ``folder`` (exported on first use), or its dynamically
    quantised int8 copy."""
    fp32 = folder / "model.onnx"
    if not fp32.exists():
        folder.mkdir(parents=True, exist_ok=True)
        _export(st_model, fp32)
    if not int8:
        return fp32
    q = folder / "model-int8.onnx"
    if not q.exists():
        require("onnx", extra="onnx", component="embedder backend 'onnx-int8'")
        quantization = require("onnxruntime.quantization", extra="onnx",
                               component="embedder backend 'onnx-int8'")
        tmp = folder / f".model-int8.{os.getpid()}.onnx"
        log.info("quantising %s to int8 (dynamic)", fp32)
        quantization.quantize_dynamic(str(fp32), str(tmp), per_channel=True,
                                      weight_type=quantization.QuantType.QInt8)
        tmp.replace(q)
    return q


def ensure_openvino(core: Any, st_model: Any, folder: Path, *, int8: bool) -> Any:
    """The OpenVINO model: read from the fp32 ONNX file, or its int8 copy saved in ``folder``.

    OpenVINO's int8 is NNCF's weight compression (``compress_weights``, INT8_ASYM: int8 weights
    with a per-channel scale and zero point, activations in fp32), the same data-free path as
    optimum-intel's ``load_in_8bit``. Running ONNX Runtime's dynamically quantised file on
    OpenVINO was slower than fp32 torch here (its MatMulInteger ops are not fused)."""
    fp32 = ensure_onnx(st_model, folder, int8=False)
    if not int8:
        return core.read_model(str(fp32))
    xml = folder / "openvino-int8.xml"
    if not xml.exists():
        ov = require("openvino", extra="openvino", component="embedder backend 'openvino-int8'")
        nncf = require("nncf", extra="openvino", component="embedder backend 'openvino-int8'")
        log.info("compressing %s to int8 weights (nncf)", fp32)
        model = nncf.compress_weights(core.read_model(str(fp32)),
                                      mode=nncf.CompressWeightsMode.INT8_ASYM)
        tmp = folder / f".openvino-int8.{os.getpid()}.xml"
        ov.save_model(model, str(tmp))
        tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        tmp.replace(xml)
    return core.read_model(str(xml))


def _export(st_model: Any, target: Path) -> None:
    torch = require("torch", extra="embed", component="ONNX export")
    require("onnx", extra="onnx", component="ONNX export")
    require("onnxscript", extra="onnx", component="ONNX export")
    names = _input_names(st_model)
    encoder = st_model[0].auto_model if hasattr(st_model[0], "auto_model") else st_model[0].model

    class Hidden(torch.nn.Module):  # the token ids in, the last hidden state out
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            given = dict(zip(_INPUTS, (input_ids, attention_mask, token_type_ids)))
            return self.model(**{n: given[n] for n in names}).last_hidden_state

    sample = st_model.tokenizer(["an example text", "a second, longer example text to pad"],
                                padding=True, return_tensors="pt")
    args = tuple(sample[n] for n in names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.onnx")
    log.info("exporting %s to ONNX at %s", type(encoder).__name__, target)
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            Hidden(encoder.float()).eval(), args, dynamo=True, external_data=False, input_names=list(names),
            output_names=["last_hidden_state"], dynamic_shapes=tuple({0: batch, 1: seq} for _ in names),
        )
    program.save(str(tmp))
    tmp.replace(target)
