"""HDF5 files written with h5py: what kerchunk gets wrong, served right (or left out, loudly)."""

from __future__ import annotations

import warnings

import fsspec
import h5py
import numpy as np
import pytest
import xarray as xr
from oracle import checked_group, open_each_format

from fsspec_virtual import UnsupportedVariableWarning
from fsspec_virtual.state import clear_states


def _open(path):
    clear_states()
    fs = fsspec.filesystem("virtualzarr", path=str(path), skip_instance_cache=True)
    return fs, checked_group(fs)  # reads also through Zarr format 3


def _assert_same(served: np.ndarray, truth: np.ndarray) -> None:
    assert served.shape == truth.shape
    assert served.dtype == truth.dtype, (served.dtype, truth.dtype)
    np.testing.assert_array_equal(served, truth)


class TestLinks:
    def test_hard_and_soft_links_are_served_under_every_name(self, tmp_path):
        path = tmp_path / "links.h5"
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(12, dtype="i4").reshape(3, 4)
            f["hard"] = f["data"]
            f["soft"] = h5py.SoftLink("/data")
            f.create_group("g")["deep"] = h5py.SoftLink("/data")
        _, g = _open(path)
        with h5py.File(path) as f:
            for name in ("data", "hard", "soft", "g/deep"):
                _assert_same(g[name][...], f[name][()])

    def test_external_link_is_followed(self, tmp_path):
        other = tmp_path / "other.h5"
        with h5py.File(other, "w") as f:
            f["x"] = np.arange(3)
        path = tmp_path / "main.h5"
        with h5py.File(path, "w") as f:
            f["own"] = np.arange(5.0)
            f["ext"] = h5py.ExternalLink(str(other), "/x")
        _, g = _open(path)
        with h5py.File(path) as f:
            for name in ("own", "ext"):
                _assert_same(g[name][...], f[name][()])

    def test_external_link_to_a_missing_file_is_left_out_with_a_warning(self, tmp_path):
        path = tmp_path / "main.h5"
        with h5py.File(path, "w") as f:
            f["own"] = np.arange(5.0)
            f["ext"] = h5py.ExternalLink(str(tmp_path / "gone.h5"), "/x")
        with pytest.warns(UnsupportedVariableWarning, match=r"main\.h5.*'ext'.*external"):
            fs, g = _open(path)
            g["own"][...]
        assert "ext" not in fs.collection().manifest.arrays


class TestLayoutsAndFills:
    def test_compact_dataset_is_inlined_not_filled(self, tmp_path):
        path = tmp_path / "compact.h5"
        with h5py.File(path, "w") as f:
            space = h5py.h5s.create_simple((6,))
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            plist.set_layout(h5py.h5d.COMPACT)
            h5py.h5d.create(f.id, b"c", h5py.h5t.NATIVE_INT32, space, plist).write(
                h5py.h5s.ALL, h5py.h5s.ALL, np.arange(1, 7, dtype="i4")
            )
        _, g = _open(path)
        with h5py.File(path) as f:
            assert f["c"].id.get_create_plist().get_layout() == h5py.h5d.COMPACT
            _assert_same(g["c"][...], f["c"][()])

    def test_real_zeros_are_not_masked(self, tmp_path):
        path = tmp_path / "zeros.h5"
        data = np.array([[0.0, 1.5], [0.0, -2.0]], dtype="f8")
        with h5py.File(path, "w") as f:
            f.create_dataset("v", data=data, chunks=(1, 2))
        fs, _ = _open(path)
        ds = open_each_format(fs)
        np.testing.assert_array_equal(ds["v"].values, data)

    def test_unwritten_chunks_read_as_the_hdf5_fill_value(self, tmp_path):
        path = tmp_path / "fill.h5"
        with h5py.File(path, "w") as f:
            d = f.create_dataset("v", shape=(4, 4), chunks=(2, 2), dtype="i2", fillvalue=-7)
            d[:2, :2] = 5
            z = f.create_dataset("z", shape=(4,), chunks=(2,), dtype="f4")
            z[:2] = 3.0
        _, g = _open(path)
        with h5py.File(path) as f:
            _assert_same(g["v"][...], f["v"][()])
            _assert_same(g["z"][...], f["z"][()])

    def test_netcdf_variable_shorter_than_its_unlimited_dimension(self, tmp_path):
        import netCDF4

        path = tmp_path / "short.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("time", None)
            nc.createDimension("x", 3)
            nc.createVariable("time", "f8", ("time",))[:] = np.arange(5)
            full = nc.createVariable("full", "f4", ("time", "x"), chunksizes=(1, 3))
            full[:] = np.ones((5, 3))
            short = nc.createVariable("short", "i2", ("time", "x"), chunksizes=(1, 3))
            short[:2] = [[1, 2, 3], [4, 5, 6]]
            masked = nc.createVariable(
                "masked", "f4", ("time", "x"), chunksizes=(1, 3), fill_value=-1.0
            )
            masked[:1] = [[7, 8, 9]]
        fs, _ = _open(path)
        served = open_each_format(fs)
        truth = xr.open_dataset(path, engine="netcdf4")
        for name in ("full", "short", "masked"):
            _assert_same(served[name].values, truth[name].values)


