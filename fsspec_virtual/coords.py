"""The concat coordinate: decode each file's values (CF time), re-encode them as one.

Files of one collection may write their time axis in different units ("days since
2001-01-01" in one, "hours since 2001-02-01" in the next). Each file's values are decoded
on their own, and the whole axis is re-encoded in the first file's units and calendar,
or, where those units cannot hold every value exactly, in finer units with the same
reference date.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np

__all__ = ["is_cf_time", "decode_values", "encode_times"]

_UNIT_WORDS = ("days", "hours", "minutes", "seconds", "milliseconds", "microseconds")
_SINCE = re.compile(r"^\s*(\w+)\s+since\s+(.+)$", re.IGNORECASE)


def is_cf_time(attrs: dict[str, Any]) -> bool:
    """Whether the attributes describe a CF time coordinate (``units = "X since T"``)."""
    units = attrs.get("units")
    return isinstance(units, str) and _SINCE.match(units) is not None


def decode_values(raw: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    """The comparable values of one file's coordinate: decoded times, or the raw values."""
    if not is_cf_time(attrs):
        return raw
    from xarray.coding.times import decode_cf_datetime

    return np.asarray(decode_cf_datetime(raw, attrs["units"], attrs.get("calendar")))


def decode_many(raws: list[np.ndarray], attrs: list[dict[str, Any]]) -> list[np.ndarray]:
    """:func:`decode_values` of many files' coordinates, one decode per distinct encoding
    (thousands of files usually share their units: one call instead of thousands)."""
    out: list[np.ndarray | None] = [None] * len(raws)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (raw, a) in enumerate(zip(raws, attrs)):
        key = (a.get("units"), a.get("calendar"), np.asarray(raw).dtype.str)
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        joined = np.concatenate([np.asarray(raws[i]).reshape(-1) for i in members])
        decoded = decode_values(joined, attrs[members[0]])
        at = 0
        for i in members:
            n = np.asarray(raws[i]).size
            out[i] = decoded[at : at + n].reshape(np.shape(raws[i]))
            at += n
    return [o for o in out if o is not None]


def _finer_units(units: str) -> list[str]:
    match = _SINCE.match(units)
    assert match is not None
    word, reference = match.group(1).lower(), match.group(2)
    start = _UNIT_WORDS.index(word) + 1 if word in _UNIT_WORDS else 0
    return [f"{w} since {reference}" for w in _UNIT_WORDS[start:]]


def _round_trips(encoded: np.ndarray, dates: np.ndarray, units: str, calendar: str | None) -> bool:
    from xarray.coding.times import decode_cf_datetime

    back = np.asarray(decode_cf_datetime(encoded, units, calendar))
    return back.shape == dates.shape and bool(np.all(back == dates))


def encode_times(
    dates: np.ndarray, units: str, calendar: str | None, dtype: np.dtype
) -> tuple[np.ndarray, str]:
    """Encode decoded times in ``units`` (or finer units with the same reference date).

    Parameters
    ----------
    dates
        Decoded times (``datetime64`` or cftime objects).
    units, calendar
        The first file's CF units and calendar.
    dtype
        The first file's dtype for the coordinate; kept where every value fits it exactly.

    Returns
    -------
    values, units
        The encoded values, and the units they are in.
    """
    from xarray.coding.times import encode_cf_datetime

    # the first file's units and dtype; else finer units in integers; else floats
    attempts = [(units, dtype)]
    attempts += [(finer, np.dtype("int64")) for finer in _finer_units(units)]
    attempts += [(units, np.dtype("float64"))]
    for candidate, target in attempts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoded, _, _ = encode_cf_datetime(dates, candidate, calendar)
        encoded = np.asarray(encoded)
        with np.errstate(invalid="ignore", over="ignore"):
            cast = encoded.astype(target)
        if np.array_equal(cast, encoded) and _round_trips(cast, dates, candidate, calendar):
            return cast, candidate
    raise ValueError(f"cannot encode the combined times exactly in units derived from {units!r}")
