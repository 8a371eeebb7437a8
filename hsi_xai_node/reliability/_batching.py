"""Running N inputs through a model exported with a fixed batch of 1: one engine call when possible.

`rebatch` (explain._rebatch) makes the batch-n copy; `BatchedModel` wraps either outcome: one call of
the re-batched model, or a loop of the batch-1 model over the rows (outputs stacked along axis 0),
and says which in `batched`.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..explain._rebatch import hard_coded_batch, rebatch  # noqa: F401  (re-exported by the package)


class BatchedModel:
    """Runs rows of inputs through `model` in one engine call (re-batched) or a loop of batch-1 calls.

    model: the batch-1 ONNX model; batch: the rows each `run` gets (steps + 1 for the
    perturbation curves). `run(feeds)` takes inputs with `batch` rows and returns the named
    outputs (all by default) with `batch` rows. The engine is `runtime.open_engine`'s
    (backend default ort-cpu, fp32; threads 0 = ONNX Runtime's default).
    """

    def __init__(self, model: onnx.ModelProto, batch: int, backend: str = "ort-cpu", precision: str = "fp32",
                 threads: int = 0, allow_rebatch: bool = True):
        from ..runtime.engine import open_engine

        self.batch = int(batch)
        wide = rebatch(model, self.batch) if allow_rebatch else None
        self.batched = wide is not None
        self.engine = open_engine((wide or model).SerializeToString(), backend, precision, threads=threads)
        self.inputs = list(self.engine.inputs)
        self.outputs = list(self.engine.outputs)
        self.calls = 0  # engine calls made (1 per run when batched)

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs or self.outputs)
        for k, v in feeds.items():
            if np.shape(v)[0] != self.batch:
                raise ValueError(f"input {k!r} has {np.shape(v)[0]} rows; this BatchedModel runs {self.batch}")
        if self.batched:
            self.calls += 1
            return self.engine.run(feeds, names)
        rows = []
        for r in range(self.batch):
            self.calls += 1
            rows.append(self.engine.run({k: v[r:r + 1] for k, v in feeds.items()}, names))
        return {k: np.concatenate([row[k] for row in rows], axis=0) for k in names}
