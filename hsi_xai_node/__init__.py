"""hsi_xai_node: explainable perception for snapshot-mosaic hyperspectral cameras.

The names below are the library's front door; each is imported on first use, so
`import hsi_xai_node` stays light (no onnx, no onnxruntime until asked for).

    load_profile, FrontEnd, FrontEndConfig       sensor front end (hsi_xai_node.sensor)
    load_model, ModelCard                         models and their cards (hsi_xai_node.model_card)
    Pipeline, PipelineConfig, open_engine         runtime (hsi_xai_node.runtime)
    DetectionPipeline, DetectionPipelineConfig    multispectral detection (hsi_xai_node.runtime.detection)
    load_detector, MultispectralFrontEnd          detector cards, camera registration
    build_segmentation_explainer, ...             explain compiler (hsi_xai_node.explain)
    replay, load_config                           rosbag2 transport (hsi_xai_node.transports)
    run_fleet                                     many bags on Ray (hsi_xai_node.fleet)
    DriveGenerator                                generated drives (hsi_xai_node.scenes)
"""

from ._lazy import lazy_getattr

_EXPORTS = {
    "load_profile": "hsi_xai_node.sensor.calibration",
    "FrontEnd": "hsi_xai_node.sensor.frontend",
    "FrontEndConfig": "hsi_xai_node.sensor.frontend",
    "load_model": "hsi_xai_node.model_card",
    "ModelCard": "hsi_xai_node.model_card",
    "Pipeline": "hsi_xai_node.runtime",
    "PipelineConfig": "hsi_xai_node.runtime",
    "open_engine": "hsi_xai_node.runtime",
    "DetectionPipeline": "hsi_xai_node.runtime.detection",
    "DetectionPipelineConfig": "hsi_xai_node.runtime.detection",
    "load_detector": "hsi_xai_node.detection.card",
    "MultispectralFrontEnd": "hsi_xai_node.sensor.multispectral",
    "build_segmentation_explainer": "hsi_xai_node.explain",
    "build_detection_explainer": "hsi_xai_node.explain",
    "SegmentationExplainConfig": "hsi_xai_node.explain",
    "conservativeness_residual": "hsi_xai_node.explain",
    "replay": "hsi_xai_node.transports.replay",
    "load_config": "hsi_xai_node.transports.config",
    "run_fleet": "hsi_xai_node.fleet",
    "DriveGenerator": "hsi_xai_node.scenes.drive",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
