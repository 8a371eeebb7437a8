"""The ROS 2 node: a thin rclpy shell over `Pipeline` and `DetectionPipeline` (all logic lives in the library).

    ros2 run hsi_xai_node hsi_xai_node --ros-args --params-file config/hsi_xai.yaml
    ros2 launch hsi_xai_node hsi_xai.launch.py

Segmentation: subscribes to the raw mosaic and the dark/white reference topics; each raw
frame alone is a job. Detection (detector_model not empty): subscribes to the cameras the
detector's card names, synchronises them by header stamp (sync_slop_s); each matched set
is a job. Each pipeline has its own latest-frame worker off the executor thread (never a
queue: jobs arriving meanwhile replace each other and are counted as dropped). Every
output carries its input's header (detections: the primary camera's) and is published
only to topics somebody subscribes to. Latency, rates, drops, bad input (once per kind in
the log) and the conservativeness residual go to /diagnostics once a second, one status
per pipeline.

vision_msgs (for Detection2DArray) is imported lazily: without it the node logs one
warning, reports "detections: not published" on /diagnostics and still publishes the
detection overlay.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from collections import Counter

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ..errors import FrameError, InputError
from ..runtime import LatestFrameWorker, Pipeline
from ..runtime.detection import DetectionPipeline
from ..sync import ApproximateTimeSync
from ..transports.config import NodeConfig
from ..transports.messages import camera_image, image_to_array
from ..transports.raw_input import RAW_ENCODINGS, RawFrameGate
from ..transports.qos import spec as qos_spec
from ..transports.outputs import (DETECTION_IMAGE_OUTPUTS, DETECTIONS, LegendSchedule, detection_fields,
                                  detection_images, legend_name, output_images, output_names)

DESCRIPTIONS = {
    "raw_topic": "sensor_msgs/Image mono16 or 16UC1: the raw 5x5 snapshot mosaic",
    "dark_topic": "sensor_msgs/Image mono16: dark reference frame (transient local)",
    "white_topic": "sensor_msgs/Image mono16: white reference frame (transient local)",
    "multispectral_topics": "camera topics (sensor_msgs/Image: RGB/NIR/MIR/FIR) the detector may use; the node "
                            "subscribes to those of the cameras the detector needs",
    "multispectral_cameras": "rig camera name (rgb, nir, mir, fir) of each multispectral_topics entry, in order; "
                             "[] = each topic's first path segment (/rgb/image_raw -> rgb)",
    "sync_slop_s": "largest stamp difference, in seconds, between the detector's camera frames of one set",
    "output_namespace": "namespace of the output topics",
    "publish_class_maps": "also publish per-class float maps (32FC1), one topic per class",
    "model": "ONNX model path; empty = the bundled 25-band PN U-Net",
    "card": "model card path; empty = the model path with .json",
    "sensor_profile": "sensor profile name (hsi-drive, imec-665-975, imec-600-875) or imec XML path",
    "flip_vertical": "frames are read out upside down (XIMEA API convention for v0 calibration files)",
    "backend": "auto, tensorrt, ort-trt, ort-cuda, openvino or ort-cpu (auto tries them in that order, logging each "
               "miss)",
    "openvino_device": "device of the openvino backend: CPU, GPU, NPU or AUTO",
    "precision": "fp16 or fp32 (TensorRT; mask comparisons always stay fp32)",
    "engine_cache_dir": "TensorRT engine cache; empty = ~/.cache/hsi_xai_node/engines",
    "methods": "explanations computed in the graph: activation, seg_gradcam, seg_gradcam_signed, hires, gradcam_pp, "
               "xgradcam, layercam, seg_xres, eigencam, scorecam (a forward per channel: offline-grade), spectral",
    "explain_classes": "class names the fused overlays show (e.g. [road, vegetation]); [] = every class",
    "target_layers": "layers the Grad-CAM family targets: card roles (penultimate, bottleneck) or tensor names",
    "overlay_method": "the CAM-family map fused into the Grad-CAM overlay (one of methods)",
    "overlay_alpha": "blend weight of the coloured map over the false-colour preview, 0..1",
    "colormap": "colormap of one-sided maps (Grad-CAM, per-box Grad-CAM), sequential: inferno, viridis, magma, hot, "
                "turbo or jet",
    "signed_colormap": "colormap of signed maps (activation, Grad-CAM without ReLU, HiRes), diverging and centred on "
                       "zero: coolwarm, rdbu, bwr or seismic",
    "overlay_scale": "what a colour means: card (fixed per class, from the model card), running (per class, follows "
                     "the drive) or frame (each frame's own peak)",
    "focus_class": "a class name: also publish <ns>/focus_overlay, that class's map over the whole window with its "
                   "region outlined; empty = none",
    "detector_model": "detector ONNX path; \"default\" = the bundled RGB+MIR EfficientDet; empty = detection off",
    "detector_card": "detector card path; empty = the detector path with .json",
    "rig_file": "camera rig YAML (camera sizes, encodings, homographies); empty = the generated drives' rig",
    "detection_score_threshold": "keep detections scoring above this, 0..1; 0.0 = the detector card's threshold",
    "explain_boxes": "top-K detections per frame explained by per-box Grad-CAM; 0 = none",
    "detection_methods": "per-box maps computed in the detector's graph: box_gradcam, box_gradcam_signed, box_hires, "
                         "box_gradcam_pp, box_xgradcam, box_layercam, box_xres, box_eigencam; box_spectral adds each "
                         "detection's camera shares (gradient x input per camera)",
    "detection_overlay_method": "the per-box map the detection overlay shows (any per-box CAM method)",
    "memory_limit_mb": "largest estimated memory per frame (model tensors at batch = classes or boxes, camera frames "
                       "and warps) a model, detector or rig may need; more is refused at start with the estimate",
    "input_qos": "QoS of the camera subscriptions: sensor_data (best effort, default) or reliable",
    "output_qos": "QoS of the output publishers: reliable (default) or sensor_data",
}


def qos(kind: str) -> QoSProfile:
    """The rclpy profile of a named QoS (transports.qos: the same table the bags are recorded with)."""
    s = qos_spec(kind)
    return QoSProfile(depth=s.depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if s.reliability == "reliable"
                      else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if s.durability == "transient_local"
                      else DurabilityPolicy.VOLATILE)


VISION_MSGS_MISSING = ("not published: vision_msgs is not installed (apt install ros-{}-vision-msgs)"
                       .format(os.environ.get("ROS_DISTRO") or "$ROS_DISTRO"))


def to_image(array: np.ndarray, encoding: str, header) -> Image:
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0)
    a = np.ascontiguousarray(array)
    msg.step = a.strides[0]
    msg.data = a.tobytes()
    return msg


def vision_msgs():
    """The vision_msgs.msg module, or None when it is not installed (it has no pip wheel)."""
    try:
        from vision_msgs import msg
    except ImportError:
        return None
    return msg


def to_detection_array(result, header, vm):
    """vision_msgs/Detection2DArray of a DetectionResult, from the same numbers as the replay's message."""
    out = vm.Detection2DArray(header=header)
    for f in detection_fields(result):
        d = vm.Detection2D(header=header, id=f.id)
        d.bbox.size_x, d.bbox.size_y = f.size_x, f.size_y
        centre = d.bbox.center
        if hasattr(centre, "position"):  # vision_msgs 4.x (Humble on): Pose2D with a Point2D
            centre.position.x, centre.position.y = f.center_x, f.center_y
        else:  # 3.x: geometry_msgs/Pose2D
            centre.x, centre.y = f.center_x, f.center_y
        hypothesis = vm.ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = f.class_id, f.score
        d.results.append(hypothesis)
        out.detections.append(d)
    return out