class TestTypes:
    def test_vlen_strings_scalar_and_array(self, tmp_path):
        path = tmp_path / "strings.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("scalar", data="héllo", dtype=h5py.string_dtype())
            f.create_dataset("array", data=["a", "bb", "ccc"], dtype=h5py.string_dtype())
        _, g = _open(path)
        with h5py.File(path) as f:
            assert g["scalar"][()] == f["scalar"].asstr()[()]
            assert list(g["array"][...]) == list(f["array"].asstr()[()])

    def test_big_endian_data(self, tmp_path):
        path = tmp_path / "be.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("v", data=np.arange(10, dtype=">f8"), chunks=(5,), compression="gzip")
        _, g = _open(path)
        with h5py.File(path) as f:
            np.testing.assert_array_equal(g["v"][...], f["v"][()])

    @pytest.mark.parametrize(
        ("name", "make", "reason"),
        [
            (
                "cmpd",
                lambda f: f.create_dataset(
                    "cmpd",
                    shape=(2,),
                    dtype=np.dtype([("a", "i4"), ("b", h5py.string_dtype())]),
                ),
                "compound",
            ),
        ],
    )
    def test_unsupported_types_are_left_out_loudly(self, tmp_path, name, make, reason):
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f["plain"] = np.arange(3)
            make(f)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fs, g = _open(path)
            g["plain"][...]
        messages = [str(w.message) for w in caught if w.category is UnsupportedVariableWarning]
        assert any(path.name in m and repr(name) in m and reason in m for m in messages)
        assert name not in fs.collection().manifest.arrays
        assert name not in checked_group(fs)
        by_path = {v.path: v for v in fs.report().variables}
        assert by_path[name].how == "skipped" and reason in by_path[name].reason
        assert by_path["plain"].how == "passthrough"
        line = next(x for x in str(fs.report()).splitlines() if x.strip().startswith(name))
        assert "skipped" in line and reason in line


class TestCompound:
    def test_served_as_a_structured_array(self, tmp_path):
        path = tmp_path / "cmpd.h5"
        values = np.array(
            [(b"2014-04-01", 60, 15.06), (b"2014-04-02", 61, -1.5)],
            dtype=[("date", "S10"), ("n", "<i4"), ("mean", ">f8")],
        )
        with h5py.File(path, "w") as f:
            f["rows"] = values
        fs, g = _open(path)
        served = g["rows"][...]
        assert served.dtype.names == values.dtype.names
        for name in values.dtype.names:
            np.testing.assert_array_equal(served[name], values[name], strict=False)
            assert served[name].dtype.kind == values[name].dtype.kind
        with open_each_format(fs, consolidated=False) as ds:
            assert ds["rows"].values.tolist() == values.tolist()


class TestEnums:
    def test_enum_is_its_base_integers_with_cf_flags(self, tmp_path):
        path = tmp_path / "enum.h5"
        mapping = {"clear": 0, "cloudy": 2, "fog": 1}
        with h5py.File(path, "w") as f:
            f.create_dataset(
                "sky", data=np.array([0, 2, 1, 2], "u1"), dtype=h5py.enum_dtype(mapping, "u1")
            )
            f["flags"] = np.array([True, False, True])
        _, g = _open(path)
        with h5py.File(path) as f:
            _assert_same(g["sky"][...], f["sky"][()].astype("u1"))
            assert g["sky"].dtype == np.dtype("u1")
            np.testing.assert_array_equal(g["flags"][...], f["flags"][()], strict=True)
        attrs = g["sky"].attrs.asdict()
        assert attrs["flag_values"] == [0, 1, 2]
        assert attrs["flag_meanings"] == "clear fog cloudy"
        assert "flag_values" not in g["flags"].attrs


class TestPhonyDimensions:
    """Datasets without dimension scales get the dimension names netCDF-C gives them."""

    def test_names_match_netcdf4(self, tmp_path):
        import json

        import netCDF4

        path = tmp_path / "plain.h5"
        with h5py.File(path, "w") as f:
            f["a"] = np.arange(10.0)
            f["b"] = np.zeros((6, 10))
            f["c"] = np.ones((10, 6))
            f["d"] = np.zeros((10, 10))  # two axes of one length: two dimensions
            g = f.create_group("g")
            g["e"] = np.zeros(10)
            g["f"] = np.zeros((3, 3))
            g.create_group("h")["x"] = np.zeros(7)
            f.create_group("k")["y"] = np.zeros(2)
        truth = {}
        with netCDF4.Dataset(path) as nc:

            def walk(group, prefix):
                for name, var in group.variables.items():
                    truth[prefix + name] = list(var.dimensions)
                for name, child in group.groups.items():
                    walk(child, f"{prefix}{name}/")

            walk(nc, "")
        fs = fsspec.filesystem("virtualzarr", path=str(path), skip_instance_cache=True)
        served = {
            name: json.loads(fs.cat_file(f"{name}/.zattrs"))["_ARRAY_DIMENSIONS"] for name in truth
        }
        assert served == truth
        # and xarray opens the root group without conflicting sizes
        with open_each_format(fs, consolidated=False) as ds:
            np.testing.assert_array_equal(ds["a"].values, np.arange(10.0))
            assert ds["b"].dims == tuple(truth["b"])


class TestFiltersH5pyLacks:
    def test_left_out_naming_the_filter_and_the_fix(self, tmp_path, monkeypatch):
        path = tmp_path / "lzf.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("packed", data=np.arange(20.0), chunks=(5,), compression="lzf")
            f["plain"] = np.arange(3)
        real = h5py.h5z.filter_avail
        monkeypatch.setattr(h5py.h5z, "filter_avail", lambda code: code != 32000 and real(code))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fs, g = _open(path)
            np.testing.assert_array_equal(g["plain"][...], np.arange(3))
        assert "packed" not in g
        entry = {v.path: v for v in fs.report().variables}["packed"]
        assert entry.how == "skipped" and "32000" in entry.reason and "hdf5plugin" in entry.reason
        messages = [str(w.message) for w in caught if w.category is UnsupportedVariableWarning]
        assert any("packed" in m and "hdf5plugin" in m for m in messages), messages
