"""Key lookup: a store key (``"t2m/17.0.0"``, ``"t2m/.zarray"``) -> where its bytes are."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .codecs import serves_decoded
from .codecs_v3 import store_decodes
from .errors import AmbiguousKeyError
from .manifest import COMPUTED, INLINE, MISSING, ArrayMeta, Manifest, VirtualArray

__all__ = [
    "RangeSource",
    "InlineSource",
    "ComputedSource",
    "ChunkSource",
    "resolve_key",
    "chunk_index",
    "chunk_keys",
    "split_chunk_key",
    "children",
    "files_below",
    "ZarrFormat",
    "names_key",
    "StoreKey",
    "choose_reading",
    "AmbiguousKeyError",
]

#: A chunk index as ``str(int)`` spells it: ASCII digits, no sign, no leading zero, no
#: space. ``int()`` also takes ``"01"``, ``"+1"``, ``" 1"`` and non-ASCII digits
#: (fullwidth, Arabic-Indic): each would alias a real chunk under a second key. At most 19
#: digits: no array has more chunks along a dimension (sizes are int64), and int() refuses
#: strings of more than 4300 digits (a ValueError where the key is simply missing).
_CANONICAL_INDEX = re.compile(r"0|[1-9][0-9]{0,18}")

#: The Zarr format a store serves: 2 (``t2m/17.0.0``) or 3 (``t2m/c/17/0/0``)
ZarrFormat = Literal[2, 3]

#: The first part of every v3 chunk key below its array (the default chunk key encoding)
_V3_CHUNKS = "c"


@dataclass(frozen=True, slots=True)
class RangeSource:
    """Bytes ``[offset, offset + length)`` of a source file, passed through untouched
    (``array``: the array whose chunk they are)."""

    url: str
    offset: int
    length: int
    array: VirtualArray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class InlineSource:
    """Bytes held in memory (metadata, small or normalised chunks; ``array``: the array
    whose chunk they are, None for a metadata document)."""

    data: bytes
    array: VirtualArray | None = field(default=None, compare=False, repr=False)

    @property
    def length(self) -> int:
        """Number of bytes."""
        return len(self.data)


@dataclass(frozen=True, slots=True)
class ComputedSource:
    """A chunk assembled on request (see :mod:`fsspec_virtual.compute`)."""

    path: str
    array: VirtualArray
    index: tuple[int, ...]

    @property
    def length(self) -> int:
        """The chunk's decoded size: exact when the array is uncompressed, else a bound."""
        meta = self.array.meta
        n = 1
        for c in meta.chunks:
            n *= c
        return n * meta.numpy_dtype.itemsize


ChunkSource = RangeSource | InlineSource | ComputedSource


def chunk_index(
    array: VirtualArray, leaf: str, zarr_format: ZarrFormat = 2
) -> tuple[int, ...] | None:
    """The grid index a chunk key's part below its array names, or None if it names no
    chunk.

    Only the canonical spelling names a chunk: each chunk has exactly one key. Format 2:
    ``"1.0"``, never ``"01.0"`` or ``"1.00"``; a 0-d array's one chunk is ``"0"``.
    Format 3 (the default chunk key encoding): ``"c/1/0"``; a 0-d array's one chunk is
    ``"c"``.
    """
    ndim = len(array.meta.shape)
    if zarr_format == 3:
        head, _, rest = leaf.partition("/")
        if head != _V3_CHUNKS or (not rest and leaf != _V3_CHUNKS):
            return None
        if ndim == 0:
            return () if leaf == _V3_CHUNKS else None
        parts = rest.split("/")
    else:
        if ndim == 0:
            return () if leaf == "0" else None
        parts = leaf.split(".")
    return _index(array, parts, ndim)


def _index(array: VirtualArray, parts: list[str], ndim: int) -> tuple[int, ...] | None:
    """The grid index ``parts`` spell (all ``ndim`` of them, canonical, inside the grid)."""
    if len(parts) != ndim or not all(_CANONICAL_INDEX.fullmatch(p) for p in parts):
        return None
    index = tuple(int(p) for p in parts)
    if any(i >= n for i, n in zip(index, array.grid.shape)):
        return None
    return index


def split_chunk_key(
    manifest: Manifest, key: str, zarr_format: ZarrFormat = 2
) -> tuple[str, str] | None:
    """``key`` as (array path, the part below it), if an array of ``manifest`` is above it.

    In format 3 the part below starts with ``c/`` and the array may lie several parts up
    (``"g/t2m/c/1/0"``); arrays hold no nodes, so at most one prefix is an array.
    """
    if zarr_format == 2:
        path, _, leaf = key.rpartition("/")
        return (path, leaf) if path in manifest.arrays else None
    parts = key.split("/")
    for i, part in enumerate(parts):
        if part == _V3_CHUNKS:
            path = "/".join(parts[:i])
            if path in manifest.arrays:
                return path, "/".join(parts[i:])
    return None


def _chunk_name(prefix: str, index: tuple[int, ...], zarr_format: ZarrFormat) -> str:
    """The key of chunk ``index`` of the array at ``prefix`` (its path and a slash)."""
    if zarr_format == 3:
        return "/".join([f"{prefix}{_V3_CHUNKS}", *(str(int(i)) for i in index)])
    return prefix + (".".join(str(int(i)) for i in index) if index else "0")


