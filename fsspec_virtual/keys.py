"""Key lookup: a store key (``"t2m/17.0.0"``, ``"t2m/.zarray"``) -> where its bytes are."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .codecs import serves_decoded
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
    "names_key",
    "StoreKey",
    "choose_reading",
    "AmbiguousKeyError",
]

#: A chunk index as ``str(int)`` spells it: ASCII digits, no sign, no leading zero, no
#: space. ``int()`` also takes ``"01"``, ``"+1"``, ``" 1"`` and non-ASCII digits
#: (fullwidth, Arabic-Indic): each would alias a real chunk under a second key.
_CANONICAL_INDEX = re.compile(r"0|[1-9][0-9]*")


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


def chunk_index(array: VirtualArray, leaf: str) -> tuple[int, ...] | None:
    """The grid index a chunk key's last part names, or None if it names no chunk.

    Only the canonical spelling names a chunk (``"1.0"``, never ``"01.0"`` or ``"1.00"``):
    each chunk has exactly one key. A 0-d array's one chunk is ``"0"``.
    """
    ndim = len(array.meta.shape)
    if ndim == 0:
        return () if leaf == "0" else None
    parts = leaf.split(".")
    if len(parts) != ndim or not all(_CANONICAL_INDEX.fullmatch(p) for p in parts):
        return None
    index = tuple(int(p) for p in parts)
    if any(i >= n for i, n in zip(index, array.grid.shape)):
        return None
    return index


def has_codecs(meta: ArrayMeta) -> bool:
    """Whether an array's chunks are encoded (a compressor, or any filter: kerchunk
    declares zlib among the filters), so their size is known only once encoded."""
    return meta.compressor is not None or bool(meta.filters)


def chunk_keys(
    path: str, array: VirtualArray, decoded: bool = False
) -> list[tuple[str, int | None]]:
    """Keys and sizes of the chunks of an array that exist (are not missing); with
    ``decoded``, sizes as a decoding store serves them (see :mod:`fsspec_virtual.serving`).
    A computed chunk that is encoded has no size until it is computed: ``None``, as fsspec
    spells an unknown size (``info`` computes it)."""
    grid = array.grid
    prefix = f"{path}/" if path else ""
    every = decoded and serves_decoded(array.meta)
    exact = every or not has_codecs(array.meta)
    computed_size = ComputedSource(path, array, ()).length if exact else None
    if not array.meta.shape:
        fid = grid.file_id[()]
        if fid == MISSING:
            return []
        whole = every or fid == COMPUTED
        return [(f"{prefix}0", computed_size if whole else int(grid.length[()]))]
    out = []
    for index in zip(*(grid.file_id != MISSING).nonzero()):
        whole = every or grid.file_id[index] == COMPUTED
        size = computed_size if whole else int(grid.length[index])
        out.append((prefix + ".".join(str(int(i)) for i in index), size))
    return out


def resolve_key(manifest: Manifest, metadata: dict[str, bytes], key: str) -> ChunkSource | None:
    """Where the bytes of ``key`` are, or None if the store has no such key.

    Raises
    ------
    AmbiguousKeyError
        If ``key`` is an undecided :class:`StoreKey` whose two readings both name something.
    """
    if isinstance(key, StoreKey) and key.other is not None:
        key = choose_reading(manifest, metadata, key, key.other)
    document = metadata.get(key)
    if document is not None:
        return InlineSource(document)
    path, _, leaf = key.rpartition("/")
    array = manifest.arrays.get(path)
    if array is None:
        return None
    index = chunk_index(array, leaf)
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


def names_key(manifest: Manifest, metadata: dict[str, bytes], key: str) -> bool:
    """Whether ``key`` names something in the store: a metadata document, a group, an
    array, or one of an array's chunks (written or not: an unwritten chunk reads as the
    fill value, so it is a reading of the key all the same)."""
    if key in metadata or key in manifest.groups or key in manifest.arrays:
        return True
    path, _, leaf = key.rpartition("/")
    array = manifest.arrays.get(path)
    return array is not None and chunk_index(array, leaf) is not None


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
    manifest: Manifest, metadata: dict[str, bytes], below_root: str, whole: str
) -> StoreKey:
    """The key a chained path means: ``below_root`` (the path with the chained root taken
    off, as fsspec's URL chaining addresses keys), unless only ``whole`` (the path read
    as a key of its own, e.g. through ``fs.get_mapper("")``) names something.

    Raises
    ------
    AmbiguousKeyError
        If both readings name something in the store.
    """
    chained, plain = names_key(manifest, metadata, below_root), names_key(manifest, metadata, whole)
    if chained and plain:
        raise AmbiguousKeyError(
            f"{whole!r} names two keys of this store: {below_root!r} (below the chained root "
            f"the filesystem was given as fo=) and {whole!r} (read as a key of its own); "
            f"address one of them unambiguously, or construct the filesystem with path= "
            f"(keys are then never taken below the source path)"
        )
    return StoreKey(whole if plain else below_root)
