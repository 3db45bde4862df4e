"""A key's bytes as the store serves them: passed through for the client to decode
(``decode="client"``), or decoded by the store (``decode="store"``).

In ``"store"`` mode the chunks of every array with a codec pipeline and a fixed-size dtype
(:func:`~fsspec_virtual.codecs.serves_decoded`) are served decoded, and that array's
``.zarray`` declares no codecs (:func:`served_metadata`): zarr then copies what it reads.
The store decodes chunks in threads of its own, one per core, each chunk handed back as
soon as it is decoded (:mod:`fsspec_virtual.reader`), instead of two thread hand-offs per
chunk in zarr's codec pipeline; zlib and shuffle, the codecs of most netCDF4 files, decode
without holding the GIL (:func:`fsspec_virtual.codecs.decoded_bytes`), so both run on
every core. Reads, version checks and errors are the same in both modes.
"""

from __future__ import annotations

import asyncio
import functools
import math
import weakref
from typing import TYPE_CHECKING, Literal

from .codecs import decoded_bytes, serves_decoded
from .codecs_v3 import store_decodes
from .compute import compute_chunk
from .errors import SourceReadError
from .keys import ChunkSource, ComputedSource, InlineSource, RangeSource, ZarrFormat, has_codecs
from .manifest import ArrayMeta, VirtualArray
from .metadata import render_metadata
from .metadata_v3 import render_metadata_v3
from .readahead import taken_ahead
from .reader import ReadOptions, Request, Transform, absolute_range, fetch_ranges, read_one
from .reader import transformed as _transformed

if TYPE_CHECKING:
    from .state import CollectionState

__all__ = [
    "Decode",
    "DECODE_MODES",
    "check_decode",
    "check_zarr_format",
    "ZARR_FORMATS",
    "served_metadata",
    "served_size",
    "read_source",
    "read_sources",
]

#: Who decodes chunks: the client (zarr; bytes passed through) or the store.
Decode = Literal["client", "store"]
DECODE_MODES: tuple[Decode, ...] = ("client", "store")

_documents: weakref.WeakKeyDictionary[
    CollectionState, dict[tuple[Decode, ZarrFormat], dict[str, bytes]]
] = weakref.WeakKeyDictionary()


def check_decode(value: object) -> Decode:
    """``value`` if it names a decode mode, else a ``ValueError`` naming the modes."""
    if value not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, not {value!r}")
    return value  # type: ignore[return-value]


#: The Zarr formats a store serves
ZARR_FORMATS: tuple[ZarrFormat, ...] = (2, 3)


def check_zarr_format(value: object) -> ZarrFormat:
    """``value`` if it names a Zarr format the store serves, else a ``ValueError``."""
    if isinstance(value, bool) or value not in ZARR_FORMATS:
        raise ValueError(f"zarr_format must be one of {ZARR_FORMATS}, not {value!r}")
    return value  # type: ignore[return-value]


def served_metadata(
    state: CollectionState, decode: Decode, zarr_format: ZarrFormat = 2
) -> dict[str, bytes]:
    """The metadata documents served in ``decode`` mode and Zarr format ``zarr_format``
    (rendered once per snapshot).

    Raises
    ------
    ZarrFormatNotServedError
        In format 3, if a variable cannot be served as format 3 (the message names it).
    """
    if decode == "client" and zarr_format == 2:
        return state.metadata
    rendered = _documents.setdefault(state, {})
    documents = rendered.get((decode, zarr_format))
    if documents is None:
        render = render_metadata_v3 if zarr_format == 3 else render_metadata
        documents = rendered[decode, zarr_format] = render(
            state.manifest, decoded=decode == "store"
        )
    return documents


def _decodes(array: VirtualArray | None, decode: Decode, zarr_format: ZarrFormat = 2) -> bool:
    """Whether the store serves ``array``'s chunks decoded (format 3 also decodes those
    whose codec pipeline has no v3 spelling: :func:`~fsspec_virtual.codecs_v3.store_decodes`)."""
    if array is None:
        return False
    if zarr_format == 3:
        return store_decodes(array.meta, decode == "store")
    return decode == "store" and serves_decoded(array.meta)


def served_size(source: ChunkSource, decode: Decode, zarr_format: ZarrFormat = 2) -> int | None:
    """The exact number of bytes ``source`` serves, or None if only computing it tells
    (a computed chunk encoded by codecs: kerchunk declares zlib among the filters)."""
    if isinstance(source, ComputedSource):
        exact = not has_codecs(source.array.meta) or _decodes(source.array, decode, zarr_format)
        return source.length if exact else None
    if _decodes(source.array, decode, zarr_format):
        assert source.array is not None
        meta = source.array.meta
        return math.prod(meta.chunks) * meta.numpy_dtype.itemsize
    return source.length


