"""Pure tests of combining per-file manifests (no files: synthetic manifests)."""

from __future__ import annotations

import numpy as np
import pytest

from fsspec_virtual.codecs import decode_chunk
from fsspec_virtual.combine import CombineOptions, ScannedFile, combine
from fsspec_virtual.coords import decode_values
from fsspec_virtual.errors import IncompatibleSourcesError
from fsspec_virtual.manifest import (
    COMPUTED,
    INLINE,
    MISSING,
    ArrayMeta,
    ChunkGrid,
    Manifest,
    VirtualArray,
)


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


X = np.array([0.0, 10.0, 20.0, 30.0], dtype="<f4")


def _file(
    name, times, units="days since 2001-01-01", nt=None, x=X, x_attrs=None, **var_kw
) -> ScannedFile:
    nt = len(times) if nt is None else nt
    x = np.asarray(x)
    arrays = {
        "time": _array((nt,), (nt,), ("time",), "<i8", {"units": units}),
        "v": _array(
            (nt, 4), var_kw.pop("chunks", (1, 4)), var_kw.pop("dims", ("time", "x")), **var_kw
        ),
        "x": _array(x.shape, x.shape, ("x",), x.dtype.str, x_attrs),
    }
    manifest = Manifest((name,), {"": {"source": name}}, arrays)
    return ScannedFile(name, manifest, {"time": np.asarray(times, dtype="i8"), "x": x})


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
        exact = CombineOptions.from_arguments("time", join="exact")
        with pytest.raises(
            IncompatibleSourcesError, match=r"(a\.nc and b\.nc|b\.nc and a\.nc).*join='exact'"
        ):
            combine([_file("a.nc", [0, 1]), b], exact)
        # an outer join (xarray's default): v is served missing where b.nc lies
        manifest = combine([_file("a.nc", [0, 1]), b], "time")
        assert manifest.arrays["v"].meta.shape[0] == 4
        assert (manifest.arrays["v"].grid.file_id[2:] == MISSING).all()
        assert (manifest.arrays["v"].grid.file_id[:2] >= 0).all()
        assert manifest.arrays["v"].meta.fill_value == "NaN"

    def test_concat_dim_is_inferred_from_differing_coordinates(self):
        manifest = combine([_file("b.nc", [1]), _file("a.nc", [0])], None)
        assert manifest.urls == ("a.nc", "b.nc")

    def test_files_alike_in_every_coordinate_need_concat_dim(self):
        with pytest.raises(IncompatibleSourcesError, match="concat_dim"):
            combine([_file("a.nc", [0]), _file("b.nc", [0])], None)


def _with_group_lat(f: ScannedFile, lat: np.ndarray) -> ScannedFile:
    """``f`` with a group ``g`` holding ``lat(lat)`` and ``w(time, lat)``."""
    nt = f.manifest.arrays["time"].meta.shape[0]
    arrays = dict(f.manifest.arrays)
    arrays["g/lat"] = _array(lat.shape, lat.shape, ("lat",), lat.dtype.str)
    arrays["g/w"] = _array((nt, lat.size), (1, lat.size), ("time", "lat"))
    groups = {**f.manifest.groups, "g": {}}
    manifest = Manifest(f.manifest.urls, groups, arrays)
    return ScannedFile(f.path, manifest, {**f.coords, "g/lat": lat})


