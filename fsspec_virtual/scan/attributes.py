"""Attribute values as netCDF readers show them, in a form Zarr's JSON can hold.

kerchunk's own conversion loses information: NetCDF3 numbers become strings, an empty
text attribute becomes ``" "``, and NetCDF3's ``_FillValue``/``missing_value`` are
dropped. Scanners re-read attributes from the source and convert them here.
"""

from __future__ import annotations

import base64
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "json_value",
    "json_attributes",
    "attribute_dtypes",
    "zarr_fill_value",
    "fill_value_problem",
    "numeric_fill_problem",
    "left_out_messages",
]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def json_value(value: Any) -> Any:
    """One attribute value as netCDF4-python returns it, made JSON-encodable.

    Text (bytes or str, fixed or variable length) becomes ``str``; a one-element array
    becomes its element (netCDF has no scalar attributes, and netCDF4-python unwraps
    them); other arrays become lists. NaN and infinities stay floats.
    """
    if isinstance(value, (bytes, str)):
        return _text(value)
    if type(value).__name__ == "Empty":  # h5py.Empty: a null-dataspace attribute
        return ""
    if isinstance(value, (np.generic, np.ndarray)):
        array = np.asarray(value)
        if array.dtype.kind in "SUO":
            items = [_text(v) if isinstance(v, (bytes, str)) else str(v) for v in array.flat]
            return items[0] if array.size == 1 else items
        if array.dtype.kind == "b":
            array = array.astype(np.int8)
        if array.dtype.kind not in "iuf":
            raise TypeError(f"attribute of dtype {array.dtype} has no JSON form")
        return array.reshape(-1)[0].item() if array.size == 1 else array.reshape(-1).tolist()
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    raise TypeError(f"attribute of type {type(value).__name__} has no JSON form")


def json_attributes(
    source: Mapping[str, Any], names: Iterable[str] | None = None
) -> dict[str, Any]:
    """``source``'s attributes (only ``names`` if given) as JSON-encodable values.

    Attributes whose type has no JSON form (references, compound values) are left out;
    the scanners' callers have already decided which names to keep.
    """
    keep = list(source.keys()) if names is None else [n for n in names if n in source]
    out: dict[str, Any] = {}
    for name in keep:
        try:
            out[name] = json_value(source[name])
        except (TypeError, OSError):
            continue
    return out


def attribute_dtypes(source: Mapping[str, Any], names: Iterable[str]) -> dict[str, str]:
    """The numpy dtype (``"<f4"``) of each numeric attribute among ``names``.

    JSON keeps an attribute's value but not its width; xarray's unpacking chooses its
    float type from ``scale_factor``'s, so computed chunks need it.
    """
    out = {}
    for name in names:
        if name in source:
            value = source[name]
            if isinstance(value, (np.generic, np.ndarray)) and value.dtype.kind in "iuf":
                out[name] = value.dtype.str
    return out


def _exactly(item: np.generic, dtype: np.dtype) -> bool:
    """Whether the number ``item`` is a value of ``dtype``, unchanged by the conversion."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns of the casts this refuses
        with np.errstate(all="ignore"):
            converted = np.asarray(item).astype(dtype).reshape(-1)[0].item()
    value = item.item()
    if isinstance(value, float) and math.isnan(value):
        return isinstance(converted, float) and math.isnan(converted)
    return bool(converted == value)


def fill_value_problem(value: Any, dtype: np.dtype) -> str | None:
    """Why a ``_FillValue`` attribute cannot be the Zarr ``fill_value`` of a numeric
    variable of ``dtype`` (kind ``b``, ``i``, ``u``, ``f`` or ``c``), or None if it can.

    It must be one number that ``dtype`` holds exactly: an array of two values, text or
    an empty array make the whole store's metadata unreadable to zarr, and a value
    changed by the conversion (``1e20`` as ``float32``) would mask other values than a
    direct read masks.
    """
    array = np.asarray(value)
    shown = json_value(value) if array.dtype.kind in "SUO" else array.tolist()
    said = f"its _FillValue attribute ({shown!r}, {array.dtype})"
    if array.size != 1:
        return f"{said} is {array.size} values, not one"
    if array.dtype.kind not in "biufc":
        return f"{said} is not a number"
    if (array.dtype.kind == "c") != (dtype.kind == "c") or (array.dtype.kind == "b") != (
        dtype.kind == "b"
    ):
        # readers disagree on such a fill (netCDF4 ignores it, h5netcdf masks with it)
        return f"{said} is not of the variable's kind of number ({dtype})"
    if not _exactly(array.reshape(-1)[0], dtype):
        return f"{said} is not a value of the variable's type {dtype}"
    return None


def numeric_fill_problem(attrs: Mapping[str, Any], dtype: np.dtype) -> str | None:
    """:func:`fill_value_problem` of a variable's attributes ``attrs``: None where the
    variable is not numeric or has no ``_FillValue``."""
    if dtype.kind not in "biufc" or "_FillValue" not in attrs:
        return None
    return fill_value_problem(attrs["_FillValue"], dtype)


def left_out_messages(manifest: Any) -> list[str]:
    """A warning message for each variable ``manifest.skipped`` leaves out of its file."""
    url = manifest.urls[0]
    return [f"{url}: variable {path!r} left out: {why}" for path, why in manifest.skipped.items()]


def zarr_fill_value(value: Any, dtype: np.dtype | None = None) -> Any:
    """A ``_FillValue`` attribute as Zarr v2's ``fill_value`` JSON spells it.

    For an array of fixed-length bytes (``dtype`` of kind ``S``) that is the base64 of
    the value's bytes; xarray masks whatever it decodes to.
    """
    if dtype is not None and dtype.kind == "S":
        first = np.asarray(value).reshape(-1)[:1]
        raw = first.astype(dtype).tobytes() if first.size else b""
        return base64.standard_b64encode(raw.rstrip(b"\x00")).decode("ascii")
    value = json_value(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value
