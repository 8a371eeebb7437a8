"""A short, fixed slice of bench/soak.py: memory, threads and open files stay flat over frames and replays
(the record, 10,000 frames, is in BENCHMARKS.md)."""

import importlib.util

from test.conftest import REPO

spec = importlib.util.spec_from_file_location("soak", REPO / "bench" / "soak.py")
soak = importlib.util.module_from_spec(spec)
spec.loader.exec_module(soak)


def test_pipeline_slice_is_flat():
    r = soak.soak_pipeline(frames=80, every=10, cycle=4, log=lambda m: None)
    assert len(r["threads"]) == 1 and len(r["fds"]) == 1, r  # no thread or file descriptor left behind
    assert r["rss_end_mb"] - r["rss_start_mb"] < 25, r


def test_replay_slice_is_flat():
    r = soak.soak_replay(frames=12, every=3, bag_frames=3, log=lambda m: None)
    assert len(r["fds"]) == 1, r
    assert r["rss_end_mb"] - r["rss_start_mb"] < 60, r
