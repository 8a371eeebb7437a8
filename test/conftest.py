"""Shared fixtures: the vendor calibration files, built-in profiles and a tiny test detector."""

from pathlib import Path

import pytest

from hsi_xai_node.sensor.calibration import load_profile

REPO = Path(__file__).resolve().parents[1]
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


BUNDLED_UNET = REPO / "models" / "unet_bundled_25pn.onnx"


def bundled_unet_input(profile, seed: int = 2003, index: int = 30):
    """(loaded bundled 25-band U-Net, its model input) for one generated frame; skips without the model."""
    from hsi_xai_node.model_card import load_model
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.frontend import FrontEnd

    if not BUNDLED_UNET.exists():
        pytest.skip("the bundled model is made by `hsi-xai train-segmentation --out models`")
    loaded = load_model(BUNDLED_UNET, profile=profile)
    gen = DriveGenerator(profile, seed=seed, render_cameras=False)
    dark, white = gen.references()
    cube = FrontEnd(profile, dark, white, loaded.card.frontend_config()).process(gen.frame(index).raw).cube.data
    return loaded, loaded.card.model_input(cube)
