"""Latest-frame-only worker: no queue, dropped frames counted, bad input counted and survived."""

import threading
import time

from hsi_xai_node.errors import FrameError
from hsi_xai_node.runtime import LatestFrameWorker


def test_never_queues_and_counts_drops():
    done, gate = [], threading.Event()

    def slow(i):
        gate.wait(5)
        time.sleep(0.01)
        return i

    w = LatestFrameWorker(slow, lambda item, result: done.append(result))
    for i in range(20):
        w.submit(i)
        time.sleep(0.001)
    gate.set()
    assert w.idle(5)
    w.stop()
    s = w.stats
    assert s.received == 20 and s.processed == len(done)
    assert s.processed + s.dropped == 20 and s.dropped >= 17  # one in flight, one waiting, the rest replaced
    assert done == sorted(done) and done[-1] == 19  # newest frame always wins


def test_bad_input_is_counted_and_the_next_frame_processed():
    done, errors = [], []

    def process(i):
        if i == "bad":
            raise FrameError("frame is 10x10 but sensor profile 'hsi-drive' expects 1088x2048")
        return i

    w = LatestFrameWorker(process, lambda item, r: done.append(r), lambda item, e: errors.append(str(e)))
    w.submit("bad")
    assert w.idle(5)
    w.submit(7)
    assert w.idle(5)
    w.stop()
    assert done == [7] and w.stats.errors["FrameError"] == 1 and "expects 1088x2048" in w.stats.last_error
    assert errors and errors[0].startswith("frame is 10x10")
