"""Runtime: engines (TensorRT / ONNX Runtime), the frame pipeline and the latest-frame worker."""

from ._engine_base import EngineRunError
from .engine import BACKENDS, Engine, EngineError, TensorSpec, open_engine
from .ingraph import InGraphModel, InGraphPipeline, build_ingraph_pipeline
from .pipeline import FrameResult, Pipeline, PipelineConfig
from .worker import LatestFrameWorker, WorkerStats

__all__ = ["BACKENDS", "Engine", "EngineError", "EngineRunError", "FrameResult", "InGraphModel", "InGraphPipeline",
           "build_ingraph_pipeline", "LatestFrameWorker", "Pipeline", "PipelineConfig",
           "TensorSpec", "WorkerStats", "open_engine"]
