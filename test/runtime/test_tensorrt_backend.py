"""TensorRT backend: everything that runs without a GPU, against small fakes of tensorrt and pycuda
where the control flow needs them; one real build-and-run test when TensorRT is installed."""

import enum
import json
import logging
import sys
import threading
import types

import numpy as np
import pytest

from hsi_xai_node.cli import build_parser, cmd_build_engine
from hsi_xai_node.runtime import EngineError, open_engine
from hsi_xai_node.runtime import tensorrt_backend as tb
from hsi_xai_node.runtime.tensorrt_backend import EngineCache, LayerRecord, TensorRTEngine, engine_cache_key
from test.conftest import REPO
from test.test_model_card import tiny_segmenter

try:
    import tensorrt  # noqa: F401
    HAVE_TRT = True
except ImportError:
    HAVE_TRT = False

ONNX = b"\x08\x07fake-onnx-bytes"
REAL_BUILD_ENGINE = tb.build_engine


# --- cache key -----------------------------------------------------------------------------------

def test_cache_key_is_stable_and_sensitive_to_every_part():
    base = {"onnx_bytes": ONNX, "precision": "fp16", "trt_version": "10.3.0", "gpu_name": "NVIDIA H100 sm_90"}
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base) and len(key) == 64 and int(key, 16) >= 0
    changes = {"onnx_bytes": ONNX + b"\x00", "precision": "fp32", "trt_version": "10.3.1",
               "gpu_name": "NVIDIA A100 sm_80"}
    keys = {engine_cache_key(**{**base, k: v}) for k, v in changes.items()}
    assert len(keys) == 4 and key not in keys


def test_cache_key_changes_with_the_key_format(monkeypatch):
    key = engine_cache_key(ONNX, "fp16", "10.3.0", "gpu")
    monkeypatch.setattr(tb, "KEY_FORMAT", tb.KEY_FORMAT + 1)
    assert engine_cache_key(ONNX, "fp16", "10.3.0", "gpu") != key


# --- on-disk cache -------------------------------------------------------------------------------

def test_cache_round_trip_and_paths(tmp_path):
    cache = EngineCache(tmp_path)
    key = engine_cache_key(ONNX, "fp16", "10.3.0", "gpu")
    assert cache.load(key) is None  # missing file: absent
    blob = bytes(range(256)) * 100
    path = cache.store(key, blob, tb.engine_key_parts(ONNX, "fp16", "10.3.0", "gpu"))
    assert path == cache.path(key) == tmp_path / f"{key}.engine"
    assert cache.load(key) == blob
    _, header = cache.load_entry(key)
    assert header["key"] == key and header["precision"] == "fp16" and header["payload_bytes"] == len(blob)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert EngineCache().dir == tmp_path / "xdg" / "hsi_xai_node" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert EngineCache().dir == tmp_path / "home" / ".cache" / "hsi_xai_node" / "engines"


def test_timing_cache_is_shared_per_trt_version_and_gpu(tmp_path):
    cache = EngineCache(tmp_path)
    a = cache.timing_cache_path("10.3.0", "NVIDIA H100 80GB HBM3 sm_90")
    assert a.name == "timing.cache" and a.parent.parent == tmp_path and " " not in str(a.relative_to(tmp_path))
    assert a == cache.timing_cache_path("10.3.0", "NVIDIA H100 80GB HBM3 sm_90")
    assert a != cache.timing_cache_path("10.4.0", "NVIDIA H100 80GB HBM3 sm_90")
    assert a != cache.timing_cache_path("10.3.0", "Orin sm_87")


def test_store_is_atomic(tmp_path, monkeypatch):
    cache = EngineCache(tmp_path)
    cache.store("k", b"old engine")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(tb.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.store("k", b"new engine")
    assert cache.load("k") == b"old engine"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["k.engine"]  # and the temp file is gone


@pytest.mark.parametrize("damage, reason", [
    (lambda d: b"", "empty"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d[:30], "truncated"),
    (lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:], "SHA-256 mismatch"),
    (lambda d: b"\x00" * len(d), "not an hsi_xai_node engine"),
    (lambda d: d + b"x", "truncated"),
])
def test_damaged_files_count_as_absent(tmp_path, caplog, damage, reason):
    cache = EngineCache(tmp_path)
    path = cache.store("k", b"engine payload" * 50)
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger=tb.log.name):
        assert cache.load("k") is None
    assert reason in caplog.text and "rebuilding" in caplog.text


