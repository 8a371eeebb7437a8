"""The engine interface every backend implements (the TensorRT backend and ONNX Runtime in engine.py).

Its own module so a backend can subclass `Engine` without importing `engine.py`, which imports the
backends: no import circle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


class EngineError(InputError):
    """An engine cannot be made or run (backend missing, bad feed, unknown tensor)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple
    dtype: np.dtype


class Engine:
    """Common checks; subclasses implement `_run`."""

    backend: str = ""
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
        return self._run(checked, names)

    def _run(self, feeds, names):  # pragma: no cover - abstract
        raise NotImplementedError
