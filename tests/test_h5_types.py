"""HDF5 types served exactly as h5py reads them, or left out with a warning: object
references (region references: test_region_refs.py), opaque types, array-typed elements,
and names holding a backslash.

Every file is written here with h5py; the truth is a direct h5py read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
from conftest import scanned_store
from oracle import open_each_format, read_each_format

virtual = scanned_store


def zarr_values(fs: Any, name: str) -> np.ndarray:
    """Raw zarr's read (Zarr format 2; format 3 must read the same)."""
    return read_each_format(fs, name)


def xarray_values(fs: Any, name: str) -> np.ndarray:
    """xarray's read (Zarr format 2; format 3 must read the same dataset)."""
    group, _, leaf = name.rpartition("/")
    return np.asarray(open_each_format(fs, group=group or None, consolidated=True)[leaf].values)


def assert_exact(
    actual: np.ndarray, expected: np.ndarray, where: str, *, byte_order: bool = True
) -> None:
    """Same shape, dtype (byte order too, unless told) and values."""
    if not byte_order:  # xarray reads big-endian data as native, as from the file itself
        expected = expected.astype(expected.dtype.newbyteorder("="))
    assert actual.dtype == expected.dtype, (where, actual.dtype, expected.dtype)
    np.testing.assert_array_equal(actual, expected, err_msg=where, strict=True)


def reference_paths(path: Path, name: str) -> np.ndarray:
    """h5py's dereferenced paths of an object-reference dataset ("" for null ones)."""
    with h5py.File(path, "r") as f:
        refs = np.asarray(f[name][()], dtype=object)
        return np.array([f[r].name if r else "" for r in refs.ravel()]).reshape(refs.shape)


def as_text(values: np.ndarray) -> np.ndarray:
    return np.array([str(v) for v in values.ravel()]).reshape(values.shape)


def left_out(fs: Any, path: Path, name: str, why: str) -> None:
    """``name`` is not in the store, and a warning names the file, it and ``why``."""
    assert not any(key.startswith(f"{name}/") for key in fs.find("")), name
    assert any(path.name in m and repr(name) in m and why in m for m in fs.caught), fs.caught


# -- references -------------------------------------------------------------------------------


def _write_references(path: Path) -> None:
    with h5py.File(path, "w") as f:
        data = f.create_dataset("data", data=np.arange(10.0))
        group = f.create_group("grp")
        inner = group.create_dataset("inner", data=np.arange(3))
        refs = f.create_dataset("refs", (4,), dtype=h5py.ref_dtype)  # refs[3] stays null
        refs[0], refs[1], refs[2] = data.ref, group.ref, inner.ref
        grid = group.create_dataset("grid", (2, 2), dtype=h5py.ref_dtype)
        grid[0, 0], grid[1, 1] = inner.ref, f.ref
        f.create_dataset("one", data=data.ref, dtype=h5py.ref_dtype)
        regions = f.create_dataset("regions", (2,), dtype=h5py.regionref_dtype)
        regions[0] = data.regionref[2:5]


def test_object_references_are_served_as_paths(tmp_path: Path) -> None:
    path = tmp_path / "refs.h5"
    _write_references(path)
    fs = virtual(path)
    for name in ("refs", "grp/grid", "one"):
        expected = reference_paths(path, name)
        np.testing.assert_array_equal(as_text(zarr_values(fs, name)), expected, err_msg=name)
    np.testing.assert_array_equal(as_text(xarray_values(fs, "refs")), reference_paths(path, "refs"))
    assert as_text(zarr_values(fs, "refs")).tolist() == ["/data", "/grp", "/grp/inner", ""]


def test_region_references_are_served_beside_object_references(tmp_path: Path) -> None:
    path = tmp_path / "refs.h5"
    _write_references(path)
    fs = virtual(path)
    assert not fs.caught, fs.caught
    assert as_text(zarr_values(fs, "regions")).tolist() == ["/data[2:5]", ""]
    assert as_text(zarr_values(fs, "refs"))[0] == "/data"


# -- opaque types -----------------------------------------------------------------------------