def test_file_for_another_key_counts_as_absent(tmp_path, caplog):
    cache = EngineCache(tmp_path)
    cache.path("other").parent.mkdir(parents=True, exist_ok=True)
    cache.path("k").write_bytes(cache.store("other", b"engine").read_bytes())
    with caplog.at_level(logging.WARNING, logger=tb.log.name):
        assert cache.load("k") is None
    assert "for another key ('other')" in caplog.text


# --- FP32 plan -------------------------------------------------------------------------------------

def R(name, type, ins=(), outs=None, op="", floating=True):
    return LayerRecord(name, type, op, tuple(ins), tuple(outs or (name,)), floating)


def test_relu_mask_comparison_and_where_stay_fp32():
    records = [R("conv", "CONVOLUTION", ["x"]), R("relu", "ACTIVATION", ["conv"]), R("zero", "CONSTANT"),
               R("gt", "ELEMENTWISE", ["relu", "zero"], op="GREATER"),
               R("where", "SELECT", ["gt", "g", "zero"]), R("gmul", "ELEMENTWISE", ["where", "w"], op="PROD")]
    assert tb.plan_fp32_layers(records) == ["gt", "where"]


def test_maxpool_routing_cascade():
    # GreaterOrEqual parses to GREATER, EQUAL and an OR of bools; the OR has no float input
    records = [R("s0", "SLICE", ["x"]), R("s1", "SLICE", ["x"]),
               R("g", "ELEMENTWISE", ["s0", "s1"], op="GREATER"), R("e", "ELEMENTWISE", ["s0", "s1"], op="EQUAL"),
               R("ge", "ELEMENTWISE", ["g", "e"], op="OR", floating=False),
               R("sel", "SELECT", ["ge", "s0", "s1"]), R("lt", "ELEMENTWISE", ["s0", "s1"], op="LESS"),
               R("max", "ELEMENTWISE", ["s0", "s1"], op="MAX")]
    # slices of x feed the comparisons but no reduction is upstream: they run in whatever TensorRT picks
    assert tb.plan_fp32_layers(records) == ["g", "e", "sel", "lt"]


def test_argmax_and_topk():
    records = [R("conv", "CONVOLUTION", ["x"]), R("argmax", "TOPK", ["conv"], outs=["v", "i"]),
               R("cast", "CAST", ["i"], floating=False)]
    assert tb.plan_fp32_layers(records) == ["argmax"]


def test_reductions_feeding_comparisons_with_data_movement_between():
    records = [R("conv", "CONVOLUTION", ["x"]),
               R("rows", "REDUCE", ["conv"]), R("cols", "REDUCE", ["rows"]),  # two-stage mean
               R("shuf", "SHUFFLE", ["cols"]), R("eq", "ELEMENTWISE", ["conv", "shuf"], op="EQUAL"),
               R("camw", "REDUCE", ["conv"]), R("cam", "ELEMENTWISE", ["conv", "camw"], op="PROD"),
               R("pool", "REDUCE", ["conv"]), R("pshuf", "SHUFFLE", ["pool"]), R("unused", "SHUFFLE", ["conv"])]
    # the CAM weights' reduction feeds no comparison: free to run in FP16
    assert tb.plan_fp32_layers(records) == ["rows", "cols", "shuf", "eq"]


def test_the_explanations_stay_fp32_and_the_models_forward_does_not():
    records = [R("/enc1/conv/Conv", "CONVOLUTION", ["x"]), R("/enc1/relu/Relu", "ACTIVATION", ["/enc1/conv/Conv"]),
               R("xai/backward/conv_t_12", "CONVOLUTION", ["g"]),
               R("xai/lrp/div_20", "ELEMENTWISE", ["xai/backward/conv_t_12", "z"], op="DIV"),
               R("xai/lrp/div_20_1", "SHUFFLE", ["xai/lrp/div_20"]),  # a helper layer the parser added for the node
               R("xai/predicted_class_7", "CAST", ["i"], floating=False),
               R("xai/window_shape_9", "SHAPE", ["xai/lrp/div_20"])]  # reads a shape: no precision to keep
    assert tb.plan_fp32_layers(records) == ["xai/backward/conv_t_12", "xai/lrp/div_20", "xai/lrp/div_20_1"]


