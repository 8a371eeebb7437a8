"""A generated drive written as a real rosbag2: what the camera driver of the vehicle would record.

Topics (names from the node config): the raw 5x5 mosaic (mono16, 2048x1088) at the camera
rate, the dark and white reference frames once at the start, and the RGB (bgr8), NIR
(mono8), MIR and FIR (mono16) cameras, all stamped with the frame's time.

Each topic is recorded with the QoS a camera driver offers it with (transports.qos): the
references latched (reliable, transient local), so `ros2 bag play` gives them to a node that
starts late; the cameras reliable (which best-effort and reliable subscribers both accept).
"""

from __future__ import annotations

from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer

from ..scenes.drive import DriveGenerator
from ..sensor.calibration import load_profile
from . import messages as m
from .config import NodeConfig
from .output_dir import remove_replaceable
from .qos import bag_qos

STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
CAMERA_TOPIC = {"rgb": "/rgb/image_raw", "nir": "/nir/image_raw", "mir": "/mir/image_raw", "fir": "/fir/image_raw"}


def image_writer(writer, store):
    """write(topic, sensor_msgs/Image, t_ns, qos="camera") into an open rosbag2 Writer: each topic's connection made
    on its first message, offered with the QoS its kind of publisher uses (transports.qos)."""
    conns = {}

    def write(topic: str, msg, t_ns: int, qos: str = "camera"):
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store,
                                                 offered_qos_profiles=[bag_qos(qos)])
        writer.write(conns[topic], t_ns, m.serialize(msg))
    return write


def write_drive_bag(path: str | Path, config: NodeConfig = NodeConfig(), seed: int = 7, frames: int = 8,
                    stride: int = 1, storage: str = "mcap", cameras: bool = True) -> Path:
    """Write `frames` frames (every `stride`-th of the 25 fps drive) to a new bag directory at `path`."""
    path = Path(path)
    config = config.resolved()  # the bag records absolute topic names
    remove_replaceable(path, "drive bag")  # only a bag (or an earlier output of ours) is ever replaced
    gen = DriveGenerator(load_profile(config.sensor_profile, flip_vertical=config.flip_vertical), seed=seed,
                         render_cameras=cameras)
    dark, white = gen.references()
    with Writer(path, version=9, storage_plugin=STORAGE[storage]) as writer:
        write = image_writer(writer, m.typestore())
        t0 = gen.frame(0).stamp_ns if frames else 0
        write(config.dark_topic, m.array_to_image(dark, "mono16", m.header(t0, "hsi_camera")), t0, "latched")
        write(config.white_topic, m.array_to_image(white, "mono16", m.header(t0, "hsi_camera")), t0, "latched")
        for k in range(frames):
            frame = gen.frame(k * stride)
            t = frame.stamp_ns
            write(config.raw_topic, m.array_to_image(frame.raw, "mono16", m.header(t, "hsi_camera")), t)
            for name, cam in frame.cameras.items():
                write(CAMERA_TOPIC[name], m.array_to_image(cam.image, cam.encoding, m.header(t, f"{name}_camera")), t)
    return path
