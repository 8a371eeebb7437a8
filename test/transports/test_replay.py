"""The rosbag2 replay through real bag files, checked with an independent reader (mcap + mcap_ros2).

Segmentation on the raw frames (bags without cameras, detection configured but with nothing to
run on), and detection with the tiny test detector (test/detector_fixture.py) on the RGB + MIR
cameras of generated drive bags: with the raw topic, camera topics only, and bad camera messages.
"""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from hsi_xai_node.cli import build_parser
from hsi_xai_node.errors import InputError
from hsi_xai_node.runtime.detection import DetectionPipeline
from hsi_xai_node.runtime.pipeline import Pipeline
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile
from hsi_xai_node.transports import messages as m
from hsi_xai_node.transports import replay as replay_module
from hsi_xai_node.transports.config import load_config
from hsi_xai_node.transports.drive_bag import write_drive_bag
from hsi_xai_node.transports.replay import replay

SEED = 7
CLASSES = ("road", "road_marks", "vegetation", "sky", "other")
IMAGE_OUTPUTS = {"labels": "mono8", "segmentation": "bgr8", "preview": "bgr8", "gradcam_overlay": "bgr8",
                 "activation_overlay": "bgr8", **{f"class_maps/{c}": "32FC1" for c in CLASSES}}


CAMERA_TOPICS = ("/rgb/image_raw", "/nir/image_raw", "/mir/image_raw", "/fir/image_raw")


@pytest.fixture(scope="module")
def config(tiny_detector):
    # detection configured: these bags have no camera topics (or it must not matter that they do)
    # frame scales: the offline pipelines these tests compare with see other frames first (running scales,
    # the tiny detector's fallback, would carry state between them); card scales are checked on their own
    return load_config(backend="ort-cpu", publish_class_maps=True, detector_model=str(tiny_detector),
                       overlay_scale="frame")


@pytest.fixture(scope="module")
def in_mcap(tmp_path_factory, config):
    return write_drive_bag(tmp_path_factory.mktemp("in") / "drive", config, seed=SEED, frames=3, cameras=False)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, config, in_mcap):
    out = tmp_path_factory.mktemp("out") / "replayed"
    return replay(in_mcap, out, config, progress=False), out


def bag_messages(path):
    """(topic, log time) -> CDR bytes, read with rosbags."""
    with Reader(path) as reader:
        return {(c.topic, t): bytes(d) for c, t, d in reader.messages()}


def decoded(out, topics=None):
    """[(topic, schema name, log time, raw bytes, decoded message)] of the output, read with mcap + mcap_ros2."""
    (file,) = Path(out).glob("*.mcap")
    with open(file, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [(c.topic, s.name, msg.log_time, bytes(msg.data), d)
                for s, c, msg, d in reader.iter_decoded_messages(topics=topics)]


def count(out, topic):
    (file,) = Path(out).glob("*.mcap")
    with open(file, "rb") as f:
        return sum(1 for _ in make_reader(f).iter_messages(topics=[topic]))


def no_leftovers(out: Path):
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]


def test_outputs_read_back_with_an_independent_reader(config, in_mcap, replayed):
    summary, out = replayed
    assert (summary.frames_in, summary.frames_processed, summary.bad_total, summary.truncation) == (3, 3, 0, "")
    assert summary.references.startswith("dark and white") and summary.activation_residual_max < 1e-3
    assert set(summary.stage_ms) == {"frontend", "engine", "post", "total"} and summary.fps > 0
    assert summary.backend == "ort-cpu" and "3 processed" in summary.text()
    assert "model unet_bundled_25pn on ort-cpu (named in the configuration); arithmetic: IEEE float32" in summary.text()
    # detection configured, but no camera topic in the bag: the detector is not even loaded
    assert summary.detection.startswith("not run: none of the camera topics") and summary.detector == ""
    assert f"detection: {summary.detection}" in summary.text()
    no_leftovers(out)

    inputs = bag_messages(in_mcap)
    raw_headers = {t: m.deserialize(d, "sensor_msgs/msg/Image").header
                   for (topic, t), d in inputs.items() if topic == config.raw_topic}
    rows = decoded(out)
    by_topic = {}
    for topic, schema, t, data, msg in rows:
        by_topic.setdefault(topic, []).append((schema, t, data, msg))
    legends = {config.output_topic(f"{n}/legend") for n in ("gradcam_overlay", "activation_overlay")}
    expected = {config.output_topic(n) for n in IMAGE_OUTPUTS} | {"/diagnostics"} | {k[0] for k in inputs} | legends
    assert set(by_topic) == expected | {config.output_topic(n) for n in ("segmentation_annotations", "camera_info",
                                                                          "class_maps/camera_info")}
    for topic in legends:  # frame scales change each frame; legends are sent at most once a second (3 frames: once)
        ((schema, t, _, msg),) = by_topic[topic]
        assert t == min(raw_headers) and msg.encoding == "bgr8" and msg.width == 420

    # every input message copied byte for byte at its own log time
    copied = {(topic, t): data for topic, _, t, data, _ in rows if (topic, t) in inputs}
    assert copied == inputs
    # one of each output per raw frame, the raw frame's header and log time
    for name, encoding in IMAGE_OUTPUTS.items():
        msgs = by_topic[config.output_topic(name)]
        assert sorted(t for _, t, _, _ in msgs) == sorted(raw_headers)
        for schema, t, _, msg in msgs:
            assert schema == "sensor_msgs/msg/Image" and msg.encoding == encoding
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (raw_headers[t].stamp.sec,
                                                                        raw_headers[t].stamp.nanosec)
            assert msg.header.frame_id == raw_headers[t].frame_id == "hsi_camera"
    diags = by_topic["/diagnostics"]
    assert sorted(t for _, t, _, _ in diags) == sorted(raw_headers)
    for schema, t, _, msg in diags:
        assert schema == "diagnostic_msgs/msg/DiagnosticArray" and msg.header.frame_id == "hsi_camera"
        assert m.stamp_ns(msg.header) == m.stamp_ns(raw_headers[t])
        status = msg.status[0]
        values = {kv.key: kv.value for kv in status.values}
        assert status.level == 0 and status.name == "hsi_xai: pipeline"
        assert {"frontend_ms", "engine_ms", "post_ms", "total_ms", "frames_per_s"} <= set(values)
        assert (values["dropped"], values["bad_messages"], values["backend"]) == ("0", "0", "ort-cpu")
        assert values["model"] == summary.model and float(values["activation_residual_max"]) < 1e-3