def test_every_node_the_explain_builders_add_carries_the_prefix_the_plan_looks_for(tmp_path):
    """The FP32 plan finds the explanations by their layers' names, which the parser takes from the nodes'."""
    import onnx

    from hsi_xai_node.explain import SegmentationExplainConfig, build_segmentation_explainer

    tiny_segmenter(tmp_path / "t.onnx")
    model = onnx.load(str(tmp_path / "t.onnx"))
    forward = {n.name for n in model.graph.node}
    graph = build_segmentation_explainer(model, "input", "logits", {"penultimate": "dec1"},
                                         SegmentationExplainConfig(methods=("seg_gradcam", "lrp_epsilon", "deeplift"),
                                                                   layers=("penultimate",)))
    added = [n.name for n in graph.model.graph.node if n.name not in forward]
    assert len(added) > 50 and all(name.startswith(tb.NODE_PREFIX) for name in added)


def test_non_float_comparisons_are_left_alone():
    records = [R("shape", "SHAPE", ["x"], floating=False),
               R("eq", "ELEMENTWISE", ["shape", "c"], op="EQUAL", floating=False),
               R("sel", "SELECT", ["eq", "a", "b"], floating=False)]
    assert tb.plan_fp32_layers(records) == []


# --- binding plan ----------------------------------------------------------------------------------

def io(name, mode, shape, dtype):
    return (name, mode, shape, dtype)


def test_binding_plan_sizes_modes_and_dtypes():
    half, flt = types.SimpleNamespace(name="HALF"), types.SimpleNamespace(name="FLOAT")
    plan = tb.binding_plan([io("input", types.SimpleNamespace(name="INPUT"), (1, 3, 16, 32), flt),
                         io("logits", "output", (1, 5, 16, 32), half),
                         io("mask", "output", (5, 16, 32), "BOOL"),
                         io("labels", "output", (16, 32), np.int64),
                         io("u8", "output", (16, 32, 3), types.SimpleNamespace(name="UINT8"))])
    assert plan["input"].is_input and plan["input"].dtype == np.float32 and plan["input"].nbytes == 3 * 16 * 32 * 4
    assert plan["logits"].dtype == np.float16 and plan["logits"].nbytes == 5 * 16 * 32 * 2
    assert plan["mask"].dtype == np.bool_ and plan["mask"].nbytes == 5 * 16 * 32
    assert plan["labels"].nbytes == 16 * 32 * 8 and plan["u8"].nbytes == 16 * 32 * 3
    assert all(b.copy_back for b in plan.values() if not b.is_input)
    assert not plan["input"].copy_back


def test_binding_plan_copy_back_subset_and_errors():
    specs = [io("x", "input", (2, 2), "FLOAT"), io("a", "output", (2,), "FLOAT"), io("b", "output", (2,), "FLOAT")]
    plan = tb.binding_plan(specs, copy_back=["b"])
    assert [n for n, b in plan.items() if b.copy_back] == ["b"] and plan["a"].nbytes == 8
    with pytest.raises(EngineError, match=r"outputs_to_copy names \['x', 'z'\], which are not engine outputs"):
        tb.binding_plan(specs, copy_back=["z", "x"])
    with pytest.raises(EngineError, match=r"tensor 'x' has dynamic shape \(-1, 2\)"):
        tb.binding_plan([io("x", "input", (-1, 2), "FLOAT")])
    with pytest.raises(EngineError, match="tensor dtype BF16 has no numpy equivalent"):
        tb.binding_plan([io("x", "input", (2,), "BF16")])
    with pytest.raises(EngineError, match="I/O mode 'none'"):
        tb.binding_plan([io("x", types.SimpleNamespace(name="NONE"), (2,), "FLOAT")])


def test_parser_errors_name_their_nodes():
    class Err:
        def __init__(self, node, name, op, desc):
            self._v = {"node": node, "node_name": name, "node_operator": op, "desc": desc}

        def __getattr__(self, attr):
            return lambda: self._v[attr]

    assert tb.parser_error_text(Err(3, "/up1/ConvTranspose", "ConvTranspose", "bad pads")) == \
        "node '/up1/ConvTranspose' (ConvTranspose): bad pads"
    assert tb.parser_error_text(Err(7, "", "Scatter", "unsupported")) == "node #7 (Scatter): unsupported"
    assert tb.parser_error_text(Err(-1, "", "", "no graph")) == "graph: no graph"


