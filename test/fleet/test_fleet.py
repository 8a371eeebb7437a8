"""`hsi-xai fleet` on a local Ray instance (2 CPUs) with a small fleet (test/fleet/bags.py): the sharded
outputs equal single-process replays message for message, a corrupt bag fails alone, a worker killed
mid-shard has its shard retried, --resume keeps what is done, and the report's figures are the bags'."""

import json
import os

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from hsi_xai_node.errors import InputError
from hsi_xai_node.fleet import run_fleet
from hsi_xai_node.fleet._worker import CRASH_ENV
from hsi_xai_node.transports import messages as m
from hsi_xai_node.transports.config import load_config
from hsi_xai_node.transports.replay import replay
from test.fleet.bags import FRAME_NS, FRAMES, write_fleet

ray = pytest.importorskip("ray", reason="the fleet runs on Ray: pip install -e '.[fleet]'")
SHARD_S = 0.05  # shorter than the bags (0.08-0.24 s): two to five shards each, edges between frames


RAY_START_RECORDS: list = []  # what Ray logged while the fleet's own start-up ran (checked below)


@pytest.fixture(scope="module")
def ray_local():
    """The local instance the fleet itself starts (its start-up code, as `hsi-xai fleet` runs it)."""
    import logging

    from hsi_xai_node.fleet._run import _start_ray

    class Keep(logging.Handler):
        def emit(self, record):
            RAY_START_RECORDS.append(record.getMessage())

    handler = Keep(level=logging.DEBUG)
    logging.getLogger("ray").addHandler(handler)
    try:
        assert _start_ray(2, None, {})
    finally:
        logging.getLogger("ray").removeHandler(handler)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def config():
    return load_config(backend="ort-cpu")


@pytest.fixture(scope="module")
def fleet_in(tmp_path_factory, config):
    return write_fleet(tmp_path_factory.mktemp("fleet") / "bags", config)


@pytest.fixture(scope="module")
def fleet_out(tmp_path_factory, ray_local, config, fleet_in):
    out = tmp_path_factory.mktemp("fleet_out") / "out"
    return run_fleet(fleet_in, out, config, workers=2, shard_seconds=SHARD_S, progress=False), out


@pytest.fixture(scope="module")
def single(tmp_path_factory, config, fleet_in):
    """Each good bag replayed whole, in this process."""
    root = tmp_path_factory.mktemp("single")
    return {name: (replay(fleet_in / name, root / name.replace("/", "_"), config, progress=False),
                   root / name.replace("/", "_")) for name in FRAMES}


def bag_content(path):
    """Connections (topic, type, QoS) and every message (topic, log time, bytes), /diagnostics without its
    content (it carries run-time figures: frames/s, wall time)."""
    with Reader(path) as r:
        conns = sorted((c.topic, c.msgtype, str(c.ext.offered_qos_profiles)) for c in r.connections)
        msgs = sorted((c.topic, t, b"" if c.topic == "/diagnostics" else bytes(d)) for c, t, d in r.messages())
    return conns, msgs


@pytest.mark.parametrize("name", list(FRAMES))
def test_sharded_output_equals_a_single_replay(fleet_out, single, name):
    fs, out = fleet_out
    conns, msgs = bag_content(out / name)
    want_conns, want_msgs = bag_content(single[name][1])
    assert conns == want_conns
    assert len(msgs) == len(want_msgs) and msgs == want_msgs
    doc = json.loads((out / name / "summary.json").read_text())
    s = single[name][0]
    assert doc["shards"] >= 2
    for key in ("frames_in", "frames_processed", "uncalibrated_frames", "reference_updates", "camera_sets_in",
                "camera_sets_processed", "detections_total", "detections_per_class"):
        assert doc[key] == getattr(s, key), key
    assert {k: v["count"] for k, v in doc["bad"].items()} == {k: v["count"] for k, v in s.bad.items()}
    assert doc["activation_residual_max"] == pytest.approx(s.activation_residual_max, rel=1e-6)


def test_disordered_and_reference_change_bags_are_what_they_claim(single):
    c, d = single["c"][0], single["d"][0]
    assert c.frames_processed == 3 and c.bad_total == 3  # two stamps out of order, one damaged white
    assert d.frames_processed == 6 and d.reference_updates >= 1


def test_corrupt_bag_fails_alone(fleet_out):
    fs, out = fleet_out
    assert fs.bags == 5 and fs.bags_done == 4 and fs.bags_failed == 1
    (failure,) = fs.failures
    assert failure["bag"] == "junk" and "cannot be opened" in failure["reason"]
    assert not (out / "junk").exists()
    assert fs.frames_processed == sum(FRAMES.values())


