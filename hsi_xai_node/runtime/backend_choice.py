"""`backend="auto"`: the fastest engine this machine has for this graph, by measurement, remembered.

    choice = choose(engines, cache_dir)     # engines: backend name -> opened Engine
    choice.backend, choice.times_ms, choice.cached, choice.describe()

Which engine is fastest depends on the machine (OpenVINO beat ONNX Runtime CPU by 1.25-1.33x on an
AVX-512 Xeon and lost by 0.69x on an AVX2 EPYC, BENCHMARKS.md), on the graph (a small U-Net's forward
against a backward pass to the bottleneck) and on the thread count, so no fixed order is right. Each
candidate runs the graph a few times on the same fixed-seed feeds, interleaved round by round so a
noisy neighbour slows all of them alike; the one with the lowest median wins. The choice is cached
as JSON under `<cache_dir>/auto/` keyed by the graph bytes, the outputs read, the settings and the
machine's description (CPU model and instruction sets, core count, library versions), so the next
start on the same machine opens only the winner, and a different machine or library version
measures again. A cache file that cannot be read, is too large or says something impossible is
measured over, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._engine_base import Engine

log = logging.getLogger(__name__)

WARM_RUNS = 2  # untimed, per candidate (first-call allocations, OpenVINO's lazy init)
TIMED_ROUNDS = 5  # per candidate, interleaved
MAX_CACHE_FILE_BYTES = 64 * 1024  # a choice is a few hundred bytes
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16", "asimd", "sve")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hsi_xai_node"


def machine_description() -> dict:
    """What makes one engine faster than another here: CPU model and instruction sets, cores, versions."""
    cpu, flags = platform.processor() or "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f.read(1 << 20).splitlines():
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not cpu:
                    cpu = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    versions = {}
    for module in ("onnxruntime", "openvino", "tensorrt"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - absent or broken: not part of this machine's description
            continue
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return {"machine": platform.machine(), "cpu": cpu[:200], "instruction_sets": sorted(flags & set(_FLAGS)),
            "cores": cores, "versions": versions}


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    times_ms: dict[str, float]  # median engine call per candidate (empty: nothing to choose between)
    cached: bool = False  # read from the cache rather than measured by this process
    measured_at: str = ""
    reasons: dict[str, str] = field(default_factory=dict)  # backends that could not be opened, and why

    def describe(self) -> str:
        """One line for logs and /diagnostics."""
        if not self.times_ms:
            why = "; ".join(self.reasons.values())
            return f"auto: {self.backend}, the only backend available here" + (f" ({why})" if why else "")
        figures = ", ".join(f"{b} {t:.1f} ms" for b, t in sorted(self.times_ms.items(), key=lambda kv: kv[1]))
        origin = f"cached, measured {self.measured_at}" if self.cached else f"measured {self.measured_at}"
        return f"auto: {self.backend}, the fastest engine call here ({figures}; {origin})"


def cache_key(onnx_bytes: bytes, settings: dict, machine: dict) -> str:
    h = hashlib.sha256(onnx_bytes)
    h.update(json.dumps({"settings": settings, "machine": machine}, sort_keys=True).encode())
    return h.hexdigest()


def _cache_path(cache_dir, key: str) -> Path:
    return Path(cache_dir or default_cache_dir()) / "auto" / f"{key}.json"


def read_cached(cache_dir, key: str, candidates) -> BackendChoice | None:
    """The cached choice, or None when there is none or it is unusable (logged, never raised)."""
    path = _cache_path(cache_dir, key)
    try:
        if path.stat().st_size > MAX_CACHE_FILE_BYTES:
            raise ValueError(f"larger than {MAX_CACHE_FILE_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
        backend, times = data["backend"], data["times_ms"]
        if data.get("key") != key or backend not in candidates or not isinstance(times, dict) \
                or not all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in times.items()):
            raise ValueError("not a choice for this graph and machine")
        return BackendChoice(backend, {k: float(v) for k, v in times.items()}, cached=True,
                             measured_at=str(data.get("measured_at", ""))[:40])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        log.warning("backend choice cache %s unusable (%s): measuring again", path, str(exc)[:200])
        return None


def write_cached(cache_dir, key: str, choice: BackendChoice, machine: dict, settings: dict) -> None:
    path = _cache_path(cache_dir, key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"key": key, "backend": choice.backend, "times_ms": choice.times_ms,
                                   "measured_at": choice.measured_at, "machine": machine, "settings": settings},
                                  indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home: measure again next start rather than fail
        tmp.unlink(missing_ok=True)
        log.warning("backend choice not cached (%s): %s", path, exc)


def probe_feeds(engine: Engine, seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed-seed inputs of the engine's shapes and types (the cost of these graphs does not depend on values;
    integer inputs get zeros, which are valid pixel indices and class ids)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, spec in engine.inputs.items():
        if spec.dtype.kind == "f":
            feeds[name] = rng.random(spec.shape, dtype=np.float32).astype(spec.dtype)
        elif spec.dtype == np.uint16:
            feeds[name] = rng.integers(0, 1024, spec.shape, dtype=np.uint16)
        else:
            feeds[name] = np.zeros(spec.shape, spec.dtype)
    return feeds


def measure(engines: dict[str, Engine], outputs: list[str] | None = None, rounds: int = TIMED_ROUNDS,
            warm: int = WARM_RUNS) -> dict[str, float]:
    """Median ms of one engine call per engine, the engines interleaved round by round."""
    feeds = {name: probe_feeds(e) for name, e in engines.items()}
    for name, e in engines.items():
        for _ in range(warm):
            e.run(feeds[name], outputs)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, e in engines.items():
            t0 = time.perf_counter()
            e.run(feeds[name], outputs)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def choose(engines: dict[str, Engine], outputs: list[str] | None = None) -> BackendChoice:
    """The fastest of `engines` (by median engine call), measured now."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if len(engines) == 1:
        return BackendChoice(next(iter(engines)), {}, measured_at=stamp)
    times = measure(engines, outputs)
    return BackendChoice(min(times, key=times.get), times, measured_at=stamp)