def test_labels_equal_an_independent_pipeline_run(config, in_mcap, replayed):
    _, out = replayed
    dark, white = DriveGenerator(load_profile(config.sensor_profile), seed=SEED, render_cameras=False).references()
    pipeline = Pipeline(config.pipeline_config(), dark, white)
    labels = {t: msg for topic, _, t, _, msg in decoded(out) if topic == config.output_topic("labels")}
    maps = {t: msg for topic, _, t, _, msg in decoded(out) if topic == config.output_topic("class_maps/sky")}
    for (topic, t), data in bag_messages(in_mcap).items():
        if topic != config.raw_topic:
            continue
        result = pipeline.process(m.image_to_array(m.deserialize(data, "sensor_msgs/msg/Image")))
        got = np.frombuffer(labels[t].data, np.uint8).reshape(labels[t].height, labels[t].width)
        assert np.array_equal(got, result.labels)
        sky = np.frombuffer(maps[t].data, np.float32).reshape(maps[t].height, maps[t].width)
        np.testing.assert_allclose(sky, next(iter(result.class_maps.values()))[CLASSES.index("sky")], atol=1e-5)


def test_sqlite3_input_with_cameras(tmp_path, config):
    config = load_config(backend="ort-cpu", publish_class_maps=True, detector_model="")  # detection off
    bag = write_drive_bag(tmp_path / "in", config, seed=SEED, frames=2, storage="sqlite3", cameras=True)
    summary = replay(bag, tmp_path / "out", config, progress=False)
    assert (summary.frames_in, summary.frames_processed, summary.bad_total) == (2, 2, 0)
    assert summary.detection == "off (detector_model is empty)" and summary.camera_sets_in == 0
    inputs = bag_messages(bag)
    assert {"/rgb/image_raw", "/nir/image_raw", "/mir/image_raw", "/fir/image_raw"} <= {k[0] for k in inputs}
    rows = decoded(tmp_path / "out")
    assert {(topic, t): data for topic, _, t, data, _ in rows if (topic, t) in inputs} == inputs
    assert count(tmp_path / "out", config.output_topic("labels")) == 2


