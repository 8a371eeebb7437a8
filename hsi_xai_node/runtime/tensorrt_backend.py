"""TensorRT 10 backend: a persistent engine cache, mask-safe FP16 builds, name-based I/O.

    engine = TensorRTEngine(onnx_bytes, precision="fp16", cache_dir=None)
    engine.run({"input": x}, ["logits"])        # via Engine.run: shapes and dtypes checked first

What users of other TensorRT nodes complain about, and what this module does about it:

    rebuilds on every start       engines are cached under a key over the ONNX file's SHA-256, the
                                  TensorRT version, the GPU and the precision; a cached engine is
                                  checked (header + SHA-256 of the payload) and only then loaded
    10-20 minute first builds     announced at INFO with the cache path before they start, timed,
                                  sped up by a timing cache shared per TensorRT version and GPU;
                                  `hsi-xai build-engine` builds ahead of time
    binding-name mismatches       tensors are addressed by name (TRT 10 I/O tensor API), never by index
    fp16 that silently does nothing
                                  a WARNING when the GPU has no fast fp16; comparisons / selections
                                  of the explain graph are pinned to FP32 (a mask in FP16 can flip)
    fp32 that silently is TF32    TensorRT computes float32 layers in TF32 on Ampere and newer GPUs
                                  unless told not to (BuilderFlag.TF32 is on by default); every
                                  build here clears it, so a float32 layer is IEEE float32

Only this module imports tensorrt and pycuda, lazily: importing it needs neither, and
constructing an engine without them raises `EngineError` saying so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..explain._graph import NODE_PREFIX
from ._engine_base import Engine, EngineError, TensorSpec

log = logging.getLogger(__name__)

# Bump when the build recipe changes (flags, the FP32 plan, ...): old engines then miss and are rebuilt.
# 2: TF32 cleared (engines of format 1 computed float32 convolutions in TF32 on Ampere and newer GPUs), and fp16
#    builds keep every explanation layer in FP32 (format 1 left them to FP16, where DeepLIFT came out NaN).
KEY_FORMAT = 2
_MAGIC = b"HSIXAI-TRT-ENGINE\x00"
_HEADER_LEN = struct.Struct(">I")

# TensorRT DataType names -> numpy; keyed by name so the mapping is testable without TensorRT.
_NP_OF_TRT = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64,
              "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(f"tensorrt backend: the TensorRT Python package is not installed ({exc})") from None
    return trt


def _import_backends():
    trt = _import_tensorrt()
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise EngineError(f"tensorrt backend: pycuda not installed ({exc}); pip install pycuda") from None
    return trt, cuda


# --- cache key and on-disk cache ---------------------------------------------------------------

def engine_key_parts(onnx_bytes: bytes, precision: str, trt_version: str, gpu_name: str) -> dict:
    return {"key_format": KEY_FORMAT, "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "tensorrt": str(trt_version), "gpu": str(gpu_name), "precision": str(precision)}


def engine_cache_key(onnx_bytes: bytes, precision: str, trt_version: str, gpu_name: str) -> str:
    """Hex digest over everything an engine depends on; any change gives a new key."""
    parts = engine_key_parts(onnx_bytes, precision, trt_version, gpu_name)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hsi_xai_node" / "engines"


def _write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Write to a temp file in the same directory, fsync, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EngineCache:
    """`<dir>/<key>.engine` files: magic, header length, JSON header (key parts, payload SHA-256 and
    size), payload. One file, one rename, so header and payload can never disagree after a crash."""

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.dir = Path(cache_dir) if cache_dir else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.engine"

    def timing_cache_path(self, trt_version: str, gpu_name: str) -> Path:
        # tactic timings depend on TensorRT and the GPU only, so every model shares one file per pair
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"trt{trt_version}_{gpu_name}").strip("-")
        return self.dir / slug / "timing.cache"

    def store(self, key: str, engine_bytes: bytes, meta: dict | None = None) -> Path:
        payload = bytes(engine_bytes)
        header = json.dumps({**(meta or {}), "key": key, "payload_bytes": len(payload),
                             "payload_sha256": hashlib.sha256(payload).hexdigest()}, sort_keys=True).encode()
        path = self.path(key)
        _write_atomic(path, [_MAGIC, _HEADER_LEN.pack(len(header)), header, payload])
        return path

    def load_entry(self, key: str) -> tuple[bytes, dict] | None:
        """(engine bytes, header) or None when absent or unusable (the reason is logged, never raised)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("engine cache %s unreadable (%s): rebuilding", path, exc)
            return None
        reason, entry = self._check(key, data)
        if reason:
            log.warning("engine cache %s is %s: rebuilding", path, reason)
            return None
        return entry

    def load(self, key: str) -> bytes | None:
        entry = self.load_entry(key)
        return None if entry is None else entry[0]

    @staticmethod
    def _check(key: str, data: bytes) -> tuple[str, tuple[bytes, dict] | None]:
        start = len(_MAGIC) + _HEADER_LEN.size
        if not data:
            return "empty", None
        if not data.startswith(_MAGIC) or len(data) < start:
            return "not an hsi_xai_node engine file", None
        (n,) = _HEADER_LEN.unpack_from(data, len(_MAGIC))
        try:
            header = json.loads(data[start:start + n])
        except ValueError:
            return "truncated or corrupt (bad header)", None
        if not isinstance(header, dict):
            return "corrupt (bad header)", None
        if header.get("key") != key:
            return f"for another key ({header.get('key')!r})", None
        payload = data[start + n:]
        if len(payload) != header.get("payload_bytes"):
            return f"truncated ({len(payload)} of {header.get('payload_bytes')} payload bytes)", None
        if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
            return "corrupt (payload SHA-256 mismatch)", None
        return "", (payload, header)


