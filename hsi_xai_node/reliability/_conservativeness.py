"""Which explanation methods are conservative (paper 000), measured over a set of frames.

Per method and class, over the frames where the class has a region, the relative
residual of `hsi_xai_node.explain.conservativeness_residual`:

    | sum_R map_c - (sum_R logit_c - bias_c |R|) | / | sum_R logit_c |

summarised as its maximum and median, and "conservative" when the maximum is at most
`tolerance` (default 1e-4 relative: float32 rounding of sums over ~10^5 pixels stays
well below it). Paper 000's claim, which the tests check on the bundled U-Net: the
activation maps (sum_k w_ck A_k) are conservative, Seg-Grad-CAM is not.

Only maps at the logits' resolution are tabled: a map resized to another resolution
does not keep its sum, so the question does not apply to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ..explain import CAM_METHODS, ExplainGraph, conservativeness_residual

CONSERVATIVE_CANDIDATES = ("activation", *CAM_METHODS, "scorecam")


def residual_maps(graph: ExplainGraph) -> dict[str, str]:
    """"method@layer" -> output name of the graph's float maps at the logits' resolution."""
    out = next(v for v in graph.model.graph.output if v.name == graph.logits)
    hw = tuple(d.dim_value for d in out.type.tensor_type.shape.dim)[2:]
    return {f"{o.method}@{o.layer}": name for name, o in graph.outputs.items()
            if o.method in CONSERVATIVE_CANDIDATES and o.dtype == "float32"
            and len(o.shape) == 4 and o.shape[0] == graph.classes and tuple(o.shape[2:]) == hw}


def conservativeness_table(frames_outputs: Iterable[Mapping[str, np.ndarray]], graph: ExplainGraph | None = None,
                           *, logits: str | None = None, maps: Mapping[str, str] | None = None,
                           bias: np.ndarray | None = None, regions: Iterable[np.ndarray] | None = None,
                           tolerance: float = 1e-4, class_names: list[str] | None = None) -> dict[str, dict]:
    """Residual summary per method and class over frames.

    frames_outputs: per frame, the engine's outputs (name -> array) of an explain graph.
    graph: that graph (gives logits, the maps via `residual_maps`, and the head bias);
    or give `logits`, `maps` (label -> output name) and `bias` directly. regions: per
    frame (K, [1,] H, W) 0/1 seed regions; default the predicted regions (argmax of the
    logits), which is the "predicted" seed the explain graph uses.

    Returns {label: {"max": float, "median": float, "conservative": bool | None,
    "classes": {class name: {"max", "median", "frames", "conservative"}}}}; a class never
    present has NaN and None.
    """
    if graph is not None:
        logits = logits or graph.logits
        maps = maps if maps is not None else residual_maps(graph)
        bias = bias if bias is not None else graph.head_bias
    if logits is None or maps is None:
        raise ValueError("give the explain graph, or logits and maps")
    region_iter = iter(regions) if regions is not None else None
    per = {label: [] for label in maps}  # label -> list of (K,) residuals per frame
    k = None
    for out in frames_outputs:
        z = np.asarray(out[logits])
        k = z.shape[-3]
        if region_iter is not None:
            region = next(region_iter)
        else:
            region = z.reshape(k, *z.shape[-2:]).argmax(0)[None] == np.arange(k)[:, None, None]
        for label, name in maps.items():
            per[label].append(conservativeness_residual(out[name], z, region, bias))
    names = list(class_names) if class_names is not None else [str(c) for c in range(k or 0)]
    table = {}
    for label, rows in per.items():
        r = np.array(rows, np.float64).reshape(len(rows), -1)  # (frames, K)
        classes = {}
        for c in range(r.shape[1]):
            v = r[:, c][np.isfinite(r[:, c])]
            classes[names[c]] = {"max": float(v.max()) if v.size else float("nan"),
                                 "median": float(np.median(v)) if v.size else float("nan"),
                                 "frames": int(v.size),
                                 "conservative": bool(v.max() <= tolerance) if v.size else None}
        v = r[np.isfinite(r)]
        table[label] = {"max": float(v.max()) if v.size else float("nan"),
                        "median": float(np.median(v)) if v.size else float("nan"),
                        "conservative": bool(v.max() <= tolerance) if v.size else None,
                        "classes": classes}
    return table
