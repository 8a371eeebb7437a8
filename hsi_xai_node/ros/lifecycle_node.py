"""The managed (lifecycle) node: the same node as ros.node, brought up in the ROS 2 lifecycle's steps so
that the slow part (models loaded, cards checked, the TensorRT engine built or loaded) happens before the
vehicle moves, and a bring-up tool (launch, a Nav2-style lifecycle manager) decides when frames flow.

    unconfigured --configure--> inactive --activate--> active --deactivate--> inactive --cleanup--> unconfigured
    (any) --shutdown--> finalized

    configure   parameters read and checked, models and engines loaded, publishers made; a failure (a bad
                model file, a camera without a topic) is logged, published on /diagnostics (ERROR, with the
                reason) and leaves the node unconfigured, to be configured again after a fix
    activate    subscriptions made, outputs published
    deactivate  subscriptions destroyed; models and engines kept, so activate is instant
    cleanup     publishers destroyed, engines freed
    shutdown    everything released

    ros2 run hsi_xai_node hsi_xai_lifecycle_node --ros-args --params-file config/hsi_xai.yaml
    ros2 lifecycle set /hsi_xai configure && ros2 lifecycle set /hsi_xai activate
"""

from __future__ import annotations

import sys

from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from ..errors import InputError
from .core import HsiXaiCore
from .node import run


class HsiXaiLifecycleNode(HsiXaiCore, LifecycleNode):
    def __init__(self, **kwargs):
        LifecycleNode.__init__(self, "hsi_xai", **kwargs)
        self._state = "unconfigured"
        self._declare()
        self.create_timer(1.0, self._publish_diagnostics)  # /diagnostics in every state, a failed configure too

    def state_name(self) -> str:
        return self._state

    # lifecycle publishers: they publish only while the node is active
    def _publisher(self, msg_type, topic: str, profile):
        return self.create_lifecycle_publisher(msg_type, topic, profile)

    def _destroy_publisher(self, pub) -> None:
        self.destroy_lifecycle_publisher(pub)

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._configure()
        except (InputError, ParameterException) as exc:
            self.fault = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            self._release()
            self._publish_diagnostics()
            return TransitionCallbackReturn.FAILURE
        self.fault, self._state = "", "inactive"
        return super().on_configure(state)

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._activate()
        self._state = "active"
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._deactivate()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        self._state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._release()
        self._state = "finalized"
        return super().on_shutdown(state)

    def destroy_node(self):
        self._stop_workers()
        return LifecycleNode.destroy_node(self)


def main(args=None) -> int:
    return run(HsiXaiLifecycleNode, args)


if __name__ == "__main__":
    sys.exit(main())