# --- without TensorRT (this machine) ---------------------------------------------------------------

@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_the_error_says_so(tmp_path):
    msg = "tensorrt backend: the TensorRT Python package is not installed"
    with pytest.raises(EngineError, match=msg):
        TensorRTEngine(ONNX, cache_dir=tmp_path)
    with pytest.raises(EngineError, match=msg):
        open_engine(ONNX, "tensorrt", cache_dir=tmp_path)
    with pytest.raises(EngineError, match=msg):
        tb.build_engine(ONNX, "fp16", None)
    tiny_segmenter(tmp_path / "t.onnx")
    with pytest.raises(EngineError, match=msg) as err:
        cmd_build_engine(_cli_args(tmp_path / "t.onnx", "--graph-only", "--cache-dir", str(tmp_path)))
    # building an engine needs TensorRT: the error says where it comes from, not "use another backend"
    assert "needs TensorRT 10 and pycuda on the machine that will run the engine" in str(err.value)
    assert "ort-cpu" not in str(err.value) and "use backend" not in str(err.value)
    assert not list(tmp_path.glob("*.engine"))


def _cli_args(*argv):
    return build_parser().parse_args(["build-engine", *map(str, argv)])


def test_cli_arguments():
    a = _cli_args("m.onnx")
    assert (a.model, a.precision, a.cache_dir, a.graph_only, a.func.target) == (
        "m.onnx", "fp16", None, False, "hsi_xai_node.cli:cmd_build_engine")
    with pytest.raises(SystemExit):
        _cli_args("m.onnx", "--precision", "int8")
    with pytest.raises(EngineError, match="no such model file"):
        cmd_build_engine(_cli_args("/nonexistent/m.onnx"))


# --- fakes of tensorrt and pycuda: the engine's control flow without a GPU -------------------------

DataType = enum.Enum("DataType", "FLOAT HALF BOOL INT32 BF16")
TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")
LayerType = enum.Enum("LayerType", "ELEMENTWISE SELECT TOPK REDUCE SHUFFLE CONVOLUTION ACTIVATION CONSTANT")
ElementWiseOperation = enum.Enum("ElementWiseOperation", "GREATER LESS EQUAL OR PROD")
BuilderFlag = enum.Enum("BuilderFlag", "FP16 OBEY_PRECISION_CONSTRAINTS TF32")


class FakeCuda(types.ModuleType):
    """pycuda.driver: device memory is numpy bytes; copies and kernels must run with a context pushed."""

    class Error(Exception):
        pass

    def __init__(self):
        super().__init__("pycuda.driver")
        self.memory, self.stack, self.copies_back, cuda = {}, [], [], self

        class Context:
            detached = 0

            def push(self):
                cuda.stack.append(self)

            def detach(self):
                Context.detached += 1

            @staticmethod
            def pop():
                cuda.stack.pop()

        class Alloc:
            def __init__(self, n):
                self.buf, self.addr, self.freed = np.zeros(n, np.uint8), 0x1000 * (len(cuda.memory) + 1), False
                cuda.memory[self.addr] = self.buf

            def __int__(self):
                return self.addr

            def free(self):
                assert cuda.stack
                self.freed = True

        class Device:
            def __init__(self, i):
                pass

            def name(self):
                return "Fake GPU"

            def compute_capability(self):
                return (8, 7)

            def retain_primary_context(self):
                return Context()

        class Stream:
            handle = 77

            def synchronize(self):
                assert cuda.stack

        self.Context, self.mem_alloc, self.Device, self.Stream = Context, Alloc, Device, Stream

    def init(self):
        pass

    def pagelocked_empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def memcpy_htod_async(self, dst, src, stream):
        assert self.stack and stream.handle == 77
        dst.buf[:src.nbytes] = src.reshape(-1).view(np.uint8)

    def memcpy_dtoh_async(self, dst, src, stream):
        assert self.stack
        dst.reshape(-1).view(np.uint8)[:] = src.buf[:dst.nbytes]
        self.copies_back.append(next(n for n, a in self.names.items() if a == int(src)))


