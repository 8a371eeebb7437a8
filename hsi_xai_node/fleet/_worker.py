"""The fleet's worker: one per CPU (or GPU) slot, a Ray actor that builds its engines once and then
replays shard after shard, and joins a bag's shards when they are all done.

Each shard's replay writes `OUT/.shards/<bag>/<index>/bag` (atomically, as `hsi-xai replay` does) and
then `shard.json` (its summary, stats and thumbnails; written last, through a rename, so a shard.json
means the shard is complete). A bag is joined into `OUT/<bag>` by `publish`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ..errors import InputError
from ..files import read_json, write_atomic
from ..transports.config import NodeConfig
from ..transports.output_dir import clean_stale_partials
from ..transports.replay import ReplayModels, Window, _why, replay
from ._inputs import Shard, shard_doc
from ._merge import publish_bag
from ._stats import ShardStats

SHARD_RESULT = "shard.json"
SHARD_BAG = "bag"
# fault injection for the tests: a file path; the first worker to finish a frame while that file is absent
# creates it and exits at once, as a worker killed mid-shard would (Ray then restarts it and retries)
CRASH_ENV = "HSI_XAI_FLEET_TEST_CRASH"


def write_json_atomic(path: Path, doc: dict) -> None:
    write_atomic(path, json.dumps(doc, default=str).encode())


def read_shard_result(directory: Path) -> dict | None:
    try:
        doc = read_json(Path(directory) / SHARD_RESULT, "shard result", InputError)
    except InputError:
        return None
    return doc if isinstance(doc, dict) else None


def _crash_hook(observer):
    marker = os.environ.get(CRASH_ENV)
    if not marker:
        return observer

    def observe(kind, t, header, result):
        observer(kind, t, header, result)
        if not os.path.exists(marker):
            Path(marker).write_text(f"worker {os.getpid()} exited here on purpose\n")
            os._exit(3)
    return observe


class ShardWorker:
    def __init__(self, config: NodeConfig, out: str, storage: str = "mcap", copy_raw: bool = True,
                 prime_s: float = 2.0, tail_s: float = 1.0, threads: int = 1):
        self.config, self.out, self.storage, self.copy_raw = config, Path(out), storage, copy_raw
        self.prime_ns, self.tail_ns = round(prime_s * 1e9), round(tail_s * 1e9)
        self.models = ReplayModels(config, threads)

    def warm(self) -> int:
        """Build the engines now (model load, graph, engine), so that the first shard does not pay for it;
        returns the worker's process id."""
        self.models.pipeline()
        if self.config.detection_config() is not None:
            self.models.detector()
        return os.getpid()

    def process(self, shard: Shard) -> dict:
        """Replay one shard; a shard that cannot be replayed (unreadable bag, bad messages only, a model that
        will not load) comes back as failed with the reason, and the worker goes on with the next."""
        d = shard.directory(self.out)
        d.mkdir(parents=True, exist_ok=True)
        clean_stale_partials(d / SHARD_BAG)  # a killed attempt's temporary output (ours, by its marker)
        (d / SHARD_RESULT).unlink(missing_ok=True)
        stats = ShardStats(shard.bag.name)
        window = None if shard.start_ns is None else Window(shard.start_ns, shard.end_ns, self.prime_ns,
                                                            self.tail_ns)
        t0 = time.perf_counter()
        try:
            summary = replay(shard.bag.path, d / SHARD_BAG, self.config, storage=self.storage, progress=False,
                             overwrite=True, copy_raw=self.copy_raw, models=self.models, window=window,
                             observer=_crash_hook(stats))
        except Exception as exc:  # noqa: BLE001 - whatever stops a shard is its recorded reason; the run goes on
            result = {"shard": shard_doc(shard), "status": "failed", "reason": _why(exc),
                      "seconds": time.perf_counter() - t0, "worker": os.getpid()}
        else:
            result = {"shard": shard_doc(shard), "status": "done", "summary": summary.as_dict(),
                      "stats": stats.as_dict(self.models.segmentation_classes),
                      "seconds": time.perf_counter() - t0, "worker": os.getpid()}
        write_json_atomic(d / SHARD_RESULT, result)
        return result

    def publish(self, shards: list[Shard], out: str, summary: dict, marker: dict) -> str:
        """Join a bag's shard bags into `out` (atomically) and drop them (their shard.json stays)."""
        bags = [s.directory(self.out) / SHARD_BAG for s in sorted(shards, key=lambda s: s.index)]
        publish_bag(bags, Path(out), self.storage, summary, marker)
        for b in bags:
            shutil.rmtree(b, ignore_errors=True)
        return out
