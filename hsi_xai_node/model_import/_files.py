"""Where an import writes, and how: the prepared model, its card (and anchors) appear complete or not at all."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..files import write_atomic
from ..model_card import ModelError


@dataclass(frozen=True)
class ImportPaths:
    folder: Path
    name: str
    model: Path  # the source itself when it is described as it is, in its own folder
    in_place: bool

    def beside(self, suffix: str) -> Path:
        """A file named after the card, in its folder (`.json`, `_anchors.npy`)."""
        return self.folder / f"{self.name}{suffix}"


def import_paths(source: Path, out: str | None, name: str | None, changed: bool) -> ImportPaths:
    """The card names its model by file name, in its own folder: the source itself when the graph needs no change
    and the card goes beside it under its name; else NAME.onnx (default: the source's name + _static)."""
    folder = Path(out) if out else source.parent
    name = name or (source.stem if not changed else f"{source.stem}_static")
    in_place = not changed and folder.resolve() == source.parent.resolve() and name == source.stem
    model = source if in_place else folder / f"{name}.onnx"
    if not in_place and model.resolve() == source.resolve():
        raise ModelError(f"the prepared graph would overwrite the source {source}: give another --name or --out")
    folder.mkdir(parents=True, exist_ok=True)
    return ImportPaths(folder, name, model, in_place)


@contextmanager
def all_or_nothing() -> Iterator["Written"]:
    """The files an import writes (`written.file(path, data)`), removed again when the import fails before it ends
    (the self-check included): no half-made import is left behind."""
    written = Written()
    try:
        yield written
    except BaseException:
        for path in written.paths:
            path.unlink(missing_ok=True)
        raise


class Written:
    def __init__(self):
        self.paths: list[Path] = []

    def file(self, path: Path, data: bytes) -> None:
        write_atomic(path, data)
        self.paths.append(path)


def load_source(path: Path) -> tuple[onnx.ModelProto, list[str]]:
    """The model with any external weights (torch's dynamo exporter writes MODEL.onnx.data beside it) read in;
    and, if there were any, the change that makes: the prepared file holds them."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    if not path.is_file():
        raise ModelError(f"model {path}: no such file")
    try:
        model = onnx.load_model_from_string(path.read_bytes())
        external = sorted({e.value for t in model.graph.initializer if uses_external_data(t)
                           for e in t.external_data if e.key == "location"})
        if external:
            load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # a damaged protobuf raises DecodeError, a missing data file ValidationError, ...
        raise ModelError(f"model {path}: cannot be read as ONNX ({str(exc).splitlines()[0]})") from None
    return model, ([f"weights kept beside the model ({', '.join(external)}) embedded in the model file, so the "
                    "card's SHA-256 covers them"] if external else [])
