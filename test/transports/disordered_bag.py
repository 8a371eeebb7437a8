"""One bag of bad raw-frame order and a damaged reference, replayed by test_replay and played to the node
by test/ros (the same messages through both transports must be judged by the same rule).

    dark, white            (t0 - 1)   good references
    raw t0, raw t1                    processed
    white (t1 + 1)                    damaged (10x10): refused, the good pair stays in use
    raw t1 again                      stamp repeats       -> "stamp not after the previous frame's"
    raw t0 again                      stamp goes back     -> the same
    raw t2                            processed
"""

from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile
from hsi_xai_node.transports import messages as m
from hsi_xai_node.transports.qos import bag_qos

SEED = 4002
EXPECTED = {"processed": 3, "stamp": 2, "bad_reference": 1, "uncalibrated": 0}


def write_disordered_bag(path: Path, config) -> Path:
    gen = DriveGenerator(load_profile("hsi-drive"), seed=SEED, render_cameras=False)
    dark, white = gen.references()
    frames = [gen.frame(k) for k in range(3)]
    t0, t1, t2 = (f.stamp_ns for f in frames)

    items = [(config.dark_topic, t0 - 1, mono16(dark, t0 - 1)), (config.white_topic, t0 - 1, mono16(white, t0 - 1)),
             (config.raw_topic, t0, mono16(frames[0].raw, t0)), (config.raw_topic, t1, mono16(frames[1].raw, t1)),
             (config.white_topic, t1 + 1, mono16(np.full((10, 10), 900, np.uint16), t1 + 1)),
             (config.raw_topic, t1 + 2, mono16(frames[2].raw, t1)),   # logged later, stamped t1 again
             (config.raw_topic, t1 + 3, mono16(frames[2].raw, t0)),   # stamped back at t0
             (config.raw_topic, t2, mono16(frames[2].raw, t2))]
    return write_hsi_bag(path, config, items)


def mono16(array, t: int) -> bytes:
    """A serialized sensor_msgs/Image mono16 of the HSI camera, stamped t."""
    return m.serialize(m.array_to_image(array, "mono16", m.header(t, "hsi_camera")))


def write_hsi_bag(path: Path, config, items) -> Path:
    """An MCAP bag of (topic, log time, CDR) Images, the references latched as a recorder offers them."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for topic, t, data in items:
            if topic not in conns:
                qos = "latched" if topic in (config.dark_topic, config.white_topic) else "camera"
                conns[topic] = w.add_connection(topic, "sensor_msgs/msg/Image", typestore=m.typestore(),
                                                offered_qos_profiles=[bag_qos(qos)])
            w.write(conns[topic], t, data)
    return path
