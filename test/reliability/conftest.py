"""One generated frame for the bundled 25-band U-Net, and a single-threaded ONNX Runtime session."""

import numpy as np
import onnx
import pytest

from test.conftest import bundled_unet_input



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
    return bundled_unet_input(hsi_drive)