def _decoder(
    array: VirtualArray | None, decode: Decode, where: str, zarr_format: ZarrFormat = 2
) -> Transform | None:
    """What decodes a chunk of ``array`` read from ``where`` (a file and byte range, or
    the store's own bytes), or None if it is served as read."""
    if not _decodes(array, decode, zarr_format):
        return None
    assert array is not None
    return functools.partial(_decoded, meta=array.meta, where=where)


def _decoded(raw: bytes, meta: ArrayMeta, where: str) -> bytes:
    """``raw`` decoded; a chunk its codecs refuse (corrupt bytes) is a SourceReadError
    naming where it was read, never a bare codec error."""
    try:
        return decoded_bytes(raw, meta)
    except Exception as e:
        raise SourceReadError(
            where, f"its chunk could not be decoded ({type(e).__name__}: {e})"
        ) from e


def _where(source: RangeSource) -> str:
    return f"{source.url} (bytes {source.offset}-{source.offset + source.length})"


async def _computed(
    state: CollectionState,
    source: ComputedSource,
    decode: Decode,
    reading: ReadOptions,
    zarr_format: ZarrFormat = 2,
) -> bytes:
    return await compute_chunk(
        state.fs,
        state.manifest.urls,
        source.array,
        source.index,
        state.cache,
        state.versions,
        reading,
        encoded=not _decodes(source.array, decode, zarr_format),
    )


def _request(state: CollectionState, source: RangeSource, begin: int, stop: int) -> Request:
    version = state.versions.get(source.url)
    return Request(source.url, source.offset + begin, source.offset + stop, version)


async def _inline(source: InlineSource, decode: Decode, zarr_format: ZarrFormat = 2) -> bytes:
    transform = _decoder(source.array, decode, "a chunk the store holds inline", zarr_format)
    if transform is None:
        return source.data
    return (await _transformed([source.data], [transform]))[0]  # type: ignore[return-value]


async def read_source(
    state: CollectionState,
    source: ChunkSource,
    start: int | None,
    end: int | None,
    decode: Decode,
    reading: ReadOptions,
    zarr_format: ZarrFormat = 2,
) -> bytes:
    """Bytes ``[start, end)`` (slice semantics) of what ``source`` serves in ``decode`` mode
    and Zarr format ``zarr_format``.

    Range reads are batched with the other reads of this event-loop turn (and decoded with
    them, in ``"store"`` mode).
    """
    if isinstance(source, InlineSource):
        data = await _inline(source, decode, zarr_format)
        return data if start is None and end is None else data[slice(start, end)]
    if isinstance(source, ComputedSource):
        computed = await _computed(state, source, decode, reading, zarr_format)
        return computed[slice(start, end)]
    transform = _decoder(source.array, decode, _where(source), zarr_format)
    begin, stop = (
        absolute_range(start, end, source.length) if transform is None else (0, source.length)
    )
    request = _request(state, source, begin, stop)
    ahead = await taken_ahead(state, request)
    if transform is None:
        return ahead if ahead is not None else await read_one(state.fs, request, reading)
    if ahead is None:
        data = await read_one(state.fs, request, reading, transform)
    else:
        decoded = (await _transformed([ahead], [transform]))[0]
        if isinstance(decoded, BaseException):
            raise decoded
        data = decoded
    return data if start is None and end is None else data[slice(start, end)]


async def read_sources(
    state: CollectionState,
    items: list[tuple[ChunkSource, int | None, int | None]],
    decode: Decode,
    reading: ReadOptions,
    zarr_format: ZarrFormat = 2,
) -> list[bytes | BaseException]:
    """:func:`read_source` for many sources at once: range reads merged where near, and
    decoded together; each item's bytes or the exception its read raised."""
    results: list[bytes | BaseException] = [b""] * len(items)
    requests: list[Request] = []
    transforms: list[Transform | None] = []
    targets: list[int] = []
    others: list[int] = []
    for i, (source, start, end) in enumerate(items):
        if not isinstance(source, RangeSource):
            others.append(i)
            continue
        transform = _decoder(source.array, decode, _where(source), zarr_format)
        begin, stop = (
            absolute_range(start, end, source.length) if transform is None else (0, source.length)
        )
        requests.append(_request(state, source, begin, stop))
        transforms.append(transform)
        targets.append(i)

    async def fetched() -> list[bytes | BaseException]:
        return await _transformed(await fetch_ranges(state.fs, requests, reading), transforms)

    ranged, made = await asyncio.gather(
        fetched(),
        asyncio.gather(
            *(read_source(state, *items[i], decode, reading, zarr_format) for i in others),
            return_exceptions=True,
        ),
    )
    for i, transform, data in zip(targets, transforms, ranged):
        _, start, end = items[i]
        cut = transform is not None and (start is not None or end is not None)
        results[i] = data[slice(start, end)] if cut and isinstance(data, bytes) else data
    for i, data in zip(others, made):
        results[i] = data
    return results