def write_bag(path, items):
    """A bag of (topic, log time, CDR bytes), all typed sensor_msgs/Image."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for topic, t, data in items:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, "sensor_msgs/msg/Image", typestore=m.typestore())
            w.write(conns[topic], t, data)
    return path


def image_msg(t, encoding, height, width, step, data):
    return m.serialize(m.typestore().types["sensor_msgs/msg/Image"](
        header=m.header(t, "hsi_camera"), height=height, width=width, encoding=encoding, is_bigendian=0,
        step=step, data=np.asarray(data, np.uint8)))


def test_bad_messages_are_skipped_and_counted(tmp_path, config, in_mcap):
    good = sorted(bag_messages(in_mcap).items(), key=lambda kv: kv[0][1])
    refs = [(tp, t, d) for (tp, t), d in good if tp != config.raw_topic]
    raws = [(tp, t, d) for (tp, t), d in good if tp == config.raw_topic]
    t0 = raws[0][1]
    bad = [
        (config.raw_topic, t0 + 1, image_msg(t0 + 1, "bgr8", 4, 4, 12, np.zeros(48))),
        (config.raw_topic, t0 + 2, image_msg(t0 + 2, "mono16", 100, 100, 200, np.zeros(20000))),
        (config.raw_topic, t0 + 3, image_msg(t0 + 3, "mono16", 1088, 2048, 4096, np.zeros(1000))),
        (config.raw_topic, t0 + 4, b"\x00\x01\x00\x00\x07"),
        (config.white_topic, t0 + 5, image_msg(t0 + 5, "mono16", 10, 10, 20, np.zeros(200))),  # later, bad
    ]
    bag = write_bag(tmp_path / "bad", refs + raws[:1] + bad + raws[1:])
    summary = replay(bag, tmp_path / "out", config, progress=False)
    assert (summary.frames_in, summary.frames_processed) == (7, 3)
    assert {k: v["count"] for k, v in summary.bad.items()} == {
        "wrong encoding": 1, "wrong frame size": 1, "truncated or inconsistent image data": 1,
        "not deserializable": 1, "bad reference frame": 1}
    assert "'bgr8'" in summary.bad["wrong encoding"]["first"] and f"@ {t0 + 1}" in summary.bad["wrong encoding"]["first"]
    assert "skipped (wrong frame size): 1, first:" in summary.text()
    # the bad later white frame kept the references in use; every message is still copied
    assert summary.references.startswith("dark and white") and summary.reference_updates == 0
    assert count(tmp_path / "out", config.raw_topic) == 7  # the undecodable one too: mcap_ros2 cannot decode it
    diags = [msg for *_, msg in decoded(tmp_path / "out", ["/diagnostics"])]
    assert [{kv.key: kv.value for kv in d.status[0].values}["bad_messages"] for d in diags] == ["0", "5", "5"]


def test_references_missing_or_replaced_later(tmp_path, config, in_mcap):
    msgs = sorted(bag_messages(in_mcap).items(), key=lambda kv: kv[0][1])
    raws = [(tp, t, d) for (tp, t), d in msgs if tp == config.raw_topic]
    refs = [(tp, t, d) for (tp, t), d in msgs if tp != config.raw_topic]
    summary = replay(write_bag(tmp_path / "noref", raws[:1]), tmp_path / "o1", config, progress=False)
    assert summary.frames_processed == 1 and summary.references.startswith("none usable")
    (diag,) = [msg for *_, msg in decoded(tmp_path / "o1", ["/diagnostics"])]
    assert diag.status[0].level == 1
    # references only after the first frame: the first ones are used from the start, the repeats update
    late = [(tp, raws[1][1] + 1, d) for tp, _, d in refs]
    summary = replay(write_bag(tmp_path / "late", raws[:2] + refs + late), tmp_path / "o2", config, progress=False)
    assert summary.frames_processed == 2 and summary.references.startswith("dark and white")
    assert summary.reference_updates == 2 and summary.bad_total == 0


def test_missing_raw_topic_names_it_and_writes_nothing(tmp_path, in_mcap, tiny_detector):
    config = load_config(backend="ort-cpu", raw_topic="/camera/mosaic", detector_model=str(tiny_detector))
    with pytest.raises(InputError, match=r"neither the raw topic '/camera/mosaic' nor the detector's camera topics "
                                         r"\['/rgb/image_raw', '/mir/image_raw'\] are in the bag.*its topics: .*"
                                         r"'/hsi/image_raw'"):
        replay(in_mcap, tmp_path / "out", config, progress=False)
    config = load_config(backend="ort-cpu", raw_topic="/camera/mosaic", detector_model="")
    with pytest.raises(InputError, match=r"no raw topic '/camera/mosaic', and detection is off.*'/hsi/image_raw'"):
        replay(in_mcap, tmp_path / "out", config, progress=False)
    assert list(tmp_path.iterdir()) == []


def corrupted_copy(src, dst, edit):
    shutil.copytree(src, dst)
    (file,) = Path(dst).glob("*.mcap")
    edit(file)
    return dst


def test_garbage_bag_is_an_input_error(tmp_path, config, in_mcap):
    def garble(file):
        with open(file, "r+b") as f:
            f.write(os.urandom(4096))
    bag = corrupted_copy(in_mcap, tmp_path / "garbage", garble)
    with pytest.raises(InputError, match="cannot be opened: its .mcap file has no readable records") as info:
        replay(bag, tmp_path / "out", config, progress=False)
    assert "Error" not in str(info.value) and "rosbags" not in str(info.value)  # the project's words
    assert not (tmp_path / "out").exists()
    no_leftovers(tmp_path / "out")


def test_inputs_that_are_not_bags_are_named_plainly(tmp_path, config):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"input bag .*empty: cannot be opened: a directory without a rosbag2 "
                                         r"metadata.yaml or an .mcap file \(it holds nothing\)$"):
        replay(empty, tmp_path / "out", config, progress=False)
    (empty / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"\(it holds notes.txt\)$"):
        replay(empty, tmp_path / "out", config, progress=False)
    with pytest.raises(InputError, match=r"input bag .*nowhere: no such file or directory$"):
        replay(tmp_path / "nowhere", tmp_path / "out", config, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_truncated_bag_keeps_the_frames_before_the_cut(tmp_path, config, in_mcap):
    # rosbags cannot open an MCAP without its footer; the replay streams it instead (a recorder that
    # crashed leaves exactly this). 70% of the file: both references, the first frame, then the cut.
    bag = corrupted_copy(in_mcap, tmp_path / "cut", lambda f: os.truncate(f, int(f.stat().st_size * 0.7)))
    summary = replay(bag, tmp_path / "out", config, progress=False)
    assert (summary.frames_in, summary.frames_processed) == (1, 1)
    assert "cut short" in summary.truncation and "truncated input" in summary.text()
    assert count(tmp_path / "out", config.output_topic("labels")) == 1


def test_output_is_never_half_written(tmp_path, config, in_mcap, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match=r"exists: choose another path, or replace it with --overwrite \(the "
                                         r"overwrite option of the Python API\)$"):
        replay(in_mcap, out, config, progress=False)

    def fail(self):
        raise RuntimeError("disk full")
    monkeypatch.setattr(replay_module._Replay, "run", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        replay(in_mcap, out, config, progress=False, overwrite=True)
    assert out.is_dir() and list(out.iterdir()) == []  # the old output untouched
    no_leftovers(out)


def test_overwrite_replaces_only_bags(tmp_path, config, in_mcap):
    """--overwrite never deletes what is not a bag: a folder of the user's, a file, a symlink stay as they were."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "important.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"is not a rosbag2 directory or an output of this tool \(it holds "
                                         r"important\.txt\): not replacing it"):
        replay(in_mcap, folder, config, progress=False, overwrite=True)
    assert (folder / "important.txt").read_text() == "keep me"
    file = tmp_path / "notes.txt"
    file.write_text("keep me too")
    with pytest.raises(InputError, match="is a file, not a bag directory this tool wrote"):
        replay(in_mcap, file, config, progress=False, overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(folder)
    with pytest.raises(InputError, match="is a symbolic link"):
        replay(in_mcap, link, config, progress=False, overwrite=True)
    assert file.read_text() == "keep me too" and (folder / "important.txt").is_file()
    # a rosbag2 directory (here a copy of the input bag, no marker) and an earlier output are replaced
    foreign = tmp_path / "foreign_bag"
    shutil.copytree(in_mcap, foreign)
    summary = replay(in_mcap, foreign, config, progress=False, overwrite=True)
    marker = json.loads((foreign / "hsi_xai_output.json").read_text())
    assert marker["tool"] == "hsi-xai replay" and marker["input"] == str(in_mcap) and marker["copy_raw"] is True
    assert marker["config"]["backend"] == "ort-cpu" and summary.frames_processed == 3
    (foreign / "notes.txt").write_text("added by hand")  # marked as ours: still replaced as a whole
    replay(in_mcap, foreign, config, progress=False, overwrite=True)
    assert not (foreign / "notes.txt").exists()
    no_leftovers(foreign)


def test_output_paths_that_cannot_be_written_are_one_clear_error(tmp_path, config, in_mcap):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(InputError, match=r"its directory .*a_file cannot be created"):
        replay(in_mcap, tmp_path / "a_file" / "out", config, progress=False)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(InputError):
        replay(in_mcap, loop / "out", config, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "loop"]


def test_qos_is_recorded_for_every_topic(tmp_path, config, in_mcap):
    """Read back with mcap: references latched (also when the input bag recorded no QoS), outputs with the
    node's output QoS, /diagnostics reliable; sensor_data output QoS when configured so."""
    import yaml
    from mcap.reader import make_reader

    def qos_of(bag):
        (file,) = Path(bag).glob("*.mcap")
        with open(file, "rb") as f:
            channels = make_reader(f).get_summary().channels.values()
        return {c.topic: [(q["reliability"], q["durability"], q["depth"])
                          for q in yaml.safe_load(c.metadata["offered_qos_profiles"]) or []] for c in channels}

    msgs = sorted(bag_messages(in_mcap).items(), key=lambda kv: kv[0][1])
    bare = write_bag(tmp_path / "bare", [(tp, t, d) for (tp, t), d in msgs])  # recorded with no QoS
    assert qos_of(bare)[config.dark_topic] == []
    replay(bare, tmp_path / "out", config, progress=False)
    q = qos_of(tmp_path / "out")
    assert q[config.dark_topic] == q[config.white_topic] == [("reliable", "transient_local", 1)]
    assert q[config.raw_topic] == []  # an input's own QoS (none recorded) is kept as it was
    assert q[config.output_topic("labels")] == [("reliable", "volatile", 5)]
    assert q[config.output_topic("gradcam_overlay/legend")] == [("reliable", "transient_local", 1)]
    assert q["/diagnostics"] == [("reliable", "volatile", 10)]
    best_effort = dataclasses.replace(config, output_qos="sensor_data")
    replay(in_mcap, tmp_path / "out2", best_effort, progress=False, copy_raw=False)
    q = qos_of(tmp_path / "out2")
    assert q[config.output_topic("segmentation")] == [("best_effort", "volatile", 5)]
    assert config.raw_topic not in q and q[config.dark_topic] == [("reliable", "transient_local", 1)]


def test_a_raw_topic_of_another_type_is_named(tmp_path, config, in_mcap):
    msgs = sorted(bag_messages(in_mcap).items(), key=lambda kv: kv[0][1])
    path = tmp_path / "mixed"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        image = w.add_connection(config.raw_topic, "sensor_msgs/msg/Image", typestore=m.typestore())
        text = w.add_connection(config.raw_topic, "std_msgs/msg/String", typestore=m.typestore())
        (_, t0), data = next((k, d) for k, d in msgs if k[0] == config.raw_topic)
        w.write(image, t0, data)
        w.write(text, t0 + 1, m.serialize(m.typestore().types["std_msgs/msg/String"](data="x")))
    with pytest.raises(InputError, match=r"raw topic /hsi/image_raw: type std_msgs/msg/String, expected "
                                         r"sensor_msgs/msg/Image"):
        replay(path, tmp_path / "out", config, progress=False)


def test_command_line(tmp_path, in_mcap, capsys):
    ap = build_parser()
    argv = ["replay", str(in_mcap), str(tmp_path / "out"), "--no-progress", "--backend", "ort-cpu"]
    args = ap.parse_args(argv)
    assert args.func(args) == 0
    assert "frames: 3 in, 3 processed" in capsys.readouterr().out
    assert (tmp_path / "out" / "metadata.yaml").is_file()
    args = ap.parse_args(argv)
    with pytest.raises(InputError, match="exists"):
        args.func(args)
    args = ap.parse_args(argv + ["--overwrite", "--storage", "sqlite3"])
    assert args.func(args) == 0 and list((tmp_path / "out").glob("*.db3"))


# --- detection ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def det_bag(tmp_path_factory, config):
    """A drive bag with the raw topic and all four cameras."""
    return write_drive_bag(tmp_path_factory.mktemp("det_in") / "drive", config, seed=SEED, frames=3, cameras=True)


@pytest.fixture(scope="module")
def det_replayed(tmp_path_factory, config, det_bag):
    out = tmp_path_factory.mktemp("det_out") / "replayed"
    return replay(det_bag, out, config, progress=False), out


@pytest.fixture(scope="module")
def offline_detector(config):
    return DetectionPipeline(config.detection_config())


def offline_results(bag, detector):
    """Primary (RGB) log time -> (RGB header, the offline DetectionPipeline's result on that frame's cameras)."""
    msgs = {(topic, t): m.deserialize(d, "sensor_msgs/msg/Image") for (topic, t), d in bag_messages(bag).items()
            if topic in ("/rgb/image_raw", "/mir/image_raw")}
    out = {}
    for (topic, t), msg in msgs.items():
        if topic == "/rgb/image_raw":
            images = {"rgb": m.image_to_array(msg), "mir": m.image_to_array(msgs[("/mir/image_raw", t)])}
            out[t] = (msg.header, detector.process(images, msg.header))
    return out


def check_detection_outputs(config, out, expected):
    """Read back with mcap + mcap_ros2: one Detection2DArray and one overlay per camera set, equal to `expected`."""
    rows = decoded(out, [config.output_topic("detections"), config.output_topic("detection/overlay")])
    arrays = {t: (schema, msg) for topic, schema, t, _, msg in rows if topic == config.output_topic("detections")}
    overlays = {t: msg for topic, _, t, _, msg in rows if topic == config.output_topic("detection/overlay")}
    assert sorted(arrays) == sorted(overlays) == sorted(expected)
    for t, (hdr, result) in expected.items():
        schema, msg = arrays[t]
        assert schema == "vision_msgs/msg/Detection2DArray"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == \
            (hdr.stamp.sec, hdr.stamp.nanosec, "rgb_camera")
        assert result.detections and len(msg.detections) == len(result.detections)
        for got, d in zip(msg.detections, result.detections):
            x0, y0, x1, y1 = d.camera_box
            assert got.header.frame_id == "rgb_camera" and m.stamp_ns(got.header) == m.stamp_ns(hdr)
            assert (got.bbox.center.position.x, got.bbox.center.position.y) == ((x0 + x1) / 2, (y0 + y1) / 2)
            assert (got.bbox.size_x, got.bbox.size_y, got.bbox.center.theta) == (x1 - x0, y1 - y0, 0.0)
            (hyp,) = got.results
            assert (hyp.hypothesis.class_id, hyp.hypothesis.score, got.id) == (d.class_name, d.score, str(d.slot))
        image = overlays[t]
        assert (image.encoding, image.header.frame_id, m.stamp_ns(image.header)) == ("bgr8", "rgb_camera",
                                                                                     m.stamp_ns(hdr))
        got = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3)
        np.testing.assert_array_equal(got, result.detection_overlay)


