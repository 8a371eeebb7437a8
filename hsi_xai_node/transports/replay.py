"""`hsi-xai replay IN OUT`: a recorded rosbag2 through the node's pipeline, no ROS install needed.

    summary = replay("drive_bag", "drive_out", load_config(backend="ort-cpu"))
    print(summary.text())

The output bag holds every input message unchanged plus exactly what the live node publishes
(same topics, types and headers), so `ros2 bag play` of the output looks like the node ran
during the drive. Per raw frame, logged at the raw frame's time, with its header:

    <ns>/labels                 sensor_msgs/Image mono8, class ids
    <ns>/segmentation           sensor_msgs/Image bgr8, class colours
    <ns>/preview                sensor_msgs/Image bgr8, false colour
    <ns>/gradcam_overlay        sensor_msgs/Image bgr8 (when the overlay method is configured)
    <ns>/activation_overlay     sensor_msgs/Image bgr8 (when "activation" is configured)
    <ns>/class_maps/<class>     sensor_msgs/Image 32FC1 (publish_class_maps)
    <ns>/segmentation_annotations  foxglove_msgs/ImageAnnotations: each class region's outline
    <ns>/camera_info            sensor_msgs/CameraInfo of the images above (class_maps/camera_info beside
                                the class maps): the mosaic camera's, from <raw_topic's namespace>/camera_info
                                in the bag, through the cube's binning and crop; its geometry alone without it
    /diagnostics                diagnostic_msgs/DiagnosticArray, status "hsi_xai: pipeline"

Per synchronised set of the detector's cameras (detection on and every one of its camera
topics in the bag; sets matched by header stamp within sync_slop_s, as the node does),
logged at the primary camera message's time, with the primary camera's header:

    <ns>/detections             vision_msgs/Detection2DArray, boxes in the primary camera's pixels
    <ns>/detection/overlay      sensor_msgs/Image bgr8, the primary camera's image with per-box maps and boxes
    <ns>/detection/camera_info  sensor_msgs/CameraInfo of the overlay: the primary camera's (from the bag) zoomed
    <ns>/detection_annotations  foxglove_msgs/ImageAnnotations: boxes and labels on the primary camera
    /diagnostics                diagnostic_msgs/DiagnosticArray, status "hsi_xai: detection"

A bag with only the camera topics replays detection alone; one with only the raw topic,
segmentation alone. Cameras recorded compressed (sensor_msgs/CompressedImage on <topic>/compressed,
image_transport's naming: JPEG or PNG) and a mosaic recorded as 16-bit PNG on <raw_topic>/compressed
are read too; camera_transport / raw_transport say which form is looked for first. Bad messages (raw or camera) are skipped and counted by reason; the
output is written to a temporary sibling and renamed into place only when complete.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import FrameError, InputError, count_skipped
from ..sync import ApproximateTimeSync
from . import messages as m
from .config import NodeConfig, load_config
from .output_dir import (check_replaceable, check_space, clean_stale_partials, disk_bytes, make_partial,
                         remove_replaceable, write_error, write_marker)
from .outputs import (CAMERA_INFO, CAMERA_INFO_MSGTYPE, DETECTION_OVERLAY, DETECTIONS, DETECTIONS_MSGTYPE,
                      CameraInfoInput, LegendSchedule, camera_info_topic, detection_array, detection_grids,
                      detection_images, legend_name, output_images, segmentation_grids)
from .annotations import (ANNOTATIONS_MSGTYPE, DETECTION_ANNOTATIONS, SEGMENTATION_ANNOTATIONS, annotations_message,
                          detection_annotations, segmentation_annotations)
from .qos import bag_qos
from .raw_input import RAW_ENCODINGS, RawFrameGate

IMAGE = "sensor_msgs/msg/Image"
_IMAGE_TYPES = {False: IMAGE, True: m.COMPRESSED}  # by "is it the /compressed form of the topic"
DIAGNOSTICS = "diagnostic_msgs/msg/DiagnosticArray"
DIAGNOSTICS_TOPIC = "/diagnostics"
NODE_NAME = "hsi_xai"  # the node name in config/hsi_xai.yaml, used for the diagnostic status name


def _why(exc: BaseException) -> str:
    """An exception as "module.Type: message" (bare names like struct's `error` say nothing)."""
    kind = type(exc).__name__ if type(exc).__module__ == "builtins" else f"{type(exc).__module__}.{type(exc).__name__}"
    return f"{kind}: {exc}" if str(exc) else kind


# --- input: rosbags' Reader, or a streaming MCAP read that survives a missing footer ---------------
@dataclass(frozen=True)
class _Conn:
    """What is needed to copy one input connection into the output bag."""
    topic: str
    msgtype: str
    msgdef: str
    digest: str
    qos: tuple = ()


class _RosbagsInput:
    def __init__(self, reader):
        self.reader = reader
        self.conns = [_Conn(c.topic, c.msgtype, c.msgdef.data or "", c.digest or "",
                            tuple(getattr(c.ext, "offered_qos_profiles", ()) or ())) for c in reader.connections]
        self._index = {c.id: i for i, c in enumerate(reader.connections)}
        self.counts = Counter()
        for c in reader.connections:
            self.counts[c.topic] += c.msgcount
        self.truncation = ""

    def messages(self, topics=None, start: int | None = None, stop: int | None = None):
        """(connection index, log time ns, CDR bytes) with start <= log time < stop; a read error ends the
        stream and is noted."""
        conns = [c for c in self.reader.connections if topics is None or c.topic in topics]
        if not conns:  # rosbags reads every connection when given none
            return
        try:
            for c, t, data in self.reader.messages(connections=conns, start=start, stop=stop):
                yield self._index[c.id], t, data
        except Exception as exc:  # noqa: BLE001 - any storage failure part-way is a truncated bag
            self.truncation = f"input bag unreadable part-way ({_why(exc)}); stopped there"

    def close(self):
        self.reader.close()


class _McapStreamInput:
    """Reads .mcap files record by record: a recording cut short (no footer or summary, as left by a
    crashed recorder) keeps every message written before the cut."""

    def __init__(self, files: list[Path]):
        self.files, self.conns, self._index, self.counts, self.truncation = files, [], {}, Counter(), ""
        for _ in self.messages():  # one pass to learn the channels and count messages
            pass

    def messages(self, topics=None, start: int | None = None, stop: int | None = None):
        from mcap.records import Channel, Message, Schema
        from mcap.stream_reader import StreamReader

        self.truncation = ""
        counting = not self.conns
        for n, path in enumerate(self.files):
            schemas = {}
            try:
                with open(path, "rb") as f:
                    for rec in StreamReader(f).records:
                        if isinstance(rec, Schema):
                            schemas[rec.id] = rec
                        elif isinstance(rec, Channel) and (n, rec.id) not in self._index:
                            s = schemas.get(rec.schema_id)
                            self._index[(n, rec.id)] = len(self.conns)
                            self.conns.append(_Conn(rec.topic, s.name if s else "", s.data.decode() if s else "", ""))
                        elif isinstance(rec, Message) and (n, rec.channel_id) in self._index:
                            i = self._index[(n, rec.channel_id)]
                            if counting:
                                self.counts[self.conns[i].topic] += 1
                            if ((topics is None or self.conns[i].topic in topics)
                                    and (start is None or rec.log_time >= start)
                                    and (stop is None or rec.log_time < stop)):
                                yield i, rec.log_time, rec.data
            except Exception as exc:  # noqa: BLE001 - EndOfFile, struct.error, bad CRC: the file stops here
                self.truncation = (f"{path.name} is cut short ({_why(exc)}); kept every message before the cut")
                return

    def close(self):
        pass


def _open_input(path: Path):
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise InputError(f"input bag {path}: no such file or directory")
    if path.is_dir() and not (path / "metadata.yaml").is_file() and not any(path.glob("*.mcap")):
        raise InputError(f"input bag {path}: cannot be opened: a directory without a rosbag2 metadata.yaml or an "
                         f".mcap file (it holds {_listing(path)})")
    try:
        reader = Reader(path)
        reader.open()
        return _RosbagsInput(reader)
    except Exception as exc:  # noqa: BLE001 - ReaderError, sqlite3 errors, YAML errors: all "cannot open"
        files = [path] if path.suffix == ".mcap" and path.is_file() else sorted(path.glob("*.mcap"))
        try:
            src = _McapStreamInput(files) if files else None
        except Exception:  # noqa: BLE001 - not MCAP at all: report the reason below
            src = None
        if src is not None and src.conns:
            return src
        raise InputError(f"input bag {path}: cannot be opened: {_plain_reason(exc, files)}") from None


def _listing(path: Path, shown: int = 4) -> str:
    names = sorted(p.name for p in path.iterdir())
    return "nothing" if not names else ", ".join(names[:shown]) + (f", ... ({len(names)} entries)"
                                                                   if len(names) > shown else "")


def _plain_reason(exc: Exception, mcap_files: list) -> str:
    """Why a bag cannot be opened, in this project's words; the library's own message only where no plainer
    reason is known (without its exception type)."""
    text = " ".join(str(exc).split())[:200]
    if mcap_files:
        return ("its .mcap file has no readable records (not MCAP, or damaged from its first bytes); a recording "
                "cut short later is read up to the cut")
    if "metadata" in text.lower() or "yaml" in type(exc).__name__.lower():
        return f"its metadata.yaml is not a rosbag2 description ({text})"
    if "sqlite" in type(exc).__module__ or "database" in text.lower():
        return f"its sqlite3 storage is damaged ({text})"
    return text or "its files cannot be read"


# --- what a replay runs: the pipelines, and (for a shard of a bag) a time window ----------------------
class ReplayModels:
    """The segmentation and detection pipelines of a configuration, built once on first use and reused
    (reset) for every bag replayed with them: a fleet worker builds its engines once for many shards."""

    def __init__(self, config: NodeConfig, threads: int = 0):
        self.config, self.threads = config, threads  # threads: the engines' CPU threads, 0 = all cores
        self._pipeline = self._detector = None

    def pipeline(self):
        from ..runtime.pipeline import Pipeline

        if self._pipeline is None:
            self._pipeline = Pipeline(replace(self.config.pipeline_config(), threads=self.threads))
        else:
            self._pipeline.reset()
        return self._pipeline

    def detector(self):
        from ..runtime.detection import DetectionPipeline

        if self._detector is None:
            self._detector = DetectionPipeline(replace(self.config.detection_config(), threads=self.threads))
        else:
            self._detector.reset()
        return self._detector

    @property
    def segmentation_classes(self) -> dict[int, str]:
        """Label id -> class name of the segmentation model (once built; {} before)."""
        return {c.id: c.name for c in self._pipeline.card.classes} if self._pipeline is not None else {}


@dataclass(frozen=True)
class Window:
    """The part of a bag one shard owns: the messages with start_ns <= log time < end_ns are copied and
    processed. Before it, `prime_ns` of messages are read only to bring the raw frames' order check and the
    camera synchroniser to the state a whole-bag replay has at start_ns (and the reference frames in use
    there are looked up from the bag's beginning); after it, `tail_ns` more camera messages are read, since
    a camera set whose primary message is inside may be completed by a partner just outside."""
    start_ns: int
    end_ns: int
    prime_ns: int = 2_000_000_000
    tail_ns: int = 1_000_000_000

    def __post_init__(self):
        if self.end_ns <= self.start_ns or self.prime_ns < 0 or self.tail_ns < 0:
            raise InputError(f"time window {self.start_ns}..{self.end_ns} ns (prime {self.prime_ns}, "
                             f"tail {self.tail_ns}) is empty or negative")

    def owns(self, t: int) -> bool:
        return self.start_ns <= t < self.end_ns

    @property
    def read_range(self) -> tuple[int, int]:
        return self.start_ns - self.prime_ns, self.end_ns + self.tail_ns


class _Everything:
    """The window of a whole-bag replay."""
    start_ns = end_ns = None
    read_range = (None, None)

    @staticmethod
    def owns(t: int) -> bool:
        return True


# --- the summary ------------------------------------------------------------------------------------
@dataclass
class ReplaySummary:
    input: str
    output: str
    storage: str
    backend: str
    model: str  # the segmentation model; "" when the bag has no raw topic
    backend_choice: str = ""  # how the engine was chosen (auto: the measured figures)
    arithmetic: str = ""  # what the engine computed in (IEEE float32, FP16 forward ...)
    frames_in: int = 0  # raw messages met in the bag
    frames_processed: int = 0
    dropped: int = 0  # a replay waits for every frame: nothing is dropped
    bad: dict = field(default_factory=dict)  # reason -> {"count": n, "first": "where: message"}
    stage_ms: dict = field(default_factory=dict)  # stage -> median ms
    fps: float = 0.0  # processed frames per second of wall time (read, process, write)
    activation_residual_max: float | None = None  # max |conservativeness residual| over frames and classes
    references: str = ""
    camera_info: str = ""  # where the outputs' camera_info came from
    reference_updates: int = 0
    uncalibrated_frames: int = 0  # frames processed without valid dark/white references
    uncalibrated_stamps: list = field(default_factory=list)  # their header stamps (ns), the first 100
    truncation: str = ""  # empty when the whole input was read
    wall_s: float = 0.0
    # detection
    detection: str = ""  # "on", or why it did not run
    detector: str = ""
    detection_backend: str = ""
    detection_backend_choice: str = ""
    detection_arithmetic: str = ""
    camera_messages_in: int = 0  # messages of the detector's camera topics met in the bag
    camera_sets_in: int = 0  # synchronised camera sets
    camera_sets_processed: int = 0
    camera_unmatched: int = 0  # good camera messages in no set (no partner within sync_slop_s)
    detections_total: int = 0
    detection_slots_full: int = 0  # camera sets whose NMS filled every output slot (boxes may be cut off)
    detections_per_class: dict = field(default_factory=dict)  # class name -> count
    camera_shares: dict = field(default_factory=dict)  # class -> camera -> mean share (with box_spectral)
    detection_stage_ms: dict = field(default_factory=dict)  # stage -> median ms
    messages_read: dict = field(default_factory=dict)  # topic -> messages read (of the window, for a shard)
    stale_partials: list = field(default_factory=list)  # a killed earlier run's temporary outputs found beside OUT
    window: list | None = None  # [start_ns, end_ns) of a shard; None for the whole bag

    @property
    def bad_total(self) -> int:
        return sum(v["count"] for v in self.bad.values())

    def as_dict(self) -> dict:
        return {**asdict(self), "bad_total": self.bad_total}

    def text(self) -> str:
        lines = [f"replay {self.input} -> {self.output} ({self.storage})",
                 (f"frames: {self.frames_in} in, {self.frames_processed} processed, {self.dropped} dropped, "
                  f"{self.bad_total} bad messages; {self.fps:.2f} frames/s over {self.wall_s:.1f} s"),
                 (f"model {self.model} on {self.backend_choice or self.backend}"
                  + (f"; arithmetic: {self.arithmetic}" if self.arithmetic else "") if self.model
                  else "segmentation: no raw topic in the bag"),
                 f"references: {self.references}" + (f"; {self.reference_updates} later update(s)"
                                                     if self.reference_updates else "")]
        if self.camera_info:
            lines.append(f"camera_info: {self.camera_info}")
        if self.uncalibrated_frames:
            stamps = self.uncalibrated_stamps
            span = f"stamps {stamps[0]} .. {stamps[-1]} ns" if stamps else ""
            lines.append(f"frames processed WITHOUT valid dark/white references (uncalibrated reflectance): "
                         f"{self.uncalibrated_frames} of {self.frames_processed}; {span}")
        if self.stage_ms:
            lines.append("median ms per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items()))
        if self.activation_residual_max is not None:
            lines.append(f"activation conservativeness residual, max: {self.activation_residual_max:.3g}")
        if self.detection == "on":
            per_class = ", ".join(f"{k} {v}" for k, v in sorted(self.detections_per_class.items())) or "none"
            shares = "; ".join(f"{cls} " + " ".join(f"{cam} {v:.2f}" for cam, v in by_cam.items())
                               for cls, by_cam in sorted(self.camera_shares.items()))
            arithmetic = f" ({self.detection_arithmetic})" if self.detection_arithmetic else ""
            lines += [(f"detection: detector {self.detector} on {self.detection_backend_choice or self.detection_backend}"
                       f"{arithmetic}; "
                       f"{self.camera_messages_in} camera messages, {self.camera_sets_in} camera sets in, "
                       f"{self.camera_sets_processed} processed, {self.camera_unmatched} camera messages unmatched"),
                      f"detections: {self.detections_total} ({per_class})"]
            if shares:
                lines.append(f"camera shares of the detections (gradient x input, mean per class): {shares}")
            if self.detection_slots_full:
                lines.append(f"detection output slots full in {self.detection_slots_full} camera set(s): "
                             "the detector may have kept more boxes than it can output")
            if self.detection_stage_ms:
                lines.append("detection median ms per stage: "
                             + ", ".join(f"{k} {v:.1f}" for k, v in self.detection_stage_ms.items()))
        else:
            lines.append(f"detection: {self.detection}")
        for reason, v in self.bad.items():
            lines.append(f"skipped ({reason}): {v['count']}, first: {v['first']}")
        lines.append(f"truncated input: {self.truncation}" if self.truncation else "input read to the end")
        lines += [f"earlier temporary output: {line}" for line in self.stale_partials]
        return "\n".join(lines)


# --- the replay -----------------------------------------------------------------------------------
def replay(in_path, out_path, config: NodeConfig, storage: str = "mcap", progress: bool = True,
           overwrite: bool = False, copy_raw: bool = True, models: ReplayModels | None = None,
           window: Window | None = None, observer=None) -> ReplaySummary:
    """Replay the bag at `in_path` through the pipeline into a new bag at `out_path`.

    `overwrite` replaces an existing `out_path` only when it is a bag this tool wrote or a rosbag2
    directory (output_dir.check_replaceable); `copy_raw=False` leaves the raw mosaic messages (4.4 MB
    each) out of the output bag, which then holds the other inputs and every output.

    `models` reuses pipelines built before (ReplayModels of the same config); `window` replays only the
    part of the bag a shard owns (Window), so that the shards of a bag, concatenated, hold what a whole-bag
    replay writes; `observer(kind, t_ns, header, result)` sees every processed frame ("frame",
    runtime.FrameResult) and camera set ("set", runtime.DetectionResult)."""
    from rosbags.rosbag2 import Writer

    from .drive_bag import STORAGE

    in_path, out_path = Path(in_path), Path(out_path)
    config = config.resolved()  # relative names as a node hsi_xai at the root sees them
    if storage not in STORAGE:
        raise InputError(f"storage {storage!r} unknown; use one of {sorted(STORAGE)}")
    try:
        same = out_path.resolve() == in_path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise InputError(f"output {out_path} or input {in_path} cannot be resolved ({exc})") from None
    if same:
        raise InputError(f"output {out_path} is the input bag")
    check_replaceable(out_path, overwrite)
    stale = clean_stale_partials(out_path)  # a killed run's temporary output: reported, and removed when ours
    if window is None:  # before any model loads (tens of seconds): the output can be written and has room
        check_space(out_path, disk_bytes(in_path))
    models = models or ReplayModels(config)
    src = _open_input(in_path)
    try:
        raw_topic = m.transport_topic({c.topic for c in src.conns}, config.raw_topic, config.raw_transport) \
            or config.raw_topic
        detector, det_topics, detection = _detection_setup(src, config, in_path, models, raw_topic)
        raw_conns = [c for c in src.conns if c.topic == raw_topic]
        expected = _IMAGE_TYPES[raw_topic != config.raw_topic]
        wrong = [c.msgtype for c in raw_conns if c.msgtype != expected]
        if wrong:
            raise InputError(f"raw topic {raw_topic}: type {wrong[0]}, expected {expected}")
        pipeline = models.pipeline() if raw_conns else None
        tmp = make_partial(out_path, "hsi-xai replay")
        try:
            # the bag inside the temporary directory carries the final name: its files are named after it
            with Writer(tmp / out_path.name, version=9, storage_plugin=STORAGE[storage]) as writer:
                summary = _Replay(src, writer, pipeline, config, progress, detector, det_topics, detection,
                                  copy_raw, window, observer, raw_topic).run()
            write_marker(tmp / out_path.name, "hsi-xai replay", input=str(in_path), config=asdict(config),
                         model=summary.model, detector=summary.detector, copy_raw=copy_raw)
            remove_replaceable(out_path)
            (tmp / out_path.name).rename(out_path)
        except OSError as exc:  # a full disk, a quota: one line naming the output (the partial output goes below)
            raise write_error(out_path, exc) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        src.close()
    summary.input, summary.output, summary.storage = str(in_path), str(out_path), storage
    summary.stale_partials = stale
    return summary



def _detection_setup(src, config: NodeConfig, in_path: Path, models: ReplayModels, raw_topic: str):
    """(DetectionPipeline or None, its camera topics in the bag primary first, "on" or why detection does not run).

    A camera's topic is its configured one or, image_transport's name, <topic>/compressed (camera_transport
    says which is tried first). The detector is loaded (a missing or bad model is an error) when the bag has
    one of the configured camera topics, or no raw topic (then the error can name the topics it needs)."""
    topics = {c.topic for c in src.conns}
    has_raw = raw_topic in topics
    in_bag = {t: m.transport_topic(topics, t, config.camera_transport) for t in config.multispectral_topics}
    det_cfg = config.detection_config()
    if det_cfg is None:
        why = "off (detector_model is empty)"
        if not has_raw:
            raise InputError(f"input bag {in_path}: no raw topic {config.raw_topic!r}, and detection is off "
                             f"(detector_model is empty); its topics: {sorted(topics)}")
        return None, [], why
    if has_raw and not any(in_bag.values()):
        return None, [], f"not run: none of the camera topics {list(config.multispectral_topics)} is in the bag"
    detector = models.detector()
    det_topics = config.detector_topics(detector.cameras)
    missing = [t for t in det_topics if in_bag[t] is None]
    if missing and not has_raw:
        raise InputError(f"input bag {in_path}: neither the raw topic {config.raw_topic!r} nor the detector's camera "
                         f"topics {det_topics} are in the bag (missing: {missing}); its topics: {sorted(topics)}")
    if missing:
        return None, [], f"not run: the detector's camera topics {missing} are not in the bag"
    det_topics = [in_bag[t] for t in det_topics]
    for c in src.conns:
        expected = _IMAGE_TYPES[c.topic.endswith(m.COMPRESSED_SUFFIX)]
        if c.topic in det_topics and c.msgtype != expected:
            raise InputError(f"camera topic {c.topic}: type {c.msgtype}, expected {expected}")
    return detector, det_topics, "on"


class _Replay:
    def __init__(self, src, writer, pipeline, config: NodeConfig, progress: bool, detector=None,
                 det_topics=(), detection: str = "", copy_raw: bool = True, window: Window | None = None,
                 observer=None, raw_topic: str | None = None):
        self.src, self.writer, self.pipeline, self.config, self.progress = src, writer, pipeline, config, progress
        self.raw_topic = raw_topic or config.raw_topic  # the configured topic, or its /compressed form
        self.copy_raw, self.window, self.observer = copy_raw, window or _Everything(), observer
        self.legends = LegendSchedule()
        self.gate = RawFrameGate(pipeline.profile.frame_shape) if pipeline is not None else None
        # the mosaic camera's camera_info, beside its raw topic (image_transport's naming)
        self.camera_info = CameraInfoInput(pipeline.profile.frame_shape[1], pipeline.profile.frame_shape[0],
                                           camera_info_topic(config.raw_topic)) if pipeline is not None else None
        self.met: Counter = Counter()  # messages read per topic, against the bag index's counts
        self.detector = detector
        self.store = m.typestore()
        self.out_conns: dict[tuple[str, str], object] = {}
        self.bad: dict[str, dict] = {}
        self.timings: dict[str, list[float]] = {}
        self.residual_max: float | None = None
        self.refs: dict[str, np.ndarray] = {}  # topic -> the reference frame in use
        self.calibrated = False  # the pipeline holds a dark/white pair
        backend = pipeline.engine.backend if pipeline else detector.engine.backend if detector else ""
        self.s = ReplaySummary("", "", "", backend, pipeline.card.name if pipeline else "", detection=detection,
                               backend_choice=pipeline.engine.describe_backend() if pipeline else "",
                               arithmetic=pipeline.engine.arithmetic if pipeline else "")
        # detection: camera topic -> its stack entry; sets matched by header stamp, primary camera first
        self.det_timings: dict[str, list[float]] = {}
        self.det_per_class: Counter = Counter()
        self.det_shares: dict[str, dict[str, list[float]]] = {}  # class -> camera -> shares
        self._camera_bad = 0
        self.cameras = {}  # topic -> multispectral.CameraInput (name, encoding, size), primary first
        self.det_camera_info = None  # the primary camera's camera_info, beside its image topic
        if detector is not None:
            primary = detector.rig[detector.primary]
            logical = det_topics[0].removesuffix(m.COMPRESSED_SUFFIX)
            self.det_camera_info = CameraInfoInput(primary.width, primary.height, camera_info_topic(logical))
            stack = {c.name: c for c in detector.frontend.config.cameras}
            self.cameras = {topic: stack[name] for topic, name in zip(det_topics, detector.cameras)}
            self.sync = ApproximateTimeSync(list(det_topics), round(config.sync_slop_s * 1e9))
            self.s.detector, self.s.detection_backend = detector.card.name, detector.engine.backend
            self.s.detection_backend_choice = detector.engine.describe_backend()
            self.s.detection_arithmetic = detector.engine.arithmetic

    # --- helpers ----------------------------------------------------------------------------
    def _skip(self, reason: str, where: str, exc: Exception) -> None:
        count_skipped(self.bad, reason, f"{where}: {exc}")

    def _out_conn(self, topic: str, msgtype: str, conn: _Conn | None = None):
        """The output connection for (topic, type); input and output topics share one if they coincide."""
        key = (topic, msgtype)
        if key not in self.out_conns:
            qos = self._qos(topic, conn)
            if msgtype in self.store.types:
                self.out_conns[key] = self.writer.add_connection(topic, msgtype, typestore=self.store,
                                                                 offered_qos_profiles=qos)
            elif conn.msgdef and conn.digest:
                self.out_conns[key] = self.writer.add_connection(topic, msgtype, msgdef=conn.msgdef,
                                                                 rihs01=conn.digest, offered_qos_profiles=qos)
            else:  # no hash in the bag: derive it from the definition in a store of its own
                from rosbags.typesys import Stores, get_types_from_msg, get_typestore

                try:
                    store = get_typestore(Stores.EMPTY)
                    store.register(get_types_from_msg(conn.msgdef, msgtype))
                    self.out_conns[key] = self.writer.add_connection(topic, msgtype, typestore=store,
                                                                     offered_qos_profiles=qos)
                except Exception as exc:  # noqa: BLE001 - unparsable or missing definition
                    raise InputError(f"topic {topic}: type {msgtype} is not known here and its definition in "
                                     f"the bag cannot be used to copy it ({exc})") from None
        return self.out_conns[key]

    def _qos(self, topic: str, conn: _Conn | None) -> list:
        """The QoS a topic is recorded with: an input's own (references latched when the input bag has none),
        the node's output QoS for outputs, diagnostics' for /diagnostics."""
        cfg = self.config
        if conn is not None:
            if conn.qos:
                return list(conn.qos)
            return [bag_qos("latched")] if topic in (cfg.dark_topic, cfg.white_topic) else []
        if topic == DIAGNOSTICS_TOPIC:
            return [bag_qos("diagnostics")]
        return [bag_qos("latched" if topic.endswith("/legend") else cfg.output_qos)]

    def _reference(self, conn: _Conn, t: int, data: bytes) -> np.ndarray:
        return m.image_to_array(m.deserialize(data, conn.msgtype), f"{conn.topic} @ {t}", RAW_ENCODINGS).copy()

    def _apply_references(self) -> bool:
        dark, white = self.refs.get(self.config.dark_topic), self.refs.get(self.config.white_topic)
        if dark is None or white is None:
            return False
        self.pipeline.set_references(dark, white)
        self.calibrated = True
        return True

    # --- the two passes -----------------------------------------------------------------------
    def _initial_references(self) -> dict[str, int]:
        """Pick, per reference topic, the latest message before the bag's first raw frame (else the first
        one); returns topic -> ordinal of the message chosen, so the main pass knows which ones come later.
        A shard (window) picks exactly as the whole-bag replay does, and counts a bad one only when it owns
        the message."""
        cfg, win = self.config, self.window
        ref_topics = {cfg.dark_topic, cfg.white_topic} & {c.topic for c in self.src.conns}
        chosen: dict[str, tuple[int, int, int, bytes]] = {}
        ordinal = Counter()
        first_raw = None
        for i, t, data in self.src.messages(ref_topics | {self.raw_topic}):
            topic = self.src.conns[i].topic
            if topic == self.raw_topic:
                first_raw = t if first_raw is None else first_raw
            else:
                ordinal[topic] += 1
                if first_raw is None or topic not in chosen:
                    chosen[topic] = (ordinal[topic], i, t, data)
            if first_raw is not None and set(chosen) == ref_topics:
                break
        self.src.truncation = ""  # a cut met here is met (and reported) again in the main pass
        picked = {}
        for topic, (k, i, t, data) in chosen.items():
            picked[topic] = k
            try:
                self.refs[topic] = self._reference(self.src.conns[i], t, data)
            except Exception as exc:  # noqa: BLE001 - FrameError or a CDR error
                if win.owns(t):
                    self._skip("bad reference frame", f"{topic} @ {t}", exc)
        try:
            if self._apply_references():
                self.s.references = "dark and white reference frames from the bag"
        except InputError as exc:
            if first_raw is None or win.owns(first_raw):
                self._skip("bad reference frame", "initial references", exc)
            self.refs.clear()
        return picked

    def _references_before_window(self, picked: dict[str, int]) -> Counter:
        """A shard: apply, as the whole-bag replay would have by the window's start, every reference message
        after the initial ones (without counting: earlier shards do); returns the ordinals reached."""
        cfg = self.config
        ordinal = Counter()
        ref_topics = {cfg.dark_topic, cfg.white_topic} & {c.topic for c in self.src.conns}
        if self.window.start_ns is None or not ref_topics:
            return ordinal
        for i, t, data in self.src.messages(ref_topics, stop=self.window.start_ns):
            conn = self.src.conns[i]
            ordinal[conn.topic] += 1
            if ordinal[conn.topic] > picked.get(conn.topic, 0):
                self._new_reference(conn, t, data, count=False)
        self.src.truncation = ""
        return ordinal

    def _describe_references(self) -> None:
        cfg = self.config
        if self.calibrated:
            self.s.references = "dark and white reference frames from the bag"
        else:
            missing = [tp for tp in (cfg.dark_topic, cfg.white_topic) if tp not in self.refs]
            self.s.references = (f"none usable ({', '.join(missing) or 'the pair'} missing or bad): reflectance is "
                                 "relative to the sensor's full scale, not calibrated")

    def run(self) -> ReplaySummary:
        from tqdm import tqdm

        cfg, s = self.config, self.s
        if self.pipeline is not None:
            picked = self._initial_references()
            ordinal = self._references_before_window(picked)
            self._describe_references()
        else:
            picked, ordinal, s.references = {}, Counter(), "not used (no raw topic in the bag)"
        primary = next(iter(self.cameras), None)
        if self.pipeline is not None or primary is None:
            bar = tqdm(total=self.src.counts.get(self.raw_topic) or None, unit="frame", desc="replay",
                       disable=not self.progress)
        else:
            bar = tqdm(total=self.src.counts.get(primary) or None, unit="set", desc="replay",
                       disable=not self.progress)
        t_start = time.perf_counter()
        win = self.window
        for i, t, data in self.src.messages(None, *win.read_range):
            conn = self.src.conns[i]
            owned = win.owns(t)
            if not isinstance(data, (bytes, bytearray, memoryview)):  # a storage row of another type (TEXT)
                if owned:
                    self.met[conn.topic] += 1
                    self._skip(f"not a binary message on {conn.topic}", f"{conn.topic} @ {t}",
                               f"the storage holds a {type(data).__name__}, not serialized bytes")
                continue
            det_info = self.det_camera_info is not None and conn.topic == self.det_camera_info.topic
            if not owned:  # outside the window: only what brings the order check and the sync up to date
                if det_info and t < win.start_ns:
                    self._camera_info(self.det_camera_info, conn, t, data, count=False)
                elif conn.topic in self.cameras:
                    self._camera(conn, t, data, owned=False)
                elif self.pipeline is not None and conn.topic == self.raw_topic and t < win.start_ns:
                    self._prime_gate(conn, t, data)
                elif self.pipeline is not None and conn.topic == self.camera_info.topic and t < win.start_ns:
                    self._camera_info(self.camera_info, conn, t, data, count=False)  # in use at the window's start
                continue
            self.met[conn.topic] += 1
            if self.copy_raw or conn.topic != self.raw_topic:
                self.writer.write(self._out_conn(conn.topic, conn.msgtype, conn), t, data)
            if conn.topic in self.cameras:
                s.camera_messages_in += 1
                self._camera(conn, t, data)
                if self.pipeline is None and conn.topic == primary:
                    bar.update(1)
                    bar.set_postfix(sets=s.camera_sets_processed, bad=sum(v["count"] for v in self.bad.values()))
            elif det_info:
                self._camera_info(self.det_camera_info, conn, t, data)
            elif self.pipeline is None:  # no raw topic: nothing else to do but copy
                continue
            elif conn.topic == self.raw_topic:
                s.frames_in += 1
                self._frame(conn, t, data)
                s.wall_s = time.perf_counter() - t_start
                s.fps = s.frames_processed / s.wall_s if s.wall_s > 0 else 0.0
                bar.update(1)
                bar.set_postfix(fps=f"{s.fps:.2f}", dropped=s.dropped, bad=sum(v["count"] for v in self.bad.values()))
            elif conn.topic == self.camera_info.topic:
                self._camera_info(self.camera_info, conn, t, data)
            elif conn.topic in (cfg.dark_topic, cfg.white_topic):
                ordinal[conn.topic] += 1
                if ordinal[conn.topic] > picked.get(conn.topic, 0):
                    self._new_reference(conn, t, data)
        bar.close()
        s.camera_info = "; ".join(f"{what}: {state.describe()}" for what, state in
                                  (("segmentation", self.camera_info), ("detection", self.det_camera_info)) if state)
        s.wall_s = time.perf_counter() - t_start
        s.messages_read = dict(self.met)
        if win.start_ns is None:
            self._unread(picked)
        else:  # the bag's index counts whole topics: the fleet checks the sum over a bag's shards
            s.window = [win.start_ns, win.end_ns]
        s.bad = self.bad
        s.truncation = self.src.truncation
        s.stage_ms = {k: statistics.median(v) for k, v in self.timings.items()}
        s.activation_residual_max = self.residual_max
        s.detection_stage_ms = {k: statistics.median(v) for k, v in self.det_timings.items()}
        s.detections_per_class = dict(self.det_per_class)
        s.camera_shares = {cls: {cam: float(np.mean(v)) for cam, v in by_cam.items()}
                           for cls, by_cam in self.det_shares.items()}
        s.camera_unmatched = s.camera_messages_in - self._camera_bad - s.camera_sets_in * len(self.cameras)
        return s

    def _unread(self, picked: dict) -> None:
        """Messages the bag's index lists on a topic the replay reads, but which could not be read at all
        (a recorded type that does not match the storage, a damaged index): counted as bad, never silent."""
        if self.src.truncation:
            return  # a cut-short bag says so on its own
        wanted = set(self.cameras) | ({self.raw_topic, self.config.dark_topic, self.config.white_topic,
                                       self.camera_info.topic} if self.pipeline is not None else set()) \
            | ({self.det_camera_info.topic} if self.det_camera_info is not None else set())
        for topic in sorted(wanted):
            listed, read = self.src.counts.get(topic, 0), self.met[topic]
            if read < listed:
                self._skip(f"unreadable on {topic}", topic,
                           f"the bag's index lists {listed} message(s), {read} could be read (does the recorded "
                           f"type {', '.join(sorted({c.msgtype for c in self.src.conns if c.topic == topic}))} "
                           "match the stored data?)")
                self.bad[f"unreadable on {topic}"]["count"] = listed - read

    # --- detection ------------------------------------------------------------------------------
    def _camera(self, conn: _Conn, t: int, data: bytes, owned: bool = True) -> None:
        """A camera message into the synchroniser; a completed set whose primary message the window owns is
        detected and published. Messages outside the window (owned=False) only feed the synchroniser."""
        where = f"{conn.topic} @ {t}"
        cam = self.cameras[conn.topic]
        try:
            msg = m.deserialize(data, conn.msgtype)
        except Exception as exc:  # noqa: BLE001 - rosbags raises assorted errors on short/garbled CDR
            if owned:
                self._camera_bad += 1
                self._skip(f"not deserializable on {conn.topic}", where, _why(exc))
            return
        try:
            image = m.camera_image(msg, where, cam.encoding, cam.width, cam.height)
        except FrameError as exc:
            if owned:
                self._camera_bad += 1
                self._skip(f"{exc.reason} on {conn.topic}", where, exc)
            return
        matched = self.sync.add(conn.topic, m.stamp_ns(msg.header), (image, msg.header, t))
        if matched is None:
            return
        (image, hdr, t_primary), others = matched
        if not self.window.owns(t_primary):
            return
        self.s.camera_sets_in += 1
        primary = next(iter(self.cameras))
        images = {self.cameras[topic].name: item[0] for topic, item in [(primary, (image,)), *others.items()]}
        try:
            result = self.detector.process(images, hdr)
        except FrameError as exc:  # EngineRunError too: its reason says the engine failed
            return self._skip(getattr(exc, "reason", "camera set rejected by the detector"), f"{primary} @ {t_primary}",
                              exc)
        self.s.camera_sets_processed += 1
        for k, v in result.timings_ms.items():
            self.det_timings.setdefault(k, []).append(v)
        self.s.detections_total += len(result.detections)
        self.s.detection_slots_full += result.slots_full
        self.det_per_class.update(d.class_name for d in result.detections)
        for d in result.detections:
            for cam, share in (d.camera_shares or {}).items():
                self.det_shares.setdefault(d.class_name, {}).setdefault(cam, []).append(share)
        self._publish_detections(result, hdr, t_primary)
        if self.observer is not None:
            self.observer("set", t_primary, hdr, result)

    def _publish_detections(self, r, hdr, t: int) -> None:
        cfg, s = self.config, self.s
        for name, (array, encoding) in detection_images(r).items():
            self.writer.write(self._out_conn(cfg.output_topic(name), IMAGE), t,
                              m.serialize(m.array_to_image(array, encoding, hdr)))
        for name, model in self.det_camera_info.outputs(detection_grids(self.detector)).items():
            self.writer.write(self._out_conn(cfg.output_topic(name), CAMERA_INFO_MSGTYPE), t,
                              m.serialize(m.camera_info_message(model, hdr)))
        legend = self.detector.legend()
        if self.legends.due(DETECTION_OVERLAY, legend, t):
            self.writer.write(self._out_conn(cfg.output_topic(legend_name(DETECTION_OVERLAY)), IMAGE), t,
                              m.serialize(m.array_to_image(legend, "bgr8", hdr)))
        self.writer.write(self._out_conn(cfg.output_topic(DETECTIONS), DETECTIONS_MSGTYPE), t,
                          m.serialize(detection_array(r, hdr)))
        self._annotations(DETECTION_ANNOTATIONS, hdr, t, *detection_annotations(r))
        values = {f"{k}_ms": f"{v:.2f}" for k, v in r.timings_ms.items()}
        shared = [d.camera_shares for d in r.detections if d.camera_shares]
        for cam in (shared[0] if shared else {}):
            values[f"camera_share_{cam}"] = f"{np.mean([sh[cam] for sh in shared]):.3f}"
        values.update(detections=len(r.detections), slots_full=str(r.slots_full).lower(),
                      camera_sets_processed=s.camera_sets_processed,
                      bad_messages=sum(v["count"] for v in self.bad.values()), detector=s.detector,
                      backend=s.detection_backend, **{CAMERA_INFO: self.det_camera_info.describe()})
        diag = m.diagnostic_array(hdr, f"{NODE_NAME}: detection", hdr.frame_id, 0, "ok", values)
        self.writer.write(self._out_conn(DIAGNOSTICS_TOPIC, DIAGNOSTICS), t, m.serialize(diag))

    def _annotations(self, name: str, hdr, t: int, polygons, labels=()) -> None:
        """foxglove_msgs/ImageAnnotations for Foxglove's Image panel, stamped like the image they annotate."""
        msg = annotations_message(lambda n: self.store.types[f"foxglove_msgs/msg/{n}"], hdr.stamp, polygons, labels)
        self.writer.write(self._out_conn(self.config.output_topic(name), ANNOTATIONS_MSGTYPE), t, m.serialize(msg))

    def _new_reference(self, conn: _Conn, t: int, data: bytes, count: bool = True) -> None:
        old = dict(self.refs)
        try:
            self.refs[conn.topic] = self._reference(conn, t, data)
            if self._apply_references():
                self.s.reference_updates += count
                self.s.references = "dark and white reference frames from the bag"
        except Exception as exc:  # noqa: BLE001 - keep the frames in use
            self.refs = old
            if count:
                self._skip("bad reference frame", f"{conn.topic} @ {t}", exc)

    def _camera_info(self, state: CameraInfoInput, conn: _Conn, t: int, data: bytes, count: bool = True) -> None:
        """A camera's camera_info (the mosaic camera's, the detector's primary camera's): one that cannot be read
        or does not fit the frames is skipped and counted (the last good one stays in use)."""
        where = f"{conn.topic} @ {t}"
        try:
            if conn.msgtype != CAMERA_INFO_MSGTYPE:
                raise FrameError(f"type {conn.msgtype}, expected {CAMERA_INFO_MSGTYPE}")
            state.update(m.deserialize(data, conn.msgtype))
        except Exception as exc:  # noqa: BLE001 - FrameError (does not fit) or assorted CDR errors (garbled)
            if count:
                self._skip(f"bad camera_info on {conn.topic}", where,
                           str(exc) if isinstance(exc, FrameError) else _why(exc))

    def _prime_gate(self, conn: _Conn, t: int, data: bytes) -> None:
        """A raw frame before the window: through the order check only, as the whole-bag replay met it."""
        try:
            self.gate.accept(m.deserialize(data, conn.msgtype), f"{conn.topic} @ {t}")
        except Exception:  # noqa: BLE001 - counted by the shard that owns the frame
            pass

    def _frame(self, conn: _Conn, t: int, data: bytes) -> None:
        where = f"{conn.topic} @ {t}"
        try:
            msg = m.deserialize(data, conn.msgtype)
        except Exception as exc:  # noqa: BLE001 - rosbags raises assorted errors on short/garbled CDR
            return self._skip("not deserializable", where, _why(exc))
        try:
            raw = self.gate.accept(msg, where)  # the node's rule: order, encoding, data, size
        except FrameError as exc:
            return self._skip(exc.reason, where, exc)
        try:
            result = self.pipeline.process(raw, msg.header)
        except FrameError as exc:  # EngineRunError too: its reason says the engine failed
            return self._skip(getattr(exc, "reason", "frame rejected by the pipeline"), where, exc)
        self.s.frames_processed += 1
        if not self.calibrated:
            self.s.uncalibrated_frames += 1
            if len(self.s.uncalibrated_stamps) < 100:
                self.s.uncalibrated_stamps.append(m.stamp_ns(msg.header))
        for k, v in result.timings_ms.items():
            self.timings.setdefault(k, []).append(v)
        self._publish(result, msg.header, t)
        if self.observer is not None:
            self.observer("frame", t, msg.header, result)

    def _publish(self, r, hdr, t: int) -> None:
        cfg = self.config

        def image(name: str, array: np.ndarray, encoding: str) -> None:
            topic = cfg.output_topic(name)
            self.writer.write(self._out_conn(topic, IMAGE), t, m.serialize(m.array_to_image(array, encoding, hdr)))

        for name, (array, encoding) in output_images(r, self.pipeline.card, cfg.publish_class_maps).items():
            image(name, array, encoding)
        for name, legend in self.pipeline.legends().items():
            if self.legends.due(name, legend, t):
                image(legend_name(name), legend, "bgr8")
        self._annotations(SEGMENTATION_ANNOTATIONS, hdr, t, segmentation_annotations(r.labels))
        for name, model in self.camera_info.outputs(segmentation_grids(self.pipeline, cfg.publish_class_maps)).items():
            self.writer.write(self._out_conn(cfg.output_topic(name), CAMERA_INFO_MSGTYPE), t,
                              m.serialize(m.camera_info_message(model, hdr)))
        residual = None
        if "activation" in r.residuals:
            residual = float(np.max(np.abs(r.residuals["activation"])))
            self.residual_max = max(residual, self.residual_max or 0.0)
        s = self.s
        values = {f"{k}_ms": f"{v:.2f}" for k, v in r.timings_ms.items()}
        values.update(frames_per_s=f"{s.fps:.2f}", dropped=s.dropped,
                      bad_messages=sum(v["count"] for v in self.bad.values()),
                      references="yes" if self.calibrated else "no", frames_without_references=s.uncalibrated_frames,
                      activation_residual_max="n/a" if residual is None else f"{residual:.3g}",
                      backend=s.backend, model=s.model, **{CAMERA_INFO: self.camera_info.describe()})
        values.update(r.conservation_values())
        diag = m.diagnostic_array(hdr, f"{NODE_NAME}: pipeline", hdr.frame_id, 0 if self.calibrated else 1,
                                  "ok" if self.calibrated else "no dark/white references: uncalibrated reflectance",
                                  values)
        self.writer.write(self._out_conn(DIAGNOSTICS_TOPIC, DIAGNOSTICS), t, m.serialize(diag))


# --- command line (declared in hsi_xai_node.cli) -----------------------------------------------------
def cmd_replay(args) -> int:
    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else None
    config = load_config(args.config, backend=args.backend, model=args.model, methods=methods)
    summary = replay(args.input, args.output, config, storage=args.storage, progress=not args.no_progress,
                     overwrite=args.overwrite, copy_raw=not args.no_copy_raw)
    print(summary.text())
    # a bag with messages to process, of which not one could be processed, is a failed run
    nothing = not (summary.frames_processed or summary.camera_sets_processed)
    return 1 if nothing and summary.bad_total else 0