def _served_decoded(meta: ArrayMeta, decoded: bool, zarr_format: ZarrFormat) -> bool:
    """Whether every chunk of ``meta``'s array is served decoded (``decoded``: the store
    decodes, ``decode="store"``)."""
    if zarr_format == 3:
        return store_decodes(meta, decoded)
    return decoded and serves_decoded(meta)


def has_codecs(meta: ArrayMeta) -> bool:
    """Whether an array's chunks are encoded (a compressor, or any filter: kerchunk
    declares zlib among the filters), so their size is known only once encoded."""
    return meta.compressor is not None or bool(meta.filters)


def chunk_keys(
    path: str, array: VirtualArray, decoded: bool = False, zarr_format: ZarrFormat = 2
) -> list[tuple[str, int | None]]:
    """Keys and sizes of the chunks of an array that exist (are not missing); with
    ``decoded``, sizes as a decoding store serves them (see :mod:`fsspec_virtual.serving`).
    A computed chunk that is encoded has no size until it is computed: ``None``, as fsspec
    spells an unknown size (``info`` computes it)."""
    grid = array.grid
    prefix = f"{path}/" if path else ""
    sizes = _Sizes(array, decoded, zarr_format)
    if not array.meta.shape:
        if grid.file_id[()] == MISSING:
            return []
        return [(_chunk_name(prefix, (), zarr_format), sizes.of(()))]
    return [
        (_chunk_name(prefix, index, zarr_format), sizes.of(index))
        for index in zip(*(grid.file_id != MISSING).nonzero())
    ]


class _Sizes:
    """The served size of each chunk of one array (None: known once computed)."""

    def __init__(self, array: VirtualArray, decoded: bool, zarr_format: ZarrFormat) -> None:
        self.grid = array.grid
        self.every = _served_decoded(array.meta, decoded, zarr_format)
        exact = self.every or not has_codecs(array.meta)
        self.computed = ComputedSource("", array, ()).length if exact else None

    def of(self, index: tuple[int, ...]) -> int | None:
        if self.every or self.grid.file_id[index] == COMPUTED:
            return self.computed
        return int(self.grid.length[index])


def children(
    manifest: Manifest,
    metadata: dict[str, bytes],
    key: str,
    decoded: bool = False,
    zarr_format: ZarrFormat = 2,
) -> list[tuple[str, int | None, bool]] | None:
    """The entries directly below ``key`` as (name, size, is a directory), or None if
    ``key`` is no directory of the store: a group, an array, or (format 3) a level of an
    array's chunk keys with a chunk below it (``"t2m/c"``, ``"t2m/c/3"``)."""
    prefix = f"{key}/" if key else ""
    if key in manifest.arrays:
        array = manifest.arrays[key]
        docs = [n for n in metadata if n.startswith(prefix) and "/" not in n[len(prefix) :]]
        entries: list[tuple[str, int | None, bool]] = [(n, len(metadata[n]), False) for n in docs]
        if zarr_format == 2:
            chunks = chunk_keys(key, array, decoded)
            return entries + [(n, size, False) for n, size in chunks]
        if not (array.grid.file_id != MISSING).any():
            return entries
        first = _chunk_name(prefix, (), 3)  # "t2m/c": a directory, or a 0-d array's chunk
        if array.meta.shape:
            return [*entries, (first, 0, True)]
        return [*entries, (first, _Sizes(array, decoded, 3).of(()), False)]
    if key in manifest.groups:
        entries = [
            (name, len(doc), False)
            for name, doc in metadata.items()
            if name.startswith(prefix) and "/" not in name[len(prefix) :]
        ]
        for child in [*manifest.groups, *manifest.arrays]:
            if child and child.startswith(prefix) and "/" not in child[len(prefix) :]:
                entries.append((child, 0, True))
        return entries
    if zarr_format == 3:
        level = _chunk_directory(manifest, key)
        if level is not None:
            path, done = level
            return _next_level(manifest.arrays[path], path, done, decoded)
    return None


def files_below(
    manifest: Manifest,
    metadata: dict[str, bytes],
    key: str,
    decoded: bool = False,
    zarr_format: ZarrFormat = 2,
) -> list[tuple[str, int | None]]:
    """Every file key below the directory ``key`` and its size (as :func:`children` lists
    them, level by level), in one pass: metadata documents and the chunks that exist."""
    prefix = f"{key}/" if key else ""
    found: list[tuple[str, int | None]] = [
        (name, len(doc)) for name, doc in metadata.items() if name.startswith(prefix)
    ]
    for path, array in manifest.arrays.items():
        if prefix and not (f"{path}/".startswith(prefix) or prefix.startswith(f"{path}/")):
            continue
        for name, size in chunk_keys(path, array, decoded, zarr_format):
            if name.startswith(prefix):
                found.append((name, size))
    return found


