"""One generated frame for the bundled 25-band U-Net, and a single-threaded ONNX Runtime session."""

import numpy as np
import onnx
import pytest

from test.conftest import REPO

MODEL = REPO / "models" / "unet_bundled_25pn.onnx"


def session(model: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_all(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in model.graph.output]
    return dict(zip(names, session(model).run(names, feeds)))


@pytest.fixture(scope="session")
def bundled_frame(hsi_drive):
    """(loaded model, model input) of frame 30 of generated drive 2003 (as test/explain does)."""
    from hsi_xai_node.model_card import load_model
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.frontend import FrontEnd

    if not MODEL.exists():
        pytest.skip("the bundled model is made by `hsi-xai train-segmentation --out models`")
    loaded = load_model(MODEL, profile=hsi_drive)
    gen = DriveGenerator(hsi_drive, seed=2003, render_cameras=False)
    dark, white = gen.references()
    cube = FrontEnd(hsi_drive, dark, white, loaded.card.frontend_config()).process(gen.frame(30).raw).cube.data
    return loaded, loaded.card.model_input(cube)