class HsiXaiNode(Node):
    def __init__(self, **kwargs):
        super().__init__("hsi_xai", **kwargs)
        defaults = NodeConfig()
        for f in dataclasses.fields(NodeConfig):
            value = getattr(defaults, f.name)
            if isinstance(value, tuple):  # typed explicitly: rclpy would take an empty list for bytes
                value = list(value) or Parameter.Type.STRING_ARRAY
            self.declare_parameter(f.name, value, ParameterDescriptor(description=DESCRIPTIONS[f.name]))
        self.config = self._read_config()
        self.pipeline = Pipeline(self.config.pipeline_config())  # fails loudly on a bad model/profile at start
        # the same for the detector (a missing model file is a ModelError), and a camera without a topic
        detection_config = self.config.detection_config()
        self.detector = DetectionPipeline(detection_config) if detection_config else None
        detector_topics = self.config.detector_topics(self.detector.cameras) if self.detector else []
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.out_qos = qos(self.config.output_qos)
        self.in_qos = qos(self.config.input_qos)
        self.pubs = {name: self.create_publisher(Image, self.config.output_topic(name), self.out_qos)
                     for name in output_names(self.pipeline.card, self.config.publish_class_maps,
                                              bool(self.config.focus_class))}
        # legends: latched, so RViz shows what the colours mean whenever it subscribes
        self.legend_pubs = {name: self.create_publisher(Image, self.config.output_topic(legend_name(name)),
                                                        qos("latched"))
                            for name in ("gradcam_overlay", "activation_overlay", "detection_overlay")}
        self.legends = LegendSchedule()
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos("diagnostics"))
        latched = qos("latched")
        self.create_subscription(Image, self.config.raw_topic, self._on_raw, self.in_qos)
        self.create_subscription(Image, self.config.dark_topic, lambda m: self._on_reference("dark", m), latched)
        self.create_subscription(Image, self.config.white_topic, lambda m: self._on_reference("white", m), latched)
        self.references: dict[str, np.ndarray] = {}  # the last good dark and white frames
        self.bad = Counter()
        self._reported: set[str] = set()
        self.raw_gate = RawFrameGate(self.pipeline.profile.frame_shape)  # the replay's rule for raw frames
        self.uncalibrated = 0  # frames processed without valid references
        self._last = {"timings": {}, "residual": float("nan"), "processed_at": []}
        self.worker = LatestFrameWorker(self._process, self._publish, self._on_bad)
        # detection: publishers and camera subscriptions made when detection is first on
        self.det_pubs: dict[str, object] = {}
        self.vision_msgs = None
        self.camera_subs: dict[str, object] = {}  # topic -> subscription
        self.det_cameras: dict[str, object] = {}  # topic -> the stack's CameraInput (name, encoding, size)
        self.sync = None
        self.det_bad = Counter()
        self._det_last = {"timings": {}, "detections": 0, "total": 0, "slots_full": 0, "shares": {},
                          "processed_at": []}
        self.det_worker = LatestFrameWorker(self._detect, self._publish_detections, self._on_bad_detection,
                                            name="hsi-xai-detection")
        if self.detector is not None:
            self._use_detector(self.detector, detector_topics)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"hsi_xai: model {self.pipeline.card.name} on {self.pipeline.engine.backend}, "
                               f"listening on {self.config.raw_topic}")
        if self.detector is not None:
            self.get_logger().info(f"hsi_xai: detector {self.detector.card.name} on {self.detector.engine.backend}, "
                                   f"cameras {dict(zip(self.detector.cameras, detector_topics))}")

    # --- parameters ---------------------------------------------------------------------------
    def _read_config(self, overrides: dict | None = None) -> NodeConfig:
        values = {f.name: self._value(f.name) for f in dataclasses.fields(NodeConfig)}
        values.update(overrides or {})
        config = NodeConfig(**values)  # checks types, ranges and the camera lists
        config.pipeline_config()  # validates alpha, colormap, overlay method
        config.detection_config()
        return config

    def _value(self, name: str):
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:  # a typed list left empty: rcl cannot type "[]" in a file
            return None

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in {f.name for f in dataclasses.fields(NodeConfig)}}
        try:
            config = self._read_config(changes)
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
        if current is None:
            self.detector = None  # detection off: camera frames are ignored
        elif rebuild or topics != list(self.det_cameras) or config.sync_slop_s != self.config.sync_slop_s:
            self._use_detector(current, topics, config.sync_slop_s)
        self.config = config
        return SetParametersResult(successful=True)

    # --- inputs --------------------------------------------------------------------------------
    def _report(self, kind: str, exc: Exception, count: bool = True) -> None:
        if count:
            self.bad[kind] += 1
        if kind not in self._reported:  # once per kind in the log; every one is counted on /diagnostics
            self._reported.add(kind)
            self.get_logger().warning(f"bad input ({kind}): {exc}")

    def _on_reference(self, which: str, msg: Image) -> None:
        """A new dark or white frame; a bad one is reported and the last good pair stays in use (as the
        library's set_references and the replay do)."""
        try:
            frame = image_to_array(msg, f"{which} reference", RAW_ENCODINGS).copy()
            pair = {**self.references, which: frame}
            if {"dark", "white"} <= set(pair):
                self.pipeline.set_references(pair["dark"], pair["white"])
            self.references = pair
        except FrameError as exc:
            self._report("bad reference frame", exc)

    def _on_raw(self, msg: Image) -> None:
        try:
            raw = self.raw_gate.accept(msg, "raw frame").copy()
        except FrameError as exc:
            self._report(exc.reason, exc)
            return
        if not any(p.get_subscription_count() for p in self.pubs.values()):
            return  # nobody listens: compute nothing
        self.worker.submit((raw, msg.header))

    def _use_detector(self, detector: DetectionPipeline, topics: list[str], slop_s: float | None = None) -> None:
        """Make `detector` the one in use: publishers (first time), camera subscriptions and the synchroniser."""
        if not self.det_pubs:
            self.det_pubs = {name: self.create_publisher(Image, self.config.output_topic(name), self.out_qos)
                             for name in DETECTION_IMAGE_OUTPUTS}
            self.vision_msgs = vision_msgs()
            if self.vision_msgs is None:
                self.get_logger().warning(f"detections {VISION_MSGS_MISSING}; the detection overlay is published")
            else:
                self.det_pubs[DETECTIONS] = self.create_publisher(
                    self.vision_msgs.Detection2DArray, self.config.output_topic(DETECTIONS), self.out_qos)
        for topic in set(self.camera_subs) - set(topics):
            self.destroy_subscription(self.camera_subs.pop(topic))
        for topic in topics:
            if topic not in self.camera_subs:
                self.camera_subs[topic] = self.create_subscription(
                    Image, topic, lambda m, t=topic: self._on_camera(t, m), self.in_qos)
        stack = {c.name: c for c in detector.frontend.config.cameras}
        self.det_cameras = {topic: stack[name] for topic, name in zip(topics, detector.cameras)}
        # the detector's cameras synchronised by header stamp (our own approximate-time policy), primary first
        slop = self.config.sync_slop_s if slop_s is None else slop_s
        self.sync = ApproximateTimeSync(list(topics), round(slop * 1e9))
        self.detector = detector

    def _on_camera(self, topic: str, msg: Image) -> None:
        detector, cam = self.detector, self.det_cameras.get(topic)
        if detector is None or cam is None:
            return  # detection turned off, or a camera the detector no longer uses
        try:
            image = camera_image(msg, topic, cam.encoding, cam.width, cam.height).copy()
        except FrameError as exc:
            self.det_bad[f"{exc.reason} on {topic}"] += 1
            self._report(f"{exc.reason} on {topic}", exc, count=False)
            return
        matched = self.sync.add(topic, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                                (image, msg.header))
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
        return self.pipeline.process(raw, header)

    def _detect(self, item):
        detector, images, header = item
        return detector.process(images, header)

    def _on_bad_detection(self, item, exc) -> None:
        self.det_bad["camera set rejected by the detector"] += 1
        self._report("camera set rejected by the detector", exc, count=False)

    def _publish_legend(self, name: str, image, header) -> None:
        stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        if name in self.legend_pubs and self.legends.due(name, image, stamp):
            self.legend_pubs[name].publish(to_image(image, "bgr8", header))

    def _publish_detections(self, item, result) -> None:
        header = result.header
        self._publish_legend("detection_overlay", item[0].legend(), header)
        for name, (array, encoding) in detection_images(result).items():
            pub = self.det_pubs.get(name)
            if pub is not None and pub.get_subscription_count():
                pub.publish(to_image(array, encoding, header))
        pub = self.det_pubs.get(DETECTIONS)
        if pub is not None and pub.get_subscription_count():
            pub.publish(to_detection_array(result, header, self.vision_msgs))
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
        self._report("frame rejected by the pipeline", exc)

    def _publish(self, item, result) -> None:
        header = result.header
        outputs = output_images(result, self.pipeline.card, self.config.publish_class_maps)
        for name, (array, encoding) in outputs.items():
            pub = self.pubs.get(name)
            if pub is not None and pub.get_subscription_count():
                pub.publish(to_image(array, encoding, header))
        for name, legend in self.pipeline.legends().items():
            self._publish_legend(name, legend, header)
        if len(self.references) < 2:
            self.uncalibrated += 1
        self._last["timings"] = result.timings_ms
        self._last["residual"] = float(np.nanmax(result.residuals["activation"])) \
            if "activation" in result.residuals else float("nan")
        self._last["processed_at"] = [t for t in self._last["processed_at"] if time.monotonic() - t < 5.0] \
            + [time.monotonic()]

    @staticmethod
    def _fps(done: list[float]) -> float:
        return (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0

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
                   "cameras": ", ".join(f"{c.name}={t}" for t, c in self.det_cameras.items()) if detector else ""}
        values |= {f"camera_share {cls} {cam}": f"{mean:.3f}" for (cls, cam), (_, mean) in sorted(last["shares"].items())}
        values |= {f"bad: {k}": str(v) for k, v in self.det_bad.items()}
        problems = [f"{v} {k}" for k, v in self.det_bad.items()]
        if self.vision_msgs is None:
            problems.append("Detection2DArray not published (vision_msgs is not installed)")
        level = DiagnosticStatus.WARN if problems and detector else DiagnosticStatus.OK
        message = "off (detector_model is empty)" if detector is None else "; ".join(problems) or "ok"
        return DiagnosticStatus(level=level, name="hsi_xai: detection", message=message, hardware_id="cameras",
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _publish_diagnostics(self) -> None:
        s = self.worker.stats
        fps = self._fps(self._last["processed_at"])
        values = {f"{k}_ms": f"{v:.1f}" for k, v in self._last["timings"].items()}
        values |= {"frames_per_s": f"{fps:.2f}", "received": str(s.received), "processed": str(s.processed),
                   "dropped": str(s.dropped), "conservativeness_residual_max": f"{self._last['residual']:.2e}",
                   "backend": self.pipeline.engine.backend, "model": self.pipeline.card.name,
                   "references": "yes" if len(self.references) == 2 else "no",
                   "frames_without_references": str(self.uncalibrated)}
        values |= {f"bad: {k}": str(v) for k, v in self.bad.items()}
        level = DiagnosticStatus.WARN if self.bad or len(self.references) < 2 else DiagnosticStatus.OK
        problems = [f"{v} {k}" for k, v in self.bad.items()]
        if self.uncalibrated:
            problems.append(f"{self.uncalibrated} frame(s) processed without valid dark/white references")
        message = "; ".join(problems) or "ok"
        status = DiagnosticStatus(level=level, name="hsi_xai: pipeline", message=message, hardware_id="hsi_camera",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        statuses = [status] + ([self._detection_status()] if self.det_pubs else [])
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def destroy_node(self):
        self.worker.stop()
        self.det_worker.stop()
        return super().destroy_node()

    def shutdown(self) -> None:
        """Stop the workers, publish the last diagnostics (when the context still allows) and destroy the node."""
        self.worker.stop()
        self.det_worker.stop()
        try:
            self._publish_diagnostics()
        except Exception:  # noqa: BLE001 - the context may already be gone (external shutdown)
            pass
        self.destroy_node()


def _stop(signum, frame):
    raise KeyboardInterrupt  # leave spin() on SIGINT and SIGTERM alike, with the context still valid


def main(args=None) -> int:
    """Run the node; a bad parameter, model or file at start-up is one log line and exit status 2."""
    # rclpy's own handlers would shut the context down first (spin then raises ExternalShutdownException
    # and nothing can be published); ours stop spinning, publish the last diagnostics, then shut down
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # noqa: BLE001 - rcl's RCLError for unparsable --ros-args
        print(f"hsi_xai: cannot start: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        node = HsiXaiNode()
    except (InputError, ParameterException) as exc:
        rclpy.logging.get_logger("hsi_xai").fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 2
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return 0
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
