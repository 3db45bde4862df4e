"""An array's Zarr v2 codec pipeline (numcodecs, :class:`~fsspec_virtual.manifest.ArrayMeta`)
spelled as Zarr v3 codecs, as zarr-python 3 names them.

v2 runs ``filters`` then ``compressor`` at encode, each on what the previous one made;
v3 runs array->array codecs, one array->bytes codec, then bytes->bytes codecs. A v2
pipeline has a faithful v3 spelling when its array->array filters all come first:

- order ``"F"`` -> ``transpose`` (reversed axes) before everything: v2 lays a chunk out
  in Fortran order, which is the C layout of the transposed chunk;
- the array->bytes step -> ``bytes`` with the dtype's byte order (``>f4`` of NetCDF3
  files: ``"big"``), or ``vlen-utf8`` / ``vlen-bytes`` for strings (the object codec
  v2 lists among the filters);
- ``gzip``, ``zstd``, ``blosc`` and ``crc32c`` (its checksum at the end, as numcodecs
  puts it) -> the v3 core codecs, which decode the same bytes; every other codec ->
  zarr-python's ``numcodecs.<id>`` codecs, which run numcodecs itself.

A pipeline without such a spelling (an array->array filter after a bytes->bytes one, a
codec zarr-python does not register, a filter that changes the dtype) gets None from
:func:`v3_codecs`: the store then serves that array's chunks decoded
(:func:`store_decodes`), which ``transpose`` and ``bytes`` alone describe.
"""

from __future__ import annotations

import sys
from typing import Any

import numcodecs
import numpy as np

from .codecs import serves_decoded
from .manifest import ArrayMeta

__all__ = ["v3_codecs", "decoded_codecs", "store_decodes", "bytes_codec"]

#: numcodecs ids of the object codecs zarr-python 3 reads strings with (v3 core codecs)
_OBJECT_CODECS = {"vlen-utf8": "vlen-utf8", "vlen-bytes": "vlen-bytes"}

#: numcodecs filters that work on arrays (zarr-python: ``ArrayArrayCodec``) and keep the
#: dtype when their ``astype`` (if any) equals their ``dtype``
_ARRAY_FILTERS = {"delta", "fixedscaleoffset", "quantize", "bitround"}

#: numcodecs' blosc shuffle numbers as the v3 blosc codec names them
_BLOSC_SHUFFLE = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}
_BLOSC_CNAMES = {"lz4", "lz4hc", "blosclz", "zstd", "snappy", "zlib"}


def _named(name: str, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "configuration": dict(configuration or {})}


def bytes_codec(dtype: np.dtype) -> dict[str, Any]:
    """The v3 ``bytes`` codec for ``dtype``'s byte order (none for one-byte types)."""
    order = dtype.byteorder
    if dtype.names is not None:
        orders = {dtype.fields[n][0].byteorder for n in dtype.names}  # type: ignore[index]
        orders.discard("|")
        order = orders.pop() if len(orders) == 1 else "|"
    if order == "=":
        order = "<" if sys.byteorder == "little" else ">"
    if order == "|":
        return {"name": "bytes"}
    return _named("bytes", {"endian": "big" if order == ">" else "little"})


def _transpose(meta: ArrayMeta) -> list[dict[str, Any]]:
    if meta.order != "F" or len(meta.shape) < 2:
        return []
    return [_named("transpose", {"order": list(range(len(meta.shape)))[::-1]})]


def _is_registered_bytes_codec(name: str) -> bool:
    from zarr.abc.codec import BytesBytesCodec
    from zarr.registry import get_codec_class

    try:
        return issubclass(get_codec_class(name), BytesBytesCodec)
    except (KeyError, ValueError):
        return False


def _bytes_to_bytes(config: dict[str, Any], itemsize: int) -> dict[str, Any] | None:
    """One numcodecs bytes->bytes codec as v3 spells it, or None if it has no spelling."""
    codec_id = str(config.get("id"))
    rest = {k: v for k, v in config.items() if k != "id"}
    if codec_id == "gzip":
        return _named("gzip", {"level": int(rest.get("level", 1))})
    if codec_id == "zstd" and set(rest) <= {"level", "checksum"}:
        return _named(
            "zstd", {"level": int(rest.get("level", 0)), "checksum": bool(rest.get("checksum"))}
        )
    if codec_id == "blosc" and rest.get("cname", "lz4") in _BLOSC_CNAMES:
        shuffle = int(rest.get("shuffle", 1))
        if shuffle == -1:  # numcodecs' AUTOSHUFFLE
            shuffle = 2 if itemsize == 1 else 1
        if shuffle in _BLOSC_SHUFFLE:
            return _named(
                "blosc",
                {
                    "typesize": itemsize,
                    "cname": rest.get("cname", "lz4"),
                    "clevel": int(rest.get("clevel", 5)),
                    "shuffle": _BLOSC_SHUFFLE[shuffle],
                    "blocksize": int(rest.get("blocksize", 0)),
                },
            )
    if codec_id == "crc32c" and rest.get("location", "end") == "end":
        return {"name": "crc32c"}
    name = f"numcodecs.{codec_id}"
    if not _is_registered_bytes_codec(name):
        return None
    # numcodecs' own defaults spelled out: zarr-python's codecs may default otherwise
    # (its shuffle takes the dtype's size, numcodecs' takes 4)
    full = numcodecs.get_codec(dict(config)).get_config()
    return _named(name, {k: v for k, v in full.items() if k != "id"})


