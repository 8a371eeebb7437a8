"""Bring your own model: `hsi-xai import-model` turns a user's ONNX into a model with a card.

    from hsi_xai_node.model_import import ImportOptions, import_segmentation
    result = import_segmentation("unet.onnx", ImportOptions(classes="hsi-drive-v2", input_size=(208, 400)))

`_graph` prepares the graph (static shapes, opset, folded shape arithmetic, NHWC), `_layers` chooses the
tensors explanations target, `_segmentation` writes and self-checks the card, `cli` is the command.
"""

from ._detection import DetectionImportOptions, DetectionImportResult, import_detection  # noqa: F401
from ._graph import PreparedGraph, prepare_graph  # noqa: F401
from ._layers import Choice, HeadFacts, choose_layers  # noqa: F401
from ._segmentation import ImportOptions, ImportResult, band_table, class_table, import_segmentation  # noqa: F401
