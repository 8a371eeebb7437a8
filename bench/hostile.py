"""Hostile inputs, round two: how many of each kind were tried, and what came of them.

    .venv/bin/python bench/hostile.py [--examples 300] [--seed 0] [--json out.json]

Kinds (each example generated from the seed, so a run can be repeated exactly):

* card JSON: the bundled model card with hostile parts spliced in (integers of thousands of digits, nesting
  hundreds deep, tens of thousands of keys, huge strings, NaN), read by ModelCard.load;
* rig and parameter YAML: the shipped files with hostile parts (alias bombs under any key, big numbers, deep
  nesting, long lists), read by read_rig and load_config;
* compressed images: real PNG and JPEG files, their headers rewritten to declare other sizes, depths and colour
  types, or cut short or with bytes flipped, decoded by the node's and the replay's decoder for a 640x480 bgr8
  camera and for the 2048x1088 mono16 mosaic;
* models: the tiny test segmenter with a shape-changing op (Tile, Expand, Reshape, Range, ConstantOfShape)
  whose size is computed from the input's values, loaded by the segmentation pipeline.

For every example: the outcome (a value, the project's own error, or anything else, which is a defect), the
time it took and the process's peak memory afterwards. The suite runs a small fixed-seed slice of the same
properties (test/test_files.py, test/transports, test/runtime/test_memory.py).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hsi_xai_node.errors import InputError  # noqa: E402
from hsi_xai_node.model_card import ModelCard  # noqa: E402
from hsi_xai_node.sensor.rig import DEFAULT_RIG, read_rig  # noqa: E402
from hsi_xai_node.transports import messages as m  # noqa: E402
from hsi_xai_node.transports.config import DEFAULT_CONFIG, load_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CARD = REPO / "models" / "unet_bundled_25pn.json"


def json_part(r: random.Random) -> str:
    return r.choice([
        "9" * r.choice([100, 4300, 5001, 20000]), "-" + "1" * 45, "1e99999", "NaN", "-Infinity",
        "[" * r.choice([65, 500, 1000, 5000]) + "]" * 0,  # unbalanced too
        "[" * 70 + "1" + "]" * 70, "{" + ", ".join(f'"k{i}": {i}' for i in range(r.choice([10, 20000, 150000]))) + "}",
        '"' + "x" * r.choice([300, 100000]) + '"', '"\\u0000\\u202e\\n"', "true", "null", "[]"])


def hostile_card(r: random.Random) -> str:
    text = CARD.read_text()
    for _ in range(r.randint(1, 3)):
        target = r.choice(['"crop_top": ', '"scale": ', '"name": ', '"classes": ', '"layers": ', '"metrics": ', "{"])
        at = text.find(target)
        if at < 0:
            continue
        at += len(target)
        end = at + r.randint(0, 12)
        text = text[:at] + json_part(r) + text[end:]
    return text


def yaml_part(r: random.Random) -> str:
    depth = r.choice([2, 5, 8, 9])
    bomb = ["b0: &b0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 10) + "]" for i in range(1, depth)]
    return r.choice(["\n".join(bomb) + "\n", f"big: {'9' * r.choice([50, 5001])}\n",
                     "deep: " + "[" * r.choice([70, 2000]) + "]" * 0 + "\n", "list: [" + "1, " * 100000 + "1]\n",
                     "x: !!python/object/apply:os.system [ls]\n", "t: 2001-02-30\n", "s: " + "a" * 200000 + "\n"])


def hostile_yaml(r: random.Random, base: Path) -> str:
    text = base.read_text()
    part = yaml_part(r)
    if r.random() < 0.5:
        return part + text
    anchor = part.split(":")[0] if part.startswith("b0") else None
    if anchor:  # the bomb used as a value somewhere
        key = r.choice(["homography:", "name:", "memory_limit_mb:", "methods:"])
        i = text.find(key)
        if i >= 0:
            return part + text[:i + len(key)] + f" *b{part.count('&b') - 1}\n" + text[i + len(key):]
    return text + "\n" + part


def png_bytes(image: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".png", image)[1].tobytes()


def hostile_image(r: random.Random) -> tuple[bytes, str]:
    import cv2

    kind = r.choice(["png_header", "png_cut", "png_flip", "jpeg_header", "jpeg_cut", "random"])
    if kind.startswith("png"):
        data = bytearray(png_bytes(np.zeros((r.choice([1, 480, 1088]), r.choice([1, 640, 2048])),
                                            r.choice([np.uint8, np.uint16]))))
        if kind == "png_header":
            data[16:24] = r.randint(0, 1 << 31).to_bytes(4, "big") + r.randint(0, 1 << 31).to_bytes(4, "big")
            data[24], data[25] = r.choice([1, 2, 4, 8, 16, 32]), r.choice([0, 2, 3, 4, 6, 7])
        elif kind == "png_cut":
            data = data[:r.randint(0, len(data))]
        else:
            for _ in range(r.randint(1, 20)):
                data[r.randrange(len(data))] = r.randrange(256)
        return bytes(data), "png"
    if kind.startswith("jpeg"):
        data = bytearray(cv2.imencode(".jpg", np.zeros((480, 640, 3), np.uint8))[1].tobytes())
        if kind == "jpeg_header":
            sof = data.find(b"\xff\xc0")
            if sof > 0:
                data[sof + 5:sof + 9] = r.randint(0, 65535).to_bytes(2, "big") + r.randint(0, 65535).to_bytes(2, "big")
        else:
            data = data[:r.randint(0, len(data))]
        return bytes(data), "jpeg"
    return bytes(r.randrange(256) for _ in range(r.randint(0, 2000))), r.choice(["png", "jpeg"])


def hostile_model(r: random.Random, directory: Path) -> tuple[Path, str]:
    import dataclasses

    import onnx
    from onnx import TensorProto, helper

    from hsi_xai_node.model_card import file_sha256
    from test.test_model_card import write_pair

    directory.mkdir(parents=True, exist_ok=True)
    path = write_pair(directory)
    model = onnx.load(str(path))
    op = r.choice(["Tile", "Expand", "Reshape", "Range", "ConstantOfShape"])
    ints = lambda n, v: helper.make_tensor(n, TensorProto.INT64, [len(v)], np.asarray(v, np.int64))  # noqa: E731
    nodes = [helper.make_node("ReduceMax", ["input"], ["peak"], keepdims=0),
             helper.make_node("Mul", ["peak", "k"], ["scaled"]),
             helper.make_node("Cast", ["scaled"], ["n"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["n", "one"], ["n1"])]
    if op == "Tile":
        nodes += [helper.make_node("Concat", ["ones3", "n1"], ["reps"], axis=0), helper.make_node("Tile", ["input", "reps"], ["big"])]
    elif op == "Expand":
        nodes += [helper.make_node("Concat", ["ones3", "n1"], ["shape"], axis=0),
                  helper.make_node("Expand", ["input", "shape"], ["big"])]
    elif op == "Reshape":
        nodes += [helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0), helper.make_node("Reshape", ["input", "shape"], ["big"])]
    elif op == "Range":
        nodes += [helper.make_node("Cast", ["scaled"], ["limit"], to=TensorProto.FLOAT),
                  helper.make_node("Range", ["zero", "limit", "step"], ["big"])]
    else:
        nodes += [helper.make_node("ConstantOfShape", ["n1"], ["big"])]
    nodes += [helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
              helper.make_node("Mul", ["total", "nothing"], ["zero_total"]),
              helper.make_node("Add", ["input", "zero_total"], ["fed"])]
    model.graph.node[0].input[0] = "fed"
    for node in reversed(nodes):
        model.graph.node.insert(0, node)
    model.graph.initializer.extend([
        helper.make_tensor("k", TensorProto.FLOAT, [], [float(r.choice([10, 1000, 100000]))]), ints("one", [1]),
        ints("ones3", [1, 1, 1]), ints("minus1", [-1]), helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("step", TensorProto.FLOAT, [], [1.0]), helper.make_tensor("nothing", TensorProto.FLOAT, [], [0.0])])
    onnx.save(model, str(path))
    card = ModelCard.load(path.with_suffix(".json"))
    path.with_suffix(".json").write_text(dataclasses.replace(card, sha256=file_sha256(path)).to_json())
    return path, op


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def trial(kind: str, fn) -> tuple[str, float]:
    t0 = time.perf_counter()
    try:
        fn()
        outcome = "accepted"
    except InputError as exc:
        outcome = "refused (project error)"
        if "\n" in str(exc) or len(str(exc)) > 1000:
            outcome = "DEFECT: multi-line or over-long message"
    except Exception as exc:  # noqa: BLE001 - counting, not hiding: every one of these is a defect
        outcome = f"DEFECT: {type(exc).__name__}"
    return outcome, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=300, help="examples per kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", nargs="*", default=[], help="only these kinds (default: all)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    r = random.Random(args.seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def run(kind: str, make):
            if args.kinds and kind not in args.kinds:
                return
            counts, worst = Counter(), 0.0
            for i in range(args.examples if kind != "models" else max(1, args.examples // 10)):
                fn, label = make(i)
                outcome, seconds = trial(kind, fn)
                counts[f"{outcome}{f' ({label})' if label else ''}"] += 1
                worst = max(worst, seconds)
            results[kind] = {"tried": sum(counts.values()), "outcomes": dict(counts), "slowest_s": worst,
                             "peak_rss_mb": peak_mb()}
            print(f"{kind:22s} {sum(counts.values()):6d} tried, slowest {worst:6.2f} s, peak RSS {peak_mb():7.1f} MB: "
                  + ", ".join(f"{k} {v}" for k, v in counts.most_common()), flush=True)

        def card(i):
            path = tmp / f"card{i}.json"
            path.write_text(hostile_card(r))
            return (lambda: ModelCard.load(path)), ""

        def rig(i):
            path = tmp / f"rig{i}.yaml"
            path.write_text(hostile_yaml(r, DEFAULT_RIG))
            return (lambda: read_rig(path)), ""

        def params(i):
            path = tmp / f"params{i}.yaml"
            path.write_text(hostile_yaml(r, DEFAULT_CONFIG))
            return (lambda: load_config(path)), ""

        def image(i):
            data, codec = hostile_image(r)
            msg = m.typestore().types[m.COMPRESSED](header=m.header(1, "cam"), format=codec,
                                                      data=np.frombuffer(data, np.uint8).copy())
            if r.random() < 0.5:
                return (lambda: m.camera_image(msg, "camera", "bgr8", 640, 480)), ""
            return (lambda: m.compressed_to_array(msg, "mosaic", ("mono16", "16UC1"), lossless=True,
                                                  size=(2048, 1088))), ""

        def model(i):
            from hsi_xai_node.runtime import Pipeline, PipelineConfig

            path, op = hostile_model(r, tmp / f"model{i}")
            return (lambda: Pipeline(PipelineConfig(model=str(path), backend="ort-cpu", overlay_scale="frame"))), op

        run("card JSON", card)
        run("rig YAML", rig)
        run("parameter YAML", params)
        run("compressed images", image)
        run("models", model)
    if args.json:
        Path(args.json).write_text(json.dumps({"examples": args.examples, "seed": args.seed, "kinds": results},
                                              indent=1))
    return 1 if any(k.startswith("DEFECT") for v in results.values() for k in v["outcomes"]) else 0


if __name__ == "__main__":
    sys.exit(main())
