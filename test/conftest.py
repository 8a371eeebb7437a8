"""Shared fixtures: the vendor calibration files, built-in profiles and a tiny test detector."""

from pathlib import Path

import pytest

from hsi_xai_node.sensor.calibration import load_profile

REPO = Path(__file__).resolve().parents[1]
SHARED_IMEC = REPO.parent / "shared" / "data" / "imec"
V1_XML = "CMV2K-SSM5x5-665_975-13.8.15.1_HS02-NIR.xml"
V0_XML = "CMV2K-SSM5x5-600_875-5.5.9.2.xml"


@pytest.fixture(scope="session")
def hsi_drive():
    return load_profile("hsi-drive")


@pytest.fixture(scope="session")
def imec_v1():
    return load_profile("imec-665-975")


@pytest.fixture(scope="session")
def imec_v0():
    return load_profile("imec-600-875")


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory):
    """A tiny random-weight RGB+MIR EfficientDet and its card (test/detector_fixture.py): the path of the .onnx."""
    pytest.importorskip("torch", reason="exporting the test detector needs torch (pip install -e '.[train]')")
    from test.detector_fixture import write_tiny_detector

    return write_tiny_detector(tmp_path_factory.mktemp("detector"))
