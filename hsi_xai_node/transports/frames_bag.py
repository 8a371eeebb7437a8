"""`hsi-xai bag-from-frames`: a folder of raw mosaic frames (HSI-Drive ships them as `.bin`) and the dark and white
references become a rosbag2 the replay, the fleet and the node's tests read like a camera driver's recording.

A frame file is the sensor's whole frame, row by row, as the profile sizes it (2048 x 1088 for HSI-Drive), in one
of: `.bin` (raw little-endian uint16, the camera's 10 or 12 bits in 16-bit words, no header), `.npy` (a 2-D uint16
array, never unpickled) or a 16-bit single-channel `.png`. A dark or white reference is one such file, or a folder
of them, averaged (rounded to uint16), as a driver averages its reference captures.

Stamps: one per frame from `--stamps FILE` (a line each: integer nanoseconds, or seconds with a decimal point),
or `--fps` from `--start` (seconds since the epoch). The references are stamped with the first frame's time on
latched topics, as `write_drive_bag` records them. A frame file of the wrong size is skipped and counted with the
first reason (the stamps file then still pairs with the files by order: a stamp per frame file, read or not);
the bag is written beside its final place and renamed only when complete.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FrameError, InputError, count_skipped
from ..sensor.calibration import SensorProfile, load_profile
from . import messages as m
from .config import NodeConfig
from .drive_bag import STORAGE, image_writer
from .output_dir import check_replaceable, make_partial, remove_replaceable, write_error, write_marker

FRAME_SUFFIXES = (".bin", ".npy", ".png")
_STAMPS_LIMIT = 64 * 1024 * 1024  # bytes: a stamp per line, millions of frames at most


@dataclass
class FramesBagSummary:
    output: str
    frames_written: int = 0
    skipped: dict = field(default_factory=dict)  # reason -> {"count", "first"}
    first_ns: int | None = None
    last_ns: int | None = None

    def text(self) -> str:
        lines = [f"bag {self.output}: {self.frames_written} raw frames + dark and white references"]
        if self.first_ns is not None:
            lines.append(f"stamps {self.first_ns} .. {self.last_ns} ns "
                         f"({(self.last_ns - self.first_ns) / 1e9:.3f} s)")
        for reason, v in self.skipped.items():
            lines.append(f"skipped ({reason}): {v['count']}, first: {v['first']}")
        return "\n".join(lines)


def read_raw_frame(path: Path, profile: SensorProfile) -> np.ndarray:
    """One whole-sensor frame (rows, cols) uint16 from a .bin, .npy or 16-bit .png file; FrameError names it."""
    shape = (profile.sensor_height, profile.sensor_width)
    suffix = path.suffix.lower()
    if suffix == ".bin":
        want = shape[0] * shape[1] * 2
        size = path.stat().st_size
        if size != want:
            raise FrameError(f"{path}: {size} bytes, a {shape[1]}x{shape[0]} uint16 frame is {want}")
        frame = np.fromfile(path, dtype="<u2").reshape(shape)
    elif suffix == ".npy":
        if path.stat().st_size > 4 * shape[0] * shape[1] * 2:
            raise FrameError(f"{path}: far larger than a {shape[1]}x{shape[0]} uint16 frame")
        try:
            frame = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise FrameError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
    elif suffix == ".png":
        import cv2

        frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if frame is None:
            raise FrameError(f"{path}: not a readable PNG")
    else:
        raise FrameError(f"{path}: not a frame file ({', '.join(FRAME_SUFFIXES)})")
    if frame.shape != shape or frame.dtype != np.uint16:
        raise FrameError(f"{path}: {frame.dtype} {frame.shape}, the sensor's frames are uint16 {shape}")
    return np.ascontiguousarray(frame)


def frame_files(folder: Path, pattern: str) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"frames {folder}: no such folder")
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise InputError(f"frames {folder}: no files matching {pattern!r} with a suffix of {list(FRAME_SUFFIXES)}")
    return files


def read_reference(path: Path, profile: SensorProfile, what: str) -> np.ndarray:
    """A reference frame: one file, or the rounded mean of a folder's frame files."""
    if path.is_dir():
        files = [p for p in sorted(path.iterdir()) if p.suffix.lower() in FRAME_SUFFIXES]
        if not files:
            raise InputError(f"{what} reference {path}: no frame files in the folder")
        total = np.zeros((profile.sensor_height, profile.sensor_width), np.float64)
        for f in files:
            total += read_raw_frame(f, profile)
        return np.round(total / len(files)).astype(np.uint16)
    if not path.is_file():
        raise InputError(f"{what} reference {path}: no such file or folder")
    return read_raw_frame(path, profile)


