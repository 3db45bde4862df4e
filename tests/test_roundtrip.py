"""Values through the virtual store equal a direct read of the source files.

Truth: ``xr.open_mfdataset`` / ``xr.open_dataset`` (netCDF4 engine) or h5py, never anything
produced by this package. Every case is checked through ``xr.open_zarr`` (consolidated and
not) and raw ``zarr.open_group`` (against the undecoded netCDF values).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec
import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import (
    DAYS,
    LAYOUTS,
    NC3_FORMATS,
    sample_values,
    write_groups,
    write_packed,
    write_plain_hdf5,
    write_plain_hdf5_uniform,
    write_series,
    write_simple,
    write_sparse,
)
from oracle import (
    ZARR_FORMATS,
    assert_attrs_equal,
    assert_same_dataset,
    assert_same_variable,
    assert_store_matches,
    assert_zarr_matches_raw,
    checked_group,
    faces,
    open_each_format,
    open_truth,
    read_each_format,
)

from fsspec_virtual import UnsupportedVariableWarning

PEER_DATA = Path(__file__).resolve().parents[2] / "shared" / "peer_data" / "kerchunk"


def virtual(path: Any, concat_dim: str | None = "time", **kwargs: Any) -> Any:
    if isinstance(path, Path):
        path = str(path)
    if isinstance(path, list):
        path = [str(p) for p in path]
    if concat_dim is not None:  # explicit concat_dim=None is tested in test_fsspec_contract
        kwargs["concat_dim"] = concat_dim
    return fsspec.filesystem("virtualzarr", path=path, **kwargs)


def check(fs: Any, paths: list[Path], *, combine: str = "by_coords", raw_skip=()) -> None:
    """The store equals the truth of ``paths`` (given in combine order)."""
    expected = open_truth(paths, combine=combine)
    expected_raw = open_truth(paths, combine=combine, decode_cf=False)
    assert_store_matches(fs, expected, expected_raw, raw_skip=raw_skip)


TWO_FILES = [[0, 1, 2, 3], [4, 5, 6, 7]]


class TestDtypesAndLayouts:
    """int8..uint64, float32/64; gzip+shuffle, uncompressed chunked, contiguous; 1 or 2 files."""

    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("n_files", [1, 2, 3])
    def test_directory_matches_truth(self, series, layout, n_files):
        times = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]][:n_files]
        paths = series(times, layout=layout)
        check(virtual(paths[0].parent), paths)

    def test_one_file_collection_without_concat_dim(self, series):
        paths = series(TWO_FILES[:1])
        check(virtual(paths[0].parent, concat_dim=None), paths)

    def test_single_file_path_without_concat_dim(self, series):
        paths = series(TWO_FILES[:1], layout="contiguous")
        check(virtual(paths[0], concat_dim=None), paths)

    @pytest.mark.parametrize("chunk_time", [1, 2, 4])
    def test_unlimited_time_dimension(self, series, chunk_time):
        paths = series(TWO_FILES, unlimited=True, chunk_time=chunk_time)
        check(virtual(paths[0].parent), paths)


class TestPartialChunks:
    """Per-file lengths that fit the chunk grid: only the last file may end in a partial chunk."""

    @pytest.mark.parametrize(
        "steps",
        [(4, 3), (2, 3), (2, 2, 1), (4, 4, 2), (2, 2, 2, 2, 1)],
        ids=lambda s: "+".join(map(str, s)),
    )
    def test_lengths_on_the_chunk_grid(self, series, steps):
        times, start = [], 0
        for n in steps:
            times.append(list(range(start, start + n)))
            start += n
        paths = series(times, chunk_time=2, unlimited=True, dtypes=["float32", "int16"])
        check(virtual(paths[0].parent), paths)


class TestUnwrittenChunks:
    """Chunks never written read as the fill value the netCDF library reads, declared or not."""

    @pytest.mark.parametrize("declared_fill", [True, False], ids=["_FillValue", "default-fill"])
    @pytest.mark.parametrize("n_files", [1, 2])
    def test_fill_values(self, tmp_path, declared_fill, n_files):
        paths = [
            write_sparse(
                tmp_path / f"sparse{i}.nc",
                [4 * i + k for k in range(4)],
                declared_fill=declared_fill,
                seed=i,
            )
            for i in range(n_files)
        ]
        check(virtual(tmp_path), paths)

    def test_unwritten_chunks_are_missing_keys(self, tmp_path):
        path = write_sparse(tmp_path / "sparse.nc", [0, 1, 2, 3], declared_fill=True)
        fs = virtual(path, concat_dim=None)
        # part_f4: chunks (2, 4) over (4, 8); only chunk (0, 0) was written
        for face, (written, unwritten) in zip(
            faces(fs), [("part_f4/0.0", "part_f4/1.1"), ("part_f4/c/0/0", "part_f4/c/1/1")]
        ):
            assert face.fs.exists(written), face.label
            assert not face.fs.exists(unwritten), face.label
            with pytest.raises(FileNotFoundError):
                face.fs.cat_file(unwritten)
        with netCDF4.Dataset(path) as nc:
            nc.set_auto_maskandscale(False)
            served = read_each_format(fs, "part_f4")
            np.testing.assert_array_equal(served, nc["part_f4"][...], strict=True)


class TestPacking:
    """int16 with scale_factor / add_offset / _FillValue (and missing_value)."""

    @pytest.mark.filterwarnings("ignore:variable 't2m' has multiple fill values")
    @pytest.mark.parametrize("scale_dtype", ["f4", "f8"])
    @pytest.mark.parametrize("missing_value", [False, True])
    @pytest.mark.parametrize("n_files", [1, 2])
    def test_packed(self, tmp_path, scale_dtype, missing_value, n_files):
        paths = write_packed(
            tmp_path / "p", n_files, scale_dtype=scale_dtype, missing_value=missing_value
        )
        fs = virtual(tmp_path / "p")
        if scale_dtype == "f8":
            check(fs, paths)
            return
        # float32 packing cannot pass through Zarr's JSON attributes (xarray would unpack
        # to float64): the variable is served unpacked, as open_mfdataset decodes it
        check(fs, paths, raw_skip=("t2m",))
        truth = open_truth(paths)["t2m"]
        served = read_each_format(fs, "t2m")
        assert served.dtype == truth.dtype == np.float32
        np.testing.assert_array_equal(served, truth.values)
        for face in faces(fs):
            attrs = face.open_group()["t2m"].attrs.asdict()
            assert not {"scale_factor", "add_offset", "missing_value"} & set(attrs), attrs


class TestTime:
    def test_different_units_per_file(self, series):
        paths = series(
            [[0, 1, 2, 3], [0, 6, 12, 18]],
            units=[DAYS, "hours since 2001-02-01"],
            dtypes=["float32", "int64"],
        )
        fs = virtual(paths[0].parent)
        # raw time values legitimately differ from either file's: compare time decoded only
        check(fs, paths, raw_skip=("time",))
        for face in faces(fs):
            units = face.open_group()["time"].attrs["units"]
            assert units == DAYS, f"{face.label}: time must be re-encoded in file 1's units"

    def test_files_ordered_by_time_not_by_name(self, series):
        paths = series(TWO_FILES, names=["z_first.nc", "a_second.nc"])
        check(virtual(paths[0].parent), paths)

    def test_units_and_name_order_disagree(self, series):
        # later in name order but earlier in time, with different units
        paths = series(
            [[10.0, 10.5], [24.0 * 40, 24.0 * 40 + 12]],
            units=["days since 2001-01-01", "hours since 2000-12-01"],
            names=["b.nc", "a.nc"],
            chunk_time=2,
            dtypes=["float64"],
        )
        # a.nc: hours since 2000-12-01 -> 2001-01-10: before b.nc's 2001-01-11
        paths = [paths[1], paths[0]]
        check(virtual(paths[0].parent), paths, raw_skip=("time",))

    def test_list_given_out_of_time_order(self, series):
        paths = series([[0, 1], [2, 3], [4, 5]], dtypes=["int32"])
        check(virtual(list(reversed(paths))), paths)

    def test_no_coordinate_natural_filename_order(self, series):
        n = 11
        paths = series(
            [[float(i)] for i in range(n)],
            names=[f"f{i + 1}.nc" for i in range(n)],  # f2.nc before f10.nc
            with_time_coord=False,
            chunk_time=1,
            dtypes=["float32"],
        )
        check(virtual(paths[0].parent), paths, combine="nested")


class TestAttributes:
    def test_variable_attributes_differing_between_files(self, tmp_path):
        paths = [
            write_simple(tmp_path / f"f{i}.nc", [2 * i, 2 * i + 1], attrs={"comment": f"file {i}"})
            for i in range(2)
        ]
        check(virtual(tmp_path), paths)

    def test_attribute_kinds(self, tmp_path):
        path = tmp_path / "attrs.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.text = "température"
            nc.empty_text = ""
            nc.i8 = np.int8(-3)
            nc.u64 = np.uint64(2**64 - 1)
            nc.f32 = np.float32(0.1)
            nc.nan = np.nan
            nc.f64s = np.array([1e300, -0.0, 2.5])
            nc.setncattr_string("strings", ["a", "bb", ""])
            nc.createDimension("x", 2)
            var = nc.createVariable("v", "f4", ("x",))
            var[:] = [1, 2]
            var.i16s = np.array([-1, 0, 1], dtype="i2")
            var.one = np.array([7], dtype="i4")
            var.flag_meanings = "a b"
        check(virtual(path, concat_dim=None), [path])


class TestNetCDF3:
    @pytest.mark.parametrize("fmt", NC3_FORMATS)
    @pytest.mark.parametrize("n_files", [1, 2])
    @pytest.mark.parametrize("unlimited", [True, False], ids=["record", "fixed"])
    def test_netcdf3(self, series, fmt, n_files, unlimited):
        paths = series(TWO_FILES[:n_files], fmt=fmt, unlimited=unlimited)
        check(virtual(paths[0].parent), paths)

    @pytest.mark.parametrize("fmt", NC3_FORMATS)
    def test_fill_value_and_packing(self, tmp_path, fmt):
        attrs = {"scale_factor": 0.5, "add_offset": 10.0}
        paths = [
            write_simple(
                tmp_path / f"f{i}.nc",
                [2 * i, 2 * i + 1],
                dtype="i2",
                fill_value=np.int16(3),
                attrs=attrs,
                fmt=fmt,
                seed=i,
            )
            for i in range(2)
        ]
        check(virtual(tmp_path), paths)


class TestGroups:
    @pytest.mark.parametrize("group", [None, "g1", "g1/g2", "g3"])
    def test_group(self, tmp_path, group):
        path = write_groups(tmp_path / "groups.nc")
        fs = virtual(path, concat_dim=None)
        expected = open_truth([path], group=group)
        expected_raw = open_truth([path], group=group, decode_cf=False)
        assert_store_matches(fs, expected, expected_raw, group=group)

    def test_group_tree(self, tmp_path):
        path = write_groups(tmp_path / "groups.nc")
        for face in faces(virtual(path, concat_dim=None)):
            root = face.open_group()
            groups = {name for name, _ in root.groups()}
            assert groups == {"g1", "g3"}, face.label
            assert {name for name, _ in root["g1"].groups()} == {"g2"}, face.label
            with netCDF4.Dataset(path) as nc:
                for name in ("g1", "g1/g2", "g3"):
                    nc_group = nc[name]
                    expected = {k: nc_group.getncattr(k) for k in nc_group.ncattrs()}
                    where = f"{face.label}: group {name}"
                    assert_attrs_equal(root[name].attrs.asdict(), expected, where)


def _h5_datasets(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj[()], dict(obj.attrs))

        f.visititems(visit)
    return out


def _zarr_arrays(group: zarr.Group) -> dict[str, zarr.Array]:
    return {
        name: node for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)
    }


class TestPlainHDF5:
    """Plain HDF5 (h5py, no netCDF conventions): truth is h5py."""

    def test_raw_zarr_equals_h5py(self, tmp_path):
        path = write_plain_hdf5(tmp_path / "plain.h5")
        expected = _h5_datasets(path)
        for face in faces(virtual(path, concat_dim=None)):
            group = face.open_group()
            arrays = _zarr_arrays(group)
            assert set(arrays) == set(expected), face.label
            for name, (values, attrs) in expected.items():
                where = f"{face.label}: {name}"
                actual = np.asarray(arrays[name][...])
                np.testing.assert_array_equal(
                    actual, np.asarray(values), err_msg=where, strict=True
                )
                assert_attrs_equal(
                    arrays[name].attrs.asdict(), attrs, where, ignore={"_ARRAY_DIMENSIONS"}
                )
            with h5py.File(path, "r") as f:
                assert_attrs_equal(group.attrs.asdict(), dict(f.attrs), f"{face.label}: root")

    @pytest.mark.parametrize("consolidated", [True, False])
    def test_xarray_does_not_mask_zeros_or_hdf5_fill(self, tmp_path, consolidated):
        # HDF5's fill value is not a _FillValue (xarray masks a Zarr fill_value): zeros and
        # 7.5 are data
        path = write_plain_hdf5_uniform(tmp_path / "plain.h5")
        expected = _h5_datasets(path)
        for face in faces(virtual(path, concat_dim=None)):
            with face.open_dataset(consolidated=consolidated) as ds:
                assert set(map(str, ds.variables)) == set(expected)
                for name, (values, _) in expected.items():
                    np.testing.assert_array_equal(
                        ds[name].values, np.asarray(values), err_msg=name, strict=True
                    )

    def test_xarray_opens_datasets_of_different_shapes(self, tmp_path):
        # h5py datasets without dimension scales, of different lengths, in one group
        path = write_plain_hdf5(tmp_path / "plain.h5")
        expected = _h5_datasets(path)
        fs = virtual(path, concat_dim=None)
        for face, group in itertools.product(faces(fs), (None, "grp")):
            with face.open_dataset(consolidated=True, group=group) as ds:
                prefix = f"{group}/" if group else ""
                names = {k[len(prefix) :] for k in expected if k.startswith(prefix)}
                names = {n for n in names if "/" not in n}
                assert set(map(str, ds.data_vars)) | set(map(str, ds.coords)) == names
                for name in names:
                    values = expected[prefix + name][0]
                    np.testing.assert_array_equal(
                        ds[name].values, np.asarray(values), err_msg=name, strict=True
                    )


#: The peer files these tests use, where the shared folder is present (else none: nothing to
#: collect, rather than a skipped check).
PEER_AIR = [p for p in [PEER_DATA / "air.nc"] if p.exists()]


class TestPeerFiles:
    """Real files written by another project (kerchunk's test data)."""

    __test__ = bool(PEER_AIR)  # not collected at all without them (never a skipped check)

    @pytest.mark.parametrize("source", PEER_AIR, ids=[p.name for p in PEER_AIR])
    def test_air(self, tmp_path, source):
        path = Path(shutil.copy(source, tmp_path / "air.nc"))
        check(virtual(path, concat_dim=None), [path])

    @pytest.mark.parametrize("source", PEER_AIR, ids=[p.name for p in PEER_AIR])
    def test_air_split_in_two_files(self, tmp_path, source):
        with xr.open_dataset(source) as ds:
            full = ds.load()
        paths = []
        for i, part in enumerate([slice(0, 62), slice(62, None)]):
            path = tmp_path / f"air{i}.nc"
            full.isel(time=part).to_netcdf(path, engine="netcdf4")
            paths.append(path)
        check(virtual(tmp_path), paths)


def _odd_netcdf(path: Path, feature: str) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 3)
        ok = nc.createVariable("ok", "f4", ("x",))
        ok[:] = [0.0, 1.0, 2.0]
        if feature == "vlen_str":
            var = nc.createVariable("odd", str, ("x",))
            var[:] = np.array(["a", "bb", "ccc"], dtype=object)
        elif feature == "char":
            nc.createDimension("nchar", 2)
            var = nc.createVariable("odd", "S1", ("x", "nchar"))
            var[:] = netCDF4.stringtochar(np.array(["ab", "cd", "ef"], dtype="S2"))
        elif feature == "enum":
            enum = nc.createEnumType(np.uint8, "cloud_t", {"clear": 0, "cloudy": 1})
            var = nc.createVariable("odd", enum, ("x",))
            var[:] = np.array([0, 1, 0], dtype="u1")
        elif feature == "fletcher32":
            var = nc.createVariable("odd", "f4", ("x",), fletcher32=True, chunksizes=(2,))
            var[:] = [0.5, 0.0, -1.0]
        elif feature in ("zstd", "bzip2", "szip", "blosc_lz4"):
            nc.createDimension("n", 64)
            kwargs: dict[str, Any] = {"compression": feature, "chunksizes": (32,)}
            if feature == "szip":
                kwargs.update(szip_coding="nn", szip_pixels_per_block=8)
            var = nc.createVariable("odd", "i4", ("n",), **kwargs)
            var[:] = (np.arange(64) % 7 - 3) * 1000
        else:
            raise ValueError(feature)


