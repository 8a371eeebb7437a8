"""`hsi-xai import-model --task segmentation`: a user's ONNX becomes a model the node, the replay and the
reliability report run, with a card no one wrote by hand.

The graph says the input, the logits and the layers (`_graph`, `_layers`); the user says what a graph
cannot: the classes, the bands and how reflectance was normalised in training, and where the model's
window sits in the cube. The card is then checked by the same loader every command uses, and the
explain graph is built and run once on a generated frame through the node's own pipeline: an import
that succeeds is a model that runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from ..classes import SEGMENTATION_CLASS_SETS
from ..errors import CalibrationError
from ..model_card import (CARD_SCHEMA, NORMALISATIONS, ClassSpec, InputSpec, ModelCard, ModelError, file_sha256,
                          load_model)
from ..sensor.calibration import SensorProfile, load_profile
from ..sensor.radiometry import BAND_SETS
from ._files import all_or_nothing, import_paths, load_source
from ._graph import PreparedGraph, prepare_graph, same_outputs
from ._layers import Choice, HeadFacts, choose_layers

SELF_CHECK_SEED = 2900  # a generated drive no bundled model was trained or validated on (drive_splits)


@dataclass(frozen=True)
class ImportOptions:
    classes: str  # a class set name (SEGMENTATION_CLASS_SETS) or comma-separated names in channel order
    bands: str = "all"  # a band set name (BAND_SETS) or comma-separated wavelengths in model channel order
    profile: str = "hsi-drive"
    normalise: str = "pn"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    scale: float = 1.0
    input_size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None  # (top, left) of the model window in the cube; None: centred
    layout: str | None = None
    logits: str | None = None
    penultimate: str | None = None
    name: str | None = None
    out: str | None = None  # folder for the card (and the prepared model); default: the model's
    self_check: bool = True


@dataclass
class ImportResult:
    model: Path
    card: Path
    changes: list[str]
    layers: list[Choice]
    head: HeadFacts
    methods: tuple[str, ...]  # the explanations the model supports, as checked
    notes: list[str] = field(default_factory=list)
    logits_difference: float | None = None  # prepared vs source logits on the self-check input

    def table(self) -> str:
        rows = [("role", "tensor", "shape", "why")] + [(c.role, c.tensor, "x".join(map(str, c.shape)), c.why)
                                                      for c in self.layers]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join(f"  {r[0]:{widths[0]}}  {r[1]:{widths[1]}}  {r[2]:{widths[2]}}  {r[3]}" for r in rows)


def class_table(spec: str, channels: int) -> tuple[ClassSpec, ...]:
    """Channel -> class for `channels` logits channels.

    A class set's unlabelled class (id 0) is channel 0 when the model has a channel for it (mmsegmentation's
    HSI-Drive config trains 11 channels with ignore_index 0), else the set starts at its first labelled class.
    Such a channel stays in the argmax, as the model's own prediction: its pixels are written as 0
    (unlabelled), and the evaluation counts them as missed on labelled ground truth."""
    if spec in SEGMENTATION_CLASS_SETS:
        table = SEGMENTATION_CLASS_SETS[spec]
        labelled = tuple(c for c in table if c.id != 0)
        if channels == len(table):
            chosen = table
        elif channels == len(labelled):
            chosen = labelled
        else:
            raise ModelError(f"the model has {channels} logits channels; class set {spec!r} has {len(labelled)} "
                             f"classes ({len(table)} with unlabelled): give the classes with --classes a,b,c")
        return tuple(ClassSpec(i, c.id, c.name, c.bgr) for i, c in enumerate(chosen))
    names = [n.strip() for n in spec.split(",")]
    if "" in names:
        raise ModelError(f"--classes {spec!r}: an empty class name")
    if len(names) != channels:
        known = ", ".join(SEGMENTATION_CLASS_SETS)
        raise ModelError(f"--classes names {len(names)} classes but the model has {channels} logits channels "
                         f"(or give a class set: {known})")
    import matplotlib

    colours = matplotlib.colormaps["tab20"].colors
    out, next_id = [], 1
    for i, n in enumerate(names):
        cid = 0 if n == "unlabelled" and i == 0 else next_id
        next_id += cid != 0
        r, g, b = (int(round(255 * v)) for v in colours[i % len(colours)])
        out.append(ClassSpec(i, cid, n, (b, g, r)))
    return tuple(out)


def band_table(spec: str, profile: SensorProfile, tolerance_nm: float = 2.0) -> tuple[float, ...]:
    """The model's input bands as the profile's wavelengths, in model channel order."""
    wl = profile.band_wavelengths_nm
    if spec in BAND_SETS:
        wanted = BAND_SETS[spec]
        if wanted is None:
            return tuple(float(v) for v in wl)
    else:
        try:
            wanted = [float(v) for v in spec.split(",")]
        except ValueError:
            raise ModelError(f"--bands {spec!r}: give a band set ({', '.join(BAND_SETS)}) or wavelengths in nm, "
                             "comma-separated, in the model's channel order") from None
    try:
        return tuple(float(wl[profile.band_nearest(w, tolerance_nm)]) for w in wanted)
    except CalibrationError as exc:
        raise ModelError(f"--bands: {exc}") from None


def _window(profile: SensorProfile, hw: tuple[int, int], crop: tuple[int, int] | None) -> tuple[int, int]:
    rows, cols = profile.cube_height, profile.cube_width
    h, w = hw
    if h > rows or w > cols:
        raise ModelError(f"the model's {h}x{w} input does not fit the {rows}x{cols} cube of sensor profile "
                         f"{profile.name!r}: export or import it at a size that fits (--input-size)")
    top, left = crop if crop is not None else ((rows - h) // 2, (cols - w) // 2)
    if top < 0 or left < 0 or top + h > rows or left + w > cols:
        raise ModelError(f"--crop {top},{left}: the {h}x{w} window does not fit the {rows}x{cols} cube")
    return top, left


def _methods(head: HeadFacts) -> tuple[str, ...]:
    return (("activation",) if head.activation_map else ()) + ("seg_gradcam", "hires", "gradient")


def import_segmentation(model_path: str | Path, options: ImportOptions, log=print) -> ImportResult:
    """Prepare the graph, write the card (and the prepared ONNX when the graph had to change), self-check."""
    source_path = Path(model_path)
    if options.normalise not in NORMALISATIONS:
        raise ModelError(f"--normalise {options.normalise!r}: one of {list(NORMALISATIONS)}")
    profile = load_profile(options.profile)
    bands = band_table(options.bands, profile)
    source, embedded = load_source(source_path)
    try:
        prepared = prepare_graph(source, len(bands), options.input_size, options.layout, options.logits)
    except ModelError as exc:
        raise ModelError(f"model {source_path}: {exc}") from None
    prepared.changes += embedded
    shapes = prepared.shapes
    logits_shape = shapes[prepared.logits]
    hw = tuple(logits_shape[2:])
    classes = class_table(options.classes, logits_shape[1])
    layers, head = choose_layers(prepared.model, shapes, prepared.input, prepared.logits, options.penultimate)
    if options.normalise == "mean_std" and (len(options.mean) != len(bands) or len(options.std) != len(bands)):
        raise ModelError(f"--normalise mean_std needs --mean and --std with one value per band ({len(bands)})")
    top, left = _window(profile, hw, options.crop)

    paths = import_paths(source_path, options.out, options.name, prepared.changed)
    name, model_out, card_out = paths.name, paths.model, paths.beside(".json")

    card = ModelCard(
        name=name, task="segmentation", file=model_out.name, sha256="0" * 64, sensor_profile=profile.name,
        input=InputSpec(prepared.input, (1, len(bands), *hw), bands, options.normalise, float(options.scale), top,
                        left, mean=tuple(options.mean), std=tuple(options.std)),
        classes=classes, logits=prepared.logits, layers={c.role: c.tensor for c in layers},
        architecture={"type": "imported", "source": {"file": source_path.name, "sha256": file_sha256(source_path),
                                                     "input": [str(d) for d in prepared.source_input_shape],
                                                     "layout": prepared.layout,
                                                     "logits_layout": prepared.logits_layout},
                      "changes": prepared.changes,
                      "head": {"kernel": list(head.kernel), "resize_after": head.resize_after,
                               "closed_form": head.closed_form, "activation_map": head.activation_map}},
        schema=CARD_SCHEMA)
    with all_or_nothing() as written:
        if not paths.in_place:
            written.file(model_out, prepared.model.SerializeToString() if prepared.changed else source_path.read_bytes())
        card = replace(card, sha256=file_sha256(model_out))
        written.file(card_out, card.to_json().encode())
        result = ImportResult(model_out, card_out, prepared.changes, layers, head, _methods(head))
        load_model(model_out, card_out, profile=profile)  # the loader every command uses accepts it
        if options.self_check:
            _self_check(result, source, prepared, profile, log)
    if any(c.id == 0 for c in classes):
        result.notes.append("channel 0 is 'unlabelled' (ignored in training): it stays in the argmax as the "
                            "model's own output; its pixels are written as label 0")
    if not head.activation_map:
        result.notes.append("no 1x1 conv before the logits: the 'activation' method is not available; run with "
                            "--methods " + ",".join(result.methods))
    return result


def _self_check(result: ImportResult, source: onnx.ModelProto, prepared: PreparedGraph, profile: SensorProfile,
                log) -> None:
    """Run the node's pipeline with the supported methods on one generated frame; compare the prepared graph's
    logits with the source model's on that frame's model input."""
    from ..runtime.pipeline import Pipeline, PipelineConfig
    from ..scenes.drive import DriveGenerator

    gen = DriveGenerator(profile, seed=SELF_CHECK_SEED, render_cameras=False)
    dark, white = gen.references(frames_averaged=4)
    cfg = PipelineConfig(model=str(result.model), card=str(result.card), profile=profile.name, backend="ort-cpu",
                         methods=result.methods, overlay_method="seg_gradcam")
    pipeline = Pipeline(cfg, dark, white)
    frame = gen.frame(0)
    out = pipeline.process(frame.raw)
    if out.labels is None or out.gradcam_overlay is None:
        raise ModelError("self-check: the pipeline returned no labels or overlay for a generated frame")
    if prepared.changed:  # the same frame's model input through the source file and the prepared one
        x = pipeline.card.model_input(pipeline.frontend.process(frame.raw).cube.data)
        result.logits_difference = same_outputs(source, prepared, x)
    log(f"self-check: one generated frame through the pipeline ({', '.join(result.methods)}) in "
        f"{out.timings_ms['total']:.0f} ms; labels {sorted(np.unique(out.labels).tolist())}")