def test_report_figures_are_the_bags(fleet_out, single, config):
    fs, out = fleet_out
    doc = json.loads((out / "fleet.json").read_text())
    bags = {b["name"]: b for b in doc["bags"]}
    assert bags["junk"]["status"] == "failed" and bags["junk"]["output"] is None
    # class frequencies: against the labels the single replay published, counted here
    labels = {}
    with Reader(single["a"][1]) as r:
        conns = [c for c in r.connections if c.topic == config.output_topic("labels")]
        for c, t, d in r.messages(connections=conns):
            ids, n = np.unique(m.image_to_array(m.deserialize(d, c.msgtype), "labels", ("mono8",)),
                               return_counts=True)
            for i, k in zip(ids, n):
                labels[int(i)] = labels.get(int(i), 0) + int(k)
    names = {1: "road", 2: "road_marks", 3: "vegetation", 4: "sky", 5: "other"}
    total = sum(v for i, v in labels.items() if i in names)
    want = {names[i]: v / total for i, v in labels.items() if i in names}
    got = bags["a"]["summary"]["class_frequencies"]
    assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], abs=1e-12) for k in want)
    # ranked frames: sorted by their criterion, at most 12, thumbnails that decode
    look = doc["worth_a_look"]
    margins = [f["margin"] for f in look["low_margin"]["frames"]]
    assert margins == sorted(margins) and 1 <= len(margins) <= 12
    # the activation maps add up here (float rounding only): no frame is "worth a look" for its residual, and
    # the page says why instead of ranking rounding noise
    from hsi_xai_node.fleet._stats import RESIDUAL_WORTH

    assert max(s.activation_residual_max for s, _ in single.values()) < RESIDUAL_WORTH
    assert look["residual"]["frames"] == []
    for f in look["low_margin"]["frames"]:
        assert f["bag"] in FRAMES and (f["t_ns"] - 1_700_000_000_000_000_000) % FRAME_NS in (0, 1, 2, 3)
        img = cv2.imread(str(out / f["thumbnail"]))
        assert img is not None and img.shape[1] == 3 * 160
    html = (out / "index.html").read_text()
    assert all(f["thumbnail"] in html for f in look["low_margin"]["frames"])
    assert doc["fleet"]["frames_processed"] == sum(FRAMES.values())
    assert "None: no frame&#x27;s residual is above 0.0001: the activation maps add up" in html
    assert "None: no frame has a saturated raw pixel." in html and "no frame has this figure" not in html


def test_report_names_what_ran_and_reads_as_times(fleet_out, config):
    from hsi_xai_node.model_card import ModelCard
    from hsi_xai_node.report_page import MIN_TEXT_PX

    _, out = fleet_out
    html = (out / "index.html").read_text()
    card = ModelCard.load(config.pipeline_config().model.replace(".onnx", ".json"))
    assert html.index("What ran") < html.index("<h2>Bags</h2>")
    for needle in (f"card sha256 {card.sha256[:12]}", "ort-cpu (named in the configuration)",
                   "<td>precision</td><td>segmentation: IEEE float32", "bag(s), ",
                   "UTC", " cores (", "2 on a local Ray instance"):
        assert needle in html, needle
    # frame times as a person reads them: seconds into the bag and the UTC time, not raw log seconds
    assert "s into the bag, 2023-11-14 22:13:2" in html and "log time 1700000000" not in html
    # no column of empty cells: camera shares are not measured without box_spectral, and the page says so
    assert "Camera shares (each detection's gradient x input per camera) are not measured" in html
    assert "<th>camera shares" not in html
    assert not [m for m in RAY_START_RECORDS if "Token authentication" in m]  # Ray's start-up noise is quiet
    assert MIN_TEXT_PX == 13


def test_killed_worker_has_its_shard_retried(tmp_path, ray_local, config, fleet_in, single, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, str(marker))
    src = tmp_path / "in"
    src.mkdir()
    os.symlink(fleet_in / "d", src / "d")
    fs = run_fleet(src, tmp_path / "out", config, workers=1, shard_seconds=SHARD_S, progress=False)
    assert marker.exists() and "exited here on purpose" in marker.read_text()  # a worker did die mid-shard
    assert fs.shards_failed == 0 and fs.bags_done == 1 and fs.frames_processed == FRAMES["d"]
    assert bag_content(tmp_path / "out" / "d") == bag_content(single["d"][1])


def test_resume_keeps_what_is_done(tmp_path, ray_local, config, fleet_in):
    src = tmp_path / "in"
    src.mkdir()
    os.symlink(fleet_in / "d", src / "d")
    out = tmp_path / "out"
    first = run_fleet(src, out, config, workers=2, shard_seconds=SHARD_S, progress=False)
    assert first.shards_run == first.shards >= 2
    stamp = (out / "d" / "metadata.yaml").stat().st_mtime_ns
    with pytest.raises(InputError, match="--resume"):
        run_fleet(src, out, config, workers=2, shard_seconds=SHARD_S, progress=False)
    again = run_fleet(src, out, config, workers=2, shard_seconds=SHARD_S, progress=False, resume=True)
    assert again.shards_resumed == again.shards and again.shards_run == 0 and again.bags_done == 1
    assert (out / "d" / "metadata.yaml").stat().st_mtime_ns == stamp
    assert again.frames_processed == first.frames_processed == FRAMES["d"]
    other = load_config(backend="ort-cpu", overlay_alpha=0.4)  # another configuration: everything again
    third = run_fleet(src, out, other, workers=2, shard_seconds=SHARD_S, progress=False, resume=True)
    assert third.shards_resumed == 0 and third.shards_run == third.shards
    assert (out / "d" / "metadata.yaml").stat().st_mtime_ns != stamp


@pytest.mark.parametrize("width", [1400, 390])
def test_report_fits_the_window_readably(fleet_out, tmp_path, width):
    from test.chromium import render

    fs, out = fleet_out
    probe = render(out / "index.html", tmp_path / "profile", width=width, screenshot=tmp_path / "fleet.png")
    assert probe["images"] >= 4 and probe["loaded"] == probe["images"]
    assert probe["overflow_x"] == 0 and probe["min_font_px"] >= 13
