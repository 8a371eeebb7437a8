"""One engine interface over TensorRT, ONNX Runtime and OpenVINO.

    engine = open_engine(onnx_bytes, backend="auto", precision="fp16", cache_dir=None)
    engine.inputs, engine.outputs        # name -> TensorSpec(shape, dtype)
    engine.run({"input": x}, outputs=["logits", ...])   # only the named outputs come back

Backends:

    tensorrt   TensorRT 10 Python API + pycuda (engine cache, see tensorrt_backend.py)
    ort-trt    ONNX Runtime, TensorRT execution provider
    ort-cuda   ONNX Runtime, CUDA execution provider
    openvino   OpenVINO (`device`: CPU by default, or GPU, NPU, AUTO; see openvino_backend.py)
    ort-cpu    ONNX Runtime, CPU

`backend="auto"` opens every backend available here and keeps the one whose engine call on this
graph is fastest, measured on this machine and remembered beside the other caches
(backend_choice.py): no fixed order, since which engine wins depends on the CPU, the graph and the
threads. `engine.choice` says what was chosen, from which figures; each backend that could not be
opened is logged once with its reason. `outputs_to_copy` prunes the graph to those outputs first,
for every backend: ONNX Runtime runs every node of a graph whatever the caller fetches.

Naming a backend explicitly gives that backend or an `EngineError`, never a silent
substitute. Tensor names always come from the model card, never from positions.
"""

from __future__ import annotations

import logging

import numpy as np

from ._engine_base import Engine, EngineError, TensorSpec, only_outputs  # noqa: F401 (the interface, re-exported)
from .backend_choice import BackendChoice, cache_key, choose, machine_description, read_cached, write_cached

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "ort-trt", "ort-cuda", "openvino", "ort-cpu")
PRECISIONS = ("fp32", "fp16")
_ORT_PROVIDERS = {"ort-trt": "TensorrtExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                  "ort-cpu": "CPUExecutionProvider"}
# TF32 off: ONNX Runtime's CUDA provider otherwise computes float32 convolutions and matrix products from inputs
# rounded to 10-bit mantissas on Ampere and newer GPUs (every Jetson Orin), its default since 1.18 (`use_tf32`).
# Measured on an H200 with the same cuDNN convolutions (bench/gpu_graphs.py, BENCHMARKS.md): the bundled U-Net's
# logits move by 5e-4 of their norm and the input attributions by 1-5%, against 1e-6 in IEEE float32. The graphs
# here are float32 and their maps are checked to be exact in float32, so float32 is what runs.
_ORT_PROVIDER_OPTIONS = {"ort-cuda": {"use_tf32": "0"}}


_NP_OF_ORT = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint16)": np.uint16,
              "tensor(bool)": np.bool_}


# ONNX Runtime's graph optimisation level for every engine it runs. ALL adds the layout rewrites (convolutions in
# blocked NCHWc with fused activations) to EXTENDED's fusions: the bundled detector's forward 28.4 -> 13.8 ms and the
# bundled U-Net's 49.1 -> 40.5 ms on the 2-vCPU AVX-512 Xeon (bench/ort_optimization.py). The maps stay the exact
# derivative of the forward the engine computes: a ReLU's mask, a max-pool's winner are read from the very tensors
# the forward uses. What ALL changes is the forward's rounding against PyTorch's (about 1e-6 relative), which is why
# the tests that compare graphs with float64 autograd element by element run their own sessions at EXTENDED
# (test/explain/harness.py): a pre-activation within rounding of zero can take the other side of a ReLU there.
ORT_OPTIMIZATION = "all"


def ort_providers(backend: str) -> list:
    """ONNX Runtime's providers for `backend`, with their options, the CPU after a GPU one for what it cannot run."""
    providers = [(_ORT_PROVIDERS[backend], dict(_ORT_PROVIDER_OPTIONS.get(backend, {})))]
    return providers if backend == "ort-cpu" else [*providers, "CPUExecutionProvider"]


