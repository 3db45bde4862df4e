"""Coordinate values across files: the concat axis re-encoded as one, the others compared.

Files of one collection may write their time axis in different units ("days since
2001-01-01" in one, "hours since 2001-02-01" in the next). Each file's values are decoded
on their own, and the whole axis is re-encoded in the first file's units and calendar,
or, where those units cannot hold every value exactly, in finer units with the same
reference date.

Every other dimension coordinate (``lat``, ``lon``, ``level``) labels the data of each
file, and is served from the first file only: :func:`labels_difference` tells where a
file's labels differ from the first file's (values, and units or calendar where they
change the meaning), so that the combine refuses instead of relabelling.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, NamedTuple

import numpy as np

from .errors import IncompatibleSourcesError

__all__ = [
    "is_cf_time",
    "decode_values",
    "encode_times",
    "Labels",
    "labels_difference",
    "storable",
]

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


#: Calendars xarray decodes to ``datetime64`` alike (dates after 1582 agree).
_GREGORIAN = {None, "standard", "gregorian", "proleptic_gregorian"}


def check_calendars(name: str, paths: list[str], attrs: list[dict[str, Any]]) -> None:
    """Refuse CF times whose calendars differ between files (``noleap`` and ``standard``
    dates cannot be compared, nor joined into one axis), naming two such files."""
    seen: dict[str, str] = {}
    for path, a in zip(paths, attrs):
        if not is_cf_time(a):
            continue
        calendar = a.get("calendar")
        kind = "standard" if calendar in _GREGORIAN else str(calendar).lower()
        seen.setdefault(kind, path)
        if len(seen) > 1:
            (first_kind, first_path), (other_kind, other_path) = list(seen.items())[:2]
            raise IncompatibleSourcesError(
                f"coordinate {name!r} has calendar {first_kind!r} in {first_path} and "
                f"{other_kind!r} in {other_path}: dates of two calendars cannot share an axis"
            )


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


# -- the other dimension coordinates: equal in every file, or refused ---------------------


class Labels(NamedTuple):
    """One file's values of a dimension coordinate, for :func:`labels_difference`.

    Attributes
    ----------
    source
        The file, as named in messages.
    values
        The raw (not CF-decoded) values.
    attrs
        The coordinate's attributes in that file.
    """

    source: str
    values: np.ndarray
    attrs: dict[str, Any]


def storable(values: np.ndarray) -> np.ndarray | None:
    """Coordinate values as the scan cache can keep them: variable-length strings (object
    arrays) as fixed-width ones; None for other objects, which it cannot keep."""
    values = np.asarray(values)
    if values.dtype.kind != "O":
        return values
    # a scalar text value may come wrapped in 0-d arrays: unwrap them
    flat = [
        v.item() if isinstance(v, np.ndarray) and v.size == 1 else v
        for v in values.reshape(-1).tolist()
    ]
    while any(isinstance(v, np.ndarray) and v.size == 1 for v in flat):
        flat = [v.item() if isinstance(v, np.ndarray) and v.size == 1 else v for v in flat]
    for kind in (str, bytes):
        if all(isinstance(v, kind) for v in flat):
            return np.asarray(flat, dtype=kind).reshape(values.shape)
    return None


def _native(values: np.ndarray) -> np.ndarray:
    return values if values.dtype.isnative else values.astype(values.dtype.newbyteorder("="))


def _nan(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "fcmM":
        return np.isnan(values)
    return np.zeros(values.shape, dtype=bool)


def _equal_elements(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Which elements are equal (NaN equals NaN; numbers of other dtypes compared exactly,
    as Python numbers); None where the two dtypes cannot be compared."""
    a, b = _native(a), _native(b)
    numeric = "biuf"
    if a.dtype == b.dtype and a.dtype.kind != "O":
        same = np.asarray(a == b, dtype=bool)
    elif a.dtype.kind in numeric and b.dtype.kind in numeric:
        # float32 vs float64, int vs float: equal only where the numbers are (Python's
        # int/float comparison is exact; a numpy cast could round both sides alike)
        same = np.asarray(a.astype(object) == b.astype(object), dtype=bool)
    elif a.dtype.kind == b.dtype.kind and a.dtype.kind in "SUMO":
        try:
            same = np.asarray(a == b, dtype=bool)
        except (TypeError, ValueError):  # cftime dates of different calendars
            return None
    else:
        return None
    return same | (_nan(a) & _nan(b))


def _show(value: Any) -> str:
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return repr(value.item())
    return str(value)


def _comparable(a: Labels, b: Labels) -> tuple[np.ndarray, np.ndarray, str] | str:
    """The values to compare (decoded times where their encodings differ) and what makes
    them incomparable if their dtypes do; or the reason they cannot be compared."""
    units_a, units_b = a.attrs.get("units"), b.attrs.get("units")
    time_a, time_b = is_cf_time(a.attrs), is_cf_time(b.attrs)
    if not (time_a or time_b):
        if units_a != units_b:
            return f"units {units_a!r} vs {units_b!r}"
        return a.values, b.values, ""
    encoding_a = (units_a, a.attrs.get("calendar"))
    encoding_b = (units_b, b.attrs.get("calendar"))
    if time_a and time_b and encoding_a == encoding_b:
        return a.values, b.values, ""
    why = f"units/calendar {encoding_a} vs {encoding_b}"
    if not (time_a and time_b):
        return why
    try:
        return decode_values(a.values, a.attrs), decode_values(b.values, b.attrs), why
    except Exception:  # an encoding xarray cannot decode: its values cannot be compared
        return why


def labels_difference(name: str, first: Labels, other: Labels) -> str | None:
    """How ``other``'s values of a dimension coordinate differ from ``first``'s, or None.

    Values are compared NaN-aware and exactly: float32 and float64 labels agree where every
    float32 value equals its float64 counterpart (0.5 does, 0.1 does not), as xarray's
    index comparison has it. Different non-time ``units`` are a difference; CF times are
    compared decoded where their units or calendar differ.

    Parameters
    ----------
    name
        The coordinate's path, for the message.
    first, other
        The two files' values and attributes.

    Returns
    -------
    str or None
        ``"coordinate 'lat' differs between a.nc and b.nc: a.nc[0] = 10.0, b.nc[0] = 10.5"``,
        or None if they agree.
    """
    head = f"coordinate {name!r} differs between {first.source} and {other.source}"
    a, b = np.asarray(first.values), np.asarray(other.values)
    if a.shape != b.shape:
        return f"{head}: shape {a.shape} vs {b.shape}"
    found = _comparable(first, other)
    if isinstance(found, str):
        return f"{head}: {found}"
    a, b = np.asarray(found[0]), np.asarray(found[1])
    same = _equal_elements(a, b)
    if same is None:
        return f"{head}: {found[2] or f'dtype {a.dtype} vs {b.dtype}'}"
    if bool(np.all(same)):
        return None
    at = np.unravel_index(int(np.argmin(same.reshape(-1))), a.shape)
    where = "[" + ", ".join(str(int(i)) for i in at) + "]"
    numbers = a.dtype.kind in "biuf" and b.dtype.kind in "biuf"
    differ = numbers and _native(a).dtype != _native(b).dtype
    kinds = f" ({a.dtype} vs {b.dtype})" if differ else ""
    return (
        f"{head}: {first.source}{where} = {_show(a[at])}, "
        f"{other.source}{where} = {_show(b[at])}{kinds}"
    )
