"""`hsi-xai fleet IN OUT`: every bag under IN through the pipeline on Ray, local by default.

    summary = run_fleet("recordings/", "fleet_out", load_config(backend="ort-cpu"), workers=2)

Bags are cut into shards (time windows, `shard_seconds`); ShardWorker actors (one per CPU, or per
GPU for GPU backends; each builds its engines once) replay the shards; when all shards of a bag are
done a worker joins them into `OUT/<bag>` (the bag `hsi-xai replay` writes, plus `summary.json`).
A shard that fails (unreadable bag) is recorded with its reason and the run goes on; a worker that
dies is restarted by Ray and its shard retried. `resume=True` keeps every shard whose result was
made from the same bag, configuration and models. The report: `OUT/fleet.json`, `OUT/index.html`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError
from ..report_page import utc_now
from ..runtime.backend_choice import machine_description
from ..transports.config import NodeConfig, load_config
from ..transports.output_dir import check_space, disk_bytes, prepare_dir, read_marker
from ._inputs import Shard, digest, find_bags, plan_shards, shard_doc
from ._report import FLEET_JSON, write_report
from ._stats import merge_stats
from ._summary import bag_summary
from ._worker import CRASH_ENV, SHARD_BAG, ShardWorker, read_shard_result

TOOL = "hsi-xai fleet"
GPU_BACKENDS = ("tensorrt", "ort-trt", "ort-cuda")


@dataclass
class FleetSummary:
    output: str
    workers: int = 0
    bags: int = 0
    bags_done: int = 0
    bags_failed: int = 0
    shards: int = 0
    shards_run: int = 0
    shards_resumed: int = 0  # skipped: their results were there for the same bag, configuration and models
    shards_failed: int = 0
    frames_in: int = 0
    frames_processed: int = 0
    bad_total: int = 0
    ray_start_s: float = 0.0  # Ray's start-up (and the actors'), not counted in wall_s
    wall_s: float = 0.0
    fps: float = 0.0  # processed frames per second of wall time, over the fleet
    failures: list = field(default_factory=list)  # {"bag", "shard", "window", "reason"}

    def text(self) -> str:
        lines = [f"fleet -> {self.output}: {self.bags} bag(s), {self.bags_done} done, {self.bags_failed} failed; "
                 f"{self.shards} shard(s): {self.shards_run} run, {self.shards_resumed} resumed, "
                 f"{self.shards_failed} failed",
                 f"frames: {self.frames_in} in, {self.frames_processed} processed, {self.bad_total} bad messages; "
                 f"{self.fps:.2f} frames/s over {self.wall_s:.1f} s on {self.workers} worker(s) "
                 f"(+{self.ray_start_s:.1f} s Ray start-up)"]
        lines += [f"failed: {f['bag']} shard {f['shard']}: {f['reason']}" for f in self.failures]
        lines.append(f"report: {Path(self.output) / 'index.html'}")
        return "\n".join(lines)


def _file_sha(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hsi_xai_node")
    except PackageNotFoundError:
        return "unknown"


def run_identity(config: NodeConfig, storage: str, copy_raw: bool, prime_s: float, tail_s: float) -> dict:
    """What every output of the run depends on: configuration, model files (by content) and package."""
    seg, det = config.pipeline_config(), config.detection_config()
    files = {"model": seg.model, "card": seg.card or str(Path(seg.model).with_suffix(".json"))}
    if det is not None:
        files |= {"detector": det.model, "detector_card": det.card or str(Path(det.model).with_suffix(".json")),
                  "rig": det.rig}
    return {"config": asdict(config), "files": {k: _file_sha(v) for k, v in files.items()},
            "version": _package_version(), "storage": storage, "copy_raw": copy_raw, "prime_s": prime_s, "tail_s": tail_s}


def _listed(path: str) -> dict[str, int]:
    from rosbags.rosbag2 import Reader

    try:
        with Reader(path) as reader:
            counts: dict[str, int] = {}
            for c in reader.connections:
                counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
            return counts
    except Exception:  # noqa: BLE001 - a bag rosbags cannot open is read as a stream: no index to check
        return {}


def _wanted(config: NodeConfig, summaries: list[dict]) -> set[str]:
    topics = set()
    if any(s["model"] for s in summaries):
        topics |= {config.raw_topic, config.dark_topic, config.white_topic}
    if any(s["detection"] == "on" for s in summaries):
        topics |= set(config.multispectral_topics)
    return topics


def _model_facts(config: NodeConfig) -> dict:
    """The models a run used, with their cards' hashes (what the report names)."""
    from ..detection.card import DetectorCard
    from ..model_card import ModelCard

    seg = config.pipeline_config()
    out = {"model": seg.model, "model_sha256": ModelCard.load(seg.card or Path(seg.model).with_suffix(".json")).sha256}
    det = config.detection_config()
    if det is not None:
        out |= {"detector": det.model,
                "detector_sha256": DetectorCard.load(det.card or Path(det.model).with_suffix(".json")).sha256}
    return out