def fake_blob(shape=(2, 3), marker="ok"):
    """A "serialized engine": x (float32) -> y = 2x (float32), mask = x > 0 (bool)."""
    return json.dumps({"shape": list(shape), "marker": marker}).encode()


class FakeTrt(types.ModuleType):
    __version__ = "10.0.0-fake"

    def __init__(self, cuda):
        super().__init__("tensorrt")
        self.float32, self.float16 = DataType.FLOAT, DataType.HALF
        self.DataType, self.TensorIOMode, self.LayerType = DataType, TensorIOMode, LayerType
        self.ElementWiseOperation, self.BuilderFlag = ElementWiseOperation, BuilderFlag
        self.deserialized = []
        trt = self

        class ILogger:
            def __init__(self):
                pass

        class Context:
            def set_tensor_address(self, name, addr):
                cuda.names[name] = addr

            def execute_async_v3(self, handle):
                assert cuda.stack and handle == 77
                mem = {n: cuda.memory[a] for n, a in cuda.names.items()}
                x = mem["x"].view(np.float32)
                mem["y"].view(np.float32)[:] = 2 * x
                mem["mask"].view(np.bool_)[:] = x > 0
                return True

        class Engine:
            def __init__(self, spec):
                self.tensors = {"x": (TensorIOMode.INPUT, DataType.FLOAT), "y": (TensorIOMode.OUTPUT, DataType.FLOAT),
                                "mask": (TensorIOMode.OUTPUT, DataType.BOOL)}
                self.shape, self.num_io_tensors = tuple(spec["shape"]), 3

            def get_tensor_name(self, i):
                return list(self.tensors)[i]

            def get_tensor_mode(self, n):
                return self.tensors[n][0]

            def get_tensor_dtype(self, n):
                return self.tensors[n][1]

            def get_tensor_shape(self, n):
                return self.shape

            def create_execution_context(self):
                cuda.names = {}
                return Context()

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, blob):
                assert cuda.stack
                spec = json.loads(bytes(blob))
                trt.deserialized.append(spec["marker"])
                return None if spec["marker"] == "stale" else Engine(spec)

        self.ILogger, self.Runtime = ILogger, Runtime


@pytest.fixture
def fakes(monkeypatch):
    cuda = FakeCuda()
    trt = FakeTrt(cuda)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    for name, mod in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", cuda)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(tb, "_TRT_LOGGER", None)
    builds = []

    def build(onnx_bytes, precision, timing_cache_path, log):
        builds.append((onnx_bytes, precision, timing_cache_path))
        return fake_blob(marker=builds.__len__().__str__())

    monkeypatch.setattr(tb, "build_engine", build)
    return types.SimpleNamespace(cuda=cuda, trt=trt, builds=builds)


def test_engine_builds_once_then_loads_from_cache(fakes, tmp_path):
    e = TensorRTEngine(ONNX, "fp16", cache_dir=tmp_path)
    assert e.built and e.cache_path.is_file() and len(fakes.builds) == 1
    assert fakes.builds[0][2] == EngineCache(tmp_path).timing_cache_path("10.0.0-fake", "Fake GPU sm_87")
    again = TensorRTEngine(ONNX, "fp16", cache_dir=tmp_path)
    assert not again.built and again.cache_path == e.cache_path and len(fakes.builds) == 1
    TensorRTEngine(ONNX, "fp32", cache_dir=tmp_path)  # another key part: another engine
    TensorRTEngine(ONNX + b"!", "fp16", cache_dir=tmp_path)
    assert len(fakes.builds) == 3 and len(list(tmp_path.glob("*.engine"))) == 3
    assert not fakes.cuda.stack  # every push was popped


def test_engine_names_run_and_copies_only_requested_outputs(fakes, tmp_path):
    e = TensorRTEngine(ONNX, cache_dir=tmp_path)
    assert e.backend == "tensorrt" and list(e.inputs) == ["x"] and list(e.outputs) == ["y", "mask"]
    assert e.outputs["mask"].dtype == np.bool_ and e.inputs["x"].shape == (2, 3)
    x = np.array([[1, -2, 3], [-4, 5, 0]], np.float32)
    out = e.run({"x": x}, ["mask"])
    assert list(out) == ["mask"] and fakes.cuda.copies_back == ["mask"]
    np.testing.assert_array_equal(out["mask"], x > 0)
    both = e.run({"x": x.astype(np.float64)})  # Engine.run casts to the engine's dtype
    np.testing.assert_array_equal(both["y"], 2 * x)
    assert both["y"].dtype == np.float32 and fakes.cuda.copies_back == ["mask", "y", "mask"]
    both["y"][:] = 0  # returned arrays are copies, not the pinned buffers
    assert e.run({"x": x}, ["y"])["y"][0, 0] == 2


