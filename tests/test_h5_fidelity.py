"""HDF5 / NetCDF4 variables the store must serve exactly as h5py / xarray read them, or
leave out with a warning: variable-length strings with a fill value, invalid link names,
virtual datasets, compound and complex types, padded fixed-length strings, data never
written, files with a user block, and filter pipelines kerchunk misreads (shuffle after
another filter, chunks written with filters skipped).

Every file is written here (h5py, PyTables, netCDF4, xarray); the truth is a direct read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import h5py
import netCDF4
import numpy as np
import pytest
import tables
import xarray as xr
from conftest import scanned_store
from oracle import assert_same_dataset, checked_group, open_each_format

from fsspec_virtual import IncompatibleSourcesError
from fsspec_virtual.codecs import decode_chunk
from fsspec_virtual.manifest import ChunkGrid, Manifest, VirtualArray
from fsspec_virtual.scan import hdf5 as scan_module
from fsspec_virtual.scan.hdf5 import scan_hdf5

# -- helpers ----------------------------------------------------------------------------------


virtual = scanned_store


def zarr_group(fs: Any) -> Any:
    """The raw group; every array read is read as Zarr format 2 and 3, which must agree."""
    return checked_group(fs)


def h5py_truth(dataset: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(dataset.dtype) is not None and dataset.dtype.kind == "O":
        return np.asarray(dataset.asstr()[()], dtype=object)
    return np.asarray(dataset[()])


def assert_equals_h5py(fs: Any, path: Path, names: list[str]) -> None:
    """Each named dataset reads through raw zarr as h5py reads it: shape, dtype, values."""
    group = zarr_group(fs)
    with h5py.File(path, "r") as f:
        for name in names:
            expected = h5py_truth(f[name])
            actual = np.asarray(group[name][...])
            assert actual.shape == expected.shape, name
            if expected.dtype.kind == "O":
                assert [str(v) for v in actual.ravel()] == expected.ravel().tolist(), name
                continue
            assert actual.dtype.names == expected.dtype.names, name
            if expected.dtype.names is None:
                _assert_same_native(actual, expected, name)
                continue
            for field in expected.dtype.names:  # structured: each field, its type and values
                _assert_same_native(actual[field], expected[field], f"{name}.{field}")


def _assert_same_native(actual: np.ndarray, expected: np.ndarray, where: str) -> None:
    """Same type (byte order aside) and values."""
    native = expected.dtype.newbyteorder("=")
    assert actual.dtype.newbyteorder("=") == native, (where, actual.dtype, expected.dtype)
    np.testing.assert_array_equal(
        actual.astype(native), expected.astype(native), err_msg=where, strict=True
    )


def assert_equals_xarray(fs: Any, path: Path, engines: tuple[str, ...]) -> None:
    """xr.open_zarr over the store equals xr.open_dataset of the file (decoded)."""
    actual = open_each_format(fs, consolidated=True)
    for engine in engines:
        with xr.open_dataset(path, engine=engine) as ds:
            assert_same_dataset(actual, ds.load(), f"{path.name} ({engine})")


def left_out(fs: Any, path: Path, name: str) -> None:
    """``name`` is not in the store, and a warning names the file and it."""
    assert not any(key.startswith(f"{name}/") for key in fs.find("")), name
    messages = list(fs.caught)
    assert any(path.name in m and repr(name) in m for m in messages), messages


# -- 1. variable-length strings with a _FillValue ----------------------------------------------


def _xarray_strings(path: Path, engine: str) -> None:
    ds = xr.Dataset({"s": ("x", np.array(["a", "bb", ""], dtype=object))})
    ds.to_netcdf(path, engine=engine, encoding={"s": {"_FillValue": ""}})


def _netcdf4_strings(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 4)
        v = nc.createVariable("s", str, ("x",), fill_value="zz")
        v[0] = "hello"
        v[2] = "zz"  # the fill itself; element 1 and 3 never written


@pytest.mark.parametrize(
    "write",
    [
        lambda p: _xarray_strings(p, "netcdf4"),
        lambda p: _xarray_strings(p, "h5netcdf"),
        _netcdf4_strings,
    ],
    ids=["xarray-netcdf4", "xarray-h5netcdf", "netCDF4-fill"],
)
def test_vlen_strings_with_fill_value(tmp_path: Path, write: Callable[[Path], None]) -> None:
    path = tmp_path / "strings.nc"
    write(path)
    fs = virtual(path)
    assert_equals_h5py(fs, path, ["s"])
    assert_equals_xarray(fs, path, ("netcdf4", "h5netcdf"))


# -- 2. link names that are no valid Zarr node name ---------------------------------------------


def test_dot_names_never_become_keys(tmp_path: Path) -> None:
    path = tmp_path / "dots.h5"
    with h5py.File(path, "w") as f:
        f.create_group("..").create_group("..").create_dataset("x", data=np.arange(4))
        f.create_group("...").create_dataset("y", data=np.arange(3))
        f.create_group("g").create_dataset(".zarray", data=np.arange(2))
        f.create_dataset("ok", data=np.arange(5))
        f.create_dataset("with space", data=np.arange(2))
        f.create_dataset("__xarray_dataarray_variable__", data=np.arange(2))
    fs = virtual(path)
    for key in fs.find(""):
        parts = key.split("/")
        assert not any(set(p) == {"."} for p in parts), key
        assert not any(p in (".zarray", ".zattrs", ".zgroup") for p in parts[:-1]), key
    for name in ("../../x", ".../y", "g/.zarray"):
        left_out(fs, path, name)
    assert_equals_h5py(fs, path, ["ok", "with space", "__xarray_dataarray_variable__"])
    assert sorted(zarr_group(fs).array_keys()) == [
        "__xarray_dataarray_variable__",
        "ok",
        "with space",
    ]


# -- 3. virtual datasets ------------------------------------------------------------------------


def test_virtual_dataset_in_one_file(tmp_path: Path) -> None:
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("base", data=np.arange(40, dtype="f8").reshape(4, 10))
        f.create_dataset("other", data=-np.arange(10, dtype="i4"))
        stacked = h5py.VirtualLayout(shape=(3, 10), dtype="f8")
        stacked[0] = h5py.VirtualSource(".", "base", shape=(4, 10))[1]
        stacked[2] = h5py.VirtualSource(".", "base", shape=(4, 10))[3]  # row 1: the fill
        f.create_virtual_dataset("stacked", stacked, fillvalue=-7.5)
        strided = h5py.VirtualLayout(shape=(5,), dtype="i4")
        strided[:] = h5py.VirtualSource(".", "other", shape=(10,))[::2]
        f.create_virtual_dataset("strided", strided)
    fs = virtual(path)
    assert_equals_h5py(fs, path, ["base", "other", "stacked", "strided"])


def test_virtual_dataset_of_other_files_left_out(tmp_path: Path) -> None:
    for i in range(2):
        with h5py.File(tmp_path / f"part{i}.h5", "w") as f:
            f.create_dataset("data", data=np.arange(6, dtype="i4") * (i + 1))
    layout = h5py.VirtualLayout(shape=(2, 6), dtype="i4")
    for i in range(2):
        layout[i] = h5py.VirtualSource(f"part{i}.h5", "data", shape=(6,))
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("vds", layout, fillvalue=-1)
        f.create_dataset("plain", data=np.arange(3))
    fs = virtual(tmp_path / "vds.h5")
    left_out(fs, path, "vds")
    assert_equals_h5py(fs, path, ["plain"])


# -- 4. compound and complex types --------------------------------------------------------------


class _Record(tables.IsDescription):
    name = tables.StringCol(7, pos=0)
    count = tables.UInt16Col(pos=1)
    colour = tables.EnumCol(["red", "green"], "green", base="uint8", pos=2)
    flag = tables.BoolCol(pos=3)
    small = tables.ComplexCol(itemsize=8, pos=4)
    value = tables.Float64Col(pos=5)
    big = tables.ComplexCol(itemsize=16, pos=6)
    tiny = tables.Int8Col(pos=7)


def _pytables_file(path: Path) -> None:
    with tables.open_file(str(path), "w") as f:
        rows = [
            (b"n%d" % i, i * 1000, i % 2, i % 3 == 0, 1j * i, i / 3, i - 1j, -i) for i in range(11)
        ]
        zipped = f.create_table(
            "/",
            "zipped",
            _Record,
            filters=tables.Filters(complevel=5, complib="zlib"),
            chunkshape=(3,),
        )
        zipped.append(rows)
        plain = f.create_table("/", "plain", _Record, chunkshape=(4,))
        plain.append(rows[:6])
        f.create_array("/", "complex128", np.arange(6).reshape(2, 3) * (1 + 2j))
        f.create_array("/", "complex64", (np.arange(4) - 1j).astype("c8"))


def _h5py_compounds(path: Path) -> None:
    padded = np.dtype(
        {
            "names": ["x", "y", "s"],
            "formats": ["<i2", "<f8", "S3"],
            "offsets": [0, 8, 20],
            "itemsize": 32,
        }
    )
    reordered = np.dtype({"names": ["b", "a"], "formats": ["<f4", "<i8"], "offsets": [8, 0]})
    with h5py.File(path, "w") as f:
        f["padded"] = np.array([(1, 2.5, b"ab"), (-3, 4.5, b"xyz")], dtype=padded)
        f["reordered"] = np.array([(1.5, 7), (2.5, -8)], dtype=reordered)
        f["big_endian"] = np.array([(1, 2.5), (3, 4.5)], dtype=[("x", ">i4"), ("y", ">f8")])
        f["with_complex"] = np.array([(1, 1 + 1j), (2, -2j)], dtype=[("i", "<i4"), ("z", "<c16")])
        f["complex128"] = np.arange(6).reshape(2, 3) * (1 - 2j)
        f.create_dataset(
            "complex64_chunked",
            data=(np.arange(7) + 1j).astype("c8"),
            chunks=(3,),
            compression="gzip",
        )
        f["complex_big_endian"] = (np.arange(3) * 1j).astype(">c16")


def test_pytables_tables_and_complex_equal_h5py(tmp_path: Path) -> None:
    path = tmp_path / "tables.h5"
    _pytables_file(path)
    fs = virtual(path)
    assert_equals_h5py(fs, path, ["zipped", "plain", "complex128", "complex64"])


def test_h5py_compounds_and_complex_equal_h5py(tmp_path: Path) -> None:
    path = tmp_path / "compounds.h5"
    _h5py_compounds(path)
    fs = virtual(path)
    names = [
        "padded",
        "reordered",
        "big_endian",
        "with_complex",
        "complex128",
        "complex64_chunked",
        "complex_big_endian",
    ]
    assert_equals_h5py(fs, path, names)


def test_complex_through_xarray_equals_h5netcdf(tmp_path: Path) -> None:
    """h5py writes complex numbers as {r, i} compounds; xarray reads complex128/64."""
    path = tmp_path / "complex.nc"
    ds = xr.Dataset(
        {
            "z": (("t", "x"), np.arange(6).reshape(2, 3) * (1 + 2j)),
            "z64": ("t", np.array([1j, 2 - 1j], dtype="c8")),
        }
    )
    ds.to_netcdf(path, engine="h5netcdf", invalid_netcdf=True)
    fs = virtual(path)
    assert_equals_xarray(fs, path, ("h5netcdf",))
    assert_equals_h5py(fs, path, ["z", "z64"])


def test_unreadable_compounds_left_out(tmp_path: Path) -> None:
    """A time column (H5T_TIME, which h5py cannot read) and an array column: those
    tables are left out with a warning, the rest of the file is served."""
    path = tmp_path / "odd.h5"

    class Timed(tables.IsDescription):
        when = tables.Time64Col()
        value = tables.Float32Col()

    class Shaped(tables.IsDescription):
        pair = tables.Float64Col(shape=(2,))

    with tables.open_file(str(path), "w") as f:
        f.create_table("/", "timed", Timed).append([(1e9, 1.5), (2e9, 2.5)])
        f.create_table("/", "shaped", Shaped).append([([1.0, 2.0],)])
        f.create_array("/", "plain", np.arange(4, dtype="i2"))
    fs = virtual(path)
    left_out(fs, path, "timed")
    left_out(fs, path, "shaped")
    assert_equals_h5py(fs, path, ["plain"])


# -- 5. fixed-length strings ---------------------------------------------------------------------


def _fixed_strings(path: Path) -> list[str]:
    """Datasets of every HDF5 string padding, written byte for byte (no conversion)."""
    raw = [b"ab    ", b"abcdef", b"a\x00xyz\x00", b"  c   ", b"\x00\x00\x00\x00\x00\x00"]
    names = []
    with h5py.File(path, "w") as f:
        for pad, label in [
            (h5py.h5t.STR_SPACEPAD, "space"),
            (h5py.h5t.STR_NULLTERM, "nullterm"),
            (h5py.h5t.STR_NULLPAD, "nullpad"),
        ]:
            for cset, encoding in [(h5py.h5t.CSET_ASCII, "ascii"), (h5py.h5t.CSET_UTF8, "utf8")]:
                for layout in ("contiguous", "chunked"):
                    tid = h5py.h5t.C_S1.copy()
                    tid.set_size(6)
                    tid.set_strpad(pad)
                    tid.set_cset(cset)
                    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                    if layout == "chunked":
                        dcpl.set_chunk((2,))
                    name = f"{label}_{encoding}_{layout}"
                    space = h5py.h5s.create_simple((len(raw),))
                    dset = h5py.h5d.create(f.id, name.encode(), tid, space, dcpl=dcpl)
                    dset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw, "S6"), mtype=tid)
                    names.append(name)
    return names


def test_padded_fixed_strings_equal_h5py(tmp_path: Path) -> None:
    path = tmp_path / "fixed.h5"
    names = _fixed_strings(path)
    fs = virtual(path)
    assert_equals_h5py(fs, path, names)
    actual = open_each_format(fs, consolidated=True)
    with xr.open_dataset(path, engine="h5netcdf", phony_dims="sort") as ds:
        assert_same_dataset(actual, ds.load(), "h5netcdf")


def test_netcdf_char_arrays_equal_xarray(tmp_path: Path) -> None:
    path = tmp_path / "chars.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 3)
        nc.createDimension("n", 4)
        plain = nc.createVariable("plain", "S1", ("x", "n"))
        plain[:] = netCDF4.stringtochar(np.array(["ab  ", "cd", " e"], "S4"))
        text = nc.createVariable("text", "S1", ("x", "n"))
        text._Encoding = "utf-8"
        text[:] = netCDF4.stringtochar(np.array(["ab  ", "cd", " e"], "S4"))
        one = nc.createVariable("one", "S1", ("x",), fill_value=b"x")
        one[:2] = np.array([b"a", b" "])
    fs = virtual(path)
    assert_equals_xarray(fs, path, ("netcdf4", "h5netcdf"))


# -- 7. data never written ------------------------------------------------------------------------


def _create(f: h5py.File, name: str, dtype: Any, shape: tuple[int, ...], **kw: Any) -> None:
    """A dataset created by the low-level API: its allocation and fill times as asked."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    if kw.get("early"):
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    if "fill" in kw:
        dcpl.set_fill_value(np.array(kw["fill"], dtype=dtype))
    if "chunks" in kw:
        dcpl.set_chunk(kw["chunks"])
    tid = h5py.h5t.py_create(np.dtype(dtype), logical=True)
    h5py.h5d.create(f.id, name.encode(), tid, h5py.h5s.create_simple(shape), dcpl=dcpl)