# --- FP32 plan for FP16 builds ------------------------------------------------------------------

@dataclass(frozen=True)
class LayerRecord:
    """What the plan needs to know about one network layer (plain data, no TensorRT)."""

    name: str
    type: str  # trt.LayerType name: "ELEMENTWISE", "SELECT", "TOPK", "REDUCE", ...
    op: str = ""  # for ELEMENTWISE: trt.ElementWiseOperation name ("GREATER", ...)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    floating: bool = True  # has a float input: only then does a layer precision mean anything


# Comparisons on float inputs (ONNX GreaterOrEqual/LessOrEqual parse to these plus an OR of bools).
# AND/OR/XOR/NOT take bools, where a precision is meaningless, so they are not listed.
MASK_OPS = frozenset({"GREATER", "LESS", "EQUAL"})
# Layers that choose between values: Where -> SELECT; TopK and ArgMax/ArgMin -> TOPK.
SELECT_TYPES = frozenset({"SELECT", "TOPK"})
# Reductions feeding a kept layer decide what it compares (a max or mean rounded to FP16 moves ties).
FEEDER_TYPES = frozenset({"REDUCE"})
# Layers that only move data: kept in FP32 when they sit between such a reduction and a kept layer,
# where they would otherwise round the reduction's result to FP16 again.
PASS_TYPES = frozenset({"SHUFFLE", "IDENTITY", "SLICE", "CONCATENATION"})
# Layers that read a float tensor's shape, not its values: no precision to keep.
SHAPE_TYPES = frozenset({"SHAPE"})


def plan_fp32_layers(records: Iterable[LayerRecord]) -> list[str]:
    """Names of layers to keep in FP32 under FP16, in network order: every layer of the explanations (the ONNX
    parser names a node's layers after the node, and the explain builders name theirs NODE_PREFIX...), float
    comparisons, selections, and the reductions (with the data-movement layers between) whose results feed them.

    So an fp16 build runs the model's own forward in FP16 and computes the explanations from its activations in
    FP32. Run whole in FP16 (PyTorch's autocast on an H200, bench/gpu_graphs.py), DeepLIFT's and LRP alpha-beta's
    maps came out NaN: a stabiliser of 1e-6 makes 1/z overflow FP16's 65504, and 0 * inf is NaN. Computed in FP32 from
    the FP16 forward's activations they are numbers, though up to 8% of their norm from float32's (the pipelines say
    so when input attributions run on an fp16 engine)."""
    records = list(records)
    producer = {t: r for r in records for t in r.outputs}
    memo: dict[str, set[str]] = {}

    def feeders(tensor: str) -> set[str]:
        """Reductions upstream of `tensor` through data-movement layers, and those layers; else empty."""
        if tensor not in memo:
            memo[tensor] = set()  # guards against revisiting while this tensor is being resolved
            r = producer.get(tensor)
            found: set[str] = set()
            if r is not None and r.floating and r.type in FEEDER_TYPES | PASS_TYPES:
                found = set().union(*(feeders(t) for t in r.inputs))
                if found or r.type in FEEDER_TYPES:  # a reduction of a reduction (two-stage mean) stays too
                    found.add(r.name)
            memo[tensor] = found
        return memo[tensor]

    keep = {r.name for r in records if r.floating and
            ((r.name.startswith(NODE_PREFIX) and r.type not in SHAPE_TYPES) or
             (r.type == "ELEMENTWISE" and r.op in MASK_OPS) or r.type in SELECT_TYPES)}
    keep |= set().union(*(feeders(t) for r in records if r.name in keep for t in r.inputs))
    return [r.name for r in records if r.name in keep]


