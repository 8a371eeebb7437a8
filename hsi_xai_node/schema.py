"""What every file schema of the package shares: constrained number types and one way to report a bad value.

Each file kind a user hands the product has one declared schema, checked by pydantic (v2):

    model card        model_card.ModelCardSchema         -> ModelError
    detector card     detection.card.DetectorCardSchema  -> ModelError
    camera rig        sensor.rig.RigSchema               -> RigError
    node / replay     transports.config.NodeConfig       -> ConfigError
    imec calibration  sensor.calibration_schema          -> CalibrationError

Why pydantic: the schemas are the classes the code already uses (typed fields with ranges, one
validator for what spans fields), its errors carry the field path, it parses the XML's number
strings with the same rules as JSON numbers ("3.7" is not an int, "1e400" is not finite), and it
is the best-kept library of its kind. `validation_message` turns its errors into one bounded line.
"""

from __future__ import annotations

import math
import reprlib
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationError

MAX_MESSAGE = 600  # characters: a hostile file must not make an error message of megabytes
MAX_SHOWN = 3  # errors listed in one message (the count of the rest is given)


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


Finite = Annotated[float, AfterValidator(_finite)]
PositiveFinite = Annotated[float, Field(gt=0), AfterValidator(_finite)]
NonNegativeFinite = Annotated[float, Field(ge=0), AfterValidator(_finite)]
Fraction = Annotated[float, Field(ge=0, le=1), AfterValidator(_finite)]
Byte = Annotated[int, Field(ge=0, le=255)]
PixelCount = Annotated[int, Field(ge=1, le=65535)]
def _printable_line(v: str) -> str:
    """Names end up in logs, reports, topic tables and HTML: printable, one line, no direction overrides."""
    bad = next((c for c in v if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")), None)
    if bad is not None:
        raise ValueError(f"must be printable text on one line (it holds {unicodedata.name(bad, f'U+{ord(bad):04X}')}"
                         f", U+{ord(bad):04X})")
    return v


Name = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_printable_line)]


_REPR = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_REPR.maxlevel, _REPR.maxtuple, _REPR.maxlist, _REPR.maxdict, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = 60, 40, 60


def _short(value, limit: int = 60) -> str:
    """The value shortened *before* it is formatted: a bounded walk (a few levels, a few items each), so a huge or
    deeply nested value costs microseconds, never its full repr."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def location(loc: tuple) -> str:
    """('classes', 2, 'id') -> 'classes[2].id'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validation_message(exc: ValidationError, what: str = "", field_prefix: str = "") -> str:
    """One line: `what`: field path: problem (got value); at most MAX_SHOWN errors, MAX_MESSAGE characters.
    `field_prefix` goes before each field path (e.g. "parameter ")."""
    errors = exc.errors(include_url=False)
    parts = []
    for e in errors[:MAX_SHOWN]:
        msg = e["msg"].removeprefix("Value error, ")
        got = "" if e["type"] in ("missing", "value_error", "assertion_error") else f" (got {_short(e.get('input'))})"
        where = f"{field_prefix}{location(e['loc'])}: " if e["loc"] else ""
        parts.append(f"{where}{msg}{got}")
    more = f"; and {len(errors) - MAX_SHOWN} more" if len(errors) > MAX_SHOWN else ""
    text = " ".join(((f"{what}: " if what else "") + "; ".join(parts) + more).splitlines())  # one line, always
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


def raise_as(cls, error: type[Exception], field_prefix: str = "", what: str = ""):
    """Make a pydantic dataclass's constructor raise `error` (one line naming the field) instead of
    pydantic's ValidationError, so callers catch the project's own error types (dataclasses.replace too)."""
    validating_init = cls.__init__

    def __init__(self, *args, **kwargs):
        try:
            validating_init(self, *args, **kwargs)
        except ValidationError as exc:
            raise error(validation_message(exc, what, field_prefix)) from None

    cls.__init__ = __init__
    return cls