def _never_written(path: Path) -> list[str]:
    record = np.dtype([("a", "<i4"), ("b", "<f8")])
    with h5py.File(path, "w") as f:
        f.create_dataset("contiguous", shape=(5, 3), dtype="f4")
        f.create_dataset("contiguous_fill", shape=(500, 3), dtype="i4", fillvalue=42)
        f.create_dataset("text_fill", shape=(3,), dtype="S4", fillvalue=b"ab")
        f.create_dataset("text", shape=(3,), dtype="S4")
        f.create_dataset("complex_fill", shape=(3,), dtype="c16", fillvalue=1 + 2j)
        f.create_dataset(
            "compound_fill", shape=(3,), dtype=record, fillvalue=np.array((1, 2.0), record)
        )
        f.create_dataset("scalar_fill", shape=(), dtype="f8", fillvalue=3.0)
        _create(f, "early", "f8", (4,), early=True)
        _create(f, "early_fill", "f8", (4,), early=True, fill=7.0)
        _create(f, "early_text_fill", "S3", (4,), early=True, fill=b"zz")
        _create(f, "late_text_fill_chunked", "S3", (7,), fill=b"q", chunks=(2,))
        d = f.create_dataset("chunked_fill", shape=(10,), chunks=(3,), dtype="i2", fillvalue=-3)
        d[0:3] = 1
        d = f.create_dataset(
            "chunked_fill_gzip",
            shape=(10,),
            chunks=(3,),
            dtype="f4",
            fillvalue=2.5,
            compression="gzip",
        )
        d[3:6] = 1
        d = f.create_dataset(
            "chunked_text_fill", shape=(10,), chunks=(3,), dtype="S3", fillvalue=b"xy"
        )
        d[0:3] = b"a"
        d = f.create_dataset(
            "chunked_complex_fill", shape=(10,), chunks=(3,), dtype="c8", fillvalue=3j
        )
        d[0:3] = 1
        d = f.create_dataset("chunked_2d", shape=(4, 4), chunks=(2, 2), dtype="u1", fillvalue=9)
        d[0, 0] = 1
        return [name for name in f]


