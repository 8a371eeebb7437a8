"""The ROS 2 node: a thin rclpy shell over `Pipeline` (all logic lives in the library).

    ros2 run hsi_xai_node hsi_xai_node --ros-args --params-file config/hsi_xai.yaml
    ros2 launch hsi_xai_node hsi_xai.launch.py

Subscribes to the raw mosaic and the dark/white reference topics; processes the latest raw
frame off the executor thread (never a queue: frames arriving meanwhile replace each other
and are counted as dropped); publishes every output with the input header, only to topics
somebody subscribes to; reports latency, rates, drops, bad input (once per kind in the log)
and the conservativeness residual on /diagnostics once a second.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from ..errors import FrameError, InputError
from ..runtime import LatestFrameWorker, Pipeline
from ..sync import ApproximateTimeSync
from ..transports.config import NodeConfig
from ..transports.messages import image_to_array
from ..transports.outputs import output_images, output_names

DESCRIPTIONS = {
    "raw_topic": "sensor_msgs/Image mono16 or 16UC1: the raw 5x5 snapshot mosaic",
    "dark_topic": "sensor_msgs/Image mono16: dark reference frame (transient local)",
    "white_topic": "sensor_msgs/Image mono16: white reference frame (transient local)",
    "multispectral_topics": "camera topics (RGB/NIR/MIR/FIR) synchronised with each raw frame; [] = none",
    "sync_slop_s": "largest stamp difference, in seconds, between a raw frame and its synchronised camera frames",
    "output_namespace": "namespace of the output topics",
    "publish_class_maps": "also publish per-class float maps (32FC1), one topic per class",
    "model": "ONNX model path; empty = the bundled 25-band PN U-Net",
    "card": "model card path; empty = the model path with .json",
    "sensor_profile": "sensor profile name (hsi-drive, imec-665-975, imec-600-875) or imec XML path",
    "flip_vertical": "frames are read out upside down (XIMEA API convention for v0 calibration files)",
    "backend": "auto, tensorrt, ort-trt, ort-cuda or ort-cpu (auto tries them in that order, logging each miss)",
    "precision": "fp16 or fp32 (TensorRT; mask comparisons always stay fp32)",
    "engine_cache_dir": "TensorRT engine cache; empty = ~/.cache/hsi_xai_node/engines",
    "methods": "explanations computed in the graph: activation, seg_gradcam, seg_gradcam_signed, hires, spectral",
    "explain_classes": "class names the fused overlays show (e.g. [road, vegetation]); [] = every class",
    "target_layers": "layers the Grad-CAM family targets: card roles (penultimate, bottleneck) or tensor names",
    "overlay_method": "Grad-CAM-family map fused into the Grad-CAM overlay",
    "overlay_alpha": "blend weight of the coloured map over the false-colour preview, 0..1",
    "colormap": "jet, turbo, inferno, viridis, magma or hot",
    "input_qos": "QoS of the camera subscriptions: sensor_data (best effort, default) or reliable",
    "output_qos": "QoS of the output publishers: reliable (default) or sensor_data",
}


def qos(kind: str, depth: int = 5) -> QoSProfile:
    if kind == "sensor_data":
        return qos_profile_sensor_data
    if kind == "reliable":
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    raise InputError(f"QoS {kind!r} is not sensor_data or reliable")


def to_image(array: np.ndarray, encoding: str, header) -> Image:
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0)
    a = np.ascontiguousarray(array)
    msg.step = a.strides[0]
    msg.data = a.tobytes()
    return msg


class HsiXaiNode(Node):
    def __init__(self, **kwargs):
        super().__init__("hsi_xai", **kwargs)
        defaults = NodeConfig()
        for f in dataclasses.fields(NodeConfig):
            value = getattr(defaults, f.name)
            if isinstance(value, tuple):  # typed explicitly: rclpy would take an empty list for bytes
                value = list(value) or Parameter.Type.STRING_ARRAY
            self.declare_parameter(f.name, value, ParameterDescriptor(description=DESCRIPTIONS[f.name]))
        self.declare_parameter("input_qos", "sensor_data", ParameterDescriptor(description=DESCRIPTIONS["input_qos"]))
        self.declare_parameter("output_qos", "reliable", ParameterDescriptor(description=DESCRIPTIONS["output_qos"]))
        self.config = self._read_config()
        self.pipeline = Pipeline(self.config.pipeline_config())  # fails loudly on a bad model/profile at start
        self.add_on_set_parameters_callback(self._on_set_parameters)
        out_qos = qos(self.get_parameter("output_qos").value)
        in_qos = qos(self.get_parameter("input_qos").value)
        self.pubs = {name: self.create_publisher(Image, self.config.output_topic(name), out_qos)
                     for name in output_names(self.pipeline.card, self.config.publish_class_maps)}
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(Image, self.config.raw_topic, self._on_raw, in_qos)
        # cameras synchronised with each raw frame by header stamp (our own approximate-time policy)
        cameras = list(self.config.multispectral_topics)
        self.sync = ApproximateTimeSync([self.config.raw_topic, *cameras], int(self.config.sync_slop_s * 1e9))
        for topic in cameras:
            self.create_subscription(Image, topic, lambda m, t=topic: self._on_camera(t, m), in_qos)
        self.create_subscription(Image, self.config.dark_topic, lambda m: self._on_reference("dark", m), latched)
        self.create_subscription(Image, self.config.white_topic, lambda m: self._on_reference("white", m), latched)
        self.references: dict[str, np.ndarray] = {}
        self.bad = Counter()
        self._reported: set[str] = set()
        self._last_stamp = None
        self._last = {"timings": {}, "residual": float("nan"), "processed_at": []}
        self.worker = LatestFrameWorker(self._process, self._publish, self._on_bad)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"hsi_xai: model {self.pipeline.card.name} on {self.pipeline.engine.backend}, "
                               f"listening on {self.config.raw_topic}")

    # --- parameters ---------------------------------------------------------------------------
    def _read_config(self, overrides: dict | None = None) -> NodeConfig:
        values = {f.name: self._value(f.name) for f in dataclasses.fields(NodeConfig)}
        values.update(overrides or {})
        values = {k: tuple(v or ()) if k in ("multispectral_topics", "methods", "target_layers", "explain_classes")
                  else v
                  for k, v in values.items()}
        config = NodeConfig(**values)
        config.pipeline_config()  # validates alpha, colormap, overlay method
        return config

    def _value(self, name: str):
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:  # a typed list left empty: rcl cannot type "[]" in a file
            return None

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in {f.name for f in dataclasses.fields(NodeConfig)}}
        try:
            for p in params:
                if p.name in ("input_qos", "output_qos"):
                    qos(p.value)
            config = self._read_config(changes)
            if changes and config.pipeline_config() != self.config.pipeline_config():
                pipeline = Pipeline(config.pipeline_config(), self.references.get("dark"),
                                    self.references.get("white"))
                self.pipeline, self.config = pipeline, config
        except (InputError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # --- inputs --------------------------------------------------------------------------------
    def _report(self, kind: str, exc: Exception) -> None:
        self.bad[kind] += 1
        if kind not in self._reported:  # once per kind in the log; every one is counted on /diagnostics
            self._reported.add(kind)
            self.get_logger().warning(f"bad input ({kind}): {exc}")

    def _on_reference(self, which: str, msg: Image) -> None:
        try:
            frame = image_to_array(msg, f"{which} reference", ("mono16", "16UC1")).copy()
            self.references[which] = frame
            if {"dark", "white"} <= set(self.references):
                self.pipeline.set_references(self.references["dark"], self.references["white"])
        except FrameError as exc:
            self.references.pop(which, None)
            self._report(f"bad {which} reference", exc)

    def _on_raw(self, msg: Image) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        try:
            if self._last_stamp is not None and stamp < self._last_stamp:
                raise FrameError(f"stamp {stamp} went backwards (last {self._last_stamp})")
            raw = image_to_array(msg, "raw frame", ("mono16", "16UC1")).copy()
        except FrameError as exc:
            kind = "stamp went backwards" if "backwards" in str(exc) else "bad raw frame"
            self._report(kind, exc)
            return
        self._last_stamp = stamp
        self._offer(self.config.raw_topic, msg.header, (raw, msg.header))

    def _on_camera(self, topic: str, msg: Image) -> None:
        try:
            image = image_to_array(msg, topic).copy()
        except FrameError as exc:
            self._report(f"bad frame on {topic}", exc)
            return
        self._offer(topic, msg.header, image)

    def _offer(self, topic: str, header, item) -> None:
        matched = self.sync.add(topic, header.stamp.sec * 1_000_000_000 + header.stamp.nanosec, item)
        if matched is None:
            return
        (raw, raw_header), cameras = matched
        if not any(p.get_subscription_count() for p in self.pubs.values()):
            return  # nobody listens: compute nothing
        self.worker.submit((raw, raw_header, cameras))

    # --- processing (worker thread) -------------------------------------------------------------
    def _process(self, item):
        raw, header, _cameras = item  # the synchronised camera frames are the detector's input
        return self.pipeline.process(raw, header)

    def _on_bad(self, item, exc) -> None:
        self._report("frame rejected by the pipeline", exc)

    def _publish(self, item, result) -> None:
        header = result.header
        outputs = output_images(result, self.pipeline.card, self.config.publish_class_maps)
        for name, (array, encoding) in outputs.items():
            pub = self.pubs.get(name)
            if pub is not None and pub.get_subscription_count():
                pub.publish(to_image(array, encoding, header))
        self._last["timings"] = result.timings_ms
        self._last["residual"] = float(np.nanmax(result.residuals["activation"])) \
            if "activation" in result.residuals else float("nan")
        self._last["processed_at"] = [t for t in self._last["processed_at"] if time.monotonic() - t < 5.0] \
            + [time.monotonic()]

    def _publish_diagnostics(self) -> None:
        s = self.worker.stats
        done = self._last["processed_at"]
        fps = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
        values = {f"{k}_ms": f"{v:.1f}" for k, v in self._last["timings"].items()}
        values |= {"frames_per_s": f"{fps:.2f}", "received": str(s.received), "processed": str(s.processed),
                   "unsynchronised_dropped": str(sum(self.sync.dropped.values())),
                   "dropped": str(s.dropped), "conservativeness_residual_max": f"{self._last['residual']:.2e}",
                   "backend": self.pipeline.engine.backend, "model": self.pipeline.card.name,
                   "references": "yes" if len(self.references) == 2 else "no"}
        values |= {f"bad: {k}": str(v) for k, v in self.bad.items()}
        level = DiagnosticStatus.WARN if self.bad or len(self.references) < 2 else DiagnosticStatus.OK
        message = "; ".join(f"{v} {k}" for k, v in self.bad.items()) or "ok"
        status = DiagnosticStatus(level=level, name="hsi_xai: pipeline", message=message, hardware_id="hsi_camera",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def destroy_node(self):
        self.worker.stop()
        return super().destroy_node()


def main(args=None) -> None:
    rclpy.init(args=args)
    node = HsiXaiNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
