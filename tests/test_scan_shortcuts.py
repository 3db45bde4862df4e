"""The HDF5 scan's shortcuts around kerchunk and h5py give what the long way gives.

The scan reads each attribute once, builds kerchunk's translator without its zarr group and
names dimensions through h5py's low-level calls; each is compared here with the call it
replaces, on files written with h5py and netCDF4.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import pytest
from conftest import write_groups, write_plain_hdf5
from kerchunk.hdf import SingleHdf5ToZarr

from fsspec_virtual.scan.hdf5 import (
    _array_dims,
    _Attributes,
    _recording_translator,
    _scanned,
)


def _write_scales(path: Path) -> Path:
    """Datasets with one, two and no scales per axis, a scale, a scale with an axis
    unattached, a scalar, and a scale in a group."""
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", data=np.arange(4.0))
        x.make_scale("x")
        y = f.create_dataset("y", data=np.arange(3.0))
        y.make_scale("y")
        y2 = f.create_dataset("y2", data=np.arange(3.0) * 2)
        y2.make_scale("y2")
        v = f.create_dataset("v", data=np.zeros((3, 4)))
        v.dims[0].attach_scale(y)
        v.dims[1].attach_scale(x)
        two = f.create_dataset("two", data=np.zeros((3, 4)))
        two.dims[0].attach_scale(y)
        two.dims[0].attach_scale(y2)
        f.create_dataset("bare", data=np.zeros((2, 5)))
        f.create_dataset("scalar", data=1.5)
        grid = f.create_dataset("grid", data=np.zeros((4, 2)))
        grid.make_scale("grid")
        inner = f.create_group("g").create_dataset("z", data=np.arange(2))
        inner.make_scale("z")
        f["g"].create_dataset("w", data=np.zeros((2, 4)))
        f["g/w"].dims[0].attach_scale(inner)
        f["g/w"].dims[1].attach_scale(x)
    return path


def _write_netcdf(path: Path) -> Path:
    with netCDF4.Dataset(path, "w") as ds:
        ds.title = "attributes"
        ds.createDimension("time", None)
        ds.createDimension("lat", 3)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:] = [0.0, 1.0]
        lat = ds.createVariable("lat", "f4", ("lat",))
        lat[:] = [1, 2, 3]
        v = ds.createVariable("v", "i2", ("time", "lat"), fill_value=-9)
        v.scale_factor = np.float32(0.5)
        v.flags = np.array([1, 2, 3], dtype="u1")
        v.empty = ""
        v[:] = np.arange(6).reshape(2, 3)
    return path


def _kerchunk_dims(dset: h5py.Dataset) -> Any:
    try:
        return SingleHdf5ToZarr._get_array_dims(None, dset)
    except Exception as e:
        return type(e), str(e)


def _our_dims(dset: h5py.Dataset) -> Any:
    try:
        return _array_dims(dset)
    except Exception as e:
        return type(e), str(e)


def _plain(value: Any, f: h5py.File) -> Any:
    """A value with each HDF5 reference (compared by identity) as the path it points to."""
    if isinstance(value, h5py.Reference):
        return ("ref", f[value].name if value else None)
    if isinstance(value, (np.ndarray, np.void, tuple, list)):
        return [_plain(v, f) for v in (value.tolist() if isinstance(value, np.void) else value)]
    return value


def _assert_same_value(value: Any, truth: Any, f: h5py.File) -> None:
    assert np.asarray(value).dtype == np.asarray(truth).dtype
    if np.asarray(truth).dtype.hasobject:
        assert _plain(value, f) == _plain(truth, f)
    else:
        np.testing.assert_array_equal(value, truth)


def _datasets(f: h5py.File) -> list[h5py.Dataset]:
    found: list[h5py.Dataset] = []
    f.visititems(lambda _, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
    return found


@pytest.mark.parametrize("writer", [_write_scales, _write_netcdf, write_groups, write_plain_hdf5])
def test_dimension_names_are_kerchunks(tmp_path: Path, writer: Any) -> None:
    path = writer(tmp_path / "f.h5")
    with h5py.File(path, "r") as f:
        datasets = _datasets(f)
        assert datasets
        for dset in datasets:
            assert _our_dims(dset) == _kerchunk_dims(dset), dset.name


def test_two_scales_on_one_axis_are_refused_as_kerchunk_does(tmp_path: Path) -> None:
    with h5py.File(_write_scales(tmp_path / "f.h5"), "r") as f:
        kind, message = _our_dims(f["two"])
    assert kind.__name__ == "Hdf5FeatureNotSupported"
    assert "2 dimension scales attached to dimension #0" in message


@pytest.mark.parametrize("writer", [_write_netcdf, write_groups, write_plain_hdf5])
def test_attributes_read_once_are_h5pys(tmp_path: Path, writer: Any) -> None:
    path = writer(tmp_path / "f.h5")
    with h5py.File(path, "r") as f:
        for dset in _datasets(f):
            ours = _Attributes(h5py.AttributeManager(dset))
            assert list(ours) == list(dset.attrs)
            assert len(ours) == len(dset.attrs)
            for name in dset.attrs:
                assert name in ours
                first, again, truth = ours[name], ours[name], dset.attrs[name]
                assert first is again  # read once
                assert type(first) is type(truth)
                _assert_same_value(first, truth, f)
            assert "no such attribute" not in ours
            assert ours.get("no such attribute", 7) == 7
            with pytest.raises(KeyError):
                ours["no such attribute"]


def test_a_failed_attribute_read_fails_every_time(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.zeros(3))
    with h5py.File(path, "r") as f:
        ours = _Attributes(h5py.AttributeManager(f["v"]))
        ours._names.append("vanished")  # listed, but no longer readable
        ours._known = frozenset(ours._names)
        for _ in range(2):
            with pytest.raises(KeyError):
                ours["vanished"]


def test_scanned_datasets_serve_attributes_read_once(tmp_path: Path) -> None:
    with h5py.File(_write_netcdf(tmp_path / "f.nc"), "r") as f:
        dset = _scanned(f["v"])
        assert isinstance(dset, h5py.Dataset)
        assert dset.attrs is dset.attrs
        assert list(dset.attrs) == list(f["v"].attrs)
        assert _scanned(dset) is dset
        assert _scanned(f) is f  # groups as they are


def test_translator_is_set_up_as_kerchunks_own(tmp_path: Path) -> None:
    """Every attribute kerchunk's constructor sets, ours sets, with the same value (but
    the zarr group, which ours replaces)."""
    path = _write_netcdf(tmp_path / "f.nc")
    with open(path, "rb") as a, open(path, "rb") as b:
        theirs = SingleHdf5ToZarr(
            a, url="f.nc", inline_threshold=0, spec=0, error="warn", unsupported_inline_threshold=0
        )
        ours = _recording_translator()(b, "f.nc")
        try:
            missing = set(vars(theirs)) - set(vars(ours))
            assert not missing
            for name, value in vars(theirs).items():
                if name in ("_closers", "input_file", "_h5f", "store", "_zroot"):
                    continue
                if name == "store_dict":  # zarr's Buffers, ours bytes: the same JSON
                    assert {k: json.loads(v) for k, v in ours.store_dict.items()} == {
                        k: json.loads(v.to_bytes()) for k, v in value.items()
                    }
                    continue
                assert getattr(ours, name) == value, name
            assert ours.input_file is b
            assert ours._h5f.filename == theirs._h5f.filename
        finally:
            theirs.close()
            ours.close()


def _write_coordinates(path: Path, start: float) -> Path:
    """Coordinates of every storage kind: contiguous, chunked in several chunks (the last
    partial), compressed, big-endian, text (inline), and one never written (fill)."""
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", 5)
        ds.createDimension("x", 7)
        ds.createDimension("y", 3)
        ds.createDimension("name", 2)
        ds.createDimension("empty", 4)
        t = ds.createVariable("time", "f8", ("time",), contiguous=True)
        t.units = "days since 2000-01-01"
        t[:] = start + np.arange(5)
        with warnings.catch_warnings():  # netCDF4 warns of its own native default
            warnings.simplefilter("ignore", UserWarning)
            x = ds.createVariable("x", "i4", ("x",), chunksizes=(3,), endian="big")
        x[:] = np.arange(7) * 10
        y = ds.createVariable("y", "f4", ("y",), compression="zlib", shuffle=True)
        y[:] = [0.5, -1.5, 2.5]
        names = ds.createVariable("name", str, ("name",))
        names[:] = np.array(["a", "bc"], dtype=object)
        ds.createVariable("empty", "i2", ("empty",), chunksizes=(2,))
        v = ds.createVariable("v", "f4", ("time", "x", "y"))
        v[:] = np.zeros((5, 7, 3))
    return path


def test_coordinates_read_in_the_scan_are_those_read_through_the_filesystem(
    tmp_path: Path,
) -> None:
    from fsspec.implementations.local import LocalFileSystem

    from fsspec_virtual.scheduling import _read_coordinates, scan_one
    from fsspec_virtual.source import list_source_files

    fs = LocalFileSystem()
    path = _write_coordinates(tmp_path / "c.nc", 3.0)
    (source,) = list_source_files(fs, [str(path)], "raise")
    result = scan_one(fs, source, "time")
    manifest, coords = result.scanned.manifest, result.scanned.coords
    through_fs = _read_coordinates(fs, manifest, {}, None)
    assert set(coords) == set(through_fs) == {"time", "x", "y", "name", "empty"}
    for name, values in through_fs.items():
        assert coords[name].dtype == values.dtype, name
        np.testing.assert_array_equal(coords[name], values)
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        for name in ("time", "x", "y", "name"):
            np.testing.assert_array_equal(coords[name], ds[name][:])


def test_a_file_rewritten_during_its_scan_is_scanned_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Coordinates read through the scan's own file are covered by the version check
    after it: a file replaced meanwhile is scanned again, its new values recorded."""
    import os

    from fsspec.implementations.local import LocalFileSystem

    from fsspec_virtual import scheduling
    from fsspec_virtual.source import list_source_files

    fs = LocalFileSystem()
    path = _write_coordinates(tmp_path / "c.nc", 3.0)
    (source,) = list_source_files(fs, [str(path)], "raise")
    real = scheduling.scan_file
    calls = []

    def rewriting(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        if not calls:
            _write_coordinates(tmp_path / "new.nc", 100.0)
            os.replace(tmp_path / "new.nc", path)
        calls.append(out)
        return out

    monkeypatch.setattr(scheduling, "scan_file", rewriting)
    result = scheduling.scan_one(fs, source, "time")
    assert len(calls) == 2
    np.testing.assert_array_equal(calls[0][3]["time"], 3.0 + np.arange(5))
    np.testing.assert_array_equal(result.scanned.coords["time"], 100.0 + np.arange(5))
    assert result.source.version != source.version