def test_never_written_data_reads_as_h5py(tmp_path: Path) -> None:
    path = tmp_path / "unwritten.h5"
    names = _never_written(path)
    fs = virtual(path)
    assert_equals_h5py(fs, path, names)


def test_netcdf_text_fill_beyond_extent(tmp_path: Path) -> None:
    """A char variable shorter than its unlimited dimension reads its _FillValue beyond."""
    path = tmp_path / "grown.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("t", None)
        nc.createDimension("n", 3)
        c = nc.createVariable("c", "S1", ("t", "n"), fill_value=b"x", chunksizes=(2, 3))
        c[0:1] = netCDF4.stringtochar(np.array(["ab"], "S3"))
        d = nc.createVariable("d", "S1", ("t", "n"), chunksizes=(2, 3))
        d[0:1] = netCDF4.stringtochar(np.array(["ab"], "S3"))
        u = nc.createVariable("u", "f4", ("t",))
        u[0:5] = np.arange(5)
    fs = virtual(path)
    assert_equals_xarray(fs, path, ("netcdf4",))


# -- 8. files with a user block ----------------------------------------------------------------


def _with_userblock(path: Path, size: int) -> list[str]:
    with h5py.File(path, "w", userblock_size=size) as f:
        f.create_dataset(
            "chunked", data=np.arange(100, dtype="f8"), chunks=(30,), compression="gzip"
        )
        f.create_dataset(
            "chunked_raw", data=np.arange(60, dtype="i4").reshape(6, 10), chunks=(4, 4)
        )
        f.create_dataset("contiguous", data=np.arange(50, dtype="i2"))
        f.create_dataset("scalar", data=np.float32(2.5))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple((5,))
        dset = h5py.h5d.create(f.id, b"compact", h5py.h5t.STD_I32LE, space, dcpl=dcpl)
        dset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.arange(5, dtype="i4") - 2)
    with open(path, "r+b") as raw:  # a user block of its own (as MATLAB writes its header)
        raw.write(b"MATLAB 7.3 MAT-file".ljust(size // 2, b"\xff"))
    return ["chunked", "chunked_raw", "contiguous", "scalar", "compact"]


def _read_by_manifest(path: Path, manifest: Manifest, name: str) -> np.ndarray:
    """The array assembled from the bytes at the manifest's offsets, decoded."""
    array = manifest.arrays[name]
    meta, grid = array.meta, array.grid
    data = path.read_bytes()
    out = np.empty(meta.shape, dtype=meta.numpy_dtype)
    for index in np.ndindex(*grid.shape):
        fid = int(grid.file_id[index])
        start, length = int(grid.offset[index]), int(grid.length[index])
        raw = grid.inline[start] if fid == -2 else data[start : start + length]
        assert fid in (0, -2), (name, index, fid)
        chunk = decode_chunk(raw, meta)
        region = tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, meta.chunks, meta.shape)
        )
        out[region] = chunk[tuple(slice(0, r.stop - r.start) for r in region)]
    return out


