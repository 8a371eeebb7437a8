"""The multispectral front end: RGB / NIR / MIR / FIR camera frames in, detector input out.

Each camera is registered into the *network view* (the rig's common view, sensor/rig.py,
scaled to the network input, by default 320x256, the registered size
of the Multispectral Object Detection dataset, Takumi 2017) with one perspective warp,
normalised per channel as (value - offset) / scale and stacked into (1, C, H, W).
Homographies use OpenCV pixel-centre coordinates; boxes are (x0, y0, x1, y1) pixel edges.

Normalisation of the presets (`stack_config`): 8-bit channels use the ImageNet mean/std
(the statistics pretrained EfficientDet backbones expect; NIR the mean of the three),
thermal mono16 centikelvin offset 28315 (10 C) and scale 2500 (25 K), which puts clear
sky (~235 K) near -1.9, the scene (285-300 K) near 0..0.7 and hot engines (~333 K) near 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import FrameError, InputError
from .rig import DEFAULT_COMMON_VIEW, CameraSpec, default_cameras

ENCODINGS = {"bgr8": (np.uint8, 3), "rgb8": (np.uint8, 3), "mono8": (np.uint8, 1), "mono16": (np.uint16, 1)}
STACKS = ("rgb", "nir", "mir", "fir", "rgb+mir")
_IMAGENET = {"rgb": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)), "nir": ((114.495,), (57.63,))}
_THERMAL = ((28315.0,), (2500.0,))  # centikelvin
_SHRINK_ABOVE = 1.25  # camera pixels per network pixel above which the camera is pre-shrunk


@dataclass(frozen=True)
class CameraInput:
    """One camera of the stack; offset/scale: one value, or one per channel (R, G, B)."""

    name: str
    encoding: str
    width: int
    height: int
    homography: tuple  # 3x3, common view -> camera pixels (stored as nested tuples)
    offset: tuple | float = 0.0
    scale: tuple | float = 255.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"camera name must be a non-empty string, got {self.name!r}")
        where = f"camera {self.name!r}:"
        if self.encoding not in ENCODINGS:
            raise InputError(f"{where} encoding {self.encoding!r} unknown; use one of {list(ENCODINGS)}")
        for key in ("width", "height"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise InputError(f"{where} {key} must be a positive integer, got {v!r}")
        values = {}
        for key in ("homography", "offset", "scale"):
            try:
                values[key] = np.asarray(getattr(self, key), np.float64)
            except (TypeError, ValueError):
                raise InputError(f"{where} {key} must be numbers, got {getattr(self, key)!r}") from None
            if not np.all(np.isfinite(values[key])):
                raise InputError(f"{where} {key} must be finite, got {getattr(self, key)!r}")
        h = values.pop("homography")
        if h.shape != (3, 3):
            raise InputError(f"{where} homography must be 3x3, got shape {h.shape}")
        if np.linalg.matrix_rank(h) < 3:
            raise InputError(f"{where} homography is singular")
        # stored as tuples, one value per channel, so configs are hashable and compare by value
        fields = {"homography": tuple(map(tuple, h.tolist())), "width": int(self.width), "height": int(self.height)}
        for key, v in values.items():
            if v.size not in (1, self.channels):
                raise InputError(f"{where} {key} needs 1 or {self.channels} values, got {getattr(self, key)!r}")
            fields[key] = tuple(float(x) for x in np.broadcast_to(v.ravel(), (self.channels,)))
        if min(fields["scale"]) <= 0:
            raise InputError(f"{where} scale must be positive, got {fields['scale']}")
        for key, v in fields.items():
            object.__setattr__(self, key, v)

    @property
    def channels(self) -> int:
        return ENCODINGS[self.encoding][1]

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}.{c}" for c in "rgb") if self.channels == 3 else (self.name,)


@dataclass(frozen=True)
class StackConfig:
    cameras: tuple[CameraInput, ...]
    input_size: tuple[int, int] = (320, 256)  # network width, height
    common_size: tuple[int, int] = DEFAULT_COMMON_VIEW

    def __post_init__(self):
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if not self.cameras:
            raise InputError("a multispectral stack needs at least one camera")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise InputError(f"camera names must be unique, got {names}")
        for key in ("input_size", "common_size"):
            size = getattr(self, key)
            try:
                ok = len(size) == 2 and all(int(v) == v and v > 0 for v in size)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise InputError(f"{key} must be (width, height), positive integers, got {size!r}")
            object.__setattr__(self, key, (int(size[0]), int(size[1])))

    @property
    def channels(self) -> int:
        return sum(c.channels for c in self.cameras)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(n for c in self.cameras for n in c.channel_names)


def normalise_channels(image: np.ndarray, offset, scale, out: np.ndarray) -> None:
    """(value - offset) / scale of each channel of one camera's image ((H, W), or (H, W, n) with colour as R, G, B)
    into `out` (n, H, W) float32: what the network sees of that camera."""
    for k, plane in enumerate(image.transpose(2, 0, 1) if image.ndim == 3 else image[None]):
        np.subtract(plane, np.float32(offset[k]), out=out[k])
        out[k] /= np.float32(scale[k])


def network_from_common(common_size, input_size) -> np.ndarray:
    """Pixel-centre homography common view -> network view: x_n = (x_c + 0.5) * sx - 0.5."""
    sx, sy = input_size[0] / common_size[0], input_size[1] / common_size[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def _box_scale(config: StackConfig) -> np.ndarray:
    (cw, ch), (nw, nh) = config.common_size, config.input_size
    return np.array([nw / cw, nh / ch, nw / cw, nh / ch])


def boxes_to_network(boxes, config: StackConfig) -> np.ndarray:
    """(N, 4) pixel-edge boxes, common view -> network view (edges scale by sx, sy)."""
    return np.asarray(boxes, np.float64).reshape(-1, 4) * _box_scale(config)


def boxes_to_common(boxes, config: StackConfig) -> np.ndarray:
    return np.asarray(boxes, np.float64).reshape(-1, 4) / _box_scale(config)


def _jacobian_rows(m: np.ndarray, x: float, y: float) -> np.ndarray:
    """Camera pixels per network pixel along each camera axis, at network point (x, y)."""
    w = m[2, 0] * x + m[2, 1] * y + m[2, 2]
    p = m[:2, :2] @ (x, y) + m[:2, 2]
    return np.linalg.norm((m[:2, :2] - np.outer(p / w, m[2, :2])) / w, axis=1)


class MultispectralFrontEnd:
    """Camera images (name -> array in its encoding) -> (1, C, H, W) float32 network input."""

    def __init__(self, config: StackConfig):
        self.config = config
        self._warps = {}  # name -> (pre-shrink size or None, map network -> (shrunk) camera)
        nw, nh = config.input_size
        to_net = network_from_common(config.common_size, config.input_size)
        for cam in config.cameras:
            m = np.asarray(cam.homography) @ np.linalg.inv(to_net)
            kx, ky = _jacobian_rows(m, (nw - 1) / 2, (nh - 1) / 2)
            shrink = None
            if max(kx, ky) > _SHRINK_ABOVE:  # bilinear alone would alias: area-average first
                shrink = (max(1, round(cam.width / max(kx, 1.0))), max(1, round(cam.height / max(ky, 1.0))))
                fx, fy = shrink[0] / cam.width, shrink[1] / cam.height
                m = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]]) @ m
            self._warps[cam.name] = (shrink, m)
        self._cams = {c.name: c for c in config.cameras}

    def _check(self, cam: CameraInput, image) -> np.ndarray:
        dtype, n = ENCODINGS[cam.encoding]
        shape = (cam.height, cam.width) + ((3,) if n == 3 else ())
        if image is None:
            raise FrameError(f"camera {cam.name!r}: no image; the stack needs {list(self._cams)}")
        image = np.asarray(image)
        if n == 1 and image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.dtype != dtype or image.shape != shape:
            raise FrameError(f"camera {cam.name!r}: expected {cam.encoding} as {np.dtype(dtype).name} {shape}, "
                             f"got {image.dtype.name} {image.shape}")
        return image

    def register(self, name: str, image: np.ndarray) -> np.ndarray:
        """The camera image in the network view, float32 (H, W[, 3]) in camera units, colour as R, G, B.
        Outside the camera's field of view: its offset (normalised value 0)."""
        if name not in self._cams:
            raise FrameError(f"camera {name!r} is not in the stack {list(self._cams)}")
        cam = self._cams[name]
        img = self._check(cam, image).astype(np.float32)
        if cam.encoding == "bgr8":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        shrink, m = self._warps[name]
        if shrink is not None:
            img = cv2.resize(img, shrink, interpolation=cv2.INTER_AREA)
        border = cam.offset + (0.0,) * (4 - len(cam.offset))  # normalises to 0
        return cv2.warpPerspective(img, m, self.config.input_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=border)

    def register_all(self, images: dict) -> dict[str, np.ndarray]:
        """name -> `register(name, image)` for every camera of the stack."""
        return {cam.name: self.register(cam.name, images.get(cam.name)) for cam in self.config.cameras}

    def __call__(self, images: dict) -> np.ndarray:
        return self.stack(self.register_all(images))

    def stack(self, registered: dict[str, np.ndarray]) -> np.ndarray:
        """(1, C, H, W) float32: registered images (`register_all`) normalised and stacked in order."""
        nw, nh = self.config.input_size
        out = np.empty((1, self.config.channels, nh, nw), np.float32)
        c = 0
        for cam in self.config.cameras:
            normalise_channels(registered[cam.name], cam.offset, cam.scale, out[0, c:c + cam.channels])
            c += cam.channels
        return out

    def preview(self, images: dict, registered: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 bgr network view for overlays: the colour camera, else the first
        camera stretched over its 1st-99th percentiles (of the raw image: no border values).
        `registered` (from `register_all`) saves warping the camera a second time."""
        registered = registered or {}
        colour = [c for c in self.config.cameras if c.channels == 3]
        if colour:
            name = colour[0].name
            reg = registered[name] if name in registered else self.register(name, images.get(name))
            return cv2.cvtColor(np.clip(np.rint(reg), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        cam = self.config.cameras[0]
        image = self._check(cam, images.get(cam.name))
        reg = registered[cam.name] if cam.name in registered else self.register(cam.name, image)
        return _stretched(reg, image)

    def camera_picture(self, name: str, image: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 bgr of a camera's own pixels (no registration): colour as it is, a single-channel
        camera stretched over its 1st-99th percentiles."""
        cam = self._cams[name]
        image = self._check(cam, image)
        if cam.channels == 3:
            return image if cam.encoding == "bgr8" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        return _stretched(image.astype(np.float32), image)


def _stretched(values: np.ndarray, image: np.ndarray) -> np.ndarray:
    """`values` as bgr8 grey, stretched over `image`'s 1st-99th percentiles (of the raw image: no border values)."""
    lo, hi = np.percentile(image, [1, 99])
    gray = np.clip(np.rint((values - lo) * (255.0 / max(hi - lo, 1e-6))), 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def stack_config(name: str, cameras: tuple[CameraSpec, ...] | None = None, input_size=(320, 256)) -> StackConfig:
    """A preset stack ("rgb", "nir", "mir", "fir", "rgb+mir") over the generator's cameras (or `cameras`)."""
    if name not in STACKS:
        raise InputError(f"stack {name!r} unknown; use one of {list(STACKS)}")
    specs = {c.name: c for c in (default_cameras() if cameras is None else cameras)}
    out = []
    for part in name.split("+"):
        if part not in specs:
            raise InputError(f"stack {name!r} needs a camera named {part!r}, have {list(specs)}")
        s = specs[part]
        offset, scale = _THERMAL if s.kind in ("mir", "fir") else _IMAGENET[s.kind]
        out.append(CameraInput(s.name, s.encoding, s.width, s.height, s.homography, offset, scale))
    return StackConfig(tuple(out), input_size)


_CAMERA_KEYS = ("name", "encoding", "width", "height", "homography", "offset", "scale")


def stack_config_from_dict(d: dict) -> StackConfig:
    """From YAML: {cameras: [{name, encoding, width, height, homography: [[..] x3], offset, scale}],
    input_size: [w, h], common_size: [w, h]} (both sizes optional); errors name the bad key."""
    if not isinstance(d, dict) or not isinstance(d.get("cameras"), list):
        raise InputError("stack config: 'cameras' must be a list of camera entries")
    if set(d) - {"cameras", "input_size", "common_size"}:
        raise InputError(f"stack config: unknown keys {sorted(set(d) - {'cameras', 'input_size', 'common_size'})}")
    cams = []
    for i, entry in enumerate(d["cameras"]):
        where = f"stack config: cameras[{i}]"
        keys = set(entry) if isinstance(entry, dict) else set()
        if keys != set(_CAMERA_KEYS):
            raise InputError(f"{where} needs keys {list(_CAMERA_KEYS)}; missing {sorted(set(_CAMERA_KEYS) - keys)}, "
                             f"unknown {sorted(keys - set(_CAMERA_KEYS))}")
        try:
            cams.append(CameraInput(**entry))
        except ValueError as e:
            raise InputError(f"{where}: {e}") from None
    try:
        return StackConfig(tuple(cams), **{k: d[k] for k in ("input_size", "common_size") if k in d})
    except ValueError as e:
        raise InputError(f"stack config: {e}") from None
