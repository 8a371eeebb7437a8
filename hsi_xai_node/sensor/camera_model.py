"""Pinhole camera geometry of the images the node publishes, from the cameras' sensor_msgs/CameraInfo.

Every output image is an affine resampling of one input camera's pixels: the segmentation outputs
are the mosaic camera's 5x5 tiles (one cube pixel per tile, its centre) inside the filter area,
the detection overlay the primary camera's pixels drawn `overlay_zoom` times larger. Such an image
has the camera's optics with its pixel grid changed, so its CameraInfo is the camera's with

    K' = A K,  P' = A P   (A: camera pixel -> output pixel, pixel centres, last row 0 0 1)

and the same distortion coefficients (they act on normalised coordinates, before K) and the same R.
A point projected through the camera's CameraInfo and through the output's lands on the same
output pixel the pipeline put it in (test/sensor/test_camera_model.py checks that with OpenCV).

An input CameraInfo with binning or a region of interest describes its image the way
image_geometry reads it (u_image = (u_full - roi.x_offset) / binning_x, K and P of the full
sensor); the output's is written without them (binning 0, empty roi) and with A folded into K and
P, which every consumer reads the same way. With no camera_info from the camera, the output's has
K and P zero (REP 104: uncalibrated) and states where it lies in the camera's pixels through
binning and roi, whenever that is an integer binning of a region (the segmentation outputs are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FrameError

# distortion model -> how many coefficients it has (sensor_msgs/distortion_models.hpp); other models pass as written
DISTORTION_COEFFICIENTS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


@dataclass(frozen=True)
class PixelMap:
    """Where an output image lies in a camera's pixels: output pixel = A @ camera pixel (centres)."""

    A: np.ndarray        # 3x3, last row (0, 0, 1)
    width: int           # the output image's size
    height: int
    camera_width: int    # the camera image's size it maps from (a camera_info of another size is refused)
    camera_height: int

    def binning(self) -> tuple[int, int, tuple[int, int, int, int]] | None:
        """(binning_x, binning_y, roi (x, y, w, h) in camera pixels) when the map is an integer binning of a
        region: output pixel i covers camera pixels roi.x + b*i .. roi.x + b*i + b - 1, else None."""
        a = self.A
        if abs(a[0, 1]) > 1e-12 or abs(a[1, 0]) > 1e-12 or a[0, 0] <= 0 or a[1, 1] <= 0:
            return None
        bx, by = 1.0 / a[0, 0], 1.0 / a[1, 1]
        if abs(bx - round(bx)) > 1e-9 or abs(by - round(by)) > 1e-9:
            return None
        bx, by = round(bx), round(by)
        # centre of output pixel 0 = camera x0 + (b - 1) / 2  <=>  A[0, 2] = -(x0 + (b - 1) / 2) / b
        x0, y0 = -a[0, 2] * bx - (bx - 1) / 2, -a[1, 2] * by - (by - 1) / 2
        if abs(x0 - round(x0)) > 1e-6 or abs(y0 - round(y0)) > 1e-6:
            return None
        return bx, by, (round(x0), round(y0), self.width * bx, self.height * by)

    def cropped(self, left: int, top: int, width: int, height: int) -> "PixelMap":
        """The map of the output's sub-image of `width` x `height` pixels from (left, top)."""
        shift = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]])
        return PixelMap(shift @ self.A, width, height, self.camera_width, self.camera_height)


def binned_region(offset_x: int, offset_y: int, pattern_w: int, pattern_h: int, width: int, height: int,
                  camera_width: int, camera_height: int) -> PixelMap:
    """Output pixel (c, r) = the tile of camera pixels x0 + p*c .. + p - 1, y0 + p*r ..: centre to centre,
    u_out = (u_cam - x0 - (p - 1) / 2) / p."""
    a = np.array([[1.0 / pattern_w, 0.0, -(offset_x + (pattern_w - 1) / 2) / pattern_w],
                  [0.0, 1.0 / pattern_h, -(offset_y + (pattern_h - 1) / 2) / pattern_h],
                  [0.0, 0.0, 1.0]])
    return PixelMap(a, width, height, camera_width, camera_height)


def zoomed(zoom: int, camera_width: int, camera_height: int) -> PixelMap:
    """Output = the camera image drawn `zoom` times larger (each pixel a zoom x zoom block): pixel centres
    u_out = zoom * (u_cam + 0.5) - 0.5."""
    z = float(zoom)
    a = np.array([[z, 0.0, 0.5 * z - 0.5], [0.0, z, 0.5 * z - 0.5], [0.0, 0.0, 1.0]])
    return PixelMap(a, camera_width * zoom, camera_height * zoom, camera_width, camera_height)