@pytest.mark.parametrize("size", [512, 1024, 4096])
def test_userblock_offsets_read_the_right_bytes(tmp_path: Path, size: int) -> None:
    path = tmp_path / f"userblock{size}.mat"
    names = _with_userblock(path, size)
    with open(path, "rb") as f:
        manifest, messages = scan_hdf5(f, str(path))
    assert messages == []
    with h5py.File(path, "r") as f:
        assert f.userblock_size == size
        for name in names:
            expected = np.asarray(f[name][()])
            np.testing.assert_array_equal(
                _read_by_manifest(path, manifest, name), expected, strict=True
            )


def test_userblock_offsets_relative_to_base_are_corrected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HDF5 versions that report chunk addresses without the user block: the scan finds
    the bytes one user block further on, and moves every range of that dataset."""
    size = 1024
    path = tmp_path / "relative.h5"
    names = _with_userblock(path, size)
    translate = scan_module.manifest_from_references

    def relative(refs: Any, url: str) -> Manifest:
        manifest = translate(refs, url)
        arrays = {}
        for name, array in manifest.arrays.items():
            grid = array.grid
            offset = np.where(grid.file_id >= 0, grid.offset - np.uint64(size), grid.offset)
            moved = ChunkGrid(
                grid.file_id.copy(), offset.astype(np.uint64), grid.length.copy(), grid.inline
            )
            arrays[name] = VirtualArray(array.meta, moved, array.plan)
        return Manifest(manifest.urls, manifest.groups, arrays)

    monkeypatch.setattr(scan_module, "manifest_from_references", relative)
    with open(path, "rb") as f:
        manifest, _ = scan_hdf5(f, str(path))
    with h5py.File(path, "r") as f:
        for name in names:
            expected = np.asarray(f[name][()])
            np.testing.assert_array_equal(
                _read_by_manifest(path, manifest, name), expected, strict=True
            )


def test_null_dataspace_is_left_out_loudly_and_the_rest_served(tmp_path):
    """A dataset with a null dataspace (h5py.Empty) holds no value: left out with a
    warning naming it (the scan of the whole file used to fail)."""
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("empty", data=h5py.Empty("f4"))
        f["x"] = np.arange(3.0)
    fs = virtual(path)  # records its scan's warnings
    assert [m for m in fs.caught if "null dataspace" in m]
    group = zarr_group(fs)
    assert "empty" not in group
    np.testing.assert_array_equal(group["x"][...], np.arange(3.0))


def test_report_counts_what_is_left_out_in_text_and_html(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("empty", data=h5py.Empty("f4"))
        f["x"] = np.arange(3.0)
    report = virtual(path).report()
    assert [v.path for v in report.left_out] == ["empty"]
    assert "1 variables served from 1 file(s), 1 left out" in str(report)
    page = report._repr_html_()
    assert "<table>" in page and "null dataspace" in page and "1 left out" in page


# -- filter pipelines kerchunk misreads -------------------------------------------------------


def _pipeline_file(path: Path, order: str, filter_mask: int) -> list[str]:
    """``v``: float32 chunks filtered by deflate and shuffle in ``order``; with a nonzero
    ``filter_mask``, each chunk written directly with those filters skipped (as
    ``H5Dwrite_chunk`` allows and HDF5 reads). ``w``: the usual pipeline, for contrast."""
    import numcodecs

    with h5py.File(path, "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((1, 50))
        for step in order.split(","):
            dcpl.set_deflate(4) if step == "deflate" else dcpl.set_shuffle()
        space = h5py.h5s.create_simple((2, 100))
        v = h5py.Dataset(h5py.h5d.create(f.id, b"v", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl))
        values = np.arange(200, dtype="<f4").reshape(2, 100) * 1.5 + 1
        if filter_mask:
            steps = order.split(",")
            for row in range(2):
                for col in range(2):
                    data = values[row, 50 * col : 50 * (col + 1)].tobytes()
                    for bit, step in enumerate(steps):
                        if filter_mask & (1 << bit):
                            continue
                        if step == "shuffle":
                            data = bytes(numcodecs.Shuffle(elementsize=4).encode(data))
                        else:
                            data = bytes(numcodecs.Zlib(4).encode(data))
                    v.id.write_direct_chunk((row, 50 * col), data, filter_mask=filter_mask)
        else:
            v[...] = values
        f.create_dataset("w", data=values, chunks=(1, 50), compression="gzip", shuffle=True)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["v"][()], values)  # HDF5 reads what was meant
    return ["v", "w"]


@pytest.mark.parametrize(
    ("order", "filter_mask"),
    [
        ("deflate,shuffle", 0),  # kerchunk lists shuffle first whatever the order
        ("shuffle,deflate", 1),  # shuffle skipped: kerchunk drops deflate too
        ("shuffle,deflate", 2),  # deflate skipped
        ("deflate,shuffle", 1),  # deflate skipped: read as-is, it was shuffled values
    ],
)
def test_filter_pipelines_kerchunk_misreads_equal_h5py(
    tmp_path: Path, order: str, filter_mask: int
) -> None:
    path = tmp_path / "pipeline.h5"
    names = _pipeline_file(path, order, filter_mask)
    fs = virtual(path)
    assert_equals_h5py(fs, path, names)
    report = fs.report()
    assert "read through h5py" in str(report), report
    assert json_of(fs, "w/.zarray")["filters"], "the usual pipeline still passes through"


def json_of(fs: Any, key: str) -> Any:
    import json

    return json.loads(fs.cat_file(key))


# -- variables netCDF-C stores under another HDF5 name -----------------------------------------


def test_variable_named_like_a_dimension_it_is_not_the_coordinate_of(tmp_path: Path) -> None:
    """netCDF-C stores a 2-D ``c`` on dimensions ``(time, c)`` as ``_nc4_non_coord_c`` and
    shows it as ``c``: so must the store, in a group too, and in a series of files."""
    paths = []
    for i in range(2):
        path = tmp_path / f"noncoord{i}.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("time", None)
            nc.createDimension("c", 3)
            nc.createVariable("time", "f8", ("time",))[:] = [2 * i, 2 * i + 1]
            c = nc.createVariable("c", "f4", ("time", "c"))
            c[:] = np.arange(6, dtype="f4").reshape(2, 3) + 10 * i
            c.units = "K"
            g = nc.createGroup("g")
            g.createDimension("d", 2)
            g.createVariable("d", "i2", ("c", "d"))[:] = np.arange(6).reshape(3, 2)
        paths.append(path)
    with h5py.File(paths[0], "r") as f:  # the file holds what this test is about
        assert "_nc4_non_coord_c" in f and "_nc4_non_coord_d" in f["g"]
    assert_equals_xarray(virtual(paths[0]), paths[0], ("netcdf4",))
    fs = virtual(paths[0])
    with xr.open_dataset(paths[0], group="g", engine="netcdf4") as truth:
        actual = open_each_format(fs, consolidated=True, group="g")
        assert_same_dataset(actual, truth.load(), "group g")
    keys = fs.find("")
    assert not any("_nc4_non_coord_" in key for key in keys), keys
    both = fsspec.filesystem(
        "virtualzarr", path=str(tmp_path / "noncoord*.nc"), concat_dim="time", cache=False
    )
    # 'c' is a coordinate without an index: xarray orders such files only when told to
    nested = {"combine": "nested", "concat_dim": "time", "data_vars": "minimal"}
    with xr.open_mfdataset(paths, engine="netcdf4", **nested) as truth:
        assert_same_dataset(open_each_format(both, consolidated=True), truth.load(), "series")


def test_compound_variable_joined_over_files_keeps_its_fields(tmp_path: Path) -> None:
    """A netCDF4 compound read through h5py in each file (so its chunks are computed when
    the files are joined) keeps its field names, types and values."""
    pair = np.dtype([("a", "i4"), ("b", "f8")])
    for i in range(2):
        with netCDF4.Dataset(tmp_path / f"c{i}.nc", "w") as nc:
            nc.createDimension("time", None)
            nc.createVariable("time", "i4", ("time",))[:] = [2 * i, 2 * i + 1]
            kind = nc.createCompoundType(pair, "pair")
            values = np.array([(1 + 2 * i, 0.5 * i), (2 + 2 * i, -1.5)], dtype=pair)
            nc.createVariable("cmp", kind, ("time",))[:] = values
    fs = fsspec.filesystem(
        "virtualzarr", path=str(tmp_path / "c*.nc"), concat_dim="time", cache=False
    )
    actual = np.asarray(zarr_group(fs)["cmp"][...])
    expected = []
    for i in range(2):
        with h5py.File(tmp_path / f"c{i}.nc", "r") as f:
            expected.append(f["cmp"][...])
    truth = np.concatenate(expected)
    assert actual.dtype.names == truth.dtype.names == ("a", "b")
    for field in ("a", "b"):
        _assert_same_native(actual[field], truth[field], f"cmp.{field}")


def test_raw_data_stored_outside_the_file_is_left_out_loudly(tmp_path: Path) -> None:
    """A dataset whose raw data HDF5 keeps in another file (``external=``) has no address
    in its own file: never served as unwritten (fill values), always named as left out."""
    raw = tmp_path / "raw.bin"
    np.array([1, 2, 3], dtype="<i4").tofile(raw)
    path = tmp_path / "external.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(3,), dtype="<i4", external=[(str(raw), 0, 12)])
        f.create_dataset("ok", data=np.arange(4))
    with h5py.File(path, "r") as f:  # HDF5 itself reads the values from raw.bin
        np.testing.assert_array_equal(f["x"][()], [1, 2, 3])
    fs = virtual(path)
    left_out(fs, path, "x")
    assert any("outside the HDF5 file" in m and "raw.bin" in m for m in fs.caught)
    assert_equals_h5py(fs, path, ["ok"])


@pytest.mark.parametrize("taken_by", ["group", "left-out dataset"])
def test_the_netcdf_name_is_not_taken_from_another_object(tmp_path: Path, taken_by: str) -> None:
    """A ``_nc4_non_coord_c`` whose plain name ``c`` is a group, or a dataset left out
    (files written by other software than netCDF-C), keeps its stored name: renamed, it
    would hide the group's variables or stand for the other variable."""
    path = tmp_path / "taken.nc"
    with h5py.File(path, "w") as f:
        f.attrs["_NCProperties"] = "version=2,netcdf=4.9.2,hdf5=1.14.3"
        f.create_dataset("_nc4_non_coord_c", data=np.arange(3.0, dtype="f4"))
        if taken_by == "group":
            f.create_group("c").create_dataset("v", data=np.arange(2, dtype="i4"))
        else:
            f.create_dataset("c", data=h5py.Empty("f4"))
    fs = virtual(path)
    arrays = set(fs.collection().manifest.arrays)
    assert "_nc4_non_coord_c" in arrays and "c" not in arrays, arrays
    names = ["_nc4_non_coord_c", "c/v"] if taken_by == "group" else ["_nc4_non_coord_c"]
    assert_equals_h5py(fs, path, names)


def test_compound_fields_in_another_order_per_file_are_refused_by_name(tmp_path: Path) -> None:
    """Compounds whose fields differ between files have no common type: the error names
    the variable, both files and the fields (not numpy's promotion error)."""
    for i, fields in enumerate([[("a", "i4"), ("b", "f8")], [("b", "f8"), ("a", "i4")]]):
        pair = np.dtype(fields)
        with netCDF4.Dataset(tmp_path / f"o{i}.nc", "w") as nc:
            nc.createDimension("time", None)
            nc.createVariable("time", "i4", ("time",))[:] = [i]
            kind = nc.createCompoundType(pair, "pair")
            values = np.zeros(1, dtype=pair)
            nc.createVariable("cmp", kind, ("time",))[:] = values
    fs = fsspec.filesystem(
        "virtualzarr", path=str(tmp_path / "o*.nc"), concat_dim="time", cache=False
    )
    with pytest.raises(IncompatibleSourcesError, match=r"'cmp'.*o0\.nc.*o1\.nc.*compound"):
        fs.collection()
