"""The nodes' console entry points (`ros2 run hsi_xai_node hsi_xai_node`, `... hsi_xai_lifecycle_node`).

They import the node modules only here, so that a dependency missing at start-up (rosdep not run, the ROS setup
not sourced, a pip-only package not installed) is one line naming the module and how to get it, exit status 2,
instead of a traceback. Which packages come from where is package.xml's list; `DEPENDENCY_HINTS` says it per
top-level module.
"""

from __future__ import annotations

import sys

ROS_SETUP = "source /opt/ros/$ROS_DISTRO/setup.bash, then rosdep install --from-paths src --ignore-src -y"
# top-level module -> how to install it; the ones without a rosdep key (package.xml says why) come from pip
DEPENDENCY_HINTS = {
    "rclpy": ROS_SETUP, "rcl_interfaces": ROS_SETUP, "lifecycle_msgs": ROS_SETUP, "sensor_msgs": ROS_SETUP,
    "std_msgs": ROS_SETUP, "diagnostic_msgs": ROS_SETUP, "ament_index_python": ROS_SETUP,
    "numpy": "rosdep install (python3-numpy)", "cv2": "rosdep install (python3-opencv)",
    "yaml": "rosdep install (python3-yaml)", "matplotlib": "rosdep install (python3-matplotlib)",
    "tqdm": "rosdep install (python3-tqdm)", "onnxruntime": "rosdep install (python3-onnxruntime-pip)",
    "onnx": "pip install onnx (no rosdep key)", "rosbags": "pip install rosbags (no rosdep key)",
    "pydantic": "pip install 'pydantic>=2.5' (Ubuntu's python3-pydantic is 1.x)",
    "annotated_types": "pip install 'pydantic>=2.5' (it brings annotated-types)",
}


def missing_line(exc: ModuleNotFoundError) -> str:
    """One line: which module is missing and how to install it."""
    top = (exc.name or "").split(".")[0] or str(exc)
    hint = DEPENDENCY_HINTS.get(top, "pip install -e . in the package's source folder installs the Python ones")
    return f"hsi_xai: cannot start: the Python module {top!r} is not installed ({hint})"


def _start(module: str, args) -> int:
    try:
        main = getattr(__import__(f"hsi_xai_node.ros.{module}", fromlist=["main"]), "main")
        return main(args)
    except ModuleNotFoundError as exc:  # at import, or a lazy import while the node is built
        print(missing_line(exc), file=sys.stderr)
        return 2


def node_main(args=None) -> int:
    return _start("node", args)


def lifecycle_main(args=None) -> int:
    return _start("lifecycle_node", args)
