"""Pure tests of the numpy-backed manifest, key lookup and metadata rendering."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fsspec_virtual.keys import InlineSource, RangeSource, chunk_keys, resolve_key
from fsspec_virtual.manifest import INLINE, MISSING, ArrayMeta, ChunkGrid, Manifest, VirtualArray
from fsspec_virtual.metadata import render_metadata


def _meta(shape, chunks, dims=("t", "x")) -> ArrayMeta:
    return ArrayMeta(shape, chunks, "<f4", None, None, None, dims, {"units": "K"})


def _grid(file_ids, offsets, lengths, inline=()) -> ChunkGrid:
    return ChunkGrid(
        np.array(file_ids, dtype=np.int32),
        np.array(offsets, dtype=np.uint64),
        np.array(lengths, dtype=np.uint64),
        tuple(inline),
    )


class TestChunkGrid:
    def test_grid_must_fit_array(self):
        with pytest.raises(ValueError, match="does not fit"):
            VirtualArray(_meta((4, 4), (2, 2)), ChunkGrid.empty((3, 2)))

    def test_arrays_are_read_only(self):
        grid = ChunkGrid.empty((2, 2))
        with pytest.raises(ValueError):
            grid.file_id[0, 0] = 3

    def test_concatenate_reindexes_inline_and_file_ids(self):
        a = _grid([[0], [INLINE]], [[10], [0]], [[5], [3]], [b"abc"])
        b = _grid([[INLINE], [0]], [[0], [20]], [[2], [7]], [b"xy"]).with_file_ids_shifted(1)
        joined = ChunkGrid.concatenate([a, b], axis=0)
        assert joined.file_id[:, 0].tolist() == [0, INLINE, INLINE, 1]
        assert joined.inline == (b"abc", b"xy")
        assert joined.offset[:, 0].tolist() == [10, 0, 1, 20]
        assert joined.length[:, 0].tolist() == [5, 3, 2, 7]

    def test_missing_filled_shares_one_inline_chunk(self):
        grid = _grid([MISSING, 0, MISSING], [0, 5, 0], [0, 4, 0]).with_missing_filled(b"FILL")
        assert grid.file_id.tolist() == [INLINE, 0, INLINE]
        assert grid.inline == (b"FILL",)
        assert grid.offset.tolist() == [0, 5, 0]

    def test_bytes_per_chunk(self):
        grid = ChunkGrid.empty((100, 100))
        assert grid.nbytes / grid.file_id.size == 20


class TestKeys:
    @pytest.fixture
    def manifest(self) -> Manifest:
        grid = _grid([[0, MISSING], [INLINE, 1]], [[100, 0], [0, 7]], [[10, 0], [3, 9]], [b"inl"])
        scalar = VirtualArray(ArrayMeta((), (), "<i4", None, None, None, (), {}), _grid(0, 50, 4))
        return Manifest(
            urls=("a.nc", "b.nc"),
            groups={"": {"title": "x"}, "g": {}},
            arrays={"g/v": VirtualArray(_meta((4, 3), (2, 2)), grid), "s": scalar},
        )

    def test_resolve(self, manifest):
        md = render_metadata(manifest)
        assert resolve_key(manifest, md, "g/v/0.0") == RangeSource("a.nc", 100, 10)
        assert resolve_key(manifest, md, "g/v/1.1") == RangeSource("b.nc", 7, 9)
        assert resolve_key(manifest, md, "g/v/1.0") == InlineSource(b"inl")
        assert resolve_key(manifest, md, "s/0") == RangeSource("a.nc", 50, 4)

    @pytest.mark.parametrize(
        "key", ["g/v/0.1", "g/v/2.0", "g/v/0", "g/v/0.0.0", "g/v/a.b", "s/1", "nope/0", "g/w/0.0"]
    )
    def test_missing_or_malformed_keys(self, manifest, key):
        assert resolve_key(manifest, render_metadata(manifest), key) is None

    def test_chunk_keys_list_only_existing(self, manifest):
        assert chunk_keys("g/v", manifest.arrays["g/v"]) == [
            ("g/v/0.0", 10),
            ("g/v/1.0", 3),
            ("g/v/1.1", 9),
        ]

    def test_metadata_documents(self, manifest):
        md = render_metadata(manifest)
        zarray = json.loads(md["g/v/.zarray"])
        assert zarray["shape"] == [4, 3] and zarray["chunks"] == [2, 2]
        assert json.loads(md["g/v/.zattrs"]) == {"units": "K", "_ARRAY_DIMENSIONS": ["t", "x"]}
        assert json.loads(md[".zattrs"]) == {"title": "x"}
        consolidated = json.loads(md[".zmetadata"])["metadata"]
        assert set(consolidated) == set(md) - {".zmetadata"}

    def test_array_in_unlisted_group_is_refused(self):
        with pytest.raises(ValueError, match="not listed"):
            Manifest(
                urls=(),
                groups={"": {}},
                arrays={"g/v": VirtualArray(_meta((2, 2), (2, 2)), ChunkGrid.empty((1, 1)))},
            )
