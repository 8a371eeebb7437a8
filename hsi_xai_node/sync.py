"""Approximate-time synchronisation of camera topics by header stamp.

message_filters cannot be installed here and the node needs only one simple policy, so it
is pure Python (testable without ROS). The first topic is the primary (the raw hyperspectral
camera): a primary message is emitted as soon as every other topic has a buffered message
within slop_ns of it, paired with the nearest such message per topic. Emitting at once,
rather than waiting in case a nearer message turns up, keeps latency to the frames at hand.
"""

from __future__ import annotations

from bisect import insort


class ApproximateTimeSync:
    """Pair each primary message with the nearest-stamped message of every other topic.

    `dropped[topic]` counts every message discarded without being matched: pushed out of a
    full queue, older than a match (never matchable again, since outputs go forward in time),
    or arriving after a newer primary was already emitted.
    """

    def __init__(self, topics: list[str], slop_ns: int, queue_size: int = 10):
        if not topics:
            raise ValueError("at least one topic is needed")
        if len(set(topics)) != len(topics):
            raise ValueError(f"duplicate topics in {topics}")
        if slop_ns < 0:
            raise ValueError(f"slop_ns must be >= 0, got {slop_ns}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.topics = list(topics)
        self.primary = self.topics[0]
        self.slop_ns = int(slop_ns)
        self.queue_size = int(queue_size)
        self._buffers: dict[str, list[tuple[int, object]]] = {t: [] for t in self.topics}  # sorted by stamp
        self._last_ns: int | None = None  # stamp of the last emitted primary
        self.matched = 0
        self.dropped = {t: 0 for t in self.topics}

    def add(self, topic: str, stamp_ns: int, msg) -> tuple[object, dict[str, object]] | None:
        """Buffer a message; return (primary_msg, {topic: msg}) when a match completes, else None."""
        if topic not in self._buffers:
            raise ValueError(f"unknown topic {topic!r}; expected one of {self.topics}")
        if self._last_ns is not None and stamp_ns < self._last_ns:
            self.dropped[topic] += 1  # emitting it would send outputs back in time
            return None
        buf = self._buffers[topic]
        # Sorted insert: networks may reorder a topic's messages; equal stamps keep arrival order.
        insort(buf, (stamp_ns, msg), key=lambda e: e[0])
        if len(buf) > self.queue_size:
            del buf[0]
            self.dropped[topic] += 1
        return self._match()

    def reset(self) -> None:
        """Forget buffered messages and the last match (the clock jumped back, e.g. a bag loops)."""
        for buf in self._buffers.values():
            buf.clear()
        self._last_ns = None

    def _nearest(self, topic: str, stamp_ns: int) -> int | None:
        buf = self._buffers[topic]
        # min keeps the first of equals: on a tie the earlier stamp wins.
        best = min(range(len(buf)), key=lambda i: abs(buf[i][0] - stamp_ns), default=None)
        if best is None or abs(buf[best][0] - stamp_ns) > self.slop_ns:
            return None
        return best

    def _match(self):
        # Oldest primary first, so emitted frames go forward in time.
        for p_index, (stamp, msg) in enumerate(self._buffers[self.primary]):
            chosen = {}
            for topic in self.topics[1:]:
                index = self._nearest(topic, stamp)
                if index is None:
                    break
                chosen[topic] = index
            else:
                return self._emit(p_index, stamp, msg, chosen)
        return None

    def _emit(self, p_index: int, stamp: int, msg, chosen: dict[str, int]):
        others = {topic: self._buffers[topic].pop(i)[1] for topic, i in chosen.items()}
        self._buffers[self.primary].pop(p_index)
        for topic, buf in self._buffers.items():
            keep = [e for e in buf if e[0] >= stamp]
            self.dropped[topic] += len(buf) - len(keep)
            buf[:] = keep
        self._last_ns = stamp
        self.matched += 1
        return msg, others