def test_detections_equal_an_offline_detection_pipeline_run(config, det_bag, det_replayed, offline_detector):
    summary, out = det_replayed
    expected = offline_results(det_bag, offline_detector)
    assert len(expected) == 3
    check_detection_outputs(config, out, expected)
    # both pipelines ran: the segmentation outputs too, every input copied
    assert (summary.frames_in, summary.frames_processed, summary.bad_total) == (3, 3, 0)
    assert count(out, config.output_topic("labels")) == 3
    inputs = bag_messages(det_bag)
    assert {(topic, t): data for topic, _, t, data, _ in decoded(out) if (topic, t) in inputs} == inputs
    # the summary's detection counts
    dets = [d for _, r in expected.values() for d in r.detections]
    assert (summary.detection, summary.detector, summary.detection_backend) == ("on", "tiny_det_rgb_mir", "ort-cpu")
    assert (summary.camera_messages_in, summary.camera_sets_in, summary.camera_sets_processed,
            summary.camera_unmatched) == (6, 3, 3, 0)
    assert summary.detections_total == len(dets)
    assert summary.detections_per_class == {c: sum(d.class_name == c for d in dets) for c in {d.class_name for d in dets}}
    assert set(summary.detection_stage_ms) == {"frontend", "engine", "post", "total"}
    text = summary.text()
    assert "3 camera sets in, 3 processed" in text and f"detections: {len(dets)} (" in text
    assert "detection median ms per stage: frontend" in text
    # one detection status on /diagnostics per camera set, under the RGB header
    diags = [(t, msg.status[0]) for _, _, t, _, msg in decoded(out, ["/diagnostics"])
             if msg.status[0].name == "hsi_xai: detection"]
    assert sorted(t for t, _ in diags) == sorted(expected)
    for t, status in diags:
        values = {kv.key: kv.value for kv in status.values}
        assert values["detections"] == str(len(expected[t][1].detections)) and values["detector"] == "tiny_det_rgb_mir"


