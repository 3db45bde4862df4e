"""Pure tests of combining per-file manifests (no files: synthetic manifests)."""

from __future__ import annotations

import numpy as np
import pytest

from fsspec_virtual.codecs import decode_chunk
from fsspec_virtual.combine import ScannedFile, combine
from fsspec_virtual.coords import decode_values
from fsspec_virtual.errors import IncompatibleSourcesError
from fsspec_virtual.manifest import COMPUTED, INLINE, ArrayMeta, ChunkGrid, Manifest, VirtualArray


def _array(shape, chunks, dims, dtype="<f4", attrs=None, compressor=None) -> VirtualArray:
    meta = ArrayMeta(shape, chunks, dtype, compressor, None, None, dims, dict(attrs or {}))
    grid_shape = meta.grid_shape
    n = int(np.prod(grid_shape))
    grid = ChunkGrid(
        np.zeros(grid_shape, dtype=np.int32),
        (np.arange(n, dtype=np.uint64) * 100).reshape(grid_shape),
        np.full(grid_shape, 100, dtype=np.uint64),
    )
    return VirtualArray(meta, grid)


def _file(name, times, units="days since 2001-01-01", nt=None, **var_kw) -> ScannedFile:
    nt = len(times) if nt is None else nt
    arrays = {
        "time": _array((nt,), (nt,), ("time",), "<i8", {"units": units}),
        "v": _array(
            (nt, 4), var_kw.pop("chunks", (1, 4)), var_kw.pop("dims", ("time", "x")), **var_kw
        ),
        "x": _array((4,), (4,), ("x",)),
    }
    manifest = Manifest((name,), {"": {"source": name}}, arrays)
    return ScannedFile(name, manifest, {"time": np.asarray(times, dtype="i8")})


def _times(manifest: Manifest) -> np.ndarray:
    array = manifest.arrays["time"]
    assert array.grid.file_id.ravel()[0] == INLINE
    raw = decode_chunk(array.grid.inline[0], array.meta)
    return decode_values(raw, array.meta.attrs)


class TestOrdering:
    def test_orders_by_decoded_time_across_units(self):
        a = _file("a.nc", [0, 1, 2])  # Jan 1-3
        b = _file("b.nc", [0, 24], units="hours since 2001-01-04")  # Jan 4-5
        out = combine([b, a], "time")
        assert out.urls == ("a.nc", "b.nc")
        expected = np.array([f"2001-01-0{d}" for d in range(1, 6)], dtype="datetime64[ns]")
        np.testing.assert_array_equal(_times(out), expected)
        assert out.groups[""] == {"source": "a.nc"}

    def test_units_finer_than_first_file(self):
        a = _file("a.nc", [0, 1])
        b = _file("b.nc", [54, 60], units="hours since 2001-01-01")  # Jan 3 06:00, 12:00
        out = combine([a, b], "time")
        assert out.arrays["time"].meta.attrs["units"].startswith("hours since 2001-01-01")
        np.testing.assert_array_equal(
            _times(out),
            np.array(
                ["2001-01-01", "2001-01-02", "2001-01-03T06", "2001-01-03T12"],
                dtype="datetime64[ns]",
            ),
        )

    def test_file_ids_follow_the_order(self):
        out = combine([_file("b.nc", [2, 3]), _file("a.nc", [0, 1])], "time")
        assert out.arrays["v"].grid.file_id[:, 0].tolist() == [0, 0, 1, 1]
        assert out.arrays["v"].meta.shape == (4, 4)

    @pytest.mark.parametrize("second", [[2, 3], [1, 3]])
    def test_overlap_and_duplicates_name_both_files(self, second):
        with pytest.raises(IncompatibleSourcesError, match=r"a\.nc.*b\.nc"):
            combine([_file("a.nc", [0, 1, 2]), _file("b.nc", second)], "time")


class TestChecks:
    @pytest.mark.parametrize(
        ("kw", "fragment"),
        [
            ({"dims": ("time", "y")}, "dimensions"),
            ({"attrs": {"units": "K"}}, "units"),
            ({"dtype": "|S4"}, "no common type"),
        ],
    )
    def test_mismatch_names_variable_files_and_difference(self, kw, fragment):
        with pytest.raises(IncompatibleSourcesError) as err:
            combine([_file("a.nc", [0, 1]), _file("b.nc", [2, 3], **kw)], "time")
        message = str(err.value)
        assert "'v'" in message and "a.nc" in message and "b.nc" in message
        assert fragment in message

    @pytest.mark.parametrize(
        ("kw", "fragment"),
        [
            ({"dtype": "<f8"}, "differ between a.nc and b.nc"),
            ({"chunks": (2, 4)}, "differ between a.nc and b.nc"),
            ({"compressor": {"id": "zlib", "level": 1}}, "differ between a.nc and b.nc"),
            ({"attrs": {"scale_factor": 0.5}}, "packing differs between a.nc and b.nc"),
        ],
    )
    def test_reconcilable_difference_is_computed(self, kw, fragment):
        out = combine([_file("a.nc", [0, 1]), _file("b.nc", [2, 3], **kw)], "time")
        array = out.arrays["v"]
        assert array.plan is not None and fragment in array.plan.reason, array.plan
        assert [part.start for part in array.plan.parts] == [0, 2]

    def test_misaligned_lengths_pass_through_what_lines_up(self):
        a = _file("a.nc", [0, 1, 2], chunks=(2, 4))
        b = _file("b.nc", [3, 4], chunks=(2, 4))
        array = combine([a, b], "time").arrays["v"]
        assert array.meta.shape == (5, 4) and array.meta.chunks == (2, 4)
        assert array.plan is not None and "straddle files a.nc/b.nc" in array.plan.reason
        # rows 0-1 are a.nc's chunk 0; rows 2-3 straddle; row 4 is b.nc's chunk 0 moved
        # off b's grid (b's chunk covers rows 3-4): computed too
        assert array.grid.file_id[:, 0].tolist() == [0, COMPUTED, COMPUTED]

    def test_short_last_file_is_fine(self):
        a = _file("a.nc", [0, 1], chunks=(2, 4))
        b = _file("b.nc", [2], chunks=(2, 4))
        out = combine([a, b], "time")
        assert out.arrays["v"].meta.shape == (3, 4)
        assert out.arrays["v"].grid.shape == (2, 1)

    def test_variable_missing_from_a_file(self):
        b = _file("b.nc", [2, 3])
        arrays = {k: v for k, v in b.manifest.arrays.items() if k != "v"}
        b = ScannedFile("b.nc", Manifest(("b.nc",), {"": {}}, arrays), b.coords)
        with pytest.raises(IncompatibleSourcesError, match=r"'v' is in a\.nc but not in b\.nc"):
            combine([_file("a.nc", [0, 1]), b], "time")

    def test_several_files_need_concat_dim(self):
        with pytest.raises(IncompatibleSourcesError, match="concat_dim"):
            combine([_file("a.nc", [0]), _file("b.nc", [1])], None)
