"""OpenVINO as an engine: the same explain graphs, compiled for Intel CPUs, GPUs and NPUs.

    engine = OpenVinoEngine(onnx_bytes, device="CPU", threads=2, precision="fp16", cache_dir=None)

The ONNX graph is read from memory by OpenVINO's ONNX front end and compiled for `device`
(CPU, GPU, NPU or AUTO; "GPU.1" picks one of several). On the CPU the inference precision is
kept at f32 whatever `precision` says (`device_config`, AUTO's CPU included): the explain graphs compare
values (ReLU masks, argmax, max-pool routing) and a bf16 forward would flip some of them; on a GPU or
NPU `fp16` asks for f16. Compiled models are cached by OpenVINO itself in `cache_dir/openvino` (its key covers the
model, the device and the settings), so a second start skips the compile. OpenVINO is an optional
extra (`pip install 'hsi_xai_node[openvino]'`); without it this backend is simply unavailable.
OpenVINO computes every output of a compiled model, so the engine keeps only the outputs the caller
will read (`outputs_to_copy`) and the nodes they depend on.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np

from ._engine_base import Engine, EngineError, TensorSpec, only_outputs

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
_NP_OF_OV = {"f32": np.float32, "f16": np.float16, "u8": np.uint8, "i64": np.int64, "i32": np.int32,
             "u16": np.uint16, "boolean": np.bool_}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hsi_xai_node" / "openvino"


def _named_nodes(onnx_bytes: bytes, message: str) -> str:
    """The graph's nodes whose op type the OpenVINO error names ("op FooBar: nodes my_foo, ...")."""
    import onnx

    try:
        model = onnx.load_model_from_string(onnx_bytes)
    except Exception:  # noqa: BLE001 - the error message alone then
        return ""
    named = {}
    for n in model.graph.node:
        op = f"{n.domain}.{n.op_type}" if n.domain and n.domain != "ai.onnx" else n.op_type
        if re.search(rf"(?<![\w.]){re.escape(op)}(?![\w])", message):
            named.setdefault(op, []).append(n.name or "(unnamed)")
    return "; ".join(f"op {op} at node(s) {', '.join(names[:5])}" for op, names in named.items())


def _first_lines(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(("Exception from",
                                                                                                       "Check 'false'"))]
    return " ".join(lines[:4])


def device_config(kind: str, precision: str, threads: int = 0) -> dict:
    """OpenVINO's compile settings for a device kind (CPU, GPU, NPU or AUTO).

    The CPU computes in f32 whatever `precision` says: its plugin's default is bf16 on CPUs with AVX512_BF16 or AMX,
    and measured on such a CPU (the development VM's AMD EPYC) the bundled pipeline graph's logits came out 1.4e-2 of
    their peak from f32 and the input gradient's band sums 7.9e-2. AUTO passes each device its own settings, so a CPU
    it picks computes in f32 too (before, AUTO set none and ran the CPU in bf16)."""
    # no pinning: the node runs two engines side by side and a fleet several workers per machine, each of which
    # would otherwise pin its threads to the same first cores
    cpu = {"INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False,
           **({"INFERENCE_NUM_THREADS": int(threads)} if threads else {})}
    accelerator = {"INFERENCE_PRECISION_HINT": "f16" if precision == "fp16" else "f32"}
    if kind == "AUTO":
        return {"DEVICE_PROPERTIES": {"CPU": cpu, "GPU": accelerator, "NPU": accelerator}}
    return cpu if kind == "CPU" else accelerator


class OpenVinoEngine(Engine):
    def __init__(self, onnx_bytes: bytes, device: str = "CPU", threads: int = 0, precision: str = "fp16",
                 cache_dir: str | os.PathLike | None = None, outputs_to_copy: list[str] | None = None):
        try:
            import openvino as ov
        except ImportError:
            raise EngineError("openvino: OpenVINO is not installed (pip install 'hsi_xai_node[openvino]')") from None
        kind = device.split(".")[0].split(":")[0]
        if kind not in DEVICES:
            raise EngineError(f"openvino: unknown device {device!r}; use one of {list(DEVICES)} (GPU.1 for a second GPU)")
        core = ov.Core()
        if kind != "AUTO" and not any(d.split(".")[0] == kind for d in core.available_devices):
            raise EngineError(f"openvino: no {device} device here (OpenVINO sees {', '.join(core.available_devices)})")
        if outputs_to_copy:  # OpenVINO computes every output of a model: keep only those the caller reads
            onnx_bytes = only_outputs(onnx_bytes, outputs_to_copy)
        try:
            model = core.read_model(io.BytesIO(onnx_bytes))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with a multi-line report
            where = _named_nodes(onnx_bytes, str(exc))
            raise EngineError(f"openvino: cannot read the graph: {_first_lines(exc)}"
                              + (f" ({where})" if where else "")) from None
        cache = Path(cache_dir) / "openvino" if cache_dir else default_cache_dir()
        config = {"PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": str(cache), **device_config(kind, precision, threads)}
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError:
            del config["CACHE_DIR"]  # a read-only home: compile every start rather than fail
        try:
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:  # noqa: BLE001
            where = _named_nodes(onnx_bytes, str(exc))
            raise EngineError(f"openvino: cannot compile the graph for {device}: {_first_lines(exc)}"
                              + (f" ({where})" if where else "")) from None
        self.request = self.compiled.create_infer_request()
        self.backend = "openvino"
        self.device = device
        try:  # the devices it runs on: what AUTO picked ("CPU", "GPU.0", ...)
            self.execution_devices = [str(d) for d in self.compiled.get_property("EXECUTION_DEVICES")]
        except Exception:  # noqa: BLE001 - a plugin without the property: the device asked for
            self.execution_devices = [device]
        names = self._onnx_names(onnx_bytes)
        self._inputs = {self._name(p, names["in"]): p for p in self.compiled.inputs}
        self._outputs = {self._name(p, names["out"]): p for p in self.compiled.outputs}
        self.inputs = {n: TensorSpec(n, tuple(p.get_shape()), np.dtype(_NP_OF_OV[p.get_element_type().get_type_name()]))
                       for n, p in self._inputs.items()}
        self.outputs = {n: TensorSpec(n, tuple(p.get_shape()),
                                      np.dtype(_NP_OF_OV.get(p.get_element_type().get_type_name(), np.float32)))
                        for n, p in self._outputs.items()}

    @staticmethod
    def _onnx_names(onnx_bytes: bytes) -> dict[str, set[str]]:
        import onnx

        g = onnx.load_model_from_string(onnx_bytes).graph
        inits = {i.name for i in g.initializer}
        return {"in": {i.name for i in g.input if i.name not in inits}, "out": {o.name for o in g.output}}

    @staticmethod
    def _name(port, wanted: set[str]) -> str:
        """A port's ONNX tensor name (OpenVINO may know a tensor by several names)."""
        names = port.get_names()
        hit = sorted(names & wanted)
        return hit[0] if hit else port.get_any_name()

    def _run(self, feeds, names):
        # the inputs read where they are (Engine.run made them contiguous in the engine's dtype, and infer returns only
        # when done with them): copying the bundled U-Net's 8.3 MB input took 1.1-1.7 ms of a 33-35 ms call on the
        # 2-vCPU EPYC; the outputs are copied out (share_outputs=False), since the next call overwrites them
        result = self.request.infer({self._inputs[k]: v for k, v in feeds.items()}, share_inputs=True)
        return {n: np.asarray(result[self._outputs[n]]) for n in names}
