"""The reliability report's settings (no onnx, no numpy: the CLI reads them to build its help)."""

from __future__ import annotations

from dataclasses import dataclass

from ..resources import share_path


@dataclass
class ReportConfig:
    model: str = str(share_path("models/unet_bundled_25pn.onnx"))
    detector: str | None = str(share_path("models/efficientdet_rgb_mir.onnx"))  # None: no detection sections
    band_models: tuple[str, ...] = tuple(str(share_path(f"models/unet_bundled_{v}.onnx")) for v in ("1", "3", "25pn"))
    random_labels_model: str | None = None  # a U-Net trained on permuted labels (train_with_random_labels)
    frames: int = 3                  # held-out generated frames (drive seeds 2000 + i)
    cascade_steps: int = 6           # cascading randomisation depths shown (evenly spaced over the layers)
    perturbation_steps: int = 16
    rise_masks: int = 500
    sidu_layer: str = "penultimate"
    boxes: int = 5                   # detector boxes evaluated per frame
    backend: str = "ort-cpu"
    threads: int = 0
    seed: int = 0
    preset: str = "full"             # "quick" when --quick set the values above (named on the report)
    # paper 003's input attributions evaluated beside the CAM family (names of explain.INPUT_METHODS); None = all
    input_methods: tuple[str, ...] | None = None
    smoothgrad_samples: int = 8      # as the node's defaults
    ig_steps: int = 16
    # which method to trust (paper 003 sec. 7): noisy copies of the first frame for max-sensitivity, the noise's
    # half-width as a share of the frame's standard deviation (not of its range: PN-normalised cubes have outlier
    # pixels 100 standard deviations out, and 1 % of that range relabels most pixels), and region perturbation's
    # square (Samek's 9 px)
    sensitivity_draws: int = 3
    sensitivity_noise: float = 0.05
    region_patch: int = 9


# `hsi-xai reliability --quick`: one frame, fewer RISE masks, curve steps, SmoothGrad samples and integrated-gradient
# steps (a few minutes on 2 cores)
QUICK = {"frames": 1, "rise_masks": 100, "perturbation_steps": 8, "cascade_steps": 3, "smoothgrad_samples": 4,
         "ig_steps": 8, "sensitivity_draws": 2}  # and preset "quick"
