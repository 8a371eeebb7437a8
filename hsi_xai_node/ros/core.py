"""What the plain and the managed (lifecycle) node share: a thin rclpy shell over `Pipeline` and
`DetectionPipeline` (all logic lives in the library), in four steps the two nodes call at different times:

    _declare()     parameters (ranges, read-only), /diagnostics, the latest-frame workers
    _configure()   the configuration read and checked, models loaded and engines built, publishers made
    _activate()    subscriptions made: frames flow
    _deactivate()  subscriptions destroyed: frames stop, the engines stay
    _release()     publishers destroyed and the pipelines dropped (engines freed)

The plain node runs the first three at start; the lifecycle node runs them on its transitions.

Segmentation: subscribes to the raw mosaic and the dark/white reference topics; each raw frame alone is
a job. Detection (detector_model not empty): subscribes to the cameras the detector's card names,
synchronised by header stamp (sync_slop_s); each matched set is a job. Cameras arrive as
sensor_msgs/Image or, with camera_transport compressed, as CompressedImage on <topic>/compressed (the
mosaic likewise with raw_transport, 16-bit PNG only). Each pipeline has its own latest-frame worker off
the executor thread (never a queue: jobs arriving meanwhile replace each other and are counted as
dropped); frames older than max_input_age_s on arrival are dropped and counted. Every output carries
its input's header (detections: the primary camera's) and is published only to topics somebody
subscribes to. Latency per output topic (input stamp to publication), rates, drops, bad input (once per
kind in the log) and the conservativeness residual go to /diagnostics once a second, one status per
pipeline.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..errors import FrameError, InputError
from ..runtime import LatestFrameWorker, Pipeline
from ..runtime.detection import DetectionPipeline
from ..sync import ApproximateTimeSync
from ..transports.annotations import (DETECTION_ANNOTATIONS, SEGMENTATION_ANNOTATIONS, detection_annotations,
                                      segmentation_annotations)
from ..transports.config import NodeConfig
from ..transports.messages import COMPRESSED_SUFFIX, camera_image, image_to_array
from ..transports.outputs import (CAMERA_INFO, DETECTION_CAMERA_INFO, DETECTION_IMAGE_OUTPUTS, DETECTION_OVERLAY,
                                  DETECTIONS, CameraInfoInput, LegendSchedule, camera_info_topic, detection_grids,
                                  detection_images, legend_name, output_images, output_names, segmentation_grids)
from ..transports.raw_input import RAW_ENCODINGS, RawFrameGate
from .convert import (FOXGLOVE_MSGS_MISSING, VISION_MSGS_MISSING, foxglove_msgs, qos, to_annotations,
                      to_camera_info, to_detection_array, to_image, vision_msgs)
from .parameters import descriptor, parameter_names

TOO_OLD = "older than max_input_age_s on arrival"


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


TRANSPORT_TYPES = {"raw": Image, "compressed": CompressedImage}


def _transport(topic: str, transport: str):
    """(message type, topic) a subscription uses: the topic itself, or image_transport's <topic>/compressed."""
    return TRANSPORT_TYPES[transport], topic.rstrip("/") + COMPRESSED_SUFFIX if transport == "compressed" else topic