def _writable(feature: str) -> bool:
    """Whether this netCDF4 build can write ``feature`` (its filters vary by build)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _odd_netcdf(Path(tmp) / "probe.nc", feature)
        except (ValueError, RuntimeError):
            return False
    return True


#: The netCDF4 features this build writes (filters it lacks are not collected).
NETCDF4_FEATURES = [
    f
    for f in ["vlen_str", "char", "enum", "fletcher32", "zstd", "bzip2", "szip", "blosc_lz4"]
    if _writable(f)
]
HDF5_FEATURES = ["lzf", "h5_fletcher32", "scaleoffset", "scalar_str"] + (
    ["vlen_peer"] if (PEER_DATA / "vlen.h5").exists() else []
)


def _odd_hdf5(path: Path, feature: str) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("ok", data=np.array([0.0, 1.0, 2.0], dtype="f4"))
        data = np.array([0.0, 1.5, -2.25, 0.0], dtype="f8")
        if feature == "lzf":
            f.create_dataset("odd", data=data, chunks=(2,), compression="lzf")
        elif feature == "h5_fletcher32":
            f.create_dataset("odd", data=data, chunks=(2,), fletcher32=True)
        elif feature == "scaleoffset":
            f.create_dataset("odd", data=np.arange(8, dtype="i4"), chunks=(4,), scaleoffset=0)
        elif feature == "scalar_str":
            f.create_dataset("odd", data="hello")
        else:
            raise ValueError(feature)


def _record_first_access(fn: Any) -> tuple[Any, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, caught


def _assert_warned(caught: list[warnings.WarningMessage], name: str, path: Path) -> None:
    messages = [
        str(w.message) for w in caught if issubclass(w.category, UnsupportedVariableWarning)
    ]
    assert any(name in m and path.name in m for m in messages), (
        f"{name!r} of {path.name} was left out of the store without an "
        f"UnsupportedVariableWarning naming both; warnings: {messages}"
    )


class TestOddFeatures:
    """Features kerchunk drops or gets wrong: served right, or left out with a warning. Never
    silently missing, never wrong values."""

    @pytest.mark.parametrize("feature", NETCDF4_FEATURES)
    def test_netcdf4(self, tmp_path, feature):
        path = tmp_path / "odd.nc"
        _odd_netcdf(path, feature)
        expected = open_truth([path])
        fs = virtual(path, concat_dim=None)
        ds, caught = _record_first_access(lambda: open_each_format(fs, consolidated=True))
        assert_same_variable(ds["ok"].variable, expected["ok"].variable, "ok")
        if feature == "enum":
            # served as the base integers, with the enum's names as CF flag attributes
            attrs = ds["odd"].attrs
            assert attrs.pop("flag_values") == [0, 1]
            assert attrs.pop("flag_meanings") == "clear cloudy"
        if "odd" in ds.variables:
            assert_same_dataset(ds, expected)
        else:
            _assert_warned(caught, "odd", path)

    @pytest.mark.parametrize("feature", HDF5_FEATURES)
    def test_hdf5(self, tmp_path, feature):
        path = tmp_path / "odd.h5"
        if feature == "vlen_peer":
            path = Path(shutil.copy(PEER_DATA / "vlen.h5", path))
            name = "vlen_str"
        else:
            _odd_hdf5(path, feature)
            name = "odd"
        expected = _h5_datasets(path)
        fs = virtual(path, concat_dim=None)
        group, caught = _record_first_access(lambda: checked_group(fs))
        served = [set(_zarr_arrays(face.open_group())) for face in faces(fs)]
        assert all(names == served[0] for names in served), served
        arrays = served[0]
        if "ok" in expected:
            np.testing.assert_array_equal(group["ok"][...], expected["ok"][0], strict=True)
        if name in arrays:
            actual = np.asarray(group[name][...])
            truth = np.asarray(expected[name][0])
            if truth.dtype.kind in "OS" or actual.dtype.kind in "OUT":
                as_text = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v))
                actual, truth = as_text(actual), as_text(truth)
                assert actual.shape == truth.shape
                np.testing.assert_array_equal(actual, truth)
            else:
                np.testing.assert_array_equal(actual, truth, strict=True)
        else:
            _assert_warned(caught, name, path)


class TestManyFiles:
    def test_three_hundred_files(self, many_files):
        fs = virtual(many_files[0].parent)
        check(fs, many_files)


class TestConcurrency:
    def test_different_collections_opened_from_many_threads(self, tmp_path):
        # scans of different collections run at the same time (kerchunk calls zarr's sync API:
        # no SyncError, no deadlock), and every collection still equals its own truth
        collections = [
            write_series(tmp_path / f"c{k}", TWO_FILES, dtypes=["float32", "int64"])
            for k in range(8)
        ]

        def open_one(paths: list[Path]) -> xr.Dataset:
            return open_each_format(virtual(paths[0].parent), consolidated=True)

        with ThreadPoolExecutor(4) as pool:
            opened = list(pool.map(open_one, collections))
        for paths, ds in zip(collections, opened):
            assert_same_dataset(ds, open_truth(paths))


class TestDirectoryContents:
    def test_non_data_files_are_ignored(self, series):
        paths = series(TWO_FILES, dtypes=["float32", "uint8"])
        directory = paths[0].parent
        (directory / "README.txt").write_text("these are test files\n")
        (directory / "meta.json").write_text('{"zarr_format": 2}')
        (directory / "notes.nc.md5").write_text("d41d8cd98f00b204e9800998ecf8427e\n")
        fs = virtual(directory)
        _, caught = _record_first_access(lambda: fs.ls(""))
        assert not [w for w in caught if "README" in str(w.message) or "json" in str(w.message)]
        check(fs, paths)

    def test_recognised_by_magic_not_by_name(self, series):
        paths = series(TWO_FILES, dtypes=["float32"])
        renamed = [p.rename(p.with_suffix(s)) for p, s in zip(paths, [".data", ""])]
        check(virtual(renamed[0].parent), renamed)

    def test_netcdf3_classic_and_64bit_offset_mixed(self, tmp_path):
        paths = [
            write_simple(tmp_path / "a.nc", [0, 1], fmt="NETCDF3_CLASSIC", chunks=None),
            write_simple(tmp_path / "b.nc", [2, 3], fmt="NETCDF3_64BIT_OFFSET", chunks=None),
        ]
        check(virtual(tmp_path), paths)


class TestSourceSpellings:
    """The same collection, addressed every way the issue promises."""

    @pytest.mark.parametrize(
        "spelling",
        ["dir", "dir_slash", "glob", "list", "file_url", "file_url_glob", "target_protocol"],
    )
    def test_spelling(self, series, spelling):
        paths = series(TWO_FILES, dtypes=["float32", "int64"])
        directory = paths[0].parent
        kwargs: dict[str, Any] = {}
        path: Any = {
            "dir": str(directory),
            "dir_slash": str(directory) + "/",
            "glob": f"{directory}/*.nc",
            "list": [str(p) for p in paths],
            "file_url": f"file://{directory}",
            "file_url_glob": f"file://{directory}/*.nc",
            "target_protocol": str(directory),
        }[spelling]
        if spelling == "target_protocol":
            kwargs = {"target_protocol": "file", "target_options": {}}
        check(virtual(path, **kwargs), paths)

    @pytest.mark.parametrize("consolidated", [True, False])
    def test_url_chaining_with_xarray(self, series, consolidated):
        paths = series(TWO_FILES, dtypes=["float32", "int16"])
        url = "virtualzarr::" + str(paths[0].parent) + "/*.nc"
        for zarr_format in ZARR_FORMATS:
            with xr.open_zarr(
                url,
                storage_options={"virtualzarr": {"concat_dim": "time", "zarr_format": zarr_format}},
                consolidated=consolidated,
                zarr_format=zarr_format,
            ) as ds:
                assert_same_dataset(ds.load(), open_truth(paths), f"zarr_format={zarr_format}")

    def test_url_chaining_with_zarr(self, series):
        paths = series(TWO_FILES, dtypes=["float32", "int16"])
        for zarr_format in ZARR_FORMATS:
            mapper = fsspec.get_mapper(
                "virtualzarr::" + str(paths[0].parent),
                virtualzarr={"concat_dim": "time", "zarr_format": zarr_format},
            )
            group = zarr.open_group(mapper, mode="r", zarr_format=zarr_format)
            where = f"zarr_format={zarr_format}"
            assert_zarr_matches_raw(group, open_truth(paths, decode_cf=False), where)

    def test_memory_filesystem(self, series):
        paths = series(TWO_FILES, dtypes=["float32", "uint16"])
        root = f"/vz-test-{uuid.uuid4().hex}"
        memory = fsspec.filesystem("memory")
        try:
            for p in paths:
                memory.pipe_file(f"{root}/{p.name}", p.read_bytes())
            check(virtual(f"memory://{root}/*.nc"), paths)
        finally:
            memory.rm(root, recursive=True)

    def test_http_list_of_urls(self, http_root):
        directory, base = http_root
        paths = [write_simple(directory / f"h{i}.nc", [2 * i, 2 * i + 1], seed=i) for i in range(2)]
        check(virtual([f"{base}/{p.name}" for p in paths]), paths)


def test_sample_values_cover_the_edges():
    """The fixtures' data really hold zeros and extremes (else the dtype tests prove less)."""
    for dtype in ("int8", "uint64", "float32"):
        values = sample_values(dtype, (2, 3), 0)
        assert values.dtype == np.dtype(dtype)
        assert (values == 0).any()
        if values.dtype.kind in "iu":
            assert values.max() == np.iinfo(dtype).max
        else:
            assert np.isnan(values).any()


