"""Key lookup: a store key (``"t2m/17.0.0"``, ``"t2m/.zarray"``) -> where its bytes are."""

from __future__ import annotations

from dataclasses import dataclass

from .manifest import COMPUTED, INLINE, MISSING, Manifest, VirtualArray

__all__ = [
    "RangeSource",
    "InlineSource",
    "ComputedSource",
    "ChunkSource",
    "resolve_key",
    "chunk_index",
    "chunk_keys",
]


@dataclass(frozen=True, slots=True)
class RangeSource:
    """Bytes ``[offset, offset + length)`` of a source file, passed through untouched."""

    url: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class InlineSource:
    """Bytes held in memory (metadata, small or normalised chunks)."""

    data: bytes

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
    """The grid index a chunk key's last part names, or None if it names no chunk."""
    ndim = len(array.meta.shape)
    if ndim == 0:
        return () if leaf == "0" else None
    parts = leaf.split(".")
    if len(parts) != ndim or not all(p.isdigit() for p in parts):
        return None
    index = tuple(int(p) for p in parts)
    if any(i >= n for i, n in zip(index, array.grid.shape)):
        return None
    return index


def chunk_keys(path: str, array: VirtualArray) -> list[tuple[str, int]]:
    """Keys and sizes of the chunks of an array that exist (are not missing)."""
    grid = array.grid
    prefix = f"{path}/" if path else ""
    if not array.meta.shape:
        fid = grid.file_id[()]
        if fid == MISSING:
            return []
        size = ComputedSource(path, array, ()).length if fid == COMPUTED else int(grid.length[()])
        return [(f"{prefix}0", size)]
    out = []
    computed_size = ComputedSource(path, array, ()).length
    for index in zip(*(grid.file_id != MISSING).nonzero()):
        size = computed_size if grid.file_id[index] == COMPUTED else int(grid.length[index])
        out.append((prefix + ".".join(str(int(i)) for i in index), size))
    return out


def resolve_key(manifest: Manifest, metadata: dict[str, bytes], key: str) -> ChunkSource | None:
    """Where the bytes of ``key`` are, or None if the store has no such key."""
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
        return InlineSource(grid.inline[int(grid.offset[index])])
    if file_id == COMPUTED:
        return ComputedSource(path, array, index)
    return RangeSource(manifest.urls[file_id], int(grid.offset[index]), int(grid.length[index]))