def read_stamps(path: Path, count: int) -> list[int]:
    """`count` stamps in ns, strictly increasing, from a text file (ns integers or seconds with a decimal point)."""
    if not path.is_file():
        raise InputError(f"stamps {path}: no such file")
    if path.stat().st_size > _STAMPS_LIMIT:
        raise InputError(f"stamps {path}: larger than {_STAMPS_LIMIT >> 20} MB")
    stamps = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            value = int(text) if text.isdigit() else int(round(float(text) * 1e9))
        except ValueError:
            raise InputError(f"stamps {path} line {n}: {text[:40]!r} is not a time (ns, or seconds with a point)") \
                from None
        if not 0 <= value < 2**63 or (stamps and value <= stamps[-1]):
            raise InputError(f"stamps {path} line {n}: {value} ns is out of range or not after the previous stamp")
        stamps.append(value)
    if len(stamps) != count:
        raise InputError(f"stamps {path}: {len(stamps)} stamps for {count} frame files")
    return stamps


def write_frames_bag(frames: str | Path, out: str | Path, dark: str | Path, white: str | Path,
                     profile: str = "hsi-drive", fps: float = 25.0, start_s: float | None = None,
                     stamps: str | Path | None = None, pattern: str = "*", storage: str = "mcap",
                     config: NodeConfig = NodeConfig(), overwrite: bool = False) -> FramesBagSummary:
    out, config = Path(out), config.resolved()  # the bag records absolute topic names
    check_replaceable(out, overwrite, "output bag")
    if storage not in STORAGE:
        raise InputError(f"storage must be one of {list(STORAGE)}, got {storage!r}")
    if not fps > 0 or not np.isfinite(fps):
        raise InputError(f"fps must be a positive number, got {fps}")
    sensor = load_profile(profile)
    files = frame_files(Path(frames), pattern)
    dark_frame = read_reference(Path(dark), sensor, "dark")
    white_frame = read_reference(Path(white), sensor, "white")
    if stamps is not None:
        times = read_stamps(Path(stamps), len(files))
    else:
        start = start_s if start_s is not None else files[0].stat().st_mtime
        if not 0 <= start < 9e9:
            raise InputError(f"start must be seconds since the epoch, got {start}")
        times = [int(round(start * 1e9)) + int(round(k * 1e9 / fps)) for k in range(len(files))]
    summary = FramesBagSummary(output=str(out))
    tmp = make_partial(out, "hsi-xai bag-from-frames")
    try:
        from rosbags.rosbag2 import Writer

        with Writer(tmp / out.name, version=9, storage_plugin=STORAGE[storage]) as writer:
            write_image = image_writer(writer, m.typestore())

            def write(topic: str, image: np.ndarray, t_ns: int, qos: str = "camera"):
                write_image(topic, m.array_to_image(image, "mono16", m.header(t_ns, "hsi_camera")), t_ns, qos)

            write(config.dark_topic, dark_frame, times[0], "latched")
            write(config.white_topic, white_frame, times[0], "latched")
            for path, t in zip(files, times):
                try:
                    frame = read_raw_frame(path, sensor)
                except FrameError as exc:
                    count_skipped(summary.skipped, "unreadable or wrong-sized frame file", str(exc))
                    continue
                write(config.raw_topic, frame, t)
                summary.frames_written += 1
                summary.first_ns = t if summary.first_ns is None else summary.first_ns
                summary.last_ns = t
        if not summary.frames_written:
            first = next(iter(summary.skipped.values()))["first"]
            raise InputError(f"frames {frames}: not one frame file could be read (first: {first}); nothing written")
        write_marker(tmp / out.name, "hsi-xai bag-from-frames", frames=str(frames), dark=str(dark), white=str(white),
                     profile=profile)
        remove_replaceable(out, "output bag")
        (tmp / out.name).rename(out)
    except OSError as exc:
        raise write_error(out, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def cmd_bag_from_frames(args) -> int:
    from .config import load_config

    config = load_config(args.config)
    summary = write_frames_bag(args.frames, args.output, args.dark, args.white, profile=args.profile or
                               config.sensor_profile, fps=args.fps, start_s=args.start, stamps=args.stamps,
                               pattern=args.pattern, storage=args.storage, config=config, overwrite=args.overwrite)
    print(summary.text())
    return 0