def camera_only_bag(path, det_bag, extra=()):
    """The drive bag's camera topics alone (plus `extra` (topic, log time, CDR) messages)."""
    msgs = [(topic, t, d) for (topic, t), d in bag_messages(det_bag).items() if topic in CAMERA_TOPICS]
    return write_bag(path, sorted([*msgs, *extra], key=lambda x: x[1]))


def test_camera_only_bag_runs_detection_alone(tmp_path, config, det_bag, offline_detector):
    bag = camera_only_bag(tmp_path / "cams", det_bag)
    summary = replay(bag, tmp_path / "out", config, progress=False)
    check_detection_outputs(config, tmp_path / "out", offline_results(det_bag, offline_detector))
    assert (summary.frames_in, summary.frames_processed, summary.model) == (0, 0, "")
    assert (summary.camera_sets_in, summary.camera_sets_processed, summary.bad_total) == (3, 3, 0)
    assert summary.references.startswith("not used") and summary.backend == "ort-cpu"
    assert "segmentation: no raw topic in the bag" in summary.text()
    topics = {topic for topic, *_ in decoded(tmp_path / "out")}
    assert config.output_topic("labels") not in topics and set(CAMERA_TOPICS) <= topics


def test_bad_camera_messages_are_skipped_and_counted(tmp_path, config, det_bag, offline_detector):
    rgb = sorted(t for (topic, t) in bag_messages(det_bag) if topic == "/rgb/image_raw")
    t0 = rgb[0]
    bad = [
        ("/rgb/image_raw", t0 + 1, image_msg(t0 + 1, "mono8", 480, 640, 640, np.zeros(480 * 640))),
        ("/rgb/image_raw", t0 + 2, image_msg(t0 + 2, "bgr8", 4, 4, 12, np.zeros(48))),
        ("/mir/image_raw", t0 + 3, image_msg(t0 + 3, "mono16", 256, 320, 640, np.zeros(1000))),
        ("/mir/image_raw", t0 + 4, b"\x00\x01\x00\x00\x07"),
    ]
    bag = camera_only_bag(tmp_path / "bad", det_bag, bad)
    summary = replay(bag, tmp_path / "out", config, progress=False)
    assert {k: v["count"] for k, v in summary.bad.items()} == {
        "wrong encoding on /rgb/image_raw": 1, "wrong frame size on /rgb/image_raw": 1,
        "truncated or inconsistent image data on /mir/image_raw": 1, "not deserializable on /mir/image_raw": 1}
    assert "'mono8'" in summary.bad["wrong encoding on /rgb/image_raw"]["first"]
    assert "4x4 image, the rig's camera is 640x480" in summary.bad["wrong frame size on /rgb/image_raw"]["first"]
    # the good sets are all detected, as without the bad messages
    assert (summary.camera_messages_in, summary.camera_sets_in, summary.camera_sets_processed) == (10, 3, 3)
    assert summary.camera_unmatched == 0
    check_detection_outputs(config, tmp_path / "out", offline_results(det_bag, offline_detector))
    assert "skipped (wrong encoding on /rgb/image_raw): 1, first:" in summary.text()


