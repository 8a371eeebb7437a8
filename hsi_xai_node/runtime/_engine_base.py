"""The engine interface every backend implements (the TensorRT backend and ONNX Runtime in engine.py).

Its own module so a backend can subclass `Engine` without importing `engine.py`, which imports the
backends: no import circle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FrameError, InputError


class EngineError(InputError):
    """An engine cannot be made or run (backend missing, bad feed, unknown tensor)."""


class EngineRunError(EngineError, FrameError):
    """The engine itself failed on one frame (its runtime raised): that frame is rejected, counted under
    `reason`, and the node or replay goes on with the next."""

    reason = "engine failed on the frame"


def only_outputs(onnx_bytes: bytes, names) -> bytes:
    """The model pruned to the outputs `names` (what the caller reads) and what they depend on."""
    import onnx

    from ..explain import ExplainError, keep_outputs

    model = onnx.load_model_from_string(onnx_bytes)
    g = model.graph
    sizes = [len(g.node), len(g.initializer), len(g.input), len(g.value_info), len(g.output)]
    try:
        keep_outputs(g, names)
    except ExplainError as exc:
        raise EngineError(str(exc)) from None
    if sizes == [len(g.node), len(g.initializer), len(g.input), len(g.value_info), len(g.output)]:
        return onnx_bytes  # already pruned: the very bytes (a TensorRT engine cache is keyed on them)
    return model.SerializeToString()


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple
    dtype: np.dtype


class Engine:
    """Common checks; subclasses implement `_run`."""

    backend: str = ""
    choice = None  # backend_choice.BackendChoice when `auto` chose this engine; None when it was named
    arithmetic = ""  # what it computes in, in words (engine.arithmetic, set by open_engine)
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        names = list(self.outputs) if outputs is None else list(outputs)
        unknown = [n for n in names if n not in self.outputs]
        if unknown:
            raise EngineError(f"{self.backend} engine has no output(s) {unknown}; it has {sorted(self.outputs)}")
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise EngineError(f"{self.backend} engine needs input(s) {missing}")
        checked = {}
        for name, spec in self.inputs.items():
            x = np.asarray(feeds[name])
            if tuple(x.shape) != tuple(spec.shape):
                raise EngineError(f"input {name!r}: shape {x.shape}, engine expects {spec.shape}")
            checked[name] = np.ascontiguousarray(x, dtype=spec.dtype)
        try:
            return self._run(checked, names)
        except EngineError:
            raise
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime, OpenVINO and TensorRT raise their own types
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise EngineRunError(f"{self.backend} engine failed on this frame: {first[:300]}") from None

    def describe_backend(self) -> str:
        """How this engine was chosen, in one line (logs, /diagnostics, reports)."""
        return self.choice.describe() if self.choice is not None else f"{self.backend} (named in the configuration)"

    def _run(self, feeds, names):  # pragma: no cover - abstract
        raise NotImplementedError
