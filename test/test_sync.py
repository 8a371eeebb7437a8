"""ApproximateTimeSync: hand-computed matches, drops and errors (stamps in ns; MS = 1 ms)."""

import pytest

from hsi_xai_node.sync import ApproximateTimeSync

MS = 1_000_000


def test_exact_match():
    sync = ApproximateTimeSync(["raw", "rgb"], slop_ns=0)
    assert sync.add("raw", 100 * MS, "r100") is None
    assert sync.add("rgb", 100 * MS, "c100") == ("r100", {"rgb": "c100"})
    assert sync.matched == 1
    assert sync.dropped == {"raw": 0, "rgb": 0}


def test_within_slop_boundary_inclusive():
    sync = ApproximateTimeSync(["raw", "rgb"], slop_ns=10 * MS)
    assert sync.add("rgb", 90 * MS, "c90") is None
    assert sync.add("raw", 100 * MS, "r100") == ("r100", {"rgb": "c90"})  # |100 - 90| = slop


def test_just_outside_slop_no_match():
    sync = ApproximateTimeSync(["raw", "rgb"], slop_ns=10 * MS)
    assert sync.add("raw", 100 * MS, "r100") is None
    assert sync.add("rgb", 110 * MS + 1, "c110+1ns") is None
    assert sync.add("rgb", 90 * MS - 1, "c90-1ns") is None
    assert sync.matched == 0


def test_secondaries_arriving_before_and_after_primary():
    sync = ApproximateTimeSync(["raw", "rgb", "mir"], slop_ns=5 * MS)
    assert sync.add("rgb", 98 * MS, "c98") is None  # before the primary
    assert sync.add("raw", 100 * MS, "r100") is None  # mir still missing
    assert sync.add("mir", 103 * MS, "m103") == ("r100", {"rgb": "c98", "mir": "m103"})  # after it
    assert sync.matched == 1


def test_nearest_stamp_chosen_and_older_dropped():
    sync = ApproximateTimeSync(["raw", "rgb"], slop_ns=10 * MS)
    for stamp in (92, 97, 105):
        assert sync.add("rgb", stamp * MS, f"c{stamp}") is None
    # distances 8, 3, 5 ms -> 97; 92 is older than the match, so it is dropped; 105 stays
    assert sync.add("raw", 100 * MS, "r100") == ("r100", {"rgb": "c97"})
    assert sync.dropped == {"raw": 0, "rgb": 1}
    assert sync.add("raw", 108 * MS, "r108") == ("r108", {"rgb": "c105"})


def test_nearest_tie_takes_the_earlier_stamp():
    sync = ApproximateTimeSync(["raw", "rgb"], slop_ns=10 * MS)
    sync.add("rgb", 105 * MS, "c105")
    sync.add("rgb", 95 * MS, "c95")  # out of arrival order on purpose
    assert sync.add("raw", 100 * MS, "r100") == ("r100", {"rgb": "c95"})


def test_queue_overflow_drops_oldest_and_counts():
    sync = ApproximateTimeSync(["raw", "rgb"], slop_ns=5 * MS, queue_size=3)
    for stamp in (10, 20, 30, 40):
        assert sync.add("rgb", stamp * MS, f"c{stamp}") is None
    assert sync.dropped == {"raw": 0, "rgb": 1}  # c10 pushed out
    assert sync.add("raw", 10 * MS, "r10") is None  # its partner c10 is gone
    # r20 matches c20; r10 is older than the match, so it is dropped too
    assert sync.add("raw", 20 * MS, "r20") == ("r20", {"rgb": "c20"})
    assert sync.dropped == {"raw": 1, "rgb": 1}


def test_primary_queue_overflow():
    sync = ApproximateTimeSync(["raw", "rgb"], slop_ns=0, queue_size=2)
    for stamp in (1, 2, 3):
        sync.add("raw", stamp * MS, f"r{stamp}")
    assert sync.dropped["raw"] == 1
    assert sync.add("rgb", 1 * MS, "c1") is None  # r1 was the one dropped
    assert sync.add("rgb", 2 * MS, "c2") == ("r2", {"rgb": "c2"})


def test_single_topic_matches_at_once():
    sync = ApproximateTimeSync(["raw"], slop_ns=0)
    assert sync.add("raw", 1 * MS, "a") == ("a", {})
    assert sync.add("raw", 2 * MS, "b") == ("b", {})
    assert sync.matched == 2
    assert sync.dropped == {"raw": 0}


def test_late_message_after_match_dropped_until_reset():
    sync = ApproximateTimeSync(["raw", "rgb"], slop_ns=0)
    sync.add("raw", 100 * MS, "r100")
    assert sync.add("rgb", 100 * MS, "c100") == ("r100", {"rgb": "c100"})
    assert sync.add("raw", 50 * MS, "r50") is None  # older than an emitted frame
    assert sync.dropped == {"raw": 1, "rgb": 0}
    sync.reset()  # e.g. a bag replay looped back
    sync.add("raw", 50 * MS, "r50")
    assert sync.add("rgb", 50 * MS, "c50") == ("r50", {"rgb": "c50"})


def test_interleaved_25_vs_30_fps_with_10ms_slop():
    # raw at 25 fps: 0, 40, ..., 400 ms; rgb at 30 fps: k * 33.333 ms (integer ns), 0..400 ms.
    raw = [i * 40 * MS for i in range(11)]
    rgb = [k * 100 * MS // 3 for k in range(13)]
    # By hand (|raw - nearest rgb| in ms): 0-0 (0), 40-33.3 (6.7), 80 (13.3: no), 120 (13.3: no),
    # 160-166.7 (6.7), 200-200 (0), 240-233.3 (6.7), 280 (13.3: no), 320 (13.3: no),
    # 360-366.7 (6.7), 400-400 (0). Pairs as (raw index, rgb index):
    expected = [(0, 0), (1, 1), (4, 5), (5, 6), (6, 7), (9, 11), (10, 12)]
    arrivals = sorted([(s, 0, "raw", i) for i, s in enumerate(raw)] +
                      [(s, 1, "rgb", k) for k, s in enumerate(rgb)])  # by stamp; raw first on ties
    sync = ApproximateTimeSync(["raw", "rgb"], slop_ns=10 * MS)
    got = []
    for stamp, _, topic, index in arrivals:
        out = sync.add(topic, stamp, index)
        if out is not None:
            got.append((out[0], out[1]["rgb"]))
    assert got == expected
    assert sync.matched == 7
    # Unmatched and older than a later match: raw 80, 120, 280, 320; rgb 66.7, 100, 133.3, 266.7, 300, 333.3.
    assert sync.dropped == {"raw": 4, "rgb": 6}


@pytest.mark.parametrize(("topics", "slop_ns", "queue_size"),
                         [([], 0, 10), (["raw"], -1, 10), (["raw", "raw"], 0, 10), (["raw"], 0, 0)])
def test_bad_construction(topics, slop_ns, queue_size):
    with pytest.raises(ValueError):
        ApproximateTimeSync(topics, slop_ns, queue_size)


def test_unknown_topic():
    sync = ApproximateTimeSync(["raw", "rgb"], slop_ns=0)
    with pytest.raises(ValueError, match="unknown topic"):
        sync.add("mir", 0, "m0")
