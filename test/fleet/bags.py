"""The small fleet the fleet tests run: generated drives with cameras (MCAP and sqlite3), the disordered
bag of test/transports, one whose references change mid-drive, and one that is not a bag at all."""

from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer

from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile
from hsi_xai_node.transports import messages as m
from hsi_xai_node.transports.drive_bag import write_drive_bag
from hsi_xai_node.transports.qos import bag_qos
from test.transports.disordered_bag import write_disordered_bag

FRAMES = {"a": 6, "sub/b": 4, "c": 3, "d": 6}  # frames processed per bag
FRAME_NS = 40_000_000  # the generated drives' 25 fps


def write_reference_change_bag(path: Path, config, seed: int = 4003, frames: int = 6) -> Path:
    """References at the start, a second (dimmer white) pair before frame frames // 2, raw frames only."""
    gen = DriveGenerator(load_profile("hsi-drive"), seed=seed, render_cameras=False)
    dark, white = gen.references()
    raws = [gen.frame(k) for k in range(frames)]

    def image(array, t):
        return m.serialize(m.array_to_image(array, "mono16", m.header(t, "hsi_camera")))

    t0, mid = raws[0].stamp_ns, raws[frames // 2].stamp_ns - 1
    items = [(config.dark_topic, t0 - 1, image(dark, t0 - 1)), (config.white_topic, t0 - 1, image(white, t0 - 1))]
    items += [(config.raw_topic, f.stamp_ns, image(f.raw, f.stamp_ns)) for f in raws[:frames // 2]]
    items += [(config.dark_topic, mid, image(dark, mid)), (config.white_topic, mid, image((white * 0.8).astype(white.dtype), mid))]
    items += [(config.raw_topic, f.stamp_ns, image(f.raw, f.stamp_ns)) for f in raws[frames // 2:]]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for topic, t, data in items:
            if topic not in conns:
                qos = "latched" if topic in (config.dark_topic, config.white_topic) else "camera"
                conns[topic] = w.add_connection(topic, "sensor_msgs/msg/Image", typestore=m.typestore(),
                                                offered_qos_profiles=[bag_qos(qos)])
            w.write(conns[topic], t, data)
    return path


def write_fleet(root: Path, config) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_drive_bag(root / "a", config, seed=4000, frames=FRAMES["a"])
    (root / "sub").mkdir(exist_ok=True)
    write_drive_bag(root / "sub" / "b", config, seed=4001, frames=FRAMES["sub/b"], storage="sqlite3")
    write_disordered_bag(root / "c", config)
    write_reference_change_bag(root / "d", config)
    (root / "junk.mcap").write_bytes(b"this is not a bag")
    return root
