"""CF packing: how stored values become the values xarray shows (mask, scale, offset).

Pure: xarray's own coders do the decoding, so values and float types are what
``xr.open_dataset`` gives for the file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .codecs import fill_scalar
from .manifest import ArrayMeta

__all__ = ["PACKING_ATTRS", "is_packed", "unpack", "unpacked_dtype"]


#: Attributes that change how stored values decode (``_FillValue`` lives in the fill value).
PACKING_ATTRS = ("scale_factor", "add_offset", "missing_value", "_Unsigned")


def _typed(value: Any, dtype: str | None) -> Any:
    if dtype is None or isinstance(value, str):
        return value
    return (
        np.asarray(value, dtype=np.dtype(dtype))[()]
        if np.ndim(value) == 0
        else np.asarray(value, dtype=np.dtype(dtype))
    )


def _packing_attrs(meta: ArrayMeta, dtype: np.dtype) -> dict[str, Any]:
    """The attributes xarray's CF coders read, with the source's numpy types."""
    attrs = {
        name: _typed(meta.attrs[name], meta.attr_dtypes.get(name))
        for name in PACKING_ATTRS
        if name in meta.attrs
    }
    if meta.fill_value is not None:
        attrs["_FillValue"] = np.asarray(
            fill_scalar(meta), dtype=meta.attr_dtypes.get("_FillValue", dtype)
        )[()]
    return attrs


def unpack(values: np.ndarray, meta: ArrayMeta) -> np.ndarray:
    """``values`` of ``meta``'s array as xarray decodes them: masked, scaled, offset.

    xarray's own coders do it, so the result (values and float type) is what
    ``xr.open_dataset`` gives for this file.
    """
    import warnings

    import xarray as xr
    from xarray.coding.variables import CFMaskCoder, CFScaleOffsetCoder

    attrs = _packing_attrs(meta, values.dtype)
    variable = xr.Variable([f"d{i}" for i in range(values.ndim)], values, attrs=attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # xarray's "multiple fill values" notice
        for coder in (
            CFMaskCoder(decode_times=False, decode_timedelta=False),
            CFScaleOffsetCoder(decode_times=False, decode_timedelta=False),
        ):
            variable = coder.decode(variable)
        return np.asarray(variable.values)


def unpacked_dtype(meta: ArrayMeta) -> np.dtype:
    """The dtype :func:`unpack` gives for ``meta``'s array."""
    return unpack(np.zeros((0,) * max(len(meta.shape), 1), dtype=meta.dtype), meta).dtype


def is_packed(meta: ArrayMeta) -> bool:
    """Whether ``meta``'s stored values differ from its values (any packing attribute, or a
    fill value other than NaN, which decoding masks)."""
    masked = meta.fill_value not in (None, "NaN")
    return masked or any(name in meta.attrs for name in PACKING_ATTRS)
