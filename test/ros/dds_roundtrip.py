"""Runs inside a private network namespace (loopback only): node process + publisher/subscriber.

    python -m test.ros.dds_roundtrip OUT_DIR PARAMS_YAML [detection DETECTOR_ONNX]

Starts the node as its own process with the given parameter file, publishes the dark/white
references and generated raw frames (a bad frame between two good ones), waits for every
output of every good frame and for /diagnostics to report the bad one, and writes what it
received to OUT_DIR (npz + json) for the test to check against the offline pipelines.

Mode "" (HSI only): detection off (detector_model ''); a raw frame with an older stamp is
reported, not processed. Mode "detection": the node runs the given detector on the RGB + MIR
cameras (config/hsi_xai.yaml's multispectral_topics), also publishes the road class map and
explains only road. Each frame's RGB and MIR images are published too (MIR 4 ms after RGB,
within the 10 ms slop); a raw frame without camera frames is still segmented, an RGB frame
whose MIR partner never comes gives no detection, and an RGB frame of the wrong encoding is
reported on /diagnostics. Then two parameter changes: a bad camera list (refused, with the
reason) and detection_overlay_method box_gradcam_signed (the detector is rebuilt), and one more
camera set, whose overlay must be the signed one.

Both modes publish the mosaic camera's camera_info (hsi/camera_info, CAMERA_K) and receive the node's
camera_info beside its images. Where vision_msgs and foxglove_msgs can be imported (the tests build them
from their definitions: test/ros/interfaces.py), the detection mode also receives the Detection2DArray and
the Foxglove image annotations.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from hsi_xai_node.ros.convert import foxglove_msgs
from hsi_xai_node.ros.node import to_image, vision_msgs
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile
from hsi_xai_node.transports.messages import image_to_array
from test.ros import harness
from test.ros.harness import stamp_of

OUTPUTS = ("labels", "segmentation", "preview", "gradcam_overlay", "activation_overlay")
ROAD_MAP = "class_maps/road"
DETECTION_OVERLAY = "detection/overlay"
SEED, FRAMES, LONELY, AFTER_CHANGE = 2004, (0, 3), 1, 5
CAMERA_DELAY_NS = 4_000_000  # MIR after RGB
# the mosaic camera's intrinsics (HSI-Drive's 2048x1088 sensor) and plumb_bob distortion
CAMERA_K = [2410.0, 0.0, 1019.3, 0.0, 2395.0, 547.8, 0.0, 0.0, 1.0]
CAMERA_D = [-0.21, 0.08, 0.0012, -0.0007, -0.015]
RGB_K = [520.0, 0.0, 318.2, 0.0, 515.0, 241.9, 0.0, 0.0, 1.0]  # the RGB camera's (640x480)


def camera_info(stamp_ns: int, k=CAMERA_K, size=(2048, 1088), frame_id="hsi_camera") -> CameraInfo:
    return CameraInfo(header=harness.header(stamp_ns, frame_id), width=size[0], height=size[1],
                      distortion_model="plumb_bob", d=CAMERA_D, k=k, r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                      p=k[:3] + [0.0] + k[3:6] + [0.0] + k[6:] + [0.0])


def main(out_dir: str, params: str, mode: str = "", detector: str = "") -> int:
    out = Path(out_dir)
    detection = mode == "detection"
    extra = (["-p", f"detector_model:={detector}", "-p", "sync_slop_s:=0.01", "-p", "publish_class_maps:=true",
              "-p", "explain_classes:=['road']", "-p", "publish_foxglove_annotations:=true"] if detection
             else ["-p", "detector_model:=''"])
    node_proc = subprocess.Popen([sys.executable, "-m", "hsi_xai_node.ros.node", "--ros-args", "--params-file", params,
                                  "-p", "backend:=ort-cpu", "-p", "input_qos:=reliable", *extra])
    rclpy.init()
    tester = rclpy.create_node("hsi_xai_tester")
    reliable, latched = harness.RELIABLE, harness.LATCHED
    raw_pub = tester.create_publisher(Image, "/hsi/image_raw", reliable)
    dark_pub = tester.create_publisher(Image, "/hsi/dark_reference", latched)
    white_pub = tester.create_publisher(Image, "/hsi/white_reference", latched)
    rgb_pub = tester.create_publisher(Image, "/rgb/image_raw", reliable)
    mir_pub = tester.create_publisher(Image, "/mir/image_raw", reliable)
    info_pub = tester.create_publisher(CameraInfo, "/hsi/camera_info", reliable)
    rgb_info_pub = tester.create_publisher(CameraInfo, "/rgb/camera_info", reliable)
    topics = OUTPUTS + ((ROAD_MAP, DETECTION_OVERLAY) if detection else ())
    got: dict[str, dict[int, np.ndarray]] = {k: {} for k in topics}
    frame_ids: dict[str, str] = {}  # "topic:stamp" -> frame_id
    diags: list[dict[str, dict[str, str]]] = []  # per message: status name -> values
    detections: dict[int, list] = {}
    infos: dict[str, dict[int, dict]] = {"camera_info": {}, "class_maps/camera_info": {}, "detection/camera_info": {}}
    annotations: dict[str, dict[int, list]] = {"detection_annotations": {}, "segmentation_annotations": {}}

    def keep(name):
        def cb(msg):
            stamp = stamp_of(msg.header)
            got[name][stamp] = image_to_array(msg, name).copy()
            frame_ids[f"{name}:{stamp}"] = msg.header.frame_id
        return cb
    subs = [tester.create_subscription(Image, f"/hsi_xai/{n}", keep(n), reliable) for n in topics]

    def keep_info(name):
        def cb(msg):
            infos[name][stamp_of(msg.header)] = {"k": list(msg.k), "p": list(msg.p), "d": list(msg.d),
                                                 "width": msg.width, "height": msg.height,
                                                 "frame_id": msg.header.frame_id}
        return cb
    info_names = list(infos) if detection else ["camera_info"]
    subs += [tester.create_subscription(CameraInfo, f"/hsi_xai/{n}", keep_info(n), reliable) for n in info_names]
    fm = foxglove_msgs()
    if detection and fm is not None:
        def keep_annotations(name):
            def cb(msg):  # ImageAnnotations has no header: each annotation carries its image's stamp
                if msg.points:
                    stamp = msg.points[0].timestamp.sec * 10**9 + msg.points[0].timestamp.nanosec
                    annotations[name][stamp] = [[[p.x, p.y] for p in a.points] for a in msg.points]
            return cb
        subs += [tester.create_subscription(fm.ImageAnnotations, f"/hsi_xai/{n}", keep_annotations(n), reliable)
                 for n in annotations]
    tester.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.append(
        {s.name: {"level": int.from_bytes(s.level, "little") if isinstance(s.level, bytes) else int(s.level),
                  "message": s.message, **{kv.key: kv.value for kv in s.values}} for s in m.status}), 10)
    vm = vision_msgs()
    if detection and vm is not None:
        def on_detections(msg):
            frame_ids[f"detections:{stamp_of(msg.header)}"] = msg.header.frame_id
            detections[stamp_of(msg.header)] = [
                [d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y,
                 d.results[0].hypothesis.class_id, d.results[0].hypothesis.score, d.id, d.header.frame_id]
                for d in msg.detections]
        subs.append(tester.create_subscription(vm.Detection2DArray, "/hsi_xai/detections", on_detections, reliable))

    def spin_until(cond, timeout):
        return harness.spin_until(tester, cond, timeout)

    def publish(pub, array, encoding, frame_id, stamp_ns):
        pub.publish(to_image(array, encoding, harness.header(stamp_ns, frame_id)))

    try:
        assert spin_until(lambda: raw_pub.get_subscription_count() > 0 and all(s.get_publisher_count() for s in subs)
                          and (not detection or (rgb_pub.get_subscription_count() > 0
                                                 and mir_pub.get_subscription_count() > 0)), 90), \
            "the node did not appear on the graph"
        gen = DriveGenerator(load_profile("hsi-drive"), seed=SEED, render_cameras=detection)
        dark, white = gen.references()
        assert spin_until(lambda: diags, 10), "no /diagnostics before the references"  # the start-up status
        t0 = gen.frame(0).stamp_ns
        publish(dark_pub, dark, "mono16", "hsi_camera", t0)
        publish(white_pub, white, "mono16", "hsi_camera", t0)
        # 4.4 MB each over reliable DDS: wait until the node itself reports having both
        assert spin_until(lambda: any(d.get("hsi_xai: pipeline", {}).get("references") == "yes" for d in diags), 60), \
            "references not received"

        def infos_arrived():  # the node says where its outputs' camera_info come from
            return diags[-1].get("hsi_xai: pipeline", {}).get("camera_info") == "from /hsi/camera_info" and (
                not detection or diags[-1].get("hsi_xai: detection", {}).get("camera_info") == "from /rgb/camera_info")
        for _ in range(15):  # volatile topics: sent again until the node has matched and reports them
            info_pub.publish(camera_info(t0))
            if detection:
                rgb_info_pub.publish(camera_info(t0, RGB_K, (640, 480), "rgb_camera"))
            if spin_until(infos_arrived, 1.0):
                break
        assert infos_arrived(), f"camera_info not received: {diags[-1]}"
        sent = []
        for k, index in enumerate(FRAMES):
            frame = gen.frame(index)
            info_pub.publish(camera_info(frame.stamp_ns))  # as a driver does: one beside every frame
            publish(raw_pub, frame.raw, "mono16", "hsi_camera", frame.stamp_ns)
            if detection:
                rgb, mir = frame.cameras["rgb"], frame.cameras["mir"]
                rgb_info_pub.publish(camera_info(frame.stamp_ns, RGB_K, (640, 480), "rgb_camera"))
                publish(rgb_pub, rgb.image, rgb.encoding, "rgb_camera", frame.stamp_ns)
                publish(mir_pub, mir.image, mir.encoding, "mir_camera", frame.stamp_ns + CAMERA_DELAY_NS)
            sent.append(frame.stamp_ns)
            assert spin_until(lambda s=frame.stamp_ns: all(s in got[n] for n in topics)
                              and all(s in infos[n] for n in info_names)
                              and (vm is None or not detection or s in detections)
                              and (fm is None or not detection or all(s in a for a in annotations.values())), 60), \
                f"no outputs for frame {index}"
            if k == 0:  # a bad frame between the good ones: wrong encoding
                publish(raw_pub, np.zeros((8, 8, 3), np.uint8), "bgr8", "hsi_camera", frame.stamp_ns + 10**9)
            if k == 0 and detection:
                # a bad RGB frame (wrong encoding), then a raw frame alone and an RGB frame whose MIR never comes:
                # the raw frame is segmented, the RGB frame gives no detection
                publish(rgb_pub, np.zeros((480, 640), np.uint8), "mono8", "rgb_camera", frame.stamp_ns + 10**9)
                lonely = gen.frame(LONELY)
                publish(raw_pub, lonely.raw, "mono16", "hsi_camera", lonely.stamp_ns)
                publish(rgb_pub, lonely.cameras["rgb"].image, "bgr8", "rgb_camera", lonely.stamp_ns)
                assert spin_until(lambda s=lonely.stamp_ns: all(s in got[n] for n in OUTPUTS), 60), \
                    "a raw frame without camera frames was not segmented"
                spin_until(lambda: False, 1.0)
                assert lonely.stamp_ns not in got[DETECTION_OVERLAY], "an RGB frame without its MIR partner was detected"
        if not detection:  # frame 0 again, with its older stamp: reported, not processed
            first = gen.frame(FRAMES[0])
            publish(raw_pub, first.raw, "mono16", "hsi_camera", first.stamp_ns)

        def complete(d):  # diagnostics published after every good frame and the bad one(s)
            p = d.get("hsi_xai: pipeline", {})
            ok = p.get("bad: wrong encoding") == "1" and p.get("processed") == str(len(FRAMES) + detection)
            if not detection:
                return ok and p.get("bad: stamp not after the previous frame's") == "1"
            det = d.get("hsi_xai: detection", {})
            return ok and det.get("processed") == str(len(FRAMES)) \
                and det.get("bad: wrong encoding on /rgb/image_raw") == "1" and det.get("unsynchronised_dropped") == "1"
        assert spin_until(lambda: any(complete(d) for d in diags), 15), f"diagnostics never complete: {diags[-1:]}"
        changes = {}
        if detection:
            client = tester.create_client(SetParameters, "/hsi_xai/set_parameters")
            assert client.wait_for_service(timeout_sec=10), "no set_parameters service"

            def set_parameter(name, value):
                future = client.call_async(SetParameters.Request(
                    parameters=[Parameter(name, value=value).to_parameter_msg()]))
                assert spin_until(future.done, 30), f"setting {name} timed out"
                r = future.result().results[0]
                return {"successful": r.successful, "reason": r.reason}
            changes["multispectral_cameras"] = set_parameter("multispectral_cameras", ["rgb"])
            changes["detection_overlay_method"] = set_parameter("detection_overlay_method", "box_gradcam_signed")
            frame = gen.frame(AFTER_CHANGE)
            rgb, mir = frame.cameras["rgb"], frame.cameras["mir"]
            publish(rgb_pub, rgb.image, rgb.encoding, "rgb_camera", frame.stamp_ns)
            publish(mir_pub, mir.image, mir.encoding, "mir_camera", frame.stamp_ns + CAMERA_DELAY_NS)
            assert spin_until(lambda: frame.stamp_ns in got[DETECTION_OVERLAY], 60), "no detection after the change"
        np.savez(out / "outputs.npz", **{f"{n.replace('/', '_')}_{s}": a for n in topics for s, a in got[n].items()})
        (out / "result.json").write_text(json.dumps({
            "sent": sent, "frame_ids": frame_ids, "frames": list(FRAMES), "lonely": LONELY, "seed": SEED,
            "after_change": AFTER_CHANGE, "changes": changes,
            "diagnostics": next(d for d in diags if complete(d)), "startup_diagnostics": diags[0], "vision_msgs": vm is not None,
            "detections": {str(k): v for k, v in detections.items()}, "foxglove_msgs": fm is not None,
            "camera_info": {n: {str(k): v for k, v in by.items()} for n, by in infos.items()},
            "annotations": {n: {str(k): v for k, v in by.items()} for n, by in annotations.items()}}))
        return 0
    finally:
        harness.stop(tester, node_proc)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