def test_bag_without_every_detector_camera_segments_only(tmp_path, config, in_mcap, det_bag):
    rgb = [(topic, t, d) for (topic, t), d in bag_messages(det_bag).items() if topic == "/rgb/image_raw"]
    bag = write_bag(tmp_path / "rgb_only", sorted([*((tp, t, d) for (tp, t), d in bag_messages(in_mcap).items()),
                                                   *rgb], key=lambda x: x[1]))
    summary = replay(bag, tmp_path / "out", config, progress=False)
    assert summary.frames_processed == 3 and summary.camera_sets_in == 0
    assert summary.detection == "not run: the detector's camera topics ['/mir/image_raw'] are not in the bag"
    assert count(tmp_path / "out", config.output_topic("detections")) == 0


# --- one rule for bad input (issue 20) -------------------------------------------------------------
def test_disordered_stamps_and_a_damaged_reference_are_counted(tmp_path, config):
    from test.transports.disordered_bag import EXPECTED, write_disordered_bag

    bag = write_disordered_bag(tmp_path / "disordered", config)
    s = replay(bag, tmp_path / "out", config, progress=False)
    assert s.frames_in == 5 and s.frames_processed == EXPECTED["processed"]
    assert s.bad["stamp not after the previous frame's"]["count"] == EXPECTED["stamp"]
    assert s.bad["bad reference frame"]["count"] == EXPECTED["bad_reference"]
    assert s.references.startswith("dark and white") and s.uncalibrated_frames == EXPECTED["uncalibrated"]
    diags = [msg for *_, msg in decoded(tmp_path / "out", ["/diagnostics"])]
    assert all({kv.key: kv.value for kv in d.status[0].values}["references"] == "yes" for d in diags)