class TestLabels:
    """A dimension coordinate other than the concat one is served from the first file:
    any other file whose labels differ is refused, naming the coordinate, both files and
    the first difference."""

    @pytest.mark.parametrize(
        ("x", "first_difference"),
        [
            (X + 5, "a.nc[0] = 0.0, b.nc[0] = 5.0"),  # shifted by half a cell
            (X[::-1], "a.nc[0] = 0.0, b.nc[0] = 30.0"),  # reversed
            (np.array([0.0, 10.0, 20.0, 31.0], "<f4"), "a.nc[3] = 30.0, b.nc[3] = 31.0"),
            (np.array([0.0, 10.0, 20.0, np.nan], "<f4"), "a.nc[3] = 30.0, b.nc[3] = nan"),
        ],
    )
    def test_different_values_are_refused(self, x, first_difference):
        a, b = _file("a.nc", [0, 1]), _file("b.nc", [2, 3], x=x)
        for files in ([a, b], [b, a]):  # the first file is the first in time, not in the list
            with pytest.raises(IncompatibleSourcesError) as err:
                combine(files, "time")
            assert (
                str(err.value)
                == f"coordinate 'x' differs between a.nc and b.nc: {first_difference}"
            )

    def test_longitude_conventions_are_refused(self):
        lon360 = np.array([0.0, 90.0, 180.0, 270.0])
        lon180 = np.array([-180.0, -90.0, 0.0, 90.0])
        with pytest.raises(IncompatibleSourcesError, match=r"'x' differs between a\.nc and b\.nc"):
            combine([_file("a.nc", [0, 1], x=lon360), _file("b.nc", [2, 3], x=lon180)], "time")

    def test_a_later_file_is_compared_with_the_first(self):
        files = [_file("a.nc", [0]), _file("b.nc", [1]), _file("c.nc", [2], x=X + 1)]
        with pytest.raises(IncompatibleSourcesError, match=r"between a\.nc and c\.nc: a\.nc\[0\]"):
            combine(files, "time")

    def test_equal_values_and_nans_combine(self):
        x = np.array([0.0, np.nan, 20.0, -0.0])
        out = combine([_file("a.nc", [0, 1], x=x), _file("b.nc", [2, 3], x=x.copy())], "time")
        assert out.arrays["x"].meta.dtype == "<f8"

    def test_byte_order_alone_is_no_difference(self):
        big = X.astype(">f4")  # a NetCDF3 file's coordinate beside a NetCDF4 file's
        out = combine([_file("a.nc", [0, 1]), _file("b.nc", [2, 3], x=big)], "time")
        assert out.arrays["x"].meta.dtype == "<f4"

    def test_float32_and_float64_of_exactly_equal_values_combine(self):
        """Allowed, as xarray's index comparison allows them: every float32 value equals
        its float64 counterpart exactly; the first file's dtype is served (as xarray's)."""
        wide = X.astype("<f8")
        out = combine([_file("a.nc", [0, 1], x=wide), _file("b.nc", [2, 3])], "time")
        assert out.arrays["x"].meta.dtype == "<f8"
        out = combine([_file("a.nc", [0, 1]), _file("b.nc", [2, 3], x=wide)], "time")
        assert out.arrays["x"].meta.dtype == "<f4"

    def test_float32_and_float64_that_differ_after_the_cast_are_refused(self):
        narrow = np.array([0.0, 0.1, 0.2, 0.3], dtype="<f4")
        wide = np.array([0.0, 0.1, 0.2, 0.3], dtype="<f8")
        with pytest.raises(IncompatibleSourcesError) as err:
            combine([_file("a.nc", [0, 1], x=narrow), _file("b.nc", [2, 3], x=wide)], "time")
        assert "a.nc[1] = 0.10000000149011612, b.nc[1] = 0.1 (float32 vs float64)" in str(err.value)

    def test_integers_beyond_float_precision_are_compared_exactly(self):
        big = np.array([2**53 + 1, 0, 1, 2], dtype="<i8")
        with pytest.raises(IncompatibleSourcesError, match=r"9007199254740993"):
            combine(
                [_file("a.nc", [0, 1], x=big), _file("b.nc", [2, 3], x=big.astype("<f8"))], "time"
            )

    def test_text_and_numbers_are_refused(self):
        names = np.array(["a", "b", "c", "d"])
        with pytest.raises(IncompatibleSourcesError, match=r"'x' differs.*dtype <U1 vs float32"):
            combine([_file("a.nc", [0, 1], x=names), _file("b.nc", [2, 3])], "time")

    def test_different_units_are_refused(self):
        a = _file("a.nc", [0, 1], x_attrs={"units": "m"})
        b = _file("b.nc", [2, 3], x_attrs={"units": "km"})
        with pytest.raises(IncompatibleSourcesError, match=r"'x' differs.*units 'm' vs 'km'"):
            combine([a, b], "time")

    def test_times_in_other_units_are_compared_decoded(self):
        days = {"units": "days since 2001-01-01"}
        hours = {"units": "hours since 2001-01-01"}
        day_x = np.array([0, 1, 2, 3], dtype="<i8")
        a = _file("a.nc", [0, 1], x=day_x, x_attrs=days)
        out = combine([a, _file("b.nc", [2, 3], x=day_x * 24, x_attrs=hours)], "time")
        assert out.arrays["x"].meta.attrs == days
        later = _file("b.nc", [2, 3], x=day_x * 24 + 1, x_attrs=hours)
        with pytest.raises(IncompatibleSourcesError, match=r"a\.nc\[0\] = 2001-01-01T00"):
            combine([a, later], "time")
        noleap = _file("b.nc", [2, 3], x=day_x, x_attrs={**days, "calendar": "noleap"})
        with pytest.raises(IncompatibleSourcesError, match=r"'x' differs.*units/calendar"):
            combine([a, noleap], "time")

    def test_a_coordinate_in_a_group(self):
        lat = np.array([-45.0, 0.0, 45.0])
        a = _with_group_lat(_file("a.nc", [0, 1]), lat)
        combine([a, _with_group_lat(_file("b.nc", [2, 3]), lat.copy())], "time")
        b = _with_group_lat(_file("b.nc", [2, 3]), lat + 22.5)
        with pytest.raises(IncompatibleSourcesError) as err:
            combine([a, b], "time")
        assert str(err.value) == (
            "coordinate 'g/lat' differs between a.nc and b.nc: a.nc[0] = -45.0, b.nc[0] = -22.5"
        )

    def test_values_not_read_are_never_assumed_equal(self):
        b = _file("b.nc", [2, 3])
        b = ScannedFile("b.nc", b.manifest, {"time": b.coords["time"]})
        with pytest.raises(IncompatibleSourcesError, match=r"'x' of b\.nc were not read"):
            combine([_file("a.nc", [0, 1]), b], "time")

    def test_one_file_needs_no_labels(self):
        only = _file("a.nc", [0, 1])
        combine([ScannedFile("a.nc", only.manifest, {})], "time")