def _layer_records(network, trt) -> list[LayerRecord]:
    floats = (trt.float32, trt.float16)
    records = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        op = ""
        if layer.type == trt.LayerType.ELEMENTWISE:
            layer.__class__ = trt.IElementWiseLayer  # get_layer returns the ILayer base; downcast for .op
            op = layer.op.name
        ins = [t for t in (layer.get_input(j) for j in range(layer.num_inputs)) if t is not None]
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        records.append(LayerRecord(layer.name, layer.type.name, op, tuple(t.name for t in ins),
                                   tuple(t.name for t in outs), any(t.dtype in floats for t in ins)))
    return records


def fp32_layer_plan(network) -> list[str]:
    """The FP32 plan for a parsed `trt.INetworkDefinition`."""
    return plan_fp32_layers(_layer_records(network, _import_tensorrt()))


def _apply_fp32(network, names: Iterable[str], trt) -> None:
    wanted = set(names)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name not in wanted:
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):  # bool / int outputs (comparisons, TopK indices) keep their type
            if layer.get_output(j).dtype in (trt.float32, trt.float16):
                layer.set_output_type(j, trt.float32)


# --- build ---------------------------------------------------------------------------------------

def parser_error_text(err) -> str:
    """One line per ONNX parser error, naming the node (TRT 10 IParserError methods, where present)."""
    def call(name):  # node_name/node_operator came with TensorRT 8.6: absent methods give None
        fn = getattr(err, name, None)
        return fn() if callable(fn) else None
    node, name, op = call("node"), call("node_name"), call("node_operator")
    where = f"node {name!r}" if name else (f"node #{node}" if node is not None and node >= 0 else "graph")
    return f"{where}{f' ({op})' if op else ''}: {call('desc') or err}"


_TRT_LOGGER = None


def _trt_logger(trt):
    """One process-wide ILogger forwarding TensorRT's messages to Python logging (TensorRT keeps a
    raw pointer to it, so it must outlive every builder and runtime)."""
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        class _Forward(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                level = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
                         "INFO": logging.DEBUG}.get(getattr(severity, "name", str(severity)), logging.NOTSET)
                if level:
                    log.log(level, "TensorRT: %s", msg)

        _TRT_LOGGER = _Forward()
    return _TRT_LOGGER


def configure_precision(builder, config, network, precision: str, trt, log: logging.Logger = log) -> list[str]:
    """The builder flags for `precision`; returns the layers kept in FP32 of an fp16 build.

    TF32 is cleared in every build. TensorRT sets it by default, and on Ampere and newer GPUs (every Jetson Orin) a
    float32 convolution or matrix product then rounds its inputs to 10-bit mantissas. Measured with cuDNN's TF32
    convolutions on an H200 (bench/gpu_graphs.py): the bundled U-Net's logits moved by 5e-4 of their norm and the
    input attributions by 1-5%, where IEEE float32 agrees with the CPU to about 1e-6. In an fp16 build the layers
    kept in FP32 (`plan_fp32_layers`: the explanations, comparisons, selections) are kept for exactness, so TF32
    stays off there too."""
    config.clear_flag(trt.BuilderFlag.TF32)
    plan: list[str] = []
    if precision == "fp16":
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
            plan = fp32_layer_plan(network)
            if plan:
                _apply_fp32(network, plan, trt)
                config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
                log.info("fp16 build: the model's forward in fp16; %d explanation, comparison and selection layers "
                         "kept in fp32", len(plan))
        else:
            log.warning("precision fp16 requested, but this GPU has no fast fp16: fp16 does nothing here, "
                        "the engine is built in fp32")
    return plan