def test_engine_runs_from_another_thread(fakes, tmp_path):
    e = TensorRTEngine(ONNX, cache_dir=tmp_path)
    got = {}
    t = threading.Thread(target=lambda: got.update(e.run({"x": np.ones((2, 3), np.float32)}, ["y"])))
    t.start()
    t.join()
    np.testing.assert_array_equal(got["y"], 2)


def test_outputs_to_copy(fakes, tmp_path):
    e = TensorRTEngine(ONNX, cache_dir=tmp_path, outputs_to_copy=["y"])
    assert list(e.outputs) == ["y", "mask"]  # still known by name, just never copied
    with pytest.raises(EngineError, match=r"output\(s\) \['mask'\] are not copied back"):
        e.run({"x": np.zeros((2, 3), np.float32)}, ["mask"])
    with pytest.raises(EngineError, match="not engine outputs"):
        TensorRTEngine(ONNX, cache_dir=tmp_path, outputs_to_copy=["logits"])
    assert not fakes.cuda.stack


def test_corrupt_cache_and_stale_engine_are_rebuilt(fakes, tmp_path, caplog):
    e = TensorRTEngine(ONNX, cache_dir=tmp_path)
    e.cache_path.write_bytes(e.cache_path.read_bytes()[:-3])
    with caplog.at_level(logging.WARNING, logger=tb.log.name):
        assert TensorRTEngine(ONNX, cache_dir=tmp_path).built
    assert "truncated" in caplog.text and len(fakes.builds) == 2
    # a valid file whose engine this TensorRT cannot deserialize: rebuilt once, then fine
    key = engine_cache_key(ONNX, "fp16", "10.0.0-fake", "Fake GPU sm_87")
    EngineCache(tmp_path).store(key, fake_blob(marker="stale"))
    e = TensorRTEngine(ONNX, cache_dir=tmp_path)
    assert e.built and fakes.trt.deserialized[-2:] == ["stale", "3"] and "did not deserialize" in caplog.text
    assert not TensorRTEngine(ONNX, cache_dir=tmp_path).built


def test_dynamic_engine_shapes_are_refused_and_memory_released(fakes, tmp_path, monkeypatch):
    monkeypatch.setattr(tb, "build_engine", lambda *a: fake_blob(shape=(-1, 3)))
    with pytest.raises(EngineError, match=r"dynamic shape \(-1, 3\)"):
        TensorRTEngine(ONNX, cache_dir=tmp_path)
    assert not fakes.cuda.stack and fakes.cuda.Context.detached == 1


def test_close_frees_device_memory(fakes, tmp_path):
    e = TensorRTEngine(ONNX, cache_dir=tmp_path)
    allocs = list(e._device.values())
    e.close()
    e.close()  # idempotent
    assert all(a.freed for a in allocs) and fakes.cuda.Context.detached == 1 and not fakes.cuda.stack


