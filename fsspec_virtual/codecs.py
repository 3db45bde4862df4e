"""Encoding chunks with an array's declared codec pipeline (numcodecs, Zarr v2 order)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import numcodecs
import numpy as np

from .manifest import ArrayMeta

__all__ = [
    "encode_chunk",
    "decode_chunk",
    "decoded_bytes",
    "unshuffled",
    "serves_decoded",
    "fill_scalar",
    "filled",
]


#: Settings that make a codec encode fastest while its decoder stays the same: a zlib
#: stream of stored blocks, say, is still a zlib stream. Computed chunks are encoded so.
_FASTEST = {
    "zlib": {"level": 0},
    "gzip": {"level": 0},
    "blosc": {"clevel": 0},
    "zstd": {"level": 1},
    "bz2": {"level": 1},
    "lzma": {"preset": 0},
}


def _fastest(config: dict[str, object]) -> dict[str, object]:
    return {**config, **_FASTEST.get(str(config.get("id")), {})}


def encode_chunk(data: np.ndarray, meta: ArrayMeta, *, fastest: bool = False) -> bytes:
    """Encode one full chunk of ``meta``'s array: filters, then the compressor.

    With ``fastest``, compressors run at their fastest setting (zlib and gzip store,
    blosc copies): any decoder of the declared codec reads the result.
    """
    encoded: object = np.ascontiguousarray(data, dtype=meta.numpy_dtype)
    for config in meta.filters or ():
        config = _fastest(dict(config)) if fastest else dict(config)
        encoded = numcodecs.get_codec(config).encode(encoded)
    if meta.compressor is not None:
        config = _fastest(dict(meta.compressor)) if fastest else dict(meta.compressor)
        encoded = numcodecs.get_codec(config).encode(encoded)
    return bytes(memoryview(encoded))  # type: ignore[arg-type]


def decode_chunk(raw: bytes, meta: ArrayMeta) -> np.ndarray:
    """Decode one chunk of ``meta``'s array into an array of the chunk shape."""
    decoded: object = raw
    if meta.compressor is not None:
        decoded = numcodecs.get_codec(dict(meta.compressor)).decode(decoded)
    for config in reversed(meta.filters or ()):
        decoded = numcodecs.get_codec(dict(config)).decode(decoded)
    dtype = meta.numpy_dtype
    out = np.asarray(decoded) if dtype.kind == "O" else np.frombuffer(decoded, dtype=dtype)  # type: ignore[call-overload]
    return out.reshape(meta.chunks)


def serves_decoded(meta: ArrayMeta) -> bool:
    """Whether a store that decodes (``decode="store"``) serves ``meta``'s chunks decoded.

    Arrays with a codec pipeline and a fixed-size dtype: their decoded chunk is the array's
    values as bytes, which a ``.zarray`` without codecs describes exactly. Object arrays
    (strings) keep their codecs, which zarr needs to build the objects.
    """
    return bool(meta.compressor or meta.filters) and meta.numpy_dtype.kind != "O"


def unshuffled(data: Any, elementsize: int) -> Any:
    """``data`` (bytes-like) with numcodecs' ``Shuffle(elementsize)`` undone: the same bytes
    as ``Shuffle(elementsize).decode(data)``, copied by numpy, which releases the GIL
    (numcodecs' own loop holds it, so two threads unshuffle no faster than one).

    Raises
    ------
    ValueError
        If ``data`` is not a whole number of elements (as numcodecs does).
    """
    if elementsize <= 1:
        return data
    planes = np.frombuffer(data, dtype=np.uint8)
    if planes.size % elementsize:
        raise ValueError("Shuffle buffer is not an integer multiple of elementsize")
    count = planes.size // elementsize
    planes = planes.reshape(elementsize, count)
    out = np.empty((count, elementsize), dtype=np.uint8)
    for byte in range(elementsize):
        # one strided pass per byte of an element, reading its plane contiguously
        # (a transposed copy reads across the planes instead: four times slower)
        out[:, byte] = planes[byte]
    return out


def _decode_step(config: dict[str, Any], data: Any, size: int) -> Any:
    """One codec of a pipeline undone. zlib and shuffle, the pair HDF5 files hold most,
    run without the GIL (the standard library's zlib releases it; see :func:`unshuffled`);
    ``size``, the decoded chunk's size, sizes zlib's output buffer at once."""
    codec_id = config.get("id")
    if codec_id == "zlib":
        return zlib.decompress(data, zlib.MAX_WBITS, size)
    if codec_id == "shuffle":
        return unshuffled(data, int(config.get("elementsize", 4)))
    return numcodecs.get_codec(dict(config)).decode(data)


def _decode_steps(meta: ArrayMeta) -> Sequence[dict[str, Any]]:
    steps: list[dict[str, Any]] = [meta.compressor] if meta.compressor is not None else []
    return steps + list(reversed(meta.filters or ()))


def decoded_bytes(raw: bytes, meta: ArrayMeta) -> bytes:
    """One chunk of ``meta``'s array decoded, as the bytes a codec-less ``.zarray`` reads:
    byte for byte what :func:`decode_chunk` decodes.

    Raises
    ------
    ValueError
        If the decoded chunk is not a full chunk of the array's dtype (never served cut).
    """
    if meta.numpy_dtype.kind == "O":
        return decode_chunk(raw, meta).tobytes()
    size = math.prod(meta.chunks) * meta.numpy_dtype.itemsize
    data: Any = raw
    for config in _decode_steps(meta):
        data = _decode_step(config, data, size)
    out = data if isinstance(data, bytes) else bytes(memoryview(data))
    if len(out) != size:
        raise ValueError(
            f"a chunk decodes to {len(out)} bytes, not the {size} of a chunk "
            f"{meta.chunks} of {meta.numpy_dtype}"
        )
    return out


def filled(shape: tuple[int, ...], meta: ArrayMeta, dtype: np.dtype | None = None) -> np.ndarray:
    """An array of ``shape`` holding ``meta``'s fill (zeros for structured types)."""
    dtype = meta.numpy_dtype if dtype is None else dtype
    if dtype.names is not None:
        return np.zeros(shape, dtype=dtype)
    return np.full(shape, fill_scalar(meta), dtype=dtype)


def fill_scalar(meta: ArrayMeta) -> object:
    """The value zarr fills ``meta``'s missing chunks with (its ``fill_value``, or zero)."""
    dtype = meta.numpy_dtype
    value = meta.fill_value
    if value is None:
        return "" if dtype.kind in "OSU" else 0
    if isinstance(value, str) and dtype.kind in "fc":
        return {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}.get(value, value)
    return value