@dataclass(frozen=True)
class CameraModel:
    """The numbers of a sensor_msgs/CameraInfo (binning and roi applied: K and P are the image's own)."""

    width: int
    height: int
    distortion_model: str
    D: tuple[float, ...]
    K: np.ndarray  # 3x3
    R: np.ndarray  # 3x3
    P: np.ndarray  # 3x4
    binning_x: int = 0
    binning_y: int = 0
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)  # x_offset, y_offset, width, height

    @property
    def calibrated(self) -> bool:
        return bool(self.K[0, 0] != 0.0)

    def through(self, pixels: PixelMap) -> "CameraModel":
        """The CameraInfo of the image `pixels` makes of this camera's."""
        a = pixels.A
        return CameraModel(pixels.width, pixels.height, self.distortion_model, self.D, a @ self.K, self.R.copy(),
                           a @ self.P)


def uncalibrated(pixels: PixelMap) -> CameraModel:
    """An output's CameraInfo when its camera published none: K = P = 0 (REP 104), and where the image lies
    in the camera's pixels as binning and roi when it is a binned region."""
    binned = pixels.binning()
    bx, by, roi = binned if binned else (0, 0, (0, 0, 0, 0))
    return CameraModel(pixels.width, pixels.height, "", (), np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 4)),
                       bx, by, roi)


def _matrix(values, shape, field: str, what: str) -> np.ndarray:
    a = np.asarray(values, np.float64)
    if a.size != shape[0] * shape[1]:
        raise FrameError(f"{what}: {field} has {a.size} values, {shape[0] * shape[1]} expected")
    if not np.isfinite(a).all():
        raise FrameError(f"{what}: {field} has a NaN or infinite value")
    return a.reshape(shape)


def from_camera_info(msg, image_width: int, image_height: int, what: str = "camera_info") -> CameraModel:
    """The model of a sensor_msgs/CameraInfo (rclpy or rosbags message: same field names) for the images of
    `image_width` x `image_height` it accompanies, binning and roi applied as image_geometry does.

    Raises FrameError (one line naming the problem) for a message that cannot describe those images: a size
    other than theirs, NaN or infinite numbers, a distortion vector that does not fit its model, a singular K."""
    K = _matrix(msg.k, (3, 3), "K", what)
    R = _matrix(msg.r, (3, 3), "R", what)
    P = _matrix(msg.p, (3, 4), "P", what)
    D = tuple(float(v) for v in np.asarray(msg.d, np.float64).ravel())
    if not all(np.isfinite(D)):
        raise FrameError(f"{what}: D has a NaN or infinite value")
    model = str(msg.distortion_model)
    if D and model in DISTORTION_COEFFICIENTS and len(D) != DISTORTION_COEFFICIENTS[model]:  # empty D: none
        raise FrameError(f"{what}: distortion model {model!r} takes {DISTORTION_COEFFICIENTS[model]} coefficients, "
                         f"D has {len(D)}")
    bx, by = int(msg.binning_x) or 1, int(msg.binning_y) or 1
    roi = msg.roi
    rx, ry, rw, rh = int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
    full_w, full_h = int(msg.width), int(msg.height)
    w, h = (rw or full_w) // bx, (rh or full_h) // by
    if (w, h) != (image_width, image_height):
        raise FrameError(f"{what}: describes {w}x{h} images (width {full_w}, height {full_h}, binning {bx}x{by}, "
                         f"roi {rw}x{rh}), the camera's are {image_width}x{image_height}")
    if K[0, 0] == 0.0:  # uncalibrated (REP 104): nothing to carry over
        return CameraModel(w, h, model, D, np.zeros((3, 3)), R, np.zeros((3, 4)))
    if abs(np.linalg.det(K)) < 1e-12 or K[2, 2] == 0.0:
        raise FrameError(f"{what}: K is singular")
    # image_geometry's reduced-resolution model: u_image = (u_full - roi.x_offset) / binning_x
    S = np.array([[1.0 / bx, 0.0, -rx / bx], [0.0, 1.0 / by, -ry / by], [0.0, 0.0, 1.0]])
    return CameraModel(w, h, model, D, S @ K, R, S @ P)