def _base_dataset() -> xr.Dataset:
    time = np.array(["2001-01-01", "2001-01-02", "2001-01-03"], dtype="datetime64[ns]")
    ds = xr.Dataset(
        {
            "t": (("time", "x"), np.array([[0.0, np.nan], [1.5, 2.0], [3.0, 0.0]], "f4")),
            "n": (("x",), np.array([0, 7], "i2")),
            "label": (("x",), np.array(["a", "bc"])),
            "scalar": ((), np.float64(2.5)),
        },
        coords={"time": time, "x": [10.0, 20.0], "aux": ("x", [1, 2])},
        attrs={"title": "base", "levels": np.array([1, 2, 3], "i4"), "empty": ""},
    )
    ds["t"].attrs = {"units": "K", "valid_range": np.array([-1.0, 1.0], "f4"), "n": 1}
    return ds


def _mutate(ds: xr.Dataset, how: str) -> xr.Dataset:
    out = ds.copy(deep=True)
    if how == "value":
        out["t"].values[2, 0] = 3.25
    elif how == "nan-vs-zero":
        out["t"].values[0, 1] = 0.0
    elif how == "zero-vs-nan":
        out["t"].values[0, 0] = np.nan
    elif how == "dtype":
        out["n"] = out["n"].astype("i4")
    elif how == "extra-variable":
        out["extra"] = out["n"]
    elif how == "missing-variable":
        out = out.drop_vars("scalar")
    elif how == "global-attr-value":
        out.attrs["title"] = "other"
    elif how == "global-attr-missing":
        del out.attrs["empty"]
    elif how == "global-attr-array":
        out.attrs["levels"] = np.array([1, 2, 4], "i4")
    elif how == "attr-empty-vs-space":
        out.attrs["empty"] = " "
    elif how == "attr-int-vs-float":
        out["t"].attrs["n"] = 1.0
    elif how == "attr-int-vs-str":
        out["t"].attrs["n"] = "1"
    elif how == "var-attr-extra":
        out["n"].attrs["_FillValue"] = 0
    elif how == "dims":
        out = out.rename_dims({"x": "y"})
    elif how == "coordinate-status":
        out = out.reset_coords("aux")
    elif how == "time":
        out["time"] = out["time"] + np.timedelta64(1, "ns")
    elif how == "text":
        out["label"] = ("x", np.array(["a", "bd"]))
    elif how == "scalar":
        out["scalar"] = ((), np.float64(2.0))
    else:
        raise ValueError(how)
    return out