def _start_ray(workers: int | None, address: str | None, env: dict) -> bool:
    """Start (or join) Ray; True when this call started it (and so shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    # the workers see the fault-injection variable of the tests only through the runtime environment
    runtime_env = {"env_vars": env} if env else None
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
    else:  # a private local instance, on loopback only
        # Ray enables token authentication for every cluster and says so at every start: for a private instance
        # on loopback that line is noise (the authentication stays on)
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1", runtime_env=runtime_env)
    return True


def _check_output(out: Path, resume: bool, overwrite: bool) -> None:
    if (out / FLEET_JSON).exists() and not (resume or overwrite):
        raise InputError(f"fleet output {out} holds an earlier fleet run: pass --resume to continue it (shards "
                         "made with the same configuration are kept) or --overwrite to redo every shard")
    prepare_dir(out, TOOL, "fleet output")


def run_fleet(input, output, config: NodeConfig | None = None, workers: int | None = None,
              address: str | None = None, shard_seconds: float = 60.0, resume: bool = False,
              overwrite: bool = False, storage: str = "mcap", copy_raw: bool = True, progress: bool = True,
              prime_s: float = 2.0, tail_s: float = 1.0) -> FleetSummary:
    """Replay every bag of `input` (a directory searched recursively, or a manifest) into `output`."""
    try:
        import ray
    except ImportError:
        raise InputError("the fleet runs on Ray, which is not installed: pip install 'hsi_xai_node[fleet]' "
                         "(or `pip install ray`)") from None
    from tqdm import tqdm

    config = (config or load_config()).resolved()
    out = Path(output)
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    bags = find_bags(input, exclude=out)
    _check_output(out, resume, overwrite)
    # before Ray starts and the workers load their models: the outputs fit (about the inputs' size)
    check_space(out / "bags", sum(disk_bytes(b.path) for b in bags), "fleet output")
    run_key = digest(run_identity(config, storage, copy_raw, prime_s, tail_s))
    shards = plan_shards(bags, shard_seconds, config.raw_topic, run_key)
    by_bag: dict[str, list[Shard]] = {}
    for s in shards:
        by_bag.setdefault(s.bag.name, []).append(s)
    bag_keys = {name: digest([s.key for s in group]) for name, group in by_bag.items()}
    fs = FleetSummary(str(out), bags=len(bags), shards=len(shards))

    results: dict[str, dict] = {}
    published: set[str] = set()
    if resume:
        for name, group in by_bag.items():
            final = (read_marker(out / name) or {}).get("key") == bag_keys[name]
            for s in group:
                r = read_shard_result(s.directory(out))
                if (r and r.get("status") == "done" and r["shard"]["key"] == s.key
                        and (final or (s.directory(out) / SHARD_BAG).is_dir())):
                    results[s.id] = r
            if final and all(s.id in results for s in group):
                published.add(name)
        fs.shards_resumed = len(results)
    todo = deque(s for s in shards if s.id not in results)

    bag_docs: dict[str, dict] = {}
    bar = tqdm(total=sum(s.frames for s in shards), unit="frame", desc="fleet", disable=not progress)

    def frames_of(r: dict) -> int:
        s = r.get("summary") or {}
        return s.get("frames_in", 0) or s.get("camera_sets_in", 0)

    def finish_bag(name: str, publish_error: str = "") -> None:
        group = by_bag[name]
        rs = [results[s.id] for s in group]
        done = [r for r in rs if r["status"] == "done"]
        stats = merge_stats([r["stats"] for r in done])
        summaries = [r["summary"] for r in done]
        doc = {"name": name, "input": group[0].bag.path, "output": str(out / name), "shards": len(group),
               "status": "done" if len(done) == len(rs) and not publish_error else "failed",
               "failures": [{"bag": name, "shard": r["shard"]["index"], "window": [r["shard"]["start_ns"],
                             r["shard"]["end_ns"]], "reason": r["reason"]} for r in rs if r["status"] != "done"],
               "seconds": sum(r.get("seconds", 0.0) for r in rs)}
        if publish_error:
            doc["failures"].append({"bag": name, "shard": "join", "window": None, "reason": publish_error})
        doc["summary"] = bag_summary(summaries, stats, _listed(group[0].bag.path), _wanted(config, summaries)) \
            if summaries else None
        doc["worth_a_look"] = stats["worth_a_look"]
        if doc["status"] != "done":
            doc["output"] = None
        bag_docs[name] = doc

    started = False
    t_ray = time.perf_counter()
    env = {CRASH_ENV: os.environ[CRASH_ENV]} if os.environ.get(CRASH_ENV) else {}
    pending: dict = {}  # ObjectRef -> (actor, ("shard", Shard) | ("publish", bag name))
    publishing: set[str] = set()

    def ready_bags() -> list[str]:
        return [name for name, group in by_bag.items() if name not in published and name not in bag_docs
                and name not in publishing and all(s.id in results for s in group)]

    def next_job(actor) -> None:
        """Give a free actor the next thing to do: join a bag whose shards are all done, else a shard."""
        for name in ready_bags():
            group = by_bag[name]
            finish_bag(name)
            if bag_docs[name]["status"] == "done":  # all its shards done: join them
                marker = {"key": bag_keys[name], "input": group[0].bag.path, "config": asdict(config),
                          "shards": len(group)}
                publishing.add(name)
                ref = actor.publish.remote(group, str(out / name), bag_docs.pop(name)["summary"], marker)
                pending[ref] = (actor, ("publish", name))
                return
        if todo:
            shard = todo.popleft()
            pending[actor.process.remote(shard)] = (actor, ("shard", shard))

    try:
        for name in sorted(published):
            finish_bag(name)
            bar.update(sum(frames_of(results[s.id]) for s in by_bag[name]))
        if todo or ready_bags():
            started = _start_ray(workers, address, env)
            gpu = config.backend in GPU_BACKENDS or (config.backend == "auto"
                                                     and ray.cluster_resources().get("GPU", 0) >= 1)
            slots = int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1))
            n = max(1, min(workers or slots, len(todo) or 1))
            # Ray restarts a worker that dies (max_restarts) and runs its shard again (max_task_retries)
            worker = ray.remote(ShardWorker).options(num_cpus=1, num_gpus=1 if gpu else 0, max_restarts=2,
                                                     max_task_retries=2,
                                                     runtime_env={"env_vars": env} if env else None)

            def new_actor():
                return worker.remote(config, str(out), storage, copy_raw, prime_s, tail_s, 1)
            actors = [new_actor() for _ in range(n)]
            try:  # the actors are up with their engines built: what follows is the work
                ray.get([a.warm.remote() for a in actors])
            except ray.exceptions.RayTaskError as exc:  # a model that will not load: no shard could run
                raise InputError(f"fleet workers cannot start: {exc.cause if exc.cause else exc}") from None
            fs.workers = n
            fs.ray_start_s = time.perf_counter() - t_ray
            t0 = time.perf_counter()
            for a in actors:
                next_job(a)
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                actor, (kind, what) = pending.pop(ref)
                try:
                    value, error = ray.get(ref), ""
                except Exception as exc:  # noqa: BLE001 - the worker died more often than Ray restarts it
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    value, error = None, f"worker lost ({type(exc).__name__}: {first})"
                    actor = new_actor()
                if kind == "shard":
                    results[what.id] = value or {"shard": shard_doc(what), "status": "failed", "reason": error}
                    fs.shards_run += 1
                    bar.update(frames_of(results[what.id]))
                else:
                    publishing.discard(what)
                    if error:
                        finish_bag(what, publish_error=error)
                    else:
                        published.add(what)
                        finish_bag(what)
                failed = sum(1 for r in results.values() if r["status"] != "done")
                done_frames = sum(frames_of(r) for r in results.values())
                bar.set_postfix(fps=f"{done_frames / max(time.perf_counter() - t0, 1e-9):.2f}",
                                failed_shards=failed, bags_done=len(published))
                next_job(actor)
            fs.wall_s = time.perf_counter() - t0
        for name in ready_bags():  # bags with a failed shard, when nothing was left to run
            finish_bag(name)
    finally:
        bar.close()
        if started:
            ray.shutdown()

    docs = [bag_docs[b.name] for b in bags]
    fs.bags_done = sum(d["status"] == "done" for d in docs)
    fs.bags_failed = len(docs) - fs.bags_done
    fs.shards_failed = sum(1 for r in results.values() if r["status"] != "done")
    fs.failures = [f for d in docs for f in d["failures"]]
    fs.frames_in = sum((d["summary"] or {}).get("frames_in", 0) for d in docs)
    fs.frames_processed = sum((d["summary"] or {}).get("frames_processed", 0) for d in docs)
    fs.bad_total = sum((d["summary"] or {}).get("bad_total", 0) for d in docs)
    fs.fps = fs.frames_processed / fs.wall_s if fs.wall_s > 0 else 0.0
    write_report(out, fs, docs, {"input": str(input), "run_key": run_key, "shard_seconds": shard_seconds,
                                 "config": asdict(config), "models": _model_facts(config), "date": utc_now(),
                                 "workers": workers, "address": address or "a local Ray instance",
                                 "machine": machine_description()})
    return fs


# --- command line (declared in hsi_xai_node.cli) -----------------------------------------------------
def cmd_fleet(args) -> int:
    config = load_config(args.config, backend=args.backend)
    fs = run_fleet(args.input, args.output, config, workers=args.workers, address=args.address,
                   shard_seconds=args.shard_seconds, resume=args.resume, overwrite=args.overwrite,
                   storage=args.storage, copy_raw=not args.no_copy_raw, progress=not args.no_progress)
    print(fs.text())
    return 1 if fs.bags_failed else 0