def test_frames_without_references_are_named_in_summary_and_diagnostics(tmp_path, config, in_mcap):
    msgs = sorted(bag_messages(in_mcap).items(), key=lambda kv: kv[0][1])
    raws = [(tp, t, d) for (tp, t), d in msgs if tp == config.raw_topic]
    s = replay(write_bag(tmp_path / "noref", raws), tmp_path / "o", config, progress=False)
    assert s.uncalibrated_frames == 3 and len(s.uncalibrated_stamps) == 3
    assert "frames processed WITHOUT valid dark/white references (uncalibrated reflectance): 3 of 3" in s.text()
    for *_, d in decoded(tmp_path / "o", ["/diagnostics"]):
        values = {kv.key: kv.value for kv in d.status[0].values}
        assert d.status[0].level == 1 and values["references"] == "no"
    assert values["frames_without_references"] == "3"


def test_a_raw_topic_whose_messages_cannot_be_read_is_never_a_silent_zero(tmp_path, config, capsys):
    """A sqlite3 bag whose raw topic's recorded type was changed: rosbags reads none of its messages. The
    replay counts them as unreadable (the index lists 3) and the command exits 1."""
    import sqlite3

    bag = write_drive_bag(tmp_path / "in", config, seed=SEED, frames=3, storage="sqlite3", cameras=False)
    (db,) = bag.glob("*.db3")
    with sqlite3.connect(db) as con:
        con.execute("UPDATE topics SET type = 'std_msgs/msg/String' WHERE name = ?", (config.raw_topic,))
    s = replay(bag, tmp_path / "out", config, progress=False)
    assert (s.frames_in, s.frames_processed) == (0, 0)
    bad = s.bad[f"unreadable on {config.raw_topic}"]
    assert bad["count"] == 3 and "the bag's index lists 3 message(s), 0 could be read" in bad["first"]
    args = build_parser().parse_args(["replay", str(bag), str(tmp_path / "out2"), "--no-progress", "--backend",
                                      "ort-cpu"])
    assert args.func(args) == 1
    assert "skipped (unreadable on /hsi/image_raw): 3" in capsys.readouterr().out


def test_a_sqlite3_row_holding_text_is_a_counted_bad_message(tmp_path, config):
    import sqlite3

    bag = write_drive_bag(tmp_path / "in", config, seed=SEED, frames=2, storage="sqlite3", cameras=False)
    (db,) = bag.glob("*.db3")
    with sqlite3.connect(db) as con:
        (raw_id,) = con.execute("SELECT id FROM topics WHERE name = ?", (config.raw_topic,)).fetchone()
        (first,) = con.execute("SELECT min(id) FROM messages WHERE topic_id = ?", (raw_id,)).fetchone()
        con.execute("UPDATE messages SET data = 'garbage text' WHERE id = ?", (first,))
    s = replay(bag, tmp_path / "out", config, progress=False)
    assert s.frames_processed == 1 and s.bad[f"not a binary message on {config.raw_topic}"]["count"] == 1