def _array_to_array(config: dict[str, Any]) -> dict[str, Any] | None:
    codec_id = str(config.get("id"))
    if codec_id not in _ARRAY_FILTERS:
        return None
    rest = {k: v for k, v in config.items() if k != "id"}
    if "astype" in rest and np.dtype(rest["astype"]) != np.dtype(rest.get("dtype", "<f8")):
        return None
    return _named(f"numcodecs.{codec_id}", rest)


def v3_codecs(meta: ArrayMeta) -> list[dict[str, Any]] | None:
    """``meta``'s codec pipeline as v3 codecs (JSON, as in ``zarr.json``), or None if it has
    no faithful v3 spelling. The list is shared by every caller (spelled once per
    pipeline): copy it before changing it."""
    return _spelled(meta)


#: The v3 spelling (or None) of each pipeline seen, by what it depends on: the store asks
#: for every chunk it serves, and spelling asks zarr's registry and numcodecs
_SPELLED: dict[str, list[dict[str, Any]] | None] = {}
#: The same by the identity of a manifest's codec objects (kept alive here, so that their
#: ids are not reused while they key an entry): no repr per chunk served
_BY_IDENTITY: dict[tuple[int, int, str, str, int], tuple[Any, Any, Any]] = {}
_MAX_ENTRIES = 4096


def _spelled(meta: ArrayMeta) -> list[dict[str, Any]] | None:
    filters, compressor = meta.filters, meta.compressor
    fast = (id(filters), id(compressor), meta.dtype, meta.order, len(meta.shape))
    held = _BY_IDENTITY.get(fast)
    if held is not None and held[0] is filters and held[1] is compressor:
        spelled: list[dict[str, Any]] | None = held[2]
        return spelled
    # repr, not JSON: cheap, and equal reprs are equal pipelines (unequal ones: a miss)
    key = repr((meta.dtype, meta.order, len(meta.shape), filters, compressor))
    if key in _SPELLED:
        spelled = _SPELLED[key]
    else:
        spelled = _translated(meta)
        if len(_SPELLED) >= _MAX_ENTRIES:
            _SPELLED.clear()
        _SPELLED[key] = spelled
    if len(_BY_IDENTITY) >= _MAX_ENTRIES:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[fast] = (filters, compressor, spelled)
    return spelled


def _translated(meta: ArrayMeta) -> list[dict[str, Any]] | None:
    dtype = meta.numpy_dtype
    steps = [dict(c) for c in meta.filters or ()]
    if meta.compressor is not None:
        steps.append(dict(meta.compressor))
    out = _transpose(meta)
    if dtype.kind == "O":
        if not steps or steps[0].get("id") not in _OBJECT_CODECS:
            return None
        out.append(_named(_OBJECT_CODECS[str(steps[0]["id"])]))
        steps = steps[1:]
    else:
        while steps and steps[0].get("id") in _ARRAY_FILTERS:
            converted = _array_to_array(steps.pop(0))
            if converted is None:
                return None
            out.append(converted)
        out.append(bytes_codec(dtype))
    for config in steps:
        converted = _bytes_to_bytes(config, dtype.itemsize)
        if converted is None:
            return None
        out.append(converted)
    return out


def decoded_codecs(meta: ArrayMeta) -> list[dict[str, Any]]:
    """The v3 codecs of ``meta``'s chunks served decoded: the values' bytes in the v2
    layout (``transpose`` for order F) and byte order."""
    return [*_transpose(meta), bytes_codec(meta.numpy_dtype)]


def store_decodes(meta: ArrayMeta, decode_store: bool) -> bool:
    """Whether a v3 store serves ``meta``'s chunks decoded: in ``decode="store"`` mode as
    the v2 store does (:func:`~fsspec_virtual.codecs.serves_decoded`), and always where
    the pipeline has no v3 spelling (a fixed-size dtype: the decoded chunk is exact)."""
    if not serves_decoded(meta):
        return False
    return decode_store or v3_codecs(meta) is None
