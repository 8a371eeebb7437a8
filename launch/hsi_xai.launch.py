"""Start the hsi_xai node: parameters from a YAML file, the common ones overridable here.

    ros2 launch hsi_xai_node hsi_xai.launch.py backend:=ort-cuda raw_topic:=/cam/image_raw
    ros2 launch hsi_xai_node hsi_xai.launch.py namespace:=left    # two camera heads side by side: each reads
    ros2 launch hsi_xai_node hsi_xai.launch.py namespace:=right   # <ns>/hsi/image_raw, publishes <ns>/hsi_xai/...
    ros2 launch hsi_xai_node hsi_xai.launch.py managed:=true                  # lifecycle node, brought up
    ros2 launch hsi_xai_node hsi_xai.launch.py managed:=true autostart:=false # lifecycle node, left unconfigured

model, detector_model, backend, use_sim_time and raw_topic are passed after the file, so their
launch values (defaults included) win over the file's. With managed:=true the node is the lifecycle
node (hsi_xai_lifecycle_node); autostart:=true (the default) configures it at launch (models and
engines loaded) and activates it once it is inactive; autostart:=false leaves the transitions to a
lifecycle manager or `ros2 lifecycle set /hsi_xai configure|activate`.
"""

# The noqa: the repository's launch/ folder makes ruff take the ROS `launch` package for first-party
import os  # noqa: I001

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.substitutions import AndSubstitution, LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from lifecycle_msgs.msg import Transition


def generate_launch_description():
    common = dict(
        package="hsi_xai_node",
        name="hsi_xai",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        # value_type str: an empty model would otherwise be read as YAML null, not "".
        parameters=[LaunchConfiguration("config"), {
            "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
            "detector_model": ParameterValue(LaunchConfiguration("detector_model"), value_type=str),
            "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
            "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            # a parameter, not a remap: the node subscribes to whatever raw_topic names
            "raw_topic": ParameterValue(LaunchConfiguration("raw_topic"), value_type=str),
        }],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    managed = LaunchConfiguration("managed")
    autostart = IfCondition(AndSubstitution(managed, LaunchConfiguration("autostart")))
    plain = Node(executable="hsi_xai_node", condition=UnlessCondition(managed), **common)
    lifecycle = LifecycleNode(executable="hsi_xai_lifecycle_node", condition=IfCondition(managed), **common)
    return LaunchDescription([
        DeclareLaunchArgument("model", default_value="",
                              description="ONNX model path; empty = the bundled 25-band model"),
        DeclareLaunchArgument("detector_model", default_value="default",
                              description="detector ONNX path; default = the bundled RGB+MIR EfficientDet, "
                                          "empty = detection off"),
        DeclareLaunchArgument("config",
                              default_value=os.path.join(get_package_share_directory("hsi_xai_node"),
                                                         "config", "hsi_xai.yaml"),
                              description="node parameter file"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (true when replaying a bag)"),
        DeclareLaunchArgument("backend", default_value="auto",
                              description="inference backend: auto, tensorrt, ort-trt, ort-cuda, openvino, ort-cpu"),
        DeclareLaunchArgument("raw_topic", default_value="hsi/image_raw",
                              description="input: the raw mosaic camera topic (sensor_msgs/Image mono16), relative "
                                          "to the namespace unless it starts with /"),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="logger level: debug, info, warn, error, fatal"),
        DeclareLaunchArgument("managed", default_value="false",
                              description="true: the lifecycle (managed) node, configured and activated by "
                                          "transitions; false: the plain node, running at start"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with managed:=true, configure at launch and activate once inactive; "
                                          "false leaves the transitions to a lifecycle manager"),
        plain,
        lifecycle,
        # autostart: configure now (models and engines load), activate when the node reports inactive
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=lifecycle, goal_state="inactive",
            entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(lifecycle),
                                                  transition_id=Transition.TRANSITION_ACTIVATE))]),
            condition=autostart),
        EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(lifecycle),
                                    transition_id=Transition.TRANSITION_CONFIGURE), condition=autostart),
    ])
