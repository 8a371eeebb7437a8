"""Errors raised for bad input anywhere in the pipeline.

They subclass ValueError so callers that only care about "bad input" can catch one
thing; the transports (node, replay) catch `InputError` to count and report a bad
frame and move on to the next one.
"""


class InputError(ValueError):
    """Base class: the input (a file, a frame, a parameter) is unusable as given."""


class CalibrationError(InputError):
    """A calibration file or sensor profile is malformed, truncated or inconsistent."""


class FrameError(InputError):
    """A raw or reference frame does not match the sensor (size, dtype, values)."""


class RigError(InputError):
    """A camera rig file is malformed or physically impossible."""


class ConfigError(InputError):
    """A node or replay parameter (file) is malformed or out of range."""


def count_skipped(tally: dict, reason: str, first: str) -> None:
    """Count one skipped input under its reason, keeping the first one's message: reason -> {"count", "first"}
    (the replay's bad messages, the evaluation's unreadable files, the bag writer's wrong-sized frames)."""
    tally.setdefault(reason, {"count": 0, "first": first})["count"] += 1