def test_cli_builds_then_finds(fakes, tmp_path, capsys):
    tiny_segmenter(tmp_path / "t.onnx")
    args = _cli_args(tmp_path / "t.onnx", "--graph-only", "--cache-dir", tmp_path / "c", "--precision", "fp32")
    assert cmd_build_engine(args) == 0 and cmd_build_engine(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("engine built: ") and out[1].startswith("engine found: ")
    assert out[0].split(": ")[1] == out[1].split(": ")[1] and fakes.builds[0][1] == "fp32"
    assert fakes.builds[0][0] == (tmp_path / "t.onnx").read_bytes()


def test_cli_default_builds_the_pipelines_graph(fakes, tmp_path, capsys):
    onnx_path = REPO / "models" / "unet_bundled_3.onnx"
    if not onnx_path.exists():
        pytest.skip("bundled models are made by `hsi-xai train-segmentation --out models`")
    assert cmd_build_engine(_cli_args(onnx_path, "--cache-dir", tmp_path / "c", "--methods", "activation")) == 0
    # the key is over the model plus its explain sub-graphs: what the node runs, not the bare file
    assert len(fakes.builds) == 1 and fakes.builds[0][0] != onnx_path.read_bytes()
    assert capsys.readouterr().out.startswith("engine built: ")


# --- build_engine against a fake builder: flags, warnings, parse errors, timing cache ----------------

class FakeTensor:
    def __init__(self, name, dtype=DataType.FLOAT, shape=(1, 3)):
        self.name, self.dtype, self.shape = name, dtype, shape


class FakeLayer:
    def __init__(self, name, type, ins, outs, op=None):
        self.name, self.type, self._ins, self._outs, self._op = name, type, ins, outs, op
        self.precision, self.output_types = None, {}
        self.num_inputs, self.num_outputs = len(ins), len(outs)

    def get_input(self, i):
        return self._ins[i]

    def get_output(self, i):
        return self._outs[i]

    def set_output_type(self, i, dt):
        self.output_types[i] = dt


class FakeElementWise(FakeLayer):
    @property
    def op(self):
        return self._op


def fake_network(input_shape=(1, 3)):
    x, r, z, g = FakeTensor("x", shape=input_shape), FakeTensor("r"), FakeTensor("z"), FakeTensor("g")
    m, w = FakeTensor("m", DataType.BOOL), FakeTensor("w")
    layers = [FakeLayer("relu", LayerType.ACTIVATION, [x], [r]), FakeLayer("zero", LayerType.CONSTANT, [], [z]),
              FakeElementWise("gt", LayerType.ELEMENTWISE, [r, z], [m], ElementWiseOperation.GREATER),
              FakeLayer("where", LayerType.SELECT, [m, g, z], [w])]
    return types.SimpleNamespace(num_layers=len(layers), get_layer=layers.__getitem__, layers=layers,
                                 num_inputs=1, get_input=lambda i: x)


@pytest.fixture
def fake_builder(fakes, monkeypatch):
    # flags: TensorRT's default config has TF32 on
    trt, state = fakes.trt, types.SimpleNamespace(fast_fp16=True, parse_ok=True, network=fake_network(),
                                                  flags={"TF32"}, timing_in=[], built=0)

    class Timing:
        def __init__(self, blob):
            self.blob = bytes(blob)

        def serialize(self):
            return self.blob + b"+timing"

    class Config:
        def set_flag(self, f):
            state.flags.add(f.name)

        def clear_flag(self, f):
            state.flags.discard(f.name)

        def create_timing_cache(self, blob):
            state.timing_in.append(bytes(blob))
            return Timing(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

    class Builder:
        def __init__(self, logger):
            self.platform_has_fast_fp16 = state.fast_fp16

        def create_network(self, flags):
            assert flags == 0
            return state.network

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            state.built += 1
            return memoryview(b"ENGINE")  # like IHostMemory: a buffer with nbytes

    class Parser:
        num_errors = 1

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            return state.parse_ok

        def get_error(self, i):
            return types.SimpleNamespace(node=lambda: 4, node_name=lambda: "/dec/Where_3",
                                         node_operator=lambda: "Where", desc=lambda: "unsupported type")

    trt.Builder, trt.OnnxParser, trt.IElementWiseLayer = Builder, Parser, FakeElementWise
    monkeypatch.setattr(tb, "build_engine", REAL_BUILD_ENGINE)
    return state


def test_fp16_build_pins_masks_to_fp32_and_uses_the_timing_cache(fake_builder, tmp_path, caplog):
    timing = tmp_path / "t" / "timing.cache"
    with caplog.at_level(logging.INFO, logger=tb.log.name):
        assert tb.build_engine(ONNX, "fp16", timing) == b"ENGINE"
    assert fake_builder.flags == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}
    layers = {layer.name: layer for layer in fake_builder.network.layers}
    assert layers["gt"].precision == DataType.FLOAT and layers["gt"].output_types == {}  # bool output kept
    assert layers["where"].precision == DataType.FLOAT and layers["where"].output_types == {0: DataType.FLOAT}
    assert layers["relu"].precision is None
    assert f"timing cache {timing}" in caplog.text and "first builds take minutes" in caplog.text
    assert "built in" in caplog.text and "2 explanation, comparison and selection layers kept in fp32" in caplog.text
    assert timing.read_bytes() == b"+timing" and fake_builder.timing_in == [b""]
    tb.build_engine(ONNX, "fp16", timing)  # the second build starts from the first one's timings
    assert fake_builder.timing_in[-1] == b"+timing" and timing.read_bytes() == b"+timing+timing"


def test_fp16_without_fast_fp16_warns_and_builds_fp32(fake_builder, caplog):
    fake_builder.fast_fp16 = False
    with caplog.at_level(logging.WARNING, logger=tb.log.name):
        tb.build_engine(ONNX, "fp16", None)
    assert "fp16 does nothing here" in caplog.text and fake_builder.flags == set()
    caplog.clear()
    fake_builder.flags = {"TF32"}  # a fresh config: TensorRT's default
    tb.build_engine(ONNX, "fp32", None)  # fp32 asked: nothing to warn about, no fp16 flag
    assert "fp16" not in caplog.text and fake_builder.flags == set()


def test_every_build_clears_tf32(fake_builder):
    """TensorRT's BuilderFlag.TF32 is on by default: on Ampere and newer GPUs a float32 convolution then rounds its
    inputs to 10-bit mantissas (cuDNN's TF32 on an H200 moved input attributions by 1-5%, BENCHMARKS.md). Every
    precision clears it, the FP32 layers of an fp16 build being there for exactness too; engines of the key format
    before this are not reused."""
    for precision, fast_fp16 in (("fp32", True), ("fp16", True), ("fp16", False)):
        fake_builder.flags, fake_builder.fast_fp16 = {"TF32"}, fast_fp16
        tb.build_engine(ONNX, precision, None)
        assert "TF32" not in fake_builder.flags, (precision, fast_fp16)
    assert tb.KEY_FORMAT >= 2


def test_parse_errors_and_dynamic_inputs_fail_before_building(fake_builder):
    fake_builder.parse_ok = False
    with pytest.raises(EngineError, match=r"could not parse the ONNX graph:\n  node '/dec/Where_3' \(Where\): "
                                          "unsupported type"):
        tb.build_engine(ONNX, "fp16", None)
    fake_builder.parse_ok, fake_builder.network = True, fake_network(input_shape=(-1, 3))
    with pytest.raises(EngineError, match=r"input 'x' has dynamic shape \(-1, 3\)"):
        tb.build_engine(ONNX, "fp16", None)
    assert fake_builder.built == 0


# --- the real thing, where TensorRT and a GPU exist --------------------------------------------------

def _mask_graph():
    """x -> conv -> relu -> Where(relu > 0, relu, -1) and ArgMax over channels: the explain graph's kinds."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    zero, neg = (numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((0.0, "zero"), (-1.0, "neg")))
    nodes = [helper.make_node("Conv", ["x", "w"], ["logits"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["logits"], ["r"]), helper.make_node("Greater", ["r", "zero"], ["m"]),
             helper.make_node("Where", ["m", "r", "neg"], ["masked"]),
             helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0)]
    shape = [1, 3, 16, 24]
    graph = helper.make_graph(nodes, "mask", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 16, 24]),
                               helper.make_tensor_value_info("masked", TensorProto.FLOAT, [1, 4, 16, 24]),
                               helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 16, 24])], [w, zero, neg])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT not installed (no GPU on this machine)")
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-2), ("fp16", 3e-2)])  # fp32 builds may use TF32 convs
def test_real_engine_matches_onnx_runtime(tmp_path, precision, tol):
    import onnxruntime as ort

    data = _mask_graph()
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 24)).astype(np.float32)
    ref = dict(zip(["logits", "masked", "labels"],
                   ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})))
    engine = TensorRTEngine(data, precision, cache_dir=tmp_path)
    assert engine.built and set(engine.outputs) == {"logits", "masked", "labels"}
    out = engine.run({"x": x})
    for name in ("logits", "masked"):
        np.testing.assert_allclose(out[name].astype(np.float32), ref[name], rtol=tol, atol=tol)
    top2 = np.sort(ref["logits"], axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.1  # away from near-ties, the argmax must agree
    np.testing.assert_array_equal(out["labels"].astype(np.int64)[clear], ref["labels"][clear])
    again = TensorRTEngine(data, precision, cache_dir=tmp_path)
    assert not again.built
    np.testing.assert_array_equal(again.run({"x": x}, ["logits"])["logits"], out["logits"])

