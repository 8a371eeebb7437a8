"""What the node publishes for one frame, by output name: one definition for the node and the replay."""

from __future__ import annotations

import numpy as np

# output name (under the output namespace) -> sensor_msgs/Image encoding
IMAGE_OUTPUTS = {"labels": "mono8", "segmentation": "bgr8", "preview": "bgr8",
                 "gradcam_overlay": "bgr8", "activation_overlay": "bgr8"}


def output_names(card, class_maps: bool) -> list[str]:
    """Every image output name, per-class maps (`class_maps/<class>`) included when enabled."""
    return [*IMAGE_OUTPUTS, *([f"class_maps/{c.name}" for c in card.classes] if class_maps else [])]


def output_images(result, card, class_maps: bool) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (array, encoding) for the outputs this frame has (overlays only when computed)."""
    out = {name: (getattr(result, name), enc) for name, enc in IMAGE_OUTPUTS.items()
           if getattr(result, name) is not None}
    if class_maps and result.class_maps:  # the first float map (K, h, w), one 32FC1 image per class
        maps = next(iter(result.class_maps.values()))
        out |= {f"class_maps/{c.name}": (maps[c.channel].astype(np.float32), "32FC1") for c in card.classes}
    return out