def build_engine(onnx_bytes: bytes, precision: str, timing_cache_path: str | os.PathLike | None = None,
                 log: logging.Logger = log) -> bytes:
    """Parse, configure and build a serialized engine (the slow step: minutes on large graphs)."""
    trt = _import_tensorrt()
    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TRT 10: explicit batch always, the flag is gone
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [parser_error_text(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError("tensorrt backend: TensorRT could not parse the ONNX graph:\n  " + "\n  ".join(errors))
    for i in range(network.num_inputs):  # fail before a long build, not after it
        t = network.get_input(i)
        if any(d < 0 for d in t.shape):
            raise EngineError(f"tensorrt backend: input {t.name!r} has dynamic shape {tuple(t.shape)}; "
                              "build one graph per input shape")
    config = builder.create_builder_config()
    configure_precision(builder, config, network, precision, trt, log)
    cache_path = Path(timing_cache_path) if timing_cache_path else None
    blob = b""
    if cache_path and cache_path.is_file():
        blob = cache_path.read_bytes()
    timing = config.create_timing_cache(blob)
    if timing is None or not config.set_timing_cache(timing, False):
        log.warning("timing cache %s unusable: starting an empty one", cache_path)
        timing = config.create_timing_cache(b"")
        config.set_timing_cache(timing, False)
    log.info("building TensorRT engine (%s, %d layers); first builds take minutes, up to 10-20 on "
             "large graphs; timing cache %s", precision, network.num_layers, cache_path or "in memory only")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError("tensorrt backend: engine build failed (TensorRT's errors are logged above)")
    log.info("TensorRT engine built in %.1f s (%.1f MB)", time.perf_counter() - t0, serialized.nbytes / 1e6)
    if cache_path:
        _write_atomic(cache_path, [bytes(timing.serialize())])
    return bytes(serialized)


# --- bindings and the engine -----------------------------------------------------------------------

@dataclass(frozen=True)
class Binding:
    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int
    copy_back: bool  # outputs only: copied to the host when asked for


def _np_dtype(dt) -> np.dtype:
    name = getattr(dt, "name", dt)
    if isinstance(name, str) and name in _NP_OF_TRT:
        return np.dtype(_NP_OF_TRT[name])
    try:
        return np.dtype(dt)
    except TypeError:
        raise EngineError(f"tensorrt backend: tensor dtype {dt} has no numpy equivalent here "
                          f"(supported: {sorted(_NP_OF_TRT)})") from None


def binding_plan(io_specs: Iterable[tuple], copy_back: Iterable[str] | None = None) -> dict[str, Binding]:
    """Plan from (name, mode, shape, dtype) records; mode is "input"/"output" or a trt.TensorIOMode,
    dtype a numpy dtype or a trt.DataType. `copy_back`: outputs ever copied to the host (None: all)."""
    plan = {}
    for name, mode, shape, dtype in io_specs:
        mode = str(getattr(mode, "name", mode)).lower()
        if mode not in ("input", "output"):
            raise EngineError(f"tensorrt backend: tensor {name!r} has I/O mode {mode!r}")
        shape = tuple(int(d) if d is not None else -1 for d in shape)
        if any(d < 0 for d in shape):
            raise EngineError(f"tensorrt backend: tensor {name!r} has dynamic shape {shape}; dynamic "
                              "dimensions are not supported (build one graph per input shape)")
        dt = _np_dtype(dtype)
        plan[name] = Binding(name, mode == "input", shape, dt, int(np.prod(shape, dtype=np.int64)) * dt.itemsize,
                             mode == "output")
    if copy_back is not None:
        wanted = set(copy_back)
        unknown = sorted(wanted - {n for n, b in plan.items() if not b.is_input})
        if unknown:
            raise EngineError(f"tensorrt backend: outputs_to_copy names {unknown}, which are not engine outputs; "
                              f"outputs: {sorted(n for n, b in plan.items() if not b.is_input)}")
        plan = {n: b if b.is_input or n in wanted else replace(b, copy_back=False) for n, b in plan.items()}
    return plan


def _gpu_identity(cuda, device: int = 0):
    """(device, its name with compute capability): part of the cache key, since engines are per GPU."""
    try:
        cuda.init()
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        return dev, f"{dev.name()} sm_{major}{minor}"
    except cuda.Error as exc:
        raise EngineError(f"tensorrt backend: no usable CUDA device {device} ({exc})") from None


def _engine_blob(onnx_bytes: bytes, precision: str, cache: EngineCache, trt_version: str, gpu: str,
                 rebuild: bool = False) -> tuple[bytes, dict, Path, bool]:
    """(engine bytes, header, cache path, built?): the cached engine, or a new one stored for next time."""
    key = engine_cache_key(onnx_bytes, precision, trt_version, gpu)
    entry = None if rebuild else cache.load_entry(key)
    if entry is not None:
        log.info("TensorRT engine found in cache: %s", cache.path(key))
        return entry[0], entry[1], cache.path(key), False
    log.info("no cached TensorRT engine for this graph, GPU (%s) and precision (%s): building %s",
             gpu, precision, cache.path(key))
    blob = build_engine(onnx_bytes, precision, cache.timing_cache_path(trt_version, gpu), log)
    meta = engine_key_parts(onnx_bytes, precision, trt_version, gpu)
    path = cache.store(key, blob, meta)
    log.info("TensorRT engine stored: %s", path)
    return blob, {**meta, "key": key}, path, True


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(self, onnx_bytes: bytes, precision: str = "fp16", cache_dir=None,
                 outputs_to_copy: Iterable[str] | None = None, device: int = 0):
        trt, cuda = _import_backends()
        self._cuda = cuda
        dev, gpu = _gpu_identity(cuda, device)
        # the device's primary context is the one TensorRT's CUDA runtime calls use as well
        self._ctx = dev.retain_primary_context()
        self._ctx.push()
        ok = False
        try:
            cache = EngineCache(cache_dir)
            blob, _, self.cache_path, self.built = _engine_blob(onnx_bytes, precision, cache, trt.__version__, gpu)
            self._runtime = trt.Runtime(_trt_logger(trt))
            self._engine = self._runtime.deserialize_cuda_engine(blob)
            if self._engine is None and not self.built:  # e.g. a driver update the key cannot see: rebuild once
                log.warning("cached engine %s did not deserialize: rebuilding", self.cache_path)
                blob, _, self.cache_path, self.built = _engine_blob(onnx_bytes, precision, cache, trt.__version__,
                                                                    gpu, rebuild=True)
                self._engine = self._runtime.deserialize_cuda_engine(blob)
            if self._engine is None:
                raise EngineError(f"tensorrt backend: TensorRT could not deserialize {self.cache_path}")
            eng = self._engine
            names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
            self.plan = binding_plan([(n, eng.get_tensor_mode(n), tuple(eng.get_tensor_shape(n)),
                                       eng.get_tensor_dtype(n)) for n in names], outputs_to_copy)
            self._context = eng.create_execution_context()
            self._stream = cuda.Stream()
            # device buffers for every I/O tensor (TensorRT needs an address for each), pinned host
            # buffers only for inputs and the outputs that are ever copied back
            self._device = {n: cuda.mem_alloc(max(b.nbytes, 1)) for n, b in self.plan.items()}
            self._host = {n: cuda.pagelocked_empty(b.shape, b.dtype) for n, b in self.plan.items()
                          if b.is_input or b.copy_back}
            for n, mem in self._device.items():
                self._context.set_tensor_address(n, int(mem))
            ok = True
        except cuda.Error as exc:  # e.g. out of device memory: an EngineError lets "auto" fall back
            raise EngineError(f"tensorrt backend: CUDA error: {exc}") from None
        finally:
            cuda.Context.pop()
            if not ok:
                self.close()
        self.inputs = {n: TensorSpec(n, b.shape, b.dtype) for n, b in self.plan.items() if b.is_input}
        self.outputs = {n: TensorSpec(n, b.shape, b.dtype) for n, b in self.plan.items() if not b.is_input}
        self._lock = threading.Lock()  # one stream and one set of buffers: one run at a time

    def _run(self, feeds, names):
        skipped = [n for n in names if not self.plan[n].copy_back]
        if skipped:
            raise EngineError(f"tensorrt engine: output(s) {skipped} are not copied back "
                              "(not in outputs_to_copy)")
        cuda = self._cuda
        with self._lock:
            self._ctx.push()  # run() may come from another thread than __init__ (the frame worker)
            try:
                for n, x in feeds.items():
                    np.copyto(self._host[n], x)
                    cuda.memcpy_htod_async(self._device[n], self._host[n], self._stream)
                if not self._context.execute_async_v3(self._stream.handle):
                    raise EngineError("tensorrt engine: execute_async_v3 failed (TensorRT's errors are logged)")
                for n in names:
                    cuda.memcpy_dtoh_async(self._host[n], self._device[n], self._stream)
                self._stream.synchronize()
            finally:
                cuda.Context.pop()
            return {n: self._host[n].copy() for n in names}

    def close(self) -> None:
        """Free device memory and release the CUDA context (also done when the engine is collected)."""
        ctx = self.__dict__.pop("_ctx", None)
        if ctx is None:
            return
        ctx.push()
        try:
            for mem in getattr(self, "_device", {}).values():
                mem.free()
            # TensorRT objects go while the context is current, the context last
            self._device = self._host = {}
            self._context = self._engine = self._runtime = self._stream = None
        finally:
            self._cuda.Context.pop()
            ctx.detach()

    def __del__(self):
        with contextlib.suppress(Exception):  # at interpreter shutdown CUDA may already be gone
            self.close()
