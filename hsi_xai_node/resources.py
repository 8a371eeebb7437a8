"""Files shipped beside the package (models/, config/): in the source tree, a pip install's
share/hsi_xai_node/, or a colcon install's ament share directory."""

from __future__ import annotations

import sys
from pathlib import Path


def share_path(relative: str) -> Path:
    """The first existing location of `relative` (e.g. "models/unet_bundled_25pn.onnx"), else the source-tree one."""
    candidates = [Path(__file__).resolve().parents[1] / relative,
                  Path(sys.prefix) / "share" / "hsi_xai_node" / relative]
    try:  # a colcon/ament install
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory("hsi_xai_node")) / relative)
    except Exception:  # not on a ROS machine, or the package is not in the ament index
        pass
    return next((c for c in candidates if c.exists()), candidates[0])
