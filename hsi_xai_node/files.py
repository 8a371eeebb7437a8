"""Reading the JSON and YAML files a user hands the product: bounded before parsing, by parsers that cannot explode;
and writing the product's own files whole or not at all.

    doc = read_json(path, "model card", ModelError)      # a dict, list, ... or ModelError, one line
    doc = read_yaml(path, "rig file", RigError)
    write_atomic(path, data)                            # the whole file or, on failure, none of it

Every kind of file has a size limit (`LIMITS`, bytes), checked with `stat` before a byte is read, so a
50 MB parameter file is refused at once instead of parsed for minutes. Parsing is bounded too:

* integers of at most MAX_INT_DIGITS digits (Python itself refuses 4,300 with its own ValueError; no
  number in these files needs more than a few);
* nesting at most MAX_DEPTH levels (Python's JSON parser raises RecursionError near 1,000);
* at most MAX_ITEMS values in all (keys, items and scalars: a card holds a few hundred; a million unknown
  keys took 98 s and 1.6 GB to refuse);
* YAML: no aliases (`*name`). An alias bomb ("billion laughs") is a few hundred bytes that stand for 10^9
  values: PyYAML shares them, but anything that walks the result (the schema, an error message) expands
  them. None of these files needs an alias. YAML is read by LibYAML where PyYAML has it.

Each problem is the caller's error class with one line: `<what> <path>: <problem>`.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

MAX_INT_DIGITS = 40
MAX_DEPTH = 64
MAX_ITEMS = 100_000
# bytes, per kind of file: ten to a hundred times the largest such file the product ships or writes
LIMITS = {
    "model card": 1 << 20,  # the bundled cards are 9-12 KB
    "detector card": 1 << 20,
    "study": 4 << 20,  # models/*_study_*.json: 8-18 KB
    "rig file": 256 << 10,  # config/rig_default.yaml: 2 KB
    "config": 1 << 20,  # config/hsi_xai.yaml: 5 KB
    "bag metadata": 16 << 20,  # rosbag2 metadata.yaml: a few KB per topic and file
    "output marker": 64 << 10,  # the tool's own markers and shard results: under 2 KB
    "shard result": 64 << 20,  # per-frame figures of a fleet shard
}

_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


@lru_cache(maxsize=None)
def _yaml():
    """(yaml module, safe loader class, resolver), imported on first use: the command line's help stays light."""
    import yaml

    return yaml, getattr(yaml, "CSafeLoader", yaml.SafeLoader), yaml.resolver.Resolver()  # LibYAML when built


class _Refused(ValueError):
    """A bound of this module was exceeded (turned into the caller's error)."""


def read_bytes(path: str | Path, what: str, error: type[Exception], limit: int | None = None) -> bytes:
    """The file's bytes after its size was checked against `limit` (default: LIMITS[what])."""
    path = Path(path)
    limit = LIMITS[what] if limit is None else limit
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise error(f"{what} {path}: not a file")
        if size > limit:
            raise error(f"{what} {path}: {size} bytes, larger than any {what} ({limit} bytes at most)")
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise error(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None


def _text(data: bytes, what: str, path, error) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("+-"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _check_shape(doc) -> None:
    """Depth and number of values of a parsed document, walked without recursion."""
    items, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        items += 1
        if items > MAX_ITEMS:
            raise _Refused(f"more than {MAX_ITEMS} values")
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((c, depth + 1) for c in children)
            items += len(value) if isinstance(value, dict) else 0  # the keys


def loads_json(text: str, what: str, path, error: type[Exception]):
    """A JSON document within the bounds, or `error`."""
    pairs = [0]

    def count(items):  # each object's keys as they are parsed: a million keys stop at MAX_ITEMS, not after
        pairs[0] += len(items)
        if pairs[0] > MAX_ITEMS:
            raise _Refused(f"more than {MAX_ITEMS} keys")
        return dict(items)

    try:
        doc = json.loads(text, parse_int=_bounded_int, object_pairs_hook=count)
        _check_shape(doc)
        return doc
    except _Refused as exc:
        raise error(f"{what} {path}: refused: {exc}") from None
    except RecursionError:
        raise error(f"{what} {path}: refused: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # json.JSONDecodeError is one
        raise error(f"{what} {path}: not valid JSON ({str(exc)[:200]})") from None


def read_json(path: str | Path, what: str, error: type[Exception], limit: int | None = None):
    return loads_json(_text(read_bytes(path, what, error, limit), what, path, error), what, path, error)


def _check_yaml_events(text: str) -> None:
    """Refuse aliases, deep nesting, too many values and over-long numbers before anything is built."""
    yaml, loader, resolver = _yaml()
    depth = items = 0
    for event in yaml.parse(text, Loader=loader):  # plain scalars: style None (PyYAML) or "" (LibYAML)
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"line {event.start_mark.line + 1}: an alias (*{event.anchor}); aliases are not "
                           "allowed in this file")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(f"line {event.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        if isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            items += 1
            if items > MAX_ITEMS:
                raise _Refused(f"more than {MAX_ITEMS} values")
        if isinstance(event, yaml.ScalarEvent) and not event.style and len(event.value) > MAX_INT_DIGITS \
                and resolver.resolve(yaml.ScalarNode, event.value, (True, False)) in _NUMBER_TAGS:
            raise _Refused(f"line {event.start_mark.line + 1}: a number of {len(event.value)} characters "
                           f"(at most {MAX_INT_DIGITS})")


def loads_yaml(text: str, what: str, path, error: type[Exception]):
    """A YAML document (safe types only) within the bounds, or `error`."""
    yaml, loader, _ = _yaml()
    try:
        _check_yaml_events(text)
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)
    except _Refused as exc:
        raise error(f"{what} {path}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    except (ValueError, RecursionError) as exc:  # a constructor's own (a date out of range, ...)
        raise error(f"{what} {path}: not valid YAML ({str(exc)[:200]})") from None


def read_yaml(path: str | Path, what: str, error: type[Exception], limit: int | None = None):
    return loads_yaml(_text(read_bytes(path, what, error, limit), what, path, error), what, path, error)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: into a temporary sibling (named for this process, so writers in
    several processes do not meet), then renamed over `path`; the temporary file never outlives a failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
