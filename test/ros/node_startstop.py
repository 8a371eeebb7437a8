"""Runs inside a private network namespace (loopback only): the node's start-up errors and its shutdown.

    python -m test.ros.node_startstop OUT_DIR PARAMS_YAML

1. The node started with a bad parameter value and with a missing model file: exit status and output.
2. The node started well (detection off; the first with backend auto, the second with ort-cpu named); once
   its /diagnostics arrive, SIGTERM; then SIGINT on the second one: exit status, output, whether a
   /diagnostics message arrived after the signal (the last one), and how the engine was chosen.
Writes OUT_DIR/result.json for test_node.py to check.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray


def start(params: str, *extra: str, backend: str = "ort-cpu") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hsi_xai_node.ros.node", "--ros-args", "--params-file", params,
                             "-p", f"backend:={backend}", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    return {"rc": proc.returncode, "stdout": out, "stderr": err}


def main(out_dir: str, params: str) -> int:
    result = {"bad_alpha": finish(start(params, "-p", "overlay_alpha:=2.0")),
              "missing_model": finish(start(params, "-p", "model:=/nope.onnx"))}
    rclpy.init()
    tester = rclpy.create_node("hsi_xai_startstop")
    arrived, choice = [], {}

    def on_diagnostics(msg):
        arrived.append(time.monotonic())
        for status in msg.status:
            for kv in status.values:
                if kv.key in ("backend_choice", "arithmetic") and status.name == "hsi_xai: pipeline":
                    choice[kv.key] = kv.value

    tester.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    for name, sig, backend in (("sigterm", signal.SIGTERM, "auto"), ("sigint", signal.SIGINT, "ort-cpu")):
        proc = start(params, "-p", "detector_model:=''", backend=backend)
        choice.clear()
        arrived.clear()
        deadline = time.monotonic() + 120
        while not arrived and time.monotonic() < deadline:
            rclpy.spin_once(tester, timeout_sec=0.2)
        up = bool(arrived)
        sent = time.monotonic()
        proc.send_signal(sig)
        while proc.poll() is None and time.monotonic() < sent + 30:
            rclpy.spin_once(tester, timeout_sec=0.1)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:  # diagnostics still in flight
            rclpy.spin_once(tester, timeout_sec=0.1)
        result[name] = {**finish(proc), "was_up": up, "diagnostics_after_signal": sum(t >= sent for t in arrived),
                        "backend_choice": choice.get("backend_choice"), "arithmetic": choice.get("arithmetic")}
    tester.destroy_node()
    rclpy.shutdown()
    (Path(out_dir) / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
