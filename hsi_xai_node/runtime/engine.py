"""One engine interface over TensorRT, ONNX Runtime and OpenVINO.

    engine = open_engine(onnx_bytes, backend="auto", precision="fp16", cache_dir=None)
    engine.inputs, engine.outputs        # name -> TensorSpec(shape, dtype)
    engine.run({"input": x}, outputs=["logits", ...])   # only the named outputs come back

Backends, tried in this order by `backend="auto"` (each failure is logged with its
reason, and the engine says which one it is in `engine.backend`):

    tensorrt   TensorRT 10 Python API + pycuda (engine cache, see tensorrt_backend.py)
    ort-trt    ONNX Runtime, TensorRT execution provider
    ort-cuda   ONNX Runtime, CUDA execution provider
    openvino   OpenVINO (`device`: CPU by default, or GPU, NPU, AUTO; see openvino_backend.py)
    ort-cpu    ONNX Runtime, CPU

On a machine without an NVIDIA GPU, `auto` therefore takes OpenVINO when it is installed (it
runs the same graphs faster on CPUs, BENCHMARKS.md) and ONNX Runtime CPU otherwise.

Naming a backend explicitly gives that backend or an `EngineError`, never a silent
substitute. Tensor names always come from the model card, never from positions.
"""

from __future__ import annotations

import logging

import numpy as np

from ._engine_base import Engine, EngineError, TensorSpec  # noqa: F401 (the interface, re-exported here)

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "ort-trt", "ort-cuda", "openvino", "ort-cpu")
PRECISIONS = ("fp32", "fp16")
_ORT_PROVIDERS = {"ort-trt": "TensorrtExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                  "ort-cpu": "CPUExecutionProvider"}


_NP_OF_ORT = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint16)": np.uint16,
              "tensor(bool)": np.bool_}


class OrtEngine(Engine):
    def __init__(self, onnx_bytes: bytes, backend: str = "ort-cpu", threads: int = 0,
                 optimization: str = "extended"):
        import onnxruntime as ort

        provider = _ORT_PROVIDERS[backend]
        if provider not in ort.get_available_providers():
            raise EngineError(f"{backend}: this ONNX Runtime has no {provider} (it has "
                              f"{', '.join(p for p in ort.get_available_providers())})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # EXTENDED, not ALL: layout rewrites can change forward rounding and flip a ReLU mask
        opts.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                         "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                         "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
        providers = [provider] if backend == "ort-cpu" else [provider, "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(onnx_bytes, opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            raise EngineError(f"{backend}: ONNX Runtime could not load the model: {exc}") from None
        self.backend = backend
        self.inputs = {i.name: TensorSpec(i.name, tuple(i.shape), np.dtype(_NP_OF_ORT[i.type]))
                       for i in self.session.get_inputs()}
        self.outputs = {o.name: TensorSpec(o.name, tuple(o.shape), np.dtype(_NP_OF_ORT.get(o.type, np.float32)))
                        for o in self.session.get_outputs()}

    def _run(self, feeds, names):
        return dict(zip(names, self.session.run(names, feeds)))


def open_engine(onnx_bytes: bytes, backend: str = "auto", precision: str = "fp16", cache_dir=None,
                threads: int = 0, outputs_to_copy: list[str] | None = None, device: str = "CPU") -> Engine:
    """The engine for `backend`, or with "auto" the first of BACKENDS that works here (each miss logged)."""
    if backend not in ("auto", *BACKENDS):
        raise EngineError(f"unknown backend {backend!r}; use auto or one of {list(BACKENDS)}")
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; use one of {list(PRECISIONS)}")
    order = BACKENDS if backend == "auto" else (backend,)
    reasons = []
    for name in order:
        try:
            if name == "tensorrt":
                from .tensorrt_backend import TensorRTEngine
                engine = TensorRTEngine(onnx_bytes, precision=precision, cache_dir=cache_dir,
                                        outputs_to_copy=outputs_to_copy)
            elif name == "openvino":
                from .openvino_backend import OpenVinoEngine
                engine = OpenVinoEngine(onnx_bytes, device=device, threads=threads, precision=precision,
                                        cache_dir=cache_dir, outputs_to_copy=outputs_to_copy)
            else:
                engine = OrtEngine(onnx_bytes, name, threads)
        except (EngineError, ImportError) as exc:
            msg = str(exc)
            reasons.append(msg if msg.startswith(name) else f"{name}: {msg}")
            if backend != "auto":
                raise EngineError(str(exc)) from None
            continue
        if reasons:  # the same fall-back is met by every engine of a process: said once
            fp16 = (", fp32 (precision fp16 applies to TensorRT and OpenVINO GPUs only)"
                    if precision == "fp16" and name in ("ort-cpu", "openvino") else "")
            _say_once(f"backend auto: using {name}{fp16}; not available here: {'; '.join(reasons)}")
        return engine
    raise EngineError("no backend could run the model: " + "; ".join(reasons))


_said: set[str] = set()


def _say_once(message: str) -> None:
    """Log a WARNING the first time a message is met in this process, at DEBUG after that."""
    log.log(logging.DEBUG if message in _said else logging.WARNING, message)
    _said.add(message)