def _write_opaque(path: Path) -> None:
    with h5py.File(path, "w") as f:
        raw = np.frombuffer(bytes(range(256)) * 3, dtype="V8")
        f.create_dataset("plain", data=raw)
        f.create_dataset(
            "packed",
            data=np.frombuffer(bytes(range(255)), dtype="V3"),
            chunks=(16,),
            compression="gzip",
        )
        f.create_dataset("scalar", data=np.void(b"\x01\x00\xff\x7f"))
        part = f.create_dataset("part", (40,), dtype="V8", chunks=(8,))
        part[:10] = raw[:10]  # later chunks never written: HDF5 reads its fill


def test_opaque_types_are_served_as_raw_bytes(tmp_path: Path) -> None:
    path = tmp_path / "opaque.h5"
    _write_opaque(path)
    fs = virtual(path)
    with h5py.File(path, "r") as f:
        for name in ("plain", "packed", "scalar", "part"):
            expected = np.asarray(f[name][()])
            assert_exact(zarr_values(fs, name), expected, f"zarr {name}")
            assert_exact(xarray_values(fs, name), expected, f"xarray {name}")


# -- array-typed elements ---------------------------------------------------------------------


def _write_array_types(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("vec", (4,), dtype=("<f4", (3,)))[...] = np.arange(12.0).reshape(4, 3)
        grid = f.create_dataset(
            "grp/grid", (5, 7), dtype=(">i2", (2, 3)), chunks=(2, 3), compression="gzip"
        )
        grid[...] = np.arange(5 * 7 * 6, dtype=">i2").reshape(5, 7, 2, 3)
        f.create_dataset("point", (), dtype=("<f8", (3,)))[()] = np.array([1.5, -2.0, 3.25])
        # a dimension scale with the name the extra axis would get, of another length
        scale = f.create_dataset("vec_dim_0", data=np.arange(5.0))
        scale.make_scale("vec_dim_0")
        f.create_dataset("other", data=np.arange(5.0)).dims[0].attach_scale(scale)


def test_array_types_are_served_with_trailing_axes(tmp_path: Path) -> None:
    path = tmp_path / "arrays.h5"
    _write_array_types(path)
    fs = virtual(path)
    with h5py.File(path, "r") as f:
        for name in ("vec", "grp/grid", "point"):
            expected = np.asarray(f[name][()])
            assert_exact(zarr_values(fs, name), expected, f"zarr {name}")
            assert_exact(xarray_values(fs, name), expected, f"xarray {name}", byte_order=False)
        assert_exact(xarray_values(fs, "other"), f["other"][()], "other")
    with open_each_format(fs, consolidated=True) as ds:
        assert ds["vec"].shape == (4, 3)
        # the extra axis shares no name with the scale of length 5, nor with another axis
        assert "vec_dim_0" not in ds["vec"].dims
        assert ds["other"].dims == ("vec_dim_0",)
    with open_each_format(fs, group="grp", consolidated=True) as ds:
        assert ds["grid"].shape == (5, 7, 2, 3)
        assert len(set(ds["grid"].dims)) == 4


def test_array_type_region_reads(tmp_path: Path) -> None:
    path = tmp_path / "arrays.h5"
    _write_array_types(path)
    fs = virtual(path)
    selection = (slice(1, 4), slice(2, 6), 1, slice(1, None))
    with h5py.File(path, "r") as f:
        expected = np.asarray(f["grp/grid"][()])
    assert_exact(read_each_format(fs, "grp/grid", selection), expected[selection], "slice")


# -- names holding a backslash ----------------------------------------------------------------


def test_backslash_names_are_left_out_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "backslash.h5"
    with h5py.File(path, "w") as f:
        f["a\\b"] = np.arange(3)
        f.create_group("g\\h").create_dataset("x", data=np.arange(2))
        f["kept"] = np.arange(4.0)
    fs = virtual(path)
    left_out(fs, path, "a\\b", "backslash")
    left_out(fs, path, "g\\h/x", "backslash")
    with h5py.File(path, "r") as f:
        assert_exact(zarr_values(fs, "kept"), f["kept"][()], "kept")
        assert_exact(xarray_values(fs, "kept"), f["kept"][()], "kept")