def _chunk_directory(manifest: Manifest, key: str) -> tuple[str, tuple[int, ...]] | None:
    """(array path, the indices spelled so far) if ``key`` is a level of an array's v3
    chunk keys above its chunks (``"t2m/c"``, ``"t2m/c/3"``) with a chunk below it."""
    split = split_chunk_key(manifest, key, 3)
    if split is None:
        return None
    path, leaf = split
    array = manifest.arrays[path]
    ndim = len(array.meta.shape)
    parts = leaf.split("/")[1:]
    if leaf.split("/")[0] != _V3_CHUNKS or len(parts) >= ndim:
        return None
    if not all(_CANONICAL_INDEX.fullmatch(p) for p in parts):
        return None
    done = tuple(int(p) for p in parts)
    if any(i >= n for i, n in zip(done, array.grid.shape)):
        return None
    if not (array.grid.file_id[done] != MISSING).any():
        return None
    return path, done


def _next_level(
    array: VirtualArray, path: str, done: tuple[int, ...], decoded: bool
) -> list[tuple[str, int | None, bool]]:
    """The entries of one level of an array's v3 chunk keys, below the indices ``done``:
    the next indices with a chunk below them (directories), or the chunks themselves at
    the last level."""
    prefix = "/".join([_chunk_name(f"{path}/" if path else "", (), 3), *map(str, done)])
    written = array.grid.file_id[done] != MISSING
    if written.ndim == 1:
        sizes = _Sizes(array, decoded, 3)
        return [
            (f"{prefix}/{int(i)}", sizes.of((*done, int(i))), False)
            for i in np.flatnonzero(written)
        ]
    below = written.any(axis=tuple(range(1, written.ndim)))
    return [(f"{prefix}/{int(i)}", 0, True) for i in np.flatnonzero(below)]


def resolve_key(
    manifest: Manifest, metadata: dict[str, bytes], key: str, zarr_format: ZarrFormat = 2
) -> ChunkSource | None:
    """Where the bytes of ``key`` are, or None if the store has no such key (``metadata``:
    the documents of the store's format, ``zarr_format``, which spells its chunk keys).

    Raises
    ------
    AmbiguousKeyError
        If ``key`` is an undecided :class:`StoreKey` whose two readings both name something.
    """
    if isinstance(key, StoreKey) and key.other is not None:
        key = choose_reading(manifest, metadata, key, key.other, zarr_format)
    document = metadata.get(key)
    if document is not None:
        return InlineSource(document)
    split = split_chunk_key(manifest, key, zarr_format)
    if split is None:
        return None
    path, leaf = split
    array = manifest.arrays[path]
    index = chunk_index(array, leaf, zarr_format)
    if index is None:
        return None
    grid = array.grid
    file_id = int(grid.file_id[index])
    if file_id == MISSING:
        return None
    if file_id == INLINE:
        return InlineSource(grid.inline[int(grid.offset[index])], array)
    if file_id == COMPUTED:
        return ComputedSource(path, array, index)
    url = manifest.urls[file_id]
    return RangeSource(url, int(grid.offset[index]), int(grid.length[index]), array)


def names_key(
    manifest: Manifest, metadata: dict[str, bytes], key: str, zarr_format: ZarrFormat = 2
) -> bool:
    """Whether ``key`` names something in the store: a metadata document, a group, an
    array, or one of an array's chunks (written or not: an unwritten chunk reads as the
    fill value, so it is a reading of the key all the same)."""
    if key in metadata or key in manifest.groups or key in manifest.arrays:
        return True
    split = split_chunk_key(manifest, key, zarr_format)
    if split is None:
        return False
    path, leaf = split
    return chunk_index(manifest.arrays[path], leaf, zarr_format) is not None


class StoreKey(str):
    """A store key read from a client's path.

    ``other`` is the path's second reading when it could not be told apart yet (under URL
    chaining, before the collection was scanned): :func:`resolve_key` decides between the
    two readings once it has the manifest. A key with ``other`` None is decided: reading
    it again as a path gives it back unchanged.
    """

    other: str | None

    def __new__(cls, key: str, other: str | None = None) -> StoreKey:
        made = super().__new__(cls, key)
        made.other = other
        return made

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:
        return (type(self), (str(self), self.other))


def choose_reading(
    manifest: Manifest,
    metadata: dict[str, bytes],
    below_root: str,
    whole: str,
    zarr_format: ZarrFormat = 2,
) -> StoreKey:
    """The key a chained path means: ``below_root`` (the path with the chained root taken
    off, as fsspec's URL chaining addresses keys), unless only ``whole`` (the path read
    as a key of its own, e.g. through ``fs.get_mapper("")``) names something.

    Raises
    ------
    AmbiguousKeyError
        If both readings name something in the store.
    """
    chained = names_key(manifest, metadata, below_root, zarr_format)
    plain = names_key(manifest, metadata, whole, zarr_format)
    if chained and plain:
        raise AmbiguousKeyError(
            f"{whole!r} names two keys of this store: {below_root!r} (below the chained root "
            f"the filesystem was given as fo=) and {whole!r} (read as a key of its own); "
            f"address one of them unambiguously, or construct the filesystem with path= "
            f"(keys are then never taken below the source path)"
        )
    return StoreKey(whole if plain else below_root)
