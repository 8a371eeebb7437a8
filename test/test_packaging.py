"""Packaging: the ament_python layout, the wheel's contents, and runtime import hygiene."""

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile

import pytest

from test.conftest import REPO


def test_package_xml_is_format_3_ament_python_with_runtime_deps():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "hsi_xai_node"
    assert root.findtext("export/build_type") == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "vision_msgs"} <= deps
    setup_py = (REPO / "setup.py").read_text()
    assert re.search(r'version="([^"]+)"', setup_py).group(1) == root.findtext("version")
    assert (REPO / "resource" / "hsi_xai_node").is_file()


# Third-party modules the runtime may import that are not the node's to install: extras and GPU runtimes, each
# imported only where its feature is used (a missing one is a clear error there)
OPTIONAL = {"openvino": "[openvino] extra", "tensorrt": "JetPack / NVIDIA", "pycuda": "[gpu] extra",
            "ray": "[fleet] extra", "scipy": "[reliability] extra", "skimage": "[reliability] extra",
            "torch": "[train] extra, never the runtime", "mcap": "[test] extra (the replay's mcap reader)"}


def test_package_xml_parses_with_the_ros_tools_and_covers_what_the_package_imports():
    """catkin_pkg (what rosdep and colcon read package.xml with) validates it; every third-party module the package
    imports either has its rosdep key in package.xml, or is pip-only and said so there (and in the one line the
    node prints when it is missing), or belongs to an extra."""
    import ast
    import sys

    from hsi_xai_node.ros.entry import DEPENDENCY_HINTS

    catkin_pkg = pytest.importorskip("catkin_pkg.package", reason="catkin_pkg is in the [test] extra")
    package = catkin_pkg.parse_package(str(REPO))
    package.validate()
    assert package.package_format == 3 and package.get_build_type() == "ament_python"
    keys = {d.name for d in package.exec_depends}
    xml = (REPO / "package.xml").read_text()
    imported = set()
    for path in (REPO / "hsi_xai_node").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("hsi_xai_node", "__future__")}
    unknown = third_party - set(DEPENDENCY_HINTS) - set(OPTIONAL) - {"vision_msgs", "foxglove_msgs"}
    assert not unknown, f"imported but neither a dependency nor an extra: {sorted(unknown)}"
    for module, hint in DEPENDENCY_HINTS.items():
        if hint.startswith("rosdep install ("):
            assert hint.removeprefix("rosdep install (").rstrip(")") in keys, module
        elif hint.startswith("pip install"):  # pip-only: package.xml names it (annotated_types comes with pydantic)
            assert module in xml or module == "annotated_types", f"package.xml should say {module} is pip-only"
        else:  # a ROS package, from the ROS setup / rosdep
            assert module in keys, module
    assert {"vision_msgs", "foxglove_msgs", "lifecycle_msgs", "rcl_interfaces"} <= keys


@pytest.mark.parametrize("module, hint", [("onnx", "pip install onnx (no rosdep key)"),
                                          ("rclpy", "source /opt/ros/$ROS_DISTRO/setup.bash")])
def test_a_missing_dependency_at_start_is_one_line(module, hint):
    """The console entry points run with a module made unimportable: exit status 2, one line naming it and how to
    install it, no traceback."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from hsi_xai_node.ros.entry import node_main\n"
            "sys.exit(node_main([]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hsi_xai: cannot start: the Python module {module!r} is not "
                                                   f"installed ({hint}"), out.stderr


def test_runtime_imports_neither_torch_nor_rclpy():
    code = ("import sys, pkgutil, importlib, hsi_xai_node\n"
            "for m in pkgutil.walk_packages(hsi_xai_node.__path__, 'hsi_xai_node.'):\n"
            "    if not m.name.startswith(('hsi_xai_node.ros', 'hsi_xai_node.training')):\n"
            "        importlib.import_module(m.name)\n"
            "print(sorted(k for k in ('torch', 'rclpy', 'tensorrt', 'pycuda') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wheel_carries_data_files_and_calibration(tmp_path):
    try:
        import setuptools  # noqa: F401
    except ImportError:
        pytest.skip("setuptools is not installed in this environment")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("hsi_xai_node-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "hsi_xai_node/sensor/data/CMV2K-SSM5x5-665_975-13.8.15.1_HS02-NIR.xml" in names
    assert "hsi_xai_node/sensor/data/LICENSE-swisssmartfarming.txt" in names
    data = [n for n in names if ".data/data/share/" in n]
    assert any(n.endswith("share/hsi_xai_node/package.xml") for n in data)
    assert any(n.endswith("share/ament_index/resource_index/packages/hsi_xai_node") for n in data)
    assert not any(n.startswith(("test/", "bench/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    entries = zipfile.ZipFile(wheel).read(entry).decode()
    assert "hsi-xai = hsi_xai_node.cli:main" in entries
    assert "hsi_xai_node = hsi_xai_node.ros.entry:node_main" in entries  # a missing dependency: one line at start


def test_top_level_api_resolves_lazily():
    """`import hsi_xai_node` loads neither onnx nor onnxruntime; every exported name resolves to itself."""
    code = ("import sys, hsi_xai_node as h\n"
            "light = 'onnxruntime' not in sys.modules and 'onnx' not in sys.modules\n"
            "resolved = [getattr(h, n).__name__ for n in h.__all__]\n"
            "print(light, resolved == h.__all__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
