"""`hsi-xai import-model`: parse the options, import, print what was found."""

from __future__ import annotations

from ..model_card import ModelError
from ._detection import DetectionImportOptions, import_detection
from ._segmentation import ImportOptions, import_segmentation


def _pair(text: str | None, sep: str, what: str) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().split(sep)
    try:
        a, b = (int(p) for p in parts)
    except ValueError:
        raise ModelError(f"{what} {text!r}: give two integers as A{sep}B") from None
    if a < 0 or b < 0 or (sep == "x" and (a == 0 or b == 0)):
        raise ModelError(f"{what} {text!r}: out of range")
    return a, b


def _floats(text: str | None, what: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ModelError(f"{what} {text!r}: give numbers separated by commas") from None


def cmd_import_model(args) -> int:
    if args.task == "detection":
        return _import_detector(args)
    options = ImportOptions(
        classes=args.classes, bands=args.bands, profile=args.profile, normalise=args.normalise,
        mean=_floats(args.mean, "--mean"), std=_floats(args.std, "--std"), scale=args.scale,
        input_size=_pair(args.input_size, "x", "--input-size"), crop=_pair(args.crop, ",", "--crop"),
        layout=args.layout, logits=args.logits, penultimate=args.penultimate, name=args.name, out=args.out,
        self_check=not args.no_check)
    r = import_segmentation(args.model, options)
    print(f"model   {r.model}")
    print(f"card    {r.card}")
    for change in r.changes or ["none: the card describes the file as it is"]:
        print(f"changed {change}")
    if r.logits_difference is not None:
        print(f"        the prepared graph's logits are within {r.logits_difference:.2e} of the source's "
              "on the self-check frame")
    print("layers explanations target:")
    print(r.table())
    print(f"methods {', '.join(r.methods)}" + ("" if args.no_check else " (run on a generated frame)"))
    for note in r.notes:
        print(f"note    {note}")
    methods = "" if r.head.activation_map else f" --methods {','.join(r.methods)}"
    print(f"run it  hsi-xai replay IN OUT --model {r.model}{methods}   (node parameters: model, methods)")
    return 0


def _import_detector(args) -> int:
    if not args.stack:
        raise ModelError("--task detection needs --stack (the input's cameras, e.g. rgb:bgr8,mir:mono16)")
    options = DetectionImportOptions(
        classes=args.classes, stack=args.stack, anchors=args.anchors, coding=args.coding,
        activation=args.score_activation, offset=_floats(args.stack_offset, "--stack-offset"),
        scale=_floats(args.stack_scale, "--stack-scale"), input_size=_pair(args.input_size, "x", "--input-size"),
        logits=args.logits, deltas=args.deltas, class_head_input=args.class_head_input,
        score_threshold=args.score_threshold, max_detections=args.max_detections, name=args.name, out=args.out, self_check=not args.no_check)
    r = import_detection(args.model, options)
    print(f"model   {r.model}")
    print(f"card    {r.card}")
    for change in r.changes or ["none: the card describes the file as it is"]:
        print(f"changed {change}")
    print(f"anchors {r.anchors}")
    for role, tensor in r.layers.items():
        print(f"layer   {role} = {tensor}: {r.why[role]}")
    print(f"run it  set detector_model: {r.model} in the node's parameters (the rig must have the stack's cameras)")
    return 0
