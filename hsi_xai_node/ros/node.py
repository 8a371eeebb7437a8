"""The ROS 2 node: a thin rclpy shell over `Pipeline` and `DetectionPipeline` (ros.core; all logic lives in
the library). This plain node loads its models and subscribes at start; `ros.lifecycle_node` is the managed
one (configure, activate, ...), chosen by the launch file's `managed` argument.

    ros2 run hsi_xai_node hsi_xai_node --ros-args --params-file config/hsi_xai.yaml
    ros2 launch hsi_xai_node hsi_xai.launch.py
"""

from __future__ import annotations

import signal
import sys

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from ..errors import InputError
from .convert import to_image, vision_msgs  # noqa: F401 - re-exported for the tests' publishers
from .core import HsiXaiCore


class HsiXaiNode(HsiXaiCore, Node):
    def __init__(self, **kwargs):
        Node.__init__(self, "hsi_xai", **kwargs)
        self._declare()
        self._configure()  # fails loudly on a bad model, profile or detector at start
        self._activate()
        self.create_timer(1.0, self._publish_diagnostics)

    def destroy_node(self):
        self._stop_workers()
        return Node.destroy_node(self)


def _stop(signum, frame):
    raise KeyboardInterrupt  # leave spin() on SIGINT and SIGTERM alike, with the context still valid


def run(make_node, args=None) -> int:
    """Run the node `make_node()` builds; a bad parameter, model or file at start-up is one log line and exit
    status 2."""
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
        node = make_node()
    except (InputError, ParameterException) as exc:
        rclpy.logging.get_logger("hsi_xai").fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 2
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return 0
    except ModuleNotFoundError:  # a lazily imported dependency: entry.py says which, in one line
        rclpy.try_shutdown()
        raise
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        rclpy.try_shutdown()
    return 0


def main(args=None) -> int:
    return run(HsiXaiNode, args)


if __name__ == "__main__":
    sys.exit(main())
