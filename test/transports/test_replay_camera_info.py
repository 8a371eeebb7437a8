"""The replay's camera_info: the mosaic camera's from the bag through the cube's binning and crop, beside every
output image, read back with mcap + mcap_ros2; a camera_info that does not fit the frames is skipped and counted,
the last good one stays in use; without one, the geometry alone."""

from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import Reader

from hsi_xai_node.transports import messages as m
from hsi_xai_node.transports.config import load_config
from hsi_xai_node.transports.drive_bag import write_drive_bag
from hsi_xai_node.transports.replay import replay
from test.sensor.test_camera_model import K, _info
from test.transports.test_replay_compressed_and_foxglove import write_typed_bag

INFO = "sensor_msgs/msg/CameraInfo"


@pytest.fixture(scope="module")
def config():
    return load_config(backend="ort-cpu", publish_class_maps=True, detector_model="", methods=["activation"])


@pytest.fixture(scope="module")
def drive(tmp_path_factory, config):
    return write_drive_bag(tmp_path_factory.mktemp("in") / "drive", config, seed=5, frames=3, cameras=False)


def _with_camera_info(path: Path, drive: Path, infos, extra=()):
    """The drive's messages plus camera_info messages (log time, message) on /hsi/camera_info and `extra`
    ((topic, log time, message))."""
    with Reader(drive) as reader:
        rows = [(c.topic, t, c.msgtype, bytes(d)) for c, t, d in reader.messages()]
    rows += [("/hsi/camera_info", t, INFO, m.serialize(msg)) for t, msg in infos]
    rows += [(topic, t, INFO, m.serialize(msg)) for topic, t, msg in extra]
    return write_typed_bag(path, rows)


def _decoded(out, topic):
    (file,) = Path(out).glob("*.mcap")
    with open(file, "rb") as f:
        return [(msg.log_time, d) for _, _, msg, d in
                make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(topics=[topic])]


def test_camera_info_from_the_bag_beside_every_output(tmp_path, config, drive):
    with Reader(drive) as reader:
        raw_times = sorted(t for c, t, _ in reader.messages() if c.topic == config.raw_topic)
    first = raw_times[0]
    bad = _info(width=1024)  # after the first frame: skipped and counted, the good one stays
    bag = _with_camera_info(tmp_path / "bag", drive, [(first - 1, _info()), (first + 1, bad)])
    summary = replay(bag, tmp_path / "out", config, progress=False)
    assert summary.frames_processed == 3
    assert {k: v["count"] for k, v in summary.bad.items()} == {"bad camera_info on /hsi/camera_info": 1}
    assert "describes 1024x1088 images" in summary.bad["bad camera_info on /hsi/camera_info"]["first"]
    assert summary.camera_info == "segmentation: from /hsi/camera_info"
    assert "camera_info: segmentation: from /hsi/camera_info" in summary.text()
    cube = _decoded(tmp_path / "out", config.output_topic("camera_info"))
    window = _decoded(tmp_path / "out", config.output_topic("class_maps/camera_info"))
    labels = {t: msg for t, msg in _decoded(tmp_path / "out", config.output_topic("labels"))}
    assert [t for t, _ in cube] == raw_times == sorted(labels)
    for t, info in cube:
        assert (info.width, info.height) == (labels[t].width, labels[t].height) == (409, 216)
        stamps = [(h.stamp.sec, h.stamp.nanosec, h.frame_id) for h in (info.header, labels[t].header)]
        assert stamps[0] == stamps[1]
        # HSI-Drive's filter area: column 0, row 3; one cube pixel per 5x5 tile, at its centre
        np.testing.assert_allclose(np.reshape(info.k, (3, 3)), [[K[0, 0] / 5, 0, (K[0, 2] - 2) / 5],
                                                                [0, K[1, 1] / 5, (K[1, 2] - 5) / 5], [0, 0, 1]])
        assert list(info.d) == list(_info().d) and info.distortion_model == "plumb_bob"
    crop = _decoded(tmp_path / "out", config.output_topic("class_maps/road"))[0][1]
    assert (window[0][1].width, window[0][1].height) == (crop.width, crop.height)


def test_without_camera_info_the_geometry_alone(tmp_path, config, drive):
    summary = replay(drive, tmp_path / "out", config, progress=False)
    assert summary.bad_total == 0 and summary.camera_info.startswith("segmentation: none received on /hsi/camera_info")
    (t, info), *_ = _decoded(tmp_path / "out", config.output_topic("camera_info"))
    assert not any(info.k) and not any(info.p)  # REP 104: uncalibrated
    assert (info.binning_x, info.binning_y) == (5, 5)
    assert (info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height) == (0, 3, 2045, 1080)
    diag = _decoded(tmp_path / "out", "/diagnostics")[0][1]
    values = {kv.key: kv.value for kv in diag.status[0].values}
    assert values["camera_info"].startswith("none received on /hsi/camera_info")


def test_the_detection_overlay_has_the_primary_cameras_camera_info(tmp_path, tiny_detector):
    """Detection: the overlay is the RGB camera's own pixels (overlay_zoom 1), so its camera_info is the one the
    bag has beside /rgb/image_raw, under the RGB camera's header; a bad one is counted under its topic."""
    config = load_config(backend="ort-cpu", detector_model=str(tiny_detector), methods=["activation"])
    drive = write_drive_bag(tmp_path / "drive", config, seed=5, frames=2)
    rgb_k = [[520.0, 0, 318.2], [0, 515.0, 241.9], [0, 0, 1]]
    rgb = _info(width=640, height=480, k=rgb_k)
    rgb.header.frame_id = "rgb_camera"
    with Reader(drive) as reader:
        first = min(t for c, t, _ in reader.messages() if c.topic == "/rgb/image_raw")
    bag = _with_camera_info(tmp_path / "bag", drive, [], extra=[("/rgb/camera_info", first - 1, rgb),
                                                                ("/rgb/camera_info", first + 1, _info())])
    summary = replay(bag, tmp_path / "out", config, progress=False)
    assert summary.camera_sets_processed == 2
    assert {k: v["count"] for k, v in summary.bad.items()} == {"bad camera_info on /rgb/camera_info": 1}
    assert "detection: from /rgb/camera_info" in summary.camera_info
    overlays = dict(_decoded(tmp_path / "out", config.output_topic("detection/overlay")))
    infos = _decoded(tmp_path / "out", config.output_topic("detection/camera_info"))
    assert len(infos) == 2 and {t for t, _ in infos} == set(overlays)
    for t, info in infos:
        assert (info.width, info.height) == (overlays[t].width, overlays[t].height) == (640, 480)
        assert info.header.frame_id == overlays[t].header.frame_id == "rgb_camera"
        np.testing.assert_array_equal(np.reshape(info.k, (3, 3)), rgb_k)
