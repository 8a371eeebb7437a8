"""The small fleet the fleet tests run: generated drives with cameras (MCAP and sqlite3), the disordered
bag of test/transports, one whose references change mid-drive, and one that is not a bag at all."""

from pathlib import Path


from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile
from hsi_xai_node.transports.drive_bag import write_drive_bag
from test.transports.disordered_bag import mono16, write_disordered_bag, write_hsi_bag

FRAMES = {"a": 6, "sub/b": 4, "c": 3, "d": 6}  # frames processed per bag
FRAME_NS = 40_000_000  # the generated drives' 25 fps


def write_reference_change_bag(path: Path, config, seed: int = 4003, frames: int = 6) -> Path:
    """References at the start, a second (dimmer white) pair before frame frames // 2, raw frames only."""
    gen = DriveGenerator(load_profile("hsi-drive"), seed=seed, render_cameras=False)
    dark, white = gen.references()
    raws = [gen.frame(k) for k in range(frames)]

    t0, mid = raws[0].stamp_ns, raws[frames // 2].stamp_ns - 1
    items = [(config.dark_topic, t0 - 1, mono16(dark, t0 - 1)), (config.white_topic, t0 - 1, mono16(white, t0 - 1))]
    items += [(config.raw_topic, f.stamp_ns, mono16(f.raw, f.stamp_ns)) for f in raws[:frames // 2]]
    items += [(config.dark_topic, mid, mono16(dark, mid)), (config.white_topic, mid, mono16((white * 0.8).astype(white.dtype), mid))]
    items += [(config.raw_topic, f.stamp_ns, mono16(f.raw, f.stamp_ns)) for f in raws[frames // 2:]]
    return write_hsi_bag(path, config, items)


def write_fleet(root: Path, config) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_drive_bag(root / "a", config, seed=4000, frames=FRAMES["a"])
    (root / "sub").mkdir(exist_ok=True)
    write_drive_bag(root / "sub" / "b", config, seed=4001, frames=FRAMES["sub/b"], storage="sqlite3")
    write_disordered_bag(root / "c", config)
    write_reference_change_bag(root / "d", config)
    (root / "junk.mcap").write_bytes(b"this is not a bag")
    return root