class HsiXaiCore:
    """Mixed into rclpy's Node or LifecycleNode (which gives `create_publisher`, `get_logger`, ...)."""

    # --- the steps ------------------------------------------------------------------------------
    def _declare(self) -> None:
        defaults = NodeConfig()
        for name in parameter_names():
            value = getattr(defaults, name)
            if isinstance(value, tuple):  # typed explicitly: rclpy would take an empty list for bytes
                value = list(value) or Parameter.Type.STRING_ARRAY
            self.declare_parameter(name, value, descriptor(name))
        self.config = self._read_config()  # a bad value in the parameter file: an InputError here
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos("diagnostics"))
        self.pipeline = self.detector = None
        self.pubs, self.det_pubs, self.legend_pubs, self.subs, self.camera_subs = {}, {}, {}, [], {}
        self.det_cameras: dict[str, object] = {}  # subscribed topic -> the stack's CameraInput, primary first
        self.sync = None
        self.vision_msgs = self.foxglove_msgs = None
        self.references: dict[str, np.ndarray] = {}  # the last good dark and white frames
        self.bad, self.det_bad = Counter(), Counter()
        self._reported: set[str] = set()
        self.raw_gate = None
        self.camera_info = None  # the mosaic camera's camera_info (CameraInfoInput)
        self.det_camera_info, self.det_info_sub = None, None  # the detector's primary camera's, its subscription
        self.uncalibrated = 0  # frames processed without valid references
        self.latency_ms: dict[str, float] = {}  # output topic name -> input stamp to publication, last frame
        self.fault = ""  # why the last configure failed (lifecycle node)
        self.legends = LegendSchedule()
        self._last = {"timings": {}, "residual": float("nan"), "processed_at": []}
        self._det_last = {"timings": {}, "detections": 0, "total": 0, "slots_full": 0, "shares": {},
                          "processed_at": []}
        self.worker = LatestFrameWorker(self._process, self._publish, self._on_bad)
        self.det_worker = LatestFrameWorker(self._detect, self._publish_detections, self._on_bad_detection,
                                            name="hsi-xai-detection")

    def _configure(self) -> None:
        """Load and check everything (an InputError says what is wrong), then make the publishers."""
        config = self._read_config()
        pipeline = Pipeline(config.pipeline_config(), self.references.get("dark"), self.references.get("white"))
        detection_config = config.detection_config()
        detector = DetectionPipeline(detection_config) if detection_config else None  # a bad file: ModelError
        topics = config.detector_topics(detector.cameras) if detector else []  # a camera without a topic
        self.config, self.pipeline = config, pipeline
        self.raw_gate = RawFrameGate(pipeline.profile.frame_shape)  # the replay's rule for raw frames
        self.camera_info = self._camera_info_input(pipeline, config)
        out_qos = qos(config.output_qos)
        self.pubs = {name: self._publisher(Image, config.output_topic(name), out_qos)
                     for name in output_names(pipeline.card, config.publish_class_maps, bool(config.focus_class))}
        # beside the images, the camera_info of their pixel grid (image_transport's naming: <ns>/camera_info)
        self.pubs |= {name: self._publisher(CameraInfo, config.output_topic(name), out_qos)
                      for name in segmentation_grids(pipeline, config.publish_class_maps)}
        # legends: latched, so RViz shows what the colours mean whenever it subscribes
        self.legend_pubs = {name: self._publisher(Image, config.output_topic(legend_name(name)), qos("latched"))
                            for name in ("gradcam_overlay", "activation_overlay", DETECTION_OVERLAY)}
        if config.publish_foxglove_annotations:
            self.foxglove_msgs = foxglove_msgs()
            if self.foxglove_msgs is None:
                self.get_logger().warning(f"Foxglove annotations {FOXGLOVE_MSGS_MISSING}")
            else:
                self.pubs[SEGMENTATION_ANNOTATIONS] = self._publisher(
                    self.foxglove_msgs.ImageAnnotations, config.output_topic(SEGMENTATION_ANNOTATIONS), out_qos)
        if detector is not None:
            self._use_detector(detector, topics)
        self.get_logger().info(f"hsi_xai: model {pipeline.card.name} on {pipeline.engine.describe_backend()}, raw frames from "
                               f"{_transport(config.raw_topic, config.raw_transport)[1]}")
        if detector is not None:
            self.get_logger().info(f"hsi_xai: detector {detector.card.name} on {detector.engine.describe_backend()}, "
                                   f"cameras {dict(zip(detector.cameras, self.det_cameras))}")

    def _activate(self) -> None:
        cfg, latched = self.config, qos("latched")
        msg_type, raw_topic = _transport(cfg.raw_topic, cfg.raw_transport)
        self.subs = [self.create_subscription(msg_type, raw_topic, self._on_raw, qos(cfg.input_qos)),
                     self.create_subscription(Image, cfg.dark_topic, lambda m: self._on_reference("dark", m), latched),
                     self.create_subscription(Image, cfg.white_topic, lambda m: self._on_reference("white", m),
                                              latched),
                     self.create_subscription(CameraInfo, self.camera_info.topic, self._on_camera_info,
                                              qos(cfg.input_qos))]
        self._subscribe_cameras()

    def _deactivate(self) -> None:
        for sub in self.subs + list(self.camera_subs.values()) + ([self.det_info_sub[0]] if self.det_info_sub else []):
            self.destroy_subscription(sub)
        self.subs, self.camera_subs, self.det_info_sub = [], {}, None
        self.worker.idle(5.0)  # a frame in flight is finished and published
        self.det_worker.idle(5.0)

    def _release(self) -> None:
        self._deactivate()
        for pub in [*self.pubs.values(), *self.det_pubs.values(), *self.legend_pubs.values()]:
            self._destroy_publisher(pub)
        self.pubs, self.det_pubs, self.legend_pubs, self.det_cameras = {}, {}, {}, {}
        self.pipeline = self.detector = self.sync = None  # engines freed with their pipelines

    # overridden by the lifecycle node (lifecycle publishers publish only while it is active)
    def _publisher(self, msg_type, topic: str, profile):
        return self.create_publisher(msg_type, topic, profile)

    def _destroy_publisher(self, pub) -> None:
        self.destroy_publisher(pub)

    @property
    def configured(self) -> bool:
        return self.pipeline is not None

    # --- parameters ---------------------------------------------------------------------------
    def _read_config(self, overrides: dict | None = None) -> NodeConfig:
        values = {name: self._value(name) for name in parameter_names()}
        values.update(overrides or {})
        config = NodeConfig(**values)  # checks types, ranges and the camera lists
        config.pipeline_config()  # validates alpha, colormap, overlay method
        config.detection_config()
        # absolute names for this node's namespace and name (remapping still applies: rcl remaps the expanded name)
        return config.resolved(self.get_namespace(), self.get_name())

    def _value(self, name: str):
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:  # a typed list left empty: rcl cannot type "[]" in a file
            return None

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Check a change as a whole; when configured, build what it needs before accepting it (a change the
        models refuse leaves the running ones untouched)."""
        changes = {p.name: p.value for p in params if p.name in set(parameter_names())}
        try:
            config = self._read_config(changes)
            if not self.configured:  # unconfigured lifecycle node: checked now, loaded on configure
                self.config = config
                return SetParametersResult(successful=True)
            pipeline = detector = None
            if changes and config.pipeline_config() != self.config.pipeline_config():
                pipeline = Pipeline(config.pipeline_config(), self.references.get("dark"),
                                    self.references.get("white"))
            detection = config.detection_config()
            rebuild = detection is not None and (self.detector is None or detection != self.detector.config)
            if rebuild:
                detector = DetectionPipeline(detection)
            current = detector or (self.detector if detection is not None else None)
            topics = config.detector_topics(current.cameras) if current else []
        except (InputError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if pipeline is not None:
            self.pipeline = pipeline
            self.raw_gate = RawFrameGate(pipeline.profile.frame_shape)
            self.camera_info = self._camera_info_input(pipeline, config, self.camera_info)
        resync = current is not None and (rebuild or topics != self._logical_topics()
                                          or config.sync_slop_s != self.config.sync_slop_s)
        self.config = config
        if current is None:
            self.detector = None  # detection off: camera frames are ignored
        elif resync:
            self._use_detector(current, topics)
            if self.subs:  # active: follow the new camera topics now
                self._subscribe_cameras()
        return SetParametersResult(successful=True)

    # --- inputs --------------------------------------------------------------------------------
    @staticmethod
    def _camera_info_input(pipeline, config: NodeConfig, previous: CameraInfoInput | None = None) -> CameraInfoInput:
        """The mosaic camera's camera_info (beside its raw topic), sized for this pipeline's frames; the message
        in use stays when the frames keep their size."""
        rows, cols = pipeline.profile.frame_shape
        state = CameraInfoInput(cols, rows, camera_info_topic(config.raw_topic))
        if previous is not None and previous.size == state.size and previous.topic == state.topic:
            state.model, state.received = previous.model, previous.received
        return state

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """The mosaic camera's camera_info; one that does not fit its frames is reported, the last good one stays."""
        state = self.camera_info
        if state is None:
            return
        try:
            state.update(msg)
        except FrameError as exc:
            self._report(f"{exc.reason} on {state.topic}", exc)

    def _report(self, kind: str, exc: Exception, count: bool = True) -> None:
        if count:
            self.bad[kind] += 1
        if kind not in self._reported:  # once per kind in the log; every one is counted on /diagnostics
            self._reported.add(kind)
            self.get_logger().warning(f"bad input ({kind}): {exc}")

    def _too_old(self, header) -> bool:
        """max_input_age_s: a frame whose stamp is older than that on arrival (the node's clock: /clock with
        use_sim_time) is dropped."""
        limit = self.config.max_input_age_s
        return limit > 0 and self.get_clock().now().nanoseconds - _stamp_ns(header) > limit * 1e9

    def _on_reference(self, which: str, msg: Image) -> None:
        """A new dark or white frame; a bad one is reported and the last good pair stays in use (as the
        library's set_references and the replay do)."""
        try:
            frame = image_to_array(msg, f"{which} reference", RAW_ENCODINGS).copy()
            pair = {**self.references, which: frame}
            if {"dark", "white"} <= set(pair) and self.pipeline is not None:
                self.pipeline.set_references(pair["dark"], pair["white"])
            self.references = pair
        except FrameError as exc:
            self._report("bad reference frame", exc)

    def _on_raw(self, msg) -> None:
        gate = self.raw_gate
        if gate is None:
            return
        if self._too_old(msg.header):  # before the order check: a late frame must not hold the next ones back
            self.bad[TOO_OLD] += 1
            return
        try:
            raw = gate.accept(msg, "raw frame").copy()
        except FrameError as exc:
            self._report(exc.reason, exc)
            return
        if not any(p.get_subscription_count() for p in self.pubs.values()):
            return  # nobody listens: compute nothing
        self.worker.submit((raw, msg.header))

    def _logical_topics(self) -> list[str]:
        """The configured camera topics in use (without image_transport's /compressed)."""
        suffix = COMPRESSED_SUFFIX if self.config.camera_transport == "compressed" else ""
        return [t[:-len(suffix)] if suffix else t for t in self.det_cameras]

    def _use_detector(self, detector: DetectionPipeline, topics: list[str]) -> None:
        """Make `detector` the one in use: its publishers (first time), cameras and synchroniser."""
        cfg = self.config
        if not self.det_pubs:
            out_qos = qos(cfg.output_qos)
            self.det_pubs = {name: self._publisher(Image, cfg.output_topic(name), out_qos)
                             for name in DETECTION_IMAGE_OUTPUTS}
            self.vision_msgs = vision_msgs()
            if self.vision_msgs is None:
                self.get_logger().warning(f"detections {VISION_MSGS_MISSING}; the detection overlay is published")
            else:
                self.det_pubs[DETECTIONS] = self._publisher(self.vision_msgs.Detection2DArray,
                                                            cfg.output_topic(DETECTIONS), out_qos)
            if self.foxglove_msgs is not None:
                self.det_pubs[DETECTION_ANNOTATIONS] = self._publisher(
                    self.foxglove_msgs.ImageAnnotations, cfg.output_topic(DETECTION_ANNOTATIONS), out_qos)
            self.det_pubs[DETECTION_CAMERA_INFO] = self._publisher(CameraInfo, cfg.output_topic(DETECTION_CAMERA_INFO),
                                                                   out_qos)
        primary = detector.rig[detector.primary]  # its camera_info beside its image topic; kept while that stays
        info = CameraInfoInput(primary.width, primary.height, camera_info_topic(topics[0]))
        old = self.det_camera_info
        if old is not None and (old.topic, old.size) == (info.topic, info.size):
            info.model, info.received = old.model, old.received
        self.det_camera_info = info
        stack = {c.name: c for c in detector.frontend.config.cameras}
        subscribed = [_transport(t, cfg.camera_transport)[1] for t in topics]
        self.det_cameras = {topic: stack[name] for topic, name in zip(subscribed, detector.cameras)}
        # the detector's cameras synchronised by header stamp (our own approximate-time policy), primary first
        self.sync = ApproximateTimeSync(subscribed, round(cfg.sync_slop_s * 1e9))
        self.detector = detector

    def _subscribe_cameras(self) -> None:
        info = self.det_camera_info  # (subscription, topic) of the primary camera's camera_info
        if self.det_info_sub is not None and (info is None or self.det_info_sub[1] != info.topic):
            self.destroy_subscription(self.det_info_sub[0])
            self.det_info_sub = None
        if self.det_info_sub is None and info is not None and self.det_cameras:
            self.det_info_sub = (self.create_subscription(CameraInfo, info.topic, self._on_detection_camera_info,
                                                          qos(self.config.input_qos)), info.topic)
        msg_type = TRANSPORT_TYPES[self.config.camera_transport]
        for topic in set(self.camera_subs) - set(self.det_cameras):
            self.destroy_subscription(self.camera_subs.pop(topic))
        for topic in self.det_cameras:
            if topic not in self.camera_subs:
                self.camera_subs[topic] = self.create_subscription(
                    msg_type, topic, lambda m, t=topic: self._on_camera(t, m), qos(self.config.input_qos))

    def _on_detection_camera_info(self, msg: CameraInfo) -> None:
        """The primary camera's camera_info; one that does not fit its frames is reported, the last good one stays."""
        try:
            self.det_camera_info.update(msg)
        except FrameError as exc:
            self.det_bad[f"{exc.reason} on {self.det_camera_info.topic}"] += 1
            self._report(f"{exc.reason} on {self.det_camera_info.topic}", exc, count=False)

    def _on_camera(self, topic: str, msg) -> None:
        detector, cam = self.detector, self.det_cameras.get(topic)
        if detector is None or cam is None:
            return  # detection turned off, or a camera the detector no longer uses
        try:
            image = camera_image(msg, topic, cam.encoding, cam.width, cam.height).copy()
        except FrameError as exc:
            self.det_bad[f"{exc.reason} on {topic}"] += 1
            self._report(f"{exc.reason} on {topic}", exc, count=False)
            return
        if self._too_old(msg.header):
            self.det_bad[f"{TOO_OLD} on {topic}"] += 1
            return
        matched = self.sync.add(topic, _stamp_ns(msg.header), (image, msg.header))
        if matched is None:
            return
        (primary, header), others = matched
        if not any(p.get_subscription_count() for p in self.det_pubs.values()):
            return  # nobody listens: compute nothing
        primary_topic = next(iter(self.det_cameras))
        images = {self.det_cameras[t].name: item[0] for t, item in [(primary_topic, (primary,)), *others.items()]}
        self.det_worker.submit((detector, images, header))

    # --- processing (worker threads) ------------------------------------------------------------
    def _process(self, item):
        raw, header = item
        pipeline = self.pipeline
        if pipeline is None:
            raise FrameError("the node was cleaned up while the frame waited")
        return pipeline.process(raw, header)

    def _detect(self, item):
        detector, images, header = item
        return detector.process(images, header)

    def _on_bad_detection(self, item, exc) -> None:
        reason = getattr(exc, "reason", "camera set rejected by the detector")
        self.det_bad[reason] += 1
        self._report(reason, exc, count=False)

    def _send(self, pubs: dict, name: str, make, header) -> None:
        """Publish `make()` on pubs[name] when somebody listens; note the latency from the input's stamp."""
        pub = pubs.get(name)
        if pub is not None and pub.get_subscription_count():
            pub.publish(make())
            self.latency_ms[name] = (self.get_clock().now().nanoseconds - _stamp_ns(header)) / 1e6

    def _publish_legend(self, name: str, image, header) -> None:
        if name in self.legend_pubs and self.legends.due(name, image, _stamp_ns(header)):
            self.legend_pubs[name].publish(to_image(image, "bgr8", header))

    def _publish_detections(self, item, result) -> None:
        header = result.header
        detector = item[0]
        self._publish_legend(DETECTION_OVERLAY, detector.legend(), header)
        for name, (array, encoding) in detection_images(result).items():
            self._send(self.det_pubs, name, lambda a=array, e=encoding: to_image(a, e, header), header)
        for name, model in self.det_camera_info.outputs(detection_grids(detector)).items():
            self._send(self.det_pubs, name, lambda c=model: to_camera_info(c, header), header)
        self._send(self.det_pubs, DETECTIONS, lambda: to_detection_array(result, header, self.vision_msgs), header)
        self._send(self.det_pubs, DETECTION_ANNOTATIONS,
                   lambda: to_annotations(self.foxglove_msgs, header.stamp, *detection_annotations(result)), header)
        last = self._det_last
        last["timings"], last["detections"] = result.timings_ms, len(result.detections)
        last["total"] += len(result.detections)
        last["slots_full"] += result.slots_full
        for d in result.detections:  # running means of each camera's share, per class (with box_spectral)
            for cam, share in (d.camera_shares or {}).items():
                n, mean = last["shares"].get((d.class_name, cam), (0, 0.0))
                last["shares"][(d.class_name, cam)] = (n + 1, mean + (share - mean) / (n + 1))
        last["processed_at"] = [t for t in last["processed_at"] if time.monotonic() - t < 5.0] + [time.monotonic()]

    def _on_bad(self, item, exc) -> None:
        self._report(getattr(exc, "reason", "frame rejected by the pipeline"), exc)

    def _publish(self, item, result) -> None:
        header, pipeline = result.header, self.pipeline
        if pipeline is None:
            return
        outputs = output_images(result, pipeline.card, self.config.publish_class_maps)
        for name, (array, encoding) in outputs.items():
            self._send(self.pubs, name, lambda a=array, e=encoding: to_image(a, e, header), header)
        for name, model in self.camera_info.outputs(segmentation_grids(pipeline, self.config.publish_class_maps)).items():
            self._send(self.pubs, name, lambda c=model: to_camera_info(c, header), header)
        self._send(self.pubs, SEGMENTATION_ANNOTATIONS,
                   lambda: to_annotations(self.foxglove_msgs, header.stamp, segmentation_annotations(result.labels)),
                   header)
        for name, legend in pipeline.legends().items():
            self._publish_legend(name, legend, header)
        if len(self.references) < 2:
            self.uncalibrated += 1
        self._last["timings"] = result.timings_ms
        self._last["residual"] = float(np.nanmax(result.residuals["activation"])) \
            if "activation" in result.residuals else float("nan")
        self._last["conservation"] = result.conservation_values()
        self._last["processed_at"] = [t for t in self._last["processed_at"] if time.monotonic() - t < 5.0] \
            + [time.monotonic()]

    # --- /diagnostics --------------------------------------------------------------------------
    @staticmethod
    def _fps(done: list[float]) -> float:
        return (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0

    def _latencies(self, names) -> dict[str, str]:
        return {f"latency_ms {n}": f"{self.latency_ms[n]:.1f}" for n in sorted(names) if n in self.latency_ms}

    def _detection_status(self) -> DiagnosticStatus:
        s, last, detector = self.det_worker.stats, self._det_last, self.detector
        values = {f"{k}_ms": f"{v:.1f}" for k, v in last["timings"].items()}
        values |= {"frames_per_s": f"{self._fps(last['processed_at']):.2f}", "received": str(s.received),
                   "processed": str(s.processed), "dropped": str(s.dropped),
                   "unsynchronised_dropped": str(sum(self.sync.dropped.values())) if self.sync else "0",
                   "detections_last": str(last["detections"]), "detections_total": str(last["total"]),
                   "sets_with_all_output_slots_full": str(last["slots_full"]),
                   "detections": "published" if self.vision_msgs is not None else VISION_MSGS_MISSING,
                   "detector": detector.card.name if detector else "off",
                   "backend": detector.engine.backend if detector else "",
                   "backend_choice": detector.engine.describe_backend() if detector else "",
                   "arithmetic": detector.engine.arithmetic if detector else "",
                   "cameras": ", ".join(f"{c.name}={t}" for t, c in self.det_cameras.items()) if detector else "",
                   CAMERA_INFO: self.det_camera_info.describe() if detector and self.det_camera_info else ""}
        values |= self._latencies(self.det_pubs)
        values |= {f"camera_share {cls} {cam}": f"{mean:.3f}" for (cls, cam), (_, mean) in sorted(last["shares"].items())}
        values |= {f"bad: {k}": str(v) for k, v in self.det_bad.items()}
        problems = [f"{v} {k}" for k, v in self.det_bad.items()]
        if self.vision_msgs is None:
            problems.append("Detection2DArray not published (vision_msgs is not installed)")
        level = DiagnosticStatus.WARN if problems and detector else DiagnosticStatus.OK
        message = "off (detector_model is empty)" if detector is None else "; ".join(problems) or "ok"
        return DiagnosticStatus(level=level, name="hsi_xai: detection", message=message, hardware_id="cameras",
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _pipeline_status(self) -> DiagnosticStatus:
        s = self.worker.stats
        if self.pipeline is None:  # a lifecycle node before configure, after cleanup, or after a failed configure
            level = DiagnosticStatus.ERROR if self.fault else DiagnosticStatus.OK
            return DiagnosticStatus(level=level, name="hsi_xai: pipeline", hardware_id="hsi_camera",
                                    message=f"configure failed: {self.fault}" if self.fault else "not configured",
                                    values=[KeyValue(key="state", value=self.state_name())])
        values = {f"{k}_ms": f"{v:.1f}" for k, v in self._last["timings"].items()}
        values |= {"frames_per_s": f"{self._fps(self._last['processed_at']):.2f}", "received": str(s.received),
                   "processed": str(s.processed), "dropped": str(s.dropped),
                   "conservativeness_residual_max": f"{self._last['residual']:.2e}",
                   "backend": self.pipeline.engine.backend, "backend_choice": self.pipeline.engine.describe_backend(),
                   "arithmetic": self.pipeline.engine.arithmetic,
                   "model": self.pipeline.card.name,
                   "references": "yes" if len(self.references) == 2 else "no",
                   CAMERA_INFO: self.camera_info.describe(),
                   "frames_without_references": str(self.uncalibrated), "state": self.state_name()}
        values |= self._last.get("conservation", {})
        if self.config.publish_foxglove_annotations:
            values["foxglove_annotations"] = "published" if self.foxglove_msgs is not None else FOXGLOVE_MSGS_MISSING
        values |= self._latencies(self.pubs)
        values |= {f"bad: {k}": str(v) for k, v in self.bad.items()}
        problems = [f"{v} {k}" for k, v in self.bad.items()]
        if self.uncalibrated:
            problems.append(f"{self.uncalibrated} frame(s) processed without valid dark/white references")
        # WARN names its cause; references not yet received are no fault until a frame is processed without them
        level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        waiting = [w for w in ("dark", "white") if w not in self.references]
        message = "; ".join(problems) or ("ok" if not waiting else
                                          f"ok, waiting for the {' and '.join(waiting)} reference frame(s)")
        return DiagnosticStatus(level=level, name="hsi_xai: pipeline", message=message,
                                hardware_id="hsi_camera", values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def state_name(self) -> str:
        return "active"

    def _publish_diagnostics(self) -> None:
        statuses = [self._pipeline_status()] + ([self._detection_status()] if self.det_pubs else [])
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def _stop_workers(self) -> None:
        self.worker.stop()
        self.det_worker.stop()

    def shutdown(self) -> None:
        """Stop the workers, publish the last diagnostics (when the context still allows) and destroy the node."""
        self._stop_workers()
        try:
            self._publish_diagnostics()
            # reliable: wait (briefly) until subscribers have it, so the last status is not lost with the process
            self.diag_pub.wait_for_all_acked(Duration(seconds=2.0))
        except Exception:  # noqa: BLE001 - the context may already be gone (external shutdown)
            pass
        self.destroy_node()