def test_camera_shares_reach_the_summary_and_diagnostics(tmp_path, config, det_bag):
    shares_config = dataclasses.replace(config, detection_methods=("box_gradcam", "box_spectral"))
    s = replay(det_bag, tmp_path / "out", shares_config, progress=False)
    assert s.camera_shares and all(set(v) == {"rgb", "mir"} and abs(sum(v.values()) - 1) < 1e-6
                                   for v in s.camera_shares.values())
    assert "camera shares of the detections (gradient x input, mean per class)" in s.text()
    diags = [msg for *_, msg in decoded(tmp_path / "out", ["/diagnostics"])]
    det = [{kv.key: kv.value for kv in d.status[0].values} for d in diags if d.status[0].name == "hsi_xai: detection"]
    assert det and all("camera_share_rgb" in v and "camera_share_mir" in v for v in det)


def test_a_killed_runs_partial_output_is_reported_and_removed(tmp_path, config, in_mcap):
    """kill -9 leaves `.out.<random>.partial/`: the next run removes the tool's own (by its marker, its process
    gone), reports it, and leaves anything else beside the output alone."""
    import subprocess

    from hsi_xai_node.transports.output_dir import PARTIAL_MARKER

    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "out"
    killed = tmp_path / ".out.k1ll3d.partial"
    (killed / "out").mkdir(parents=True)
    (killed / "out" / "out_0.mcap").write_bytes(b"\0" * (3 << 20))
    (killed / PARTIAL_MARKER).write_text(json.dumps({"tool": "hsi-xai replay", "host": __import__("socket")
                                                     .gethostname(), "pid": dead.pid, "started": 0}))
    running = tmp_path / ".out.running.partial"
    running.mkdir()
    (running / PARTIAL_MARKER).write_text(json.dumps({"tool": "hsi-xai replay", "host": __import__("socket")
                                                      .gethostname(), "pid": os.getpid(), "started": 0}))
    foreign = tmp_path / ".out.someone.partial"
    foreign.mkdir()
    (foreign / "theirs.txt").write_text("not ours")
    summary = replay(in_mcap, out, config, progress=False)
    assert not killed.exists() and running.is_dir() and (foreign / "theirs.txt").is_file()
    removed, left = sorted(summary.stale_partials, key=lambda s: not s.startswith("removed"))
    assert removed.startswith(f"removed {killed} (3.0 MB), left by a hsi-xai replay that stopped before it finished")
    assert left.startswith(f"left {running}") and f"process {os.getpid()}" in left
    assert f"earlier temporary output: {removed}" in summary.text()


def test_a_write_failure_names_the_output_and_keeps_nothing(tmp_path, in_mcap):
    """The file-size limit of the process (RLIMIT_FSIZE) cut the writing short, as a full disk would: one line
    naming the output, exit status 2, no traceback, no output and no temporary directory left."""
    import resource
    import subprocess
    import sys

    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); "
            "from hsi_xai_node.cli import main; sys.exit(main(sys.argv[1:]))")
    run = subprocess.run([sys.executable, "-c", code, "replay", str(in_mcap), str(tmp_path / "out"), "--backend",
                          "ort-cpu", "--no-progress"], capture_output=True, text=True, timeout=300)
    text = run.stdout + run.stderr
    assert run.returncode == 2 and "Traceback" not in text, text
    assert f"output {tmp_path / 'out'}: writing failed: File too large" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    assert resource.getrlimit(resource.RLIMIT_FSIZE)  # this process was not limited


def test_no_room_for_the_output_is_refused_before_the_models_load(tmp_path, config, in_mcap):
    from hsi_xai_node.transports.output_dir import check_space

    with pytest.raises(InputError, match=r"output .*out: [\d,]+ MB free in .*, about [\d,]+ MB needed \(about the "
                                         r"input's size\): refused before starting"):
        check_space(tmp_path / "out", 1 << 60)
    check_space(tmp_path / "out", 1 << 10)


def test_an_engine_failure_skips_that_frame_and_counts_it(tmp_path, config):
    """A model that fails inside the engine on bright frames: those frames are counted under their reason, the
    others are processed and written."""
    from test.runtime.test_memory import failing_segmenter
    from test.transports.disordered_bag import mono16, write_hsi_bag

    gen = DriveGenerator(load_profile("hsi-drive"), seed=SEED, render_cameras=False)
    dark, white = gen.references()
    frames = [gen.frame(k) for k in range(3)]
    bright = np.full_like(frames[1].raw, 1023)
    t0 = frames[0].stamp_ns
    items = [(config.dark_topic, t0 - 1, mono16(dark, t0 - 1)), (config.white_topic, t0 - 1, mono16(white, t0 - 1))]
    items += [(config.raw_topic, f.stamp_ns, mono16(bright if k == 1 else f.raw, f.stamp_ns)) for k, f in enumerate(frames)]
    bag = write_hsi_bag(tmp_path / "in", config, items)
    model = failing_segmenter(tmp_path / "model")
    s = replay(bag, tmp_path / "out", dataclasses.replace(config, model=str(model), detector_model=""),
               progress=False)
    assert (s.frames_in, s.frames_processed) == (3, 2)
    assert s.bad["engine failed on the frame"]["count"] == 1
    assert "ort-cpu engine failed on this frame" in s.bad["engine failed on the frame"]["first"]
    assert count(tmp_path / "out", config.output_topic("labels")) == 2
