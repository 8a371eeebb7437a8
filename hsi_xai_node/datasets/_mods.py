"""The Multispectral Object Detection dataset (Takumi et al. 2017; the bundled detector's classes), as distributed.

Layout read (DESIGN.md section 8): `Images/{rgb,fir,mir,nir}/NNNNNN.png` in each camera's own resolution, and
`ConvertedImages/{...}/NNNNNN.png` registered to 320 x 256 with black borders. A detector stacks several cameras,
so it reads the registered images (`images="ConvertedImages"`, the default); the original `Images` serve a
single-camera detector. Labels are per camera, in YOLO text (`class cx cy w h`, normalised to the image) or VOC
XML (class names, pixel boxes, the image size, a `difficult` flag, a day/night tag), under a labels folder the
user names (`labels`, default: the first of `labels/<camera>`, `Annotations/<camera>`, `labels`, `Annotations`
under the root). YOLO class ids are not documented upstream (third-party loaders disagree): `class_map` names them
in id order, defaulting to the VOC names in alphabetical order (bike, car, car_stop, color_cone, person).

Boxes come out normalised to [0, 1] x [0, 1] of the labelled image, which for registered images is the network
view; a sample holds each camera's image as read (bgr8 colour or 8/16-bit single channel).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..classes import DETECTION_CLASSES
from ._hsidrive import DatasetError

_LABEL_LIMIT = 1024 * 1024  # bytes: a label file lists a few objects


@dataclass
class DetectionSample:
    name: str  # the frame number (file stem)
    images: dict  # camera -> image as stored (bgr8 (H, W, 3) uint8, or (H, W) uint8/uint16)
    boxes: np.ndarray  # (M, 4) x0, y0, x1, y1 normalised to the labelled image
    classes: list[str]  # (M,) class names
    ignore: np.ndarray  # (M,) bool: VOC 'difficult'
    meta: dict = field(default_factory=dict)


def read_yolo(path: Path, class_map: tuple[str, ...]):
    boxes, names = [], []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cid, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
        except (ValueError, TypeError):
            raise DatasetError(f"{path} line {n}: not 'class cx cy w h'") from None
        if len(parts) != 5 or not 0 <= cid < len(class_map) or not all(np.isfinite([cx, cy, w, h])) \
                or w <= 0 or h <= 0:
            raise DatasetError(f"{path} line {n}: {line.strip()[:60]!r} is not 'class cx cy w h' with a class id "
                               f"below {len(class_map)} and a positive size")
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        names.append(class_map[cid])
    return np.asarray(boxes, np.float64).reshape(-1, 4), names, np.zeros(len(names), bool), {}


def read_voc(path: Path):
    try:
        root = ET.fromstring(path.read_bytes())
    except ET.ParseError as exc:
        raise DatasetError(f"{path}: not well-formed XML ({exc})") from None
    try:
        width, height = float(root.findtext("size/width")), float(root.findtext("size/height"))
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: no <size><width>/<height>") from None
    if not (width > 0 and height > 0):
        raise DatasetError(f"{path}: image size {width} x {height}")
    boxes, names, ignore = [], [], []
    for obj in root.iter("object"):
        try:
            b = obj.find("bndbox")
            x0, y0, x1, y1 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise DatasetError(f"{path}: an <object> without a numeric <bndbox>") from None
        if not (x1 > x0 and y1 > y0):
            raise DatasetError(f"{path}: box ({x0}, {y0}, {x1}, {y1}) has no area")
        boxes.append((x0 / width, y0 / height, x1 / width, y1 / height))
        names.append((obj.findtext("name") or "").strip())
        ignore.append((obj.findtext("difficult") or "0").strip() == "1")
    tags = {k: root.findtext(k).strip() for k in ("daytime", "time", "scene") if root.findtext(k)}
    return np.asarray(boxes, np.float64).reshape(-1, 4), names, np.asarray(ignore, bool), tags


def stack_registered(images: dict, cameras, hw: tuple[int, int]) -> np.ndarray:
    """(C, h, w) float32 from one frame's registered camera images: `cameras` are (name, encoding, offset, scale)
    in channel order; each image resized to `hw` if it is not at that size, colour as R, G, B (the multispectral
    front end's order), (value - offset) / scale per channel."""
    import cv2

    from ..sensor.multispectral import normalise_channels

    h, w = hw
    out = np.empty((sum(len(offset) for _, _, offset, _ in cameras), h, w), np.float32)
    c = 0
    for name, encoding, offset, scale in cameras:
        img = images[name]
        colour = encoding in ("bgr8", "rgb8")
        if colour != (img.ndim == 3 and img.shape[2] == 3) or (not colour and img.ndim != 2):
            raise DatasetError(f"camera {name}: image {img.shape} {img.dtype} is not {encoding}")
        img = img.astype(np.float32)
        if encoding == "bgr8":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        n = img.shape[2] if img.ndim == 3 else 1
        normalise_channels(img, offset, scale, out[c:c + n])
        c += n
    return out


def read_split(path: Path) -> list[str]:
    """Frame numbers of a split file (one per line, # comments)."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such split file")
    if path.stat().st_size > _LABEL_LIMIT * 16:
        raise DatasetError(f"{path}: larger than a split file")
    names = [line.split("#")[0].strip() for line in path.read_text(errors="replace").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DatasetError(f"{path}: lists no frames")
    return names


class ModsDataset:
    layout = "mods"

    def __init__(self, root: str | Path, cameras: tuple[str, ...], images: str = "ConvertedImages",
                 labels: str | Path | None = None, class_map: tuple[str, ...] | None = None,
                 limit: int | None = None, frames: list[str] | None = None, split: str | None = None):
        self.root, self.cameras, self.images = Path(root), tuple(cameras), images
        self.class_map = tuple(class_map) if class_map else tuple(c.name for c in DETECTION_CLASSES)
        missing = [c for c in self.cameras if not (self.root / images / c).is_dir()]
        if missing:
            raise DatasetError(f"{self.root}: no {images}/{missing[0]} folder (the Multispectral Object Detection "
                               f"dataset's layout: {images}/{{rgb,fir,mir,nir}}/NNNNNN.png)")
        if labels is not None:
            self.labels = Path(labels)
        else:
            first = self.cameras[0]
            options = [self.root / "labels" / first, self.root / "Annotations" / first, self.root / "labels",
                       self.root / "Annotations"]
            self.labels = next((p for p in options if p.is_dir()), None)
            if self.labels is None:
                raise DatasetError(f"{self.root}: no labels folder ({', '.join(str(p) for p in options)}): name it")
        if not self.labels.is_dir():
            raise DatasetError(f"labels {self.labels}: no such folder")
        self.split = split
        if frames is not None:
            self.names = list(frames)[:limit]
        else:
            self.names = sorted(p.stem for p in (self.root / images / self.cameras[0]).glob("*.png"))[:limit]
        if not self.names:
            raise DatasetError(f"{self.root / images / self.cameras[0]}: no .png images")

    def describe(self) -> str:
        split = f", split {self.split}" if self.split else ""
        return (f"Multispectral Object Detection dataset {self.root} ({self.images}, cameras "
                f"{'+'.join(self.cameras)}, labels {self.labels}){split}, {len(self)} frames")

    def __len__(self) -> int:
        return len(self.names)

    def _labels(self, name: str):
        txt, xml = self.labels / f"{name}.txt", self.labels / f"{name}.xml"
        path = xml if xml.is_file() else txt
        if not path.is_file():
            raise DatasetError(f"{name}: no label file ({txt.name} or {xml.name}) in {self.labels}")
        if path.stat().st_size > _LABEL_LIMIT:
            raise DatasetError(f"{path}: larger than a label file")
        return read_voc(path) if path.suffix == ".xml" else read_yolo(path, self.class_map)

    def __iter__(self):
        import cv2

        for name in self.names:
            try:
                images = {}
                for cam in self.cameras:
                    path = self.root / self.images / cam / f"{name}.png"
                    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
                    if img is None:
                        raise DatasetError(f"{path}: missing or not a readable PNG")
                    images[cam] = img
                boxes, names, ignore, tags = self._labels(name)
                yield DetectionSample(name, images, boxes, names, ignore, {"image": name, **tags})
            except DatasetError as exc:
                yield exc
