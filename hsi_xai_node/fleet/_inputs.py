"""What a fleet run reads: the bags under IN (or listed in a manifest), and how each is cut into shards.

A bag is a rosbag2 directory (its `metadata.yaml`, MCAP or sqlite3 files) or a lone `.mcap` file.
Shards are time windows of `shard_seconds` of a bag's recording (transports.replay.Window); a bag
whose metadata cannot be read is one shard, which then fails with the replay's reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from ..errors import InputError

SHARD_DIR = ".shards"  # under OUT: per-shard bags (until merged) and results


@dataclass(frozen=True)
class BagInput:
    path: str  # where the bag is read from
    name: str  # its output's path under OUT (POSIX, relative)


@dataclass(frozen=True)
class Shard:
    bag: BagInput
    index: int
    count: int  # shards of this bag
    start_ns: int | None  # None: the whole bag
    end_ns: int | None
    frames: int  # raw frames (or, with no raw topic, primary camera messages) expected in it, for progress
    key: str = ""  # what its output depends on (resume compares it)

    @property
    def id(self) -> str:
        return f"{self.bag.name}#{self.index}"

    def directory(self, out: Path) -> Path:
        return Path(out) / SHARD_DIR / self.bag.name / f"{self.index:04d}"


def _is_bag_dir(path: Path) -> bool:
    return (path / "metadata.yaml").is_file()


def find_bags(source: str | Path, exclude: str | Path | None = None) -> list[BagInput]:
    """The bags of a directory (searched recursively; a bag's own directory is not searched further;
    hidden directories and `exclude`, the run's OUT, are skipped) or of a text manifest (one path per
    line, relative to the manifest's directory; blank lines and `#` comments ignored)."""
    source = Path(source)
    skip = Path(exclude).resolve() if exclude is not None else None
    if source.is_file() and source.suffix != ".mcap":
        return _manifest(source)
    if source.is_file():
        return [BagInput(str(source), source.stem)]
    if not source.is_dir():
        raise InputError(f"fleet input {source}: no such directory or manifest file")
    if _is_bag_dir(source):
        return [BagInput(str(source), source.name)]
    bags = []
    for root, dirs, files in os.walk(source, followlinks=False):
        here = Path(root)
        dirs.sort()
        keep = []
        for d in dirs:
            p = here / d
            if d.startswith(".") or (skip is not None and p.resolve() == skip):
                continue
            if _is_bag_dir(p):
                bags.append(BagInput(str(p), p.relative_to(source).as_posix()))
            else:
                keep.append(d)
        dirs[:] = keep
        bags += [BagInput(str(here / f), (here / f).relative_to(source).with_suffix("").as_posix())
                 for f in sorted(files) if f.endswith(".mcap")]
    if not bags:
        raise InputError(f"fleet input {source}: no rosbag2 bags in it (directories with a metadata.yaml, "
                         ".mcap files)")
    return sorted(bags, key=lambda b: b.name)


def _manifest(path: Path) -> list[BagInput]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"fleet manifest {path}: cannot be read ({exc})") from None
    paths = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            p = Path(line).expanduser()
            paths.append(p if p.is_absolute() else path.parent / p)
    if not paths:
        raise InputError(f"fleet manifest {path}: lists no bags")
    # output names: the paths relative to their common parent, so equal names from different places differ
    resolved = [p.resolve() for p in paths]
    common = Path(os.path.commonpath([p.parent for p in resolved]))
    names = [PurePosixPath(p.relative_to(common).as_posix()) for p in resolved]
    names = [str(n.with_suffix("")) if n.suffix == ".mcap" else str(n) for n in names]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"fleet manifest {path}: bags listed twice: {dup}")
    return [BagInput(str(p), n) for p, n in zip(paths, names)]


def _bag_facts(path: str, topic: str) -> tuple[int, int, int] | None:
    """(start ns, end ns, messages on `topic`) from the bag's metadata, or None when it cannot be read."""
    from rosbags.rosbag2 import Reader

    try:
        with Reader(path) as reader:
            counts = sum(c.msgcount for c in reader.connections if c.topic == topic)
            return reader.start_time, reader.end_time, counts
    except Exception:  # noqa: BLE001 - the shard's replay reports the reason (or reads a cut MCAP)
        return None


def bag_identity(path: str) -> dict:
    """Size and modification time of a bag's files: a bag rewritten in place is not taken for the old one."""
    p = Path(path)
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    out = {}
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        if f.is_file():
            out[f.relative_to(p).as_posix() if p.is_dir() else f.name] = [st.st_size, st.st_mtime_ns]
    return out


def digest(doc) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_shards(bags: list[BagInput], shard_seconds: float, progress_topic: str, run_key: str) -> list[Shard]:
    """Cut each bag into windows of `shard_seconds` (<= 0: whole bags). `progress_topic` is the topic whose
    messages count as frames; `run_key` the digest of configuration and models."""
    shards = []
    for bag in bags:
        facts = _bag_facts(bag.path, progress_topic)
        ident = digest(bag_identity(bag.path))
        if facts is None or shard_seconds <= 0:
            windows = [(None, None)]
        else:
            start, end, _ = facts
            step = max(1, round(shard_seconds * 1e9))
            n = max(1, math.ceil((end + 1 - start) / step))
            windows = [(start + k * step, end + 1 if k == n - 1 else start + (k + 1) * step) for k in range(n)] \
                if n > 1 else [(None, None)]
        total = facts[2] if facts else 0
        span = (facts[1] + 1 - facts[0]) if facts else 1
        for k, (a, b) in enumerate(windows):
            frames = total if a is None else round(total * (b - a) / span)
            key = digest({"run": run_key, "bag": bag.path, "identity": ident, "window": [a, b]})
            shards.append(Shard(bag, k, len(windows), a, b, frames, key))
    return shards


def shard_doc(shard: Shard) -> dict:
    return {**asdict(shard), "id": shard.id}