MUTATIONS = [
    "value",
    "nan-vs-zero",
    "zero-vs-nan",
    "dtype",
    "extra-variable",
    "missing-variable",
    "global-attr-value",
    "global-attr-missing",
    "global-attr-array",
    "attr-empty-vs-space",
    "attr-int-vs-float",
    "attr-int-vs-str",
    "var-attr-extra",
    "dims",
    "coordinate-status",
    "time",
    "text",
    "scalar",
]


class TestOracle:
    """The comparison helpers can fail: a check that cannot fail is a defect."""

    def test_identical_passes(self):
        assert_same_dataset(_base_dataset(), _base_dataset())

    @pytest.mark.parametrize("how", MUTATIONS)
    def test_difference_fails(self, how):
        base = _base_dataset()
        with pytest.raises(AssertionError):
            assert_same_dataset(_mutate(base, how), base)
        with pytest.raises(AssertionError):
            assert_same_dataset(base, _mutate(base, how))

    @staticmethod
    def _zarr_group(ds: xr.Dataset) -> zarr.Group:
        group = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=2)
        for name, var in ds.variables.items():
            fill = var.attrs.get("_FillValue")
            array = group.create_array(
                str(name), shape=var.shape, dtype=var.dtype, fill_value=fill, chunks=var.shape
            )
            array[...] = var.values
            attrs = {
                k: v.tolist() if isinstance(v, np.ndarray | np.generic) else v
                for k, v in var.attrs.items()
                if k != "_FillValue"
            }
            array.attrs.update({**attrs, "_ARRAY_DIMENSIONS": list(var.dims)})
        return group

    def _raw(self) -> xr.Dataset:
        ds = _base_dataset().drop_vars(["time", "label"])
        ds["n"].attrs["_FillValue"] = np.int16(-1)
        ds["t"].attrs = {"units": "K"}
        return ds

    def test_raw_identical_passes(self):
        assert_zarr_matches_raw(self._zarr_group(self._raw()), self._raw())

    @pytest.mark.parametrize(
        "how", ["value", "dtype", "dims", "attr", "fill", "undeclared-fill", "extra"]
    )
    def test_raw_difference_fails(self, how):
        raw = self._raw()
        group = self._zarr_group(raw)
        expected = raw.copy(deep=True)
        if how == "value":
            expected["t"].values[1, 1] = 99.0
        elif how == "dtype":
            expected["scalar"] = ((), np.float32(2.5))
        elif how == "dims":
            group["n"].attrs["_ARRAY_DIMENSIONS"] = ["y"]
        elif how == "attr":
            expected["t"].attrs["units"] = "degC"
        elif how == "fill":
            expected["n"].attrs["_FillValue"] = np.int16(-2)
        elif how == "undeclared-fill":
            group["t"].attrs["_FillValue"] = 0.0
        elif how == "extra":
            group.create_array("extra", shape=(1,), dtype="i1")
        with pytest.raises(AssertionError):
            assert_zarr_matches_raw(group, expected)
