"""Runtime: engines (TensorRT / ONNX Runtime), the frame pipeline and the latest-frame worker."""

from .engine import BACKENDS, Engine, EngineError, TensorSpec, open_engine
from .pipeline import FrameResult, Pipeline, PipelineConfig
from .worker import LatestFrameWorker, WorkerStats

__all__ = ["BACKENDS", "Engine", "EngineError", "FrameResult", "LatestFrameWorker", "Pipeline", "PipelineConfig",
           "TensorSpec", "WorkerStats", "open_engine"]
