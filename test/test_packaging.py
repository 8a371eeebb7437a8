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
    assert "hsi-xai = hsi_xai_node.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_top_level_api_resolves_lazily():
    """`import hsi_xai_node` loads neither onnx nor onnxruntime; every exported name resolves to itself."""
    code = ("import sys, hsi_xai_node as h\n"
            "light = 'onnxruntime' not in sys.modules and 'onnx' not in sys.modules\n"
            "resolved = [getattr(h, n).__name__ for n in h.__all__]\n"
            "print(light, resolved == h.__all__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