class OrtEngine(Engine):
    def __init__(self, onnx_bytes: bytes, backend: str = "ort-cpu", threads: int = 0,
                 optimization: str = ORT_OPTIMIZATION):
        import onnxruntime as ort

        provider = _ORT_PROVIDERS[backend]
        if provider not in ort.get_available_providers():
            raise EngineError(f"{backend}: this ONNX Runtime has no {provider} (it has "
                              f"{', '.join(p for p in ort.get_available_providers())})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                         "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                         "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
        try:
            self.session = ort.InferenceSession(onnx_bytes, opts, providers=ort_providers(backend))
        except Exception as exc:  # ORT raises its own exception types
            raise EngineError(f"{backend}: ONNX Runtime could not load the model: {exc}") from None
        self.backend = backend
        self.inputs = {i.name: TensorSpec(i.name, tuple(i.shape), np.dtype(_NP_OF_ORT[i.type]))
                       for i in self.session.get_inputs()}
        self.outputs = {o.name: TensorSpec(o.name, tuple(o.shape), np.dtype(_NP_OF_ORT.get(o.type, np.float32)))
                        for o in self.session.get_outputs()}

    def _run(self, feeds, names):
        return dict(zip(names, self.session.run(names, feeds)))


def _open(name: str, onnx_bytes: bytes, precision: str, cache_dir, threads: int, outputs_to_copy, device: str):
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTEngine
        return TensorRTEngine(onnx_bytes, precision=precision, cache_dir=cache_dir, outputs_to_copy=outputs_to_copy)
    if name == "openvino":
        from .openvino_backend import OpenVinoEngine
        return OpenVinoEngine(onnx_bytes, device=device, threads=threads, precision=precision, cache_dir=cache_dir,
                              outputs_to_copy=outputs_to_copy)
    return OrtEngine(onnx_bytes, name, threads)


def _close(engine: Engine) -> None:
    close = getattr(engine, "close", None)
    if close is not None:
        close()


def open_engine(onnx_bytes: bytes, backend: str = "auto", precision: str = "fp16", cache_dir=None,
                threads: int = 0, outputs_to_copy: list[str] | None = None, device: str = "CPU") -> Engine:
    """The engine for `backend`, or with "auto" the fastest of BACKENDS here (measured once, then cached)."""
    if backend not in ("auto", *BACKENDS):
        raise EngineError(f"unknown backend {backend!r}; use auto or one of {list(BACKENDS)}")
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; use one of {list(PRECISIONS)}")
    if outputs_to_copy:
        outputs_to_copy = list(dict.fromkeys(outputs_to_copy))
        onnx_bytes = only_outputs(onnx_bytes, outputs_to_copy)
    args = (onnx_bytes, precision, cache_dir, threads, outputs_to_copy, device)
    if backend != "auto":
        try:
            return _settled(_open(backend, *args), precision)
        except ImportError as exc:
            raise EngineError(f"{backend}: {exc}") from None
    # ONNX Runtime's optimisation level is part of what was measured: a choice cached at another level is measured again
    settings = {"precision": precision, "threads": int(threads), "device": device,
                "outputs": sorted(outputs_to_copy or []), "ort_optimization": ORT_OPTIMIZATION}
    machine = machine_description()
    key = cache_key(onnx_bytes, settings, machine)
    cached = read_cached(cache_dir, key, BACKENDS)
    engines, reasons = {}, {}
    if cached is not None:
        try:
            engines[cached.backend] = _open(cached.backend, *args)
        except (EngineError, ImportError) as exc:  # uninstalled since: measure what is here now
            log.warning("backend auto: the cached choice %s cannot be opened now (%s): measuring again",
                        cached.backend, exc)
            cached = None
    if cached is None:
        for name in BACKENDS:
            if name == "ort-trt" and "tensorrt" in engines:
                continue  # the same TensorRT builder and kernels: a second multi-minute build would measure nothing new
            try:
                engines[name] = _open(name, *args)
            except (EngineError, ImportError) as exc:
                msg = str(exc)
                reasons[name] = msg if msg.startswith(name) else f"{name}: {msg}"
        if not engines:
            raise EngineError("no backend could run the model: " + "; ".join(reasons.values()))
        choice = choose(engines, outputs_to_copy)
        choice = BackendChoice(choice.backend, choice.times_ms, measured_at=choice.measured_at, reasons=reasons)
        for name, e in engines.items():
            if name != choice.backend:
                _close(e)
        if choice.times_ms:
            write_cached(cache_dir, key, choice, machine, settings)
    else:
        choice = cached
    engine = engines[choice.backend]
    engine.choice = choice
    fp16 = (", fp32 (precision fp16 applies to TensorRT and OpenVINO GPUs only)"
            if precision == "fp16" and not computes_in_fp16(engine, precision) else "")
    missing = f"; not available here: {'; '.join(reasons.values())}" if reasons else ""
    # said once per process: every engine of a process meets the same machine
    _say_once(f"backend auto: using {choice.backend}{fp16}{missing}", logging.WARNING if reasons else logging.INFO)
    log.info("backend %s", choice.describe())
    return _settled(engine, precision)


def arithmetic(engine: Engine, precision: str) -> str:
    """What `engine` computes the model and its explanations in, in words (/diagnostics, the replay summary)."""
    if engine.backend == "tensorrt":
        return ("FP16 forward where the GPU has fast FP16; FP32 explanations, comparisons and selections (TF32 off)"
                if precision == "fp16" else "IEEE float32 (TF32 off)")
    if engine.backend == "ort-trt":
        return "float32, with TF32 convolutions on Ampere and newer GPUs (ONNX Runtime's TensorRT provider)"
    if computes_in_fp16(engine, precision):
        return "FP16 throughout (OpenVINO)"
    return "IEEE float32"


def _settled(engine: Engine, precision: str) -> Engine:
    """The engine open_engine returns, named or chosen: what it computes in set, and said once of an engine on ONNX
    Runtime's TensorRT provider, the one backend that cannot turn TF32 off."""
    engine.arithmetic = arithmetic(engine, precision)
    if engine.backend == "ort-trt":
        _say_once("ort-trt: TensorRT computes float32 convolutions in TF32 on Ampere and newer GPUs (Jetson Orin "
                  "included) and ONNX Runtime's TensorRT provider has no option to stop it: maps move by about "
                  "1e-3 of their size, input attributions by 1e-2 (BENCHMARKS.md); backend tensorrt builds "
                  "IEEE float32")
    return engine


def computes_in_fp16(engine: Engine, precision: str) -> bool:
    """Whether `engine` runs (part of) its graph in FP16: precision fp16 on TensorRT (the model's forward; the
    explanations stay FP32) or on an OpenVINO GPU or NPU, named or picked by AUTO (the whole graph; its CPU is f32)."""
    if precision != "fp16":
        return False
    devices = getattr(engine, "execution_devices", None) or [getattr(engine, "device", "CPU")]
    return engine.backend == "tensorrt" or (
        engine.backend == "openvino" and any(str(d).split(".")[0] not in ("CPU", "AUTO") for d in devices))


def warn_fp16_attributions(engine: Engine, precision: str, attributions) -> None:
    """Said once: input attributions computed from an FP16 forward are not the float32 ones. Measured on an H200
    (bench/gpu_graphs.py, PyTorch's autocast standing in for the fp16 engine): up to 8% of their norm, and DeepLIFT's
    and LRP alpha-beta's maps NaN when the explanations run in FP16 too, as OpenVINO's fp16 does."""
    attributions = sorted(set(attributions))
    if not attributions or not computes_in_fp16(engine, precision):
        return
    whole = engine.backend == "openvino"
    _say_once(f"precision fp16 on {engine.backend}: the input attributions ({', '.join(attributions)}) come from an "
              "FP16 forward and move by up to 8% of their norm against float32"
              + (", and OpenVINO runs the explanations in FP16 too, where DeepLIFT and LRP alpha-beta can give NaN"
                 if whole else "") + " (BENCHMARKS.md); precision fp32 gives the float32 ones")


_said: set[str] = set()


def _say_once(message: str, level: int = logging.WARNING) -> None:
    """Log `message` at `level` the first time it is met in this process, at DEBUG after that."""
    log.log(logging.DEBUG if message in _said else level, message)
    _said.add(message)
