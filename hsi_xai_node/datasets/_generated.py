"""Generated drives as a labelled dataset: each frame's raw mosaic through the node's front end (reflectance, all
bands, the `hsi-drive` sensor profile), with the generator's labels, in the shape the dataset readers give."""

from __future__ import annotations

from ..drive_splits import DEFAULT_SPLITS, Split
from ._hsidrive import DatasetError, SegmentationSample


def _seeds(text: str) -> tuple[int, ...]:
    out = []
    try:
        for part in text.split(","):
            a, _, b = part.partition("-")
            out.extend(range(int(a), int(b or a) + 1))
    except ValueError:
        raise DatasetError(f"generated drives: split {text!r} is neither {sorted(DEFAULT_SPLITS)} nor seeds such as "
                           "2000-2005 or 2000,2003") from None
    if not out or len(out) > 10_000:
        raise DatasetError(f"generated drives: split {text!r} names {len(out)} seeds")
    return tuple(out)


class GeneratedDrives:
    layout = "generated"

    def __init__(self, split: Split, name: str, limit: int | None = None):
        self.split, self.name = split, name
        self.count = len(split.seeds) * split.frames_per_seed
        self.count = min(self.count, limit) if limit else self.count

    @classmethod
    def from_split(cls, text: str, limit: int | None = None) -> "GeneratedDrives":
        """A named split of the U-Nets' (test: 2000-2005, 4 frames each, 15 apart), or seeds with test's framing."""
        if text in DEFAULT_SPLITS:
            return cls(DEFAULT_SPLITS[text], text, limit)
        test = DEFAULT_SPLITS["test"]
        return cls(Split(_seeds(text), test.frames_per_seed, test.stride), f"seeds {text}", limit)

    def describe(self) -> str:
        s = self.split
        return (f"generated drives, split {self.name} (seeds {s.seeds[0]}-{s.seeds[-1]}, frames 0, {s.stride}, ... "
                f"{s.frames_per_seed} per drive), {len(self)} frames")

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        from ..scenes.drive import DriveGenerator
        from ..sensor.calibration import load_profile
        from ..sensor.frontend import FrontEnd, FrontEndConfig

        profile, n = load_profile("hsi-drive"), 0
        for seed in self.split.seeds:
            gen = DriveGenerator(profile, seed=seed, render_cameras=False)
            fe = FrontEnd(profile, *gen.references(), FrontEndConfig(normalise=False))
            for k in range(self.split.frames_per_seed):
                if n == self.count:
                    return
                frame = gen.frame(k * self.split.stride)
                yield SegmentationSample(f"drive{seed}_frame{k * self.split.stride}", fe.process(frame.raw).cube.data,
                                         frame.labels, {"seed": seed, "frame": k * self.split.stride})
                n += 1
