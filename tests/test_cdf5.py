"""CDF-5 ("64-bit data", ``CDF\\x05``) files: read from their own header, served as
netCDF4-python reads them (every type, attributes, fill values, record layouts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
import netCDF4
import numpy as np
import pytest
from oracle import assert_store_matches, open_truth
from servers import serve_directory

from fsspec_virtual import VirtualZarrFileSystem
from fsspec_virtual import state as state_module
from fsspec_virtual.errors import ScanError
from fsspec_virtual.scan.cdf5 import HEADER_READ, scan_cdf5

FORMAT = "NETCDF3_64BIT_DATA"
NUMERIC = ["i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"]


def _values(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values spanning the type's range (extremes included), reproducibly."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if dtype.startswith("f"):
        out = rng.normal(0, 1e3, n).astype(dtype)
    else:
        info = np.iinfo(dtype)
        out = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        if n >= 2:
            out[:2] = [info.min, info.max]
    return out.reshape(shape)


def write_cdf5(path: Path, start: int = 0, n_times: int = 3, seed: int = 0) -> Path:
    """Every numeric type as fixed and record variables, a char array, attributes of
    every type, ``_FillValue`` on some (with fill values among the data); the record
    variables' sizes are not multiples of 4 (padded record)."""
    with netCDF4.Dataset(path, "w", format=FORMAT) as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", 3)
        nc.createDimension("n", 5)
        nc.title = "cdf5 sample"
        nc.empty = ""
        for i, dtype in enumerate(NUMERIC):
            nc.setncattr(f"g_{dtype}", np.array([1, 2, 3][: 1 + i % 3], dtype=dtype))
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        time[:] = np.arange(start, start + n_times, dtype="f8")
        for i, dtype in enumerate(NUMERIC):
            fill = _values(dtype, (1,), seed + 100 + i)[0] if i % 2 == 0 else None
            fixed = nc.createVariable(f"fixed_{dtype}", dtype, ("x",), fill_value=fill)
            fixed[:] = _values(dtype, (3,), seed + i)
            fixed.setncattr("a_" + dtype, np.array([7, 8], dtype=dtype))
            fixed.long_name = f"fixed {dtype}"
            record = nc.createVariable(f"rec_{dtype}", dtype, ("time", "x"), fill_value=fill)
            values = _values(dtype, (n_times, 3), seed + 50 + i)
            if fill is not None:
                values[0, 1] = fill
            record[:] = values
        scalar = nc.createVariable("scalar_u8", "u8", ())
        scalar[...] = np.uint64(2**63 + 5)
        chars = nc.createVariable("chars", "S1", ("x", "n"))
        chars[:] = np.array([list("abcde"), list("fg\0\0\0"), list("hijkl")], dtype="S1")
        label = nc.createVariable("label", "S1", ("time", "n"), fill_value=b"*")
        label[:] = np.array([list(f"t{t:<4d}") for t in range(n_times)], dtype="S1")
    return path


def virtual(root: Path | str, **kwargs: Any) -> VirtualZarrFileSystem:
    return VirtualZarrFileSystem(str(root), cache=False, max_workers=1, **kwargs)


def test_one_file_every_type(tmp_path):
    path = write_cdf5(tmp_path / "a.nc")
    assert path.read_bytes()[:4] == b"CDF\x05"
    expected = open_truth([path])
    raw = open_truth([path], decode_cf=False)
    assert_store_matches(virtual(tmp_path), expected, raw)


def test_series_along_time(tmp_path):
    paths = [write_cdf5(tmp_path / f"f{i}.nc", start=3 * i, seed=i) for i in range(3)]
    expected = open_truth(paths)
    assert expected.sizes["time"] == 9
    assert_store_matches(virtual(tmp_path, concat_dim="time"), expected)


@pytest.mark.parametrize("dtype", ["i1", "u1", "S1", "i2", "u2", "i8"])
def test_single_unpadded_record_variable(tmp_path, dtype):
    # one record variable: records follow each other without padding (3 * 1 or 3 * 2 bytes)
    paths = []
    for i in range(2):
        path = tmp_path / f"f{i}.nc"
        with netCDF4.Dataset(path, "w", format=FORMAT) as nc:
            nc.createDimension("time", None)
            nc.createDimension("x", 3)
            nc.createVariable("fixed", "i1", ("x",))[:] = [1, 2, 3]
            v = nc.createVariable("v", dtype, ("time", "x"))
            values = (np.arange(15) + 20 * i).reshape(5, 3)
            v[:] = values.astype("S1") if dtype == "S1" else values.astype(dtype)
        paths.append(path)
    expected = open_truth(paths, combine="nested")
    assert expected.sizes["time"] == 10
    assert_store_matches(virtual(tmp_path, concat_dim="time"), expected)


def test_header_longer_than_one_read(tmp_path):
    path = tmp_path / "long.nc"
    with netCDF4.Dataset(path, "w", format=FORMAT) as nc:
        nc.history = "x" * (2 * HEADER_READ + 17)
        nc.createDimension("time", None)
        nc.createVariable("v", "u4", ("time",))[:] = np.arange(4, dtype="u4") + 2**31
    fs = fsspec.filesystem("file")
    small = write_cdf5(tmp_path / "small.nc")
    assert scan_cdf5(fs, str(small))[2][0] == 1
    manifest, _, (requests, nbytes) = scan_cdf5(fs, str(path), path.stat().st_size)
    assert requests > 1 and nbytes > 2 * HEADER_READ
    assert manifest.groups[""]["history"] == "x" * (2 * HEADER_READ + 17)
    (tmp_path / "small.nc").unlink()
    assert_store_matches(virtual(tmp_path), open_truth([path]), open_truth([path], decode_cf=False))


def test_truncated_file_is_refused(tmp_path):
    path = write_cdf5(tmp_path / "a.nc")
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    with pytest.raises(ScanError, match="past the end of the file"):
        virtual(tmp_path).cat_file(".zmetadata")


def test_over_http(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    paths = [write_cdf5(www / f"f{i}.nc", start=3 * i, seed=i) for i in range(2)]
    state_module.clear_states()
    try:
        with serve_directory(www) as server:
            fs = virtual(f"{server.url}/", concat_dim="time")
            assert_store_matches(fs, open_truth(paths))
    finally:
        state_module.clear_states()
