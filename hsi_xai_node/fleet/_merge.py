"""A bag's shard outputs joined into the one bag `hsi-xai replay` would have written, atomically.

Shards own disjoint, ordered time windows, so their messages are copied in shard order. The one
thing shards repeat is a legend (latched, published on a shard's first frame): a legend whose picture
is the previous one's on its topic is dropped, as the whole-bag replay never sends one twice.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..transports import messages as m
from ..transports.drive_bag import STORAGE
from ..transports.output_dir import make_partial, remove_replaceable, write_marker

SUMMARY = "summary.json"  # a bag summary beside its bag files


def _copy_into(writer, sources: list[Path]) -> int:
    from rosbags.rosbag2 import Reader

    conns, last_legend, written = {}, {}, 0
    for src in sources:
        with Reader(src) as reader:
            for c in reader.connections:
                key = (c.topic, c.msgtype)
                if key not in conns:
                    conns[key] = writer.add_connection(
                        c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest,
                        offered_qos_profiles=list(getattr(c.ext, "offered_qos_profiles", ()) or ()))
            for c, t, data in reader.messages():
                if c.topic.endswith("/legend"):  # the picture decides, not the header (each shard's own stamp)
                    msg = m.deserialize(data, c.msgtype)
                    picture = (msg.height, msg.width, msg.encoding, bytes(msg.data))
                    if last_legend.get(c.topic) == picture:
                        continue
                    last_legend[c.topic] = picture
                writer.write(conns[(c.topic, c.msgtype)], t, data)
                written += 1
    return written


def publish_bag(shard_bags: list[Path], out: Path, storage: str, summary: dict, marker: dict) -> Path:
    """Write the joined bag (or move a bag's only shard) to `out`, with its summary and marker, through a
    temporary sibling renamed into place: `out` is either complete or absent."""
    out = Path(out)
    tmp = make_partial(out, "hsi-xai fleet")
    try:
        bag = tmp / out.name
        if len(shard_bags) == 1:
            shutil.move(str(shard_bags[0]), bag)
        else:
            from rosbags.rosbag2 import Writer

            with Writer(bag, version=9, storage_plugin=STORAGE[storage]) as writer:
                _copy_into(writer, shard_bags)
        write_marker(bag, "hsi-xai fleet", **marker)
        (bag / SUMMARY).write_text(json.dumps(summary, indent=1, default=str))
        remove_replaceable(out)
        bag.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
