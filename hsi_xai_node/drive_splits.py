"""Which generated drives a model has seen: figures measured on a drive are only honest on held-out ones.

Every model card records the drive seeds of its training, validation and test splits
(`training.splits`). The demo drive must be one that no bundled model was trained or
validated on; `seen_by` says which models saw a seed, and in which split.

    seed ranges of the bundled models (from their cards):
      segmentation U-Nets   train 0-23,  validation 1000-1003, test 2000-2005
      RGB+MIR EfficientDet  train 0-39,  validation 1000-1005, test 3000-3009
      reliability report    frames of drives 2000+ (the U-Nets' test drives)

No numpy or onnx here: the CLI imports this module to show the demo's default seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .files import read_json

@dataclass(frozen=True)
class Split:
    seeds: tuple[int, ...]
    frames_per_seed: int
    stride: int  # frames between samples of one drive (25 fps): 12 = 0.48 s apart


#: The segmentation U-Nets' split by seed (no scene is in two splits: train, validation and test drives never share
#: a road, objects or shadows); sizes for the bundled models.
DEFAULT_SPLITS = {
    "train": Split(tuple(range(0, 24)), 8, 12),
    "val": Split((1000, 1001, 1002, 1003), 4, 15),
    "test": Split((2000, 2001, 2002, 2003, 2004, 2005), 4, 15),
}

DEMO_SEED = 4000  # in no split of any bundled model: a drive they have never seen
SEEN_SPLITS = ("train", "val")  # test drives are held out from fitting and model selection


def card_splits(card_path: str | Path) -> dict[str, list[int]]:
    """split name -> drive seeds, from a model or detector card's `training.splits` ({} when absent)."""
    try:
        doc = read_json(card_path, "model card", InputError)
        splits = doc.get("training", {}).get("splits", {})
        return {name: [int(s) for s in split.get("seeds", [])] for name, split in splits.items()}
    except (InputError, ValueError, AttributeError, TypeError):
        return {}


def seen_by(seed: int, cards: dict[str, str | Path]) -> dict[str, str]:
    """model name -> the split ("train" or "val") in which it saw drive `seed`; empty when none did."""
    seen = {}
    for name, path in cards.items():
        splits = card_splits(path)
        for split in SEEN_SPLITS:
            if seed in splits.get(split, []):
                seen[name] = split
                break
    return seen


def describe_splits(cards: dict[str, str | Path]) -> dict[str, dict[str, str]]:
    """model name -> split -> its seed range as text ("0-23", "1000-1005", ...), for reports."""
    def ranges(seeds: list[int]) -> str:
        seeds, parts, start = sorted(set(seeds)), [], None
        for i, s in enumerate(seeds):
            start = s if start is None else start
            if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
                parts.append(str(start) if start == s else f"{start}-{s}")
                start = None
        return ", ".join(parts)

    return {name: {split: ranges(seeds) for split, seeds in card_splits(path).items()} for name, path in cards.items()}
