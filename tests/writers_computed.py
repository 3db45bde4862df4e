"""File writers for the computed-chunk tests (issue 4): collections whose files do not line up.

Like ``conftest.py``, every writer uses netCDF4-python or h5py (never this package) and
returns the paths it wrote in the order the collection combines (time order), so the truth
can be read straight from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np

__all__ = [
    "DAYS_2001",
    "MONTH_DAYS_2001",
    "H5_FEATURES",
    "H5_COLLECTION_FEATURES",
    "szip_writable",
    "h5_feature_kwargs",
    "h5_feature_values",
    "write_months",
    "write_h5_feature",
    "write_h5_special",
    "write_h5_series",
    "write_char_arrays",
    "source_chunk_count",
]

DAYS_2001 = "days since 2001-01-01"
MONTH_DAYS_2001 = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

VarSpec = Mapping[str, Any]
Variables = Mapping[str, VarSpec] | Callable[[int], Mapping[str, VarSpec]]

DEFAULT_VARIABLES: dict[str, VarSpec] = {"tas": {"dtype": "f4", "compression": "zlib"}}


def _values(spec: VarSpec, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values for one variable of one file: raw (packed) integers or floats with NaN.

    Declared ``_FillValue`` / ``missing_value`` are written at a few places, so that
    masking is exercised; floats without a declared fill hold one NaN and one zero.
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(spec["dtype"]) if spec["dtype"] is not str else np.dtype(object)
    if dtype.kind == "O":
        return np.array([f"label {seed}-{k}" for k in range(int(np.prod(shape)))], dtype=object)
    if dtype.kind in "iu":
        low, high = (0, 200) if dtype.kind == "u" else (-100, 100)
        if "scale_factor" in spec.get("attrs", {}):
            low, high = -30000, 30000
        data = rng.integers(low, high, size=shape).astype(dtype)
    else:
        data = (rng.standard_normal(shape) * 10 + 280).astype(dtype)
    flat = data.reshape(-1)
    marks = [spec.get("fill_value"), spec.get("attrs", {}).get("missing_value")]
    marks = [m for m in marks if m is not None]
    if marks and flat.size >= 4:
        for mark in marks:
            flat[rng.choice(flat.size, size=max(1, flat.size // 15), replace=False)] = mark
    elif dtype.kind == "f" and flat.size >= 2:
        flat[rng.integers(flat.size)] = np.nan
        flat[0] = 0.0
    return data


def write_months(
    directory: Path,
    lengths: Sequence[int],
    *,
    start: int = 0,
    chunk_time: int = 10,
    ny: int = 3,
    nx: int = 4,
    units: str = DAYS_2001,
    variables: Variables = DEFAULT_VARIABLES,
    names: Sequence[str] | None = None,
    unlimited: bool = False,
    coords: bool = True,
    static: bool = True,
    seed: int = 0,
) -> list[Path]:
    """Files along ``time`` of ``lengths`` steps each (e.g. days per month).

    Each file holds ``time`` (CF, ``units``, consecutive whole days from ``start``), with
    ``coords`` the coordinates ``lat(lat)`` / ``lon(lon)``, with ``static`` an ``orog(lat,
    lon)`` identical in every file, and one variable per entry of ``variables`` (a mapping,
    or a function of the file's index giving it). A variable's spec holds:

    ``dtype`` (a numpy dtype string, or ``str`` for variable-length strings), ``dims``
    (default ``("time", "lat", "lon")``), ``chunks`` (default: ``chunk_time`` along
    ``time``, at most the file's length; whole along the others), ``compression``
    (``"zlib"`` or None), ``shuffle``, ``contiguous``, ``fill_value`` and ``attrs`` (e.g.
    the packing ``scale_factor`` / ``add_offset`` / ``missing_value``). Values are
    written raw.
    """
    directory.mkdir(parents=True, exist_ok=True)
    names = list(names or [f"part{i:02d}.nc" for i in range(len(lengths))])
    paths = []
    offset = start
    for i, n in enumerate(lengths):
        path = directory / names[i]
        specs = variables(i) if callable(variables) else variables
        with netCDF4.Dataset(path, "w") as nc:
            nc.title = "monthly files"
            nc.history = f"file {i}"
            nc.createDimension("time", None if unlimited else n)
            nc.createDimension("lat", ny)
            nc.createDimension("lon", nx)
            time = nc.createVariable("time", "f8", ("time",))
            time.units = units
            time.calendar = "standard"
            time.standard_name = "time"
            time[:] = np.arange(offset, offset + n, dtype="f8")
            if coords:
                lat = nc.createVariable("lat", "f4", ("lat",))
                lat.units = "degrees_north"
                lat[:] = np.linspace(-45.0, 45.0, ny, dtype="f4")
                lon = nc.createVariable("lon", "f4", ("lon",))
                lon.units = "degrees_east"
                lon[:] = np.arange(nx, dtype="f4") * 30.0
            if static:
                orog = nc.createVariable(
                    "orog", "f4", ("lat", "lon"), compression="zlib", chunksizes=(ny, nx)
                )
                orog.units = "m"
                orog[:] = np.arange(ny * nx, dtype="f4").reshape(ny, nx) * 12.5
            for k, (name, spec) in enumerate(specs.items()):
                _write_variable(nc, name, spec, n, (ny, nx), chunk_time, seed + 100 * i + k)
        paths.append(path)
        offset += n
    return paths


def _write_variable(
    nc: netCDF4.Dataset,
    name: str,
    spec: VarSpec,
    n: int,
    grid: tuple[int, int],
    chunk_time: int,
    seed: int,
) -> None:
    sizes = {"time": n, "lat": grid[0], "lon": grid[1]}
    dims = tuple(spec.get("dims", ("time", "lat", "lon")))
    shape = tuple(sizes[d] for d in dims)
    if spec["dtype"] is str:
        var = nc.createVariable(name, str, dims)
        var.long_name = f"{name}, a text label"
        var[:] = _values(spec, shape, seed)
        return
    kwargs: dict[str, Any] = {"fill_value": spec.get("fill_value")}
    if spec.get("contiguous"):
        kwargs["contiguous"] = True
    else:
        # a fixed dimension cannot be shorter than its chunk (netCDF-C): a short file's
        # chunks are clipped to its length
        default = tuple(min(chunk_time, n) if d == "time" else sizes[d] for d in dims)
        kwargs["chunksizes"] = tuple(spec.get("chunks") or default)
        if spec.get("compression"):
            kwargs.update(compression=spec["compression"], complevel=4)
        kwargs["shuffle"] = bool(spec.get("shuffle", False))
    var = nc.createVariable(name, spec["dtype"], dims, **kwargs)
    var.long_name = f"{name}, a gridded field"
    var.units = "1"
    for key, value in spec.get("attrs", {}).items():
        var.setncattr(key, value)
    var.set_auto_maskandscale(False)
    var[:] = _values(spec, shape, seed)


# -- plain HDF5 (h5py) --------------------------------------------------------------------------


def szip_writable() -> bool:
    """This h5py build can both decode and encode szip."""
    if not h5py.h5z.filter_avail(h5py.h5z.FILTER_SZIP):
        return False
    info = h5py.h5z.get_filter_info(h5py.h5z.FILTER_SZIP)
    return bool(info & h5py.h5z.FILTER_CONFIG_ENCODE_ENABLED)


#: Filters and layouts of numeric datasets, as ``create_dataset`` keywords (no ``chunks``).
_FEATURE_KWARGS: dict[str, dict[str, Any]] = {
    "lzf": {"compression": "lzf"},
    "lzf_shuffle": {"compression": "lzf", "shuffle": True},
    "scaleoffset_int": {"scaleoffset": 0},
    "scaleoffset_float": {"scaleoffset": 2},
    "fletcher32": {"fletcher32": True},
    "fletcher32_gzip": {"fletcher32": True, "compression": "gzip", "shuffle": True},
    # pixels per block: even, and at most the elements of the smallest chunk written here
    "szip": {"compression": "szip", "compression_opts": ("nn", 4)},
}
_FEATURE_DTYPES = {"scaleoffset_int": "i4", "szip": "i4"}

#: Numeric filter features this h5py build can write (szip only where it can encode).
H5_FEATURES: tuple[str, ...] = tuple(f for f in _FEATURE_KWARGS if f != "szip" or szip_writable())
#: The features also tested across a collection of files.
H5_COLLECTION_FEATURES: tuple[str, ...] = tuple(
    f for f in ("lzf", "scaleoffset_int", "scaleoffset_float", "szip") if f in H5_FEATURES
)


def h5_feature_kwargs(feature: str) -> dict[str, Any]:
    """``create_dataset`` keywords of a numeric filter feature."""
    return dict(_FEATURE_KWARGS[feature])


def h5_feature_values(feature: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values for a numeric filter feature: zeros included; NaN and inf only where the
    filter keeps them (scaleoffset's decimal scaling does not)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(_FEATURE_DTYPES.get(feature, "f8"))
    if dtype.kind == "i":
        data = rng.integers(-5000, 5000, size=shape).astype(dtype)
    else:
        data = np.round(rng.standard_normal(shape) * 100, 3).astype(dtype)
    flat = data.reshape(-1)
    flat[0] = 0
    if dtype.kind == "f" and not feature.startswith("scaleoffset") and flat.size >= 4:
        flat[1:4] = [np.nan, np.inf, -np.inf]
    return data


def write_h5_feature(path: Path, feature: str, *, shape=(7, 5), chunks=(3, 2)) -> Path:
    """A plain HDF5 file: ``odd`` (the feature, edge chunks on both axes) and ``ok``."""
    with h5py.File(path, "w") as f:
        f.attrs["title"] = f"plain hdf5 with {feature}"
        ok = f.create_dataset("ok", data=np.array([0.0, 1.5, -2.0], dtype="f4"))
        ok.attrs["note"] = "a plain contiguous dataset"
        data = h5_feature_values(feature, shape, seed=len(feature))
        odd = f.create_dataset("odd", data=data, chunks=chunks, **h5_feature_kwargs(feature))
        odd.attrs["note"] = f"written with {feature}"
        odd.attrs["scale"] = np.float32(0.5)
    return path


def write_h5_special(path: Path, feature: str) -> Path:
    """A plain HDF5 file: ``odd`` with a special type or layout, and ``ok``.

    Features: ``compact``, ``vlen_str``, ``fixed_str``, ``enum``, ``big_endian``,
    ``bool``, ``compound``.
    """
    with h5py.File(path, "w") as f:
        ok = f.create_dataset("ok", data=np.array([0.0, 1.5, -2.0], dtype="f4"))
        ok.attrs["note"] = "a plain contiguous dataset"
        if feature == "compact":
            for name, dtype, shape in (("odd", "<i2", (3, 4)), ("odd_f8", "<f8", (5,))):
                space = h5py.h5s.create_simple(shape)
                plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                plist.set_layout(h5py.h5d.COMPACT)
                htype = h5py.h5t.py_create(np.dtype(dtype))
                dset = h5py.Dataset(h5py.h5d.create(f.id, name.encode(), htype, space, plist))
                values = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) - 2
                if dtype == "<f8":
                    values = values * 0.25
                    values[1] = np.nan
                dset[...] = values
                dset.attrs["layout"] = "compact"
        elif feature == "vlen_str":
            data = np.array([["a", ""], ["ünïcödé", "bb"], ["ccc", " spaced "]], dtype=object)
            dset = f.create_dataset(
                "odd", data=data, dtype=h5py.string_dtype("utf-8"), chunks=(2, 2)
            )
            dset.attrs["note"] = "variable-length utf-8"
            scalar = f.create_dataset("odd_scalar", data="hello", dtype=h5py.string_dtype())
            scalar.attrs["note"] = "a scalar string"
        elif feature == "fixed_str":
            data = np.array([b"abc", b"", b"0123456789", b"x y"], dtype="S10")
            f.create_dataset("odd", data=data).attrs["note"] = "fixed-length S10"
            f.create_dataset(
                "odd_chunked", data=np.repeat(data, 2), chunks=(3,), compression="gzip"
            )
        elif feature == "enum":
            mapping = {"clear": 0, "cloudy": 1, "fog": 2, "rain": 7}
            dtype = h5py.enum_dtype(mapping, basetype="u1")
            values = np.array([[0, 1, 2], [7, 0, 0], [1, 7, 2], [0, 2, 1]], dtype="u1")
            dset = f.create_dataset("odd", data=values, dtype=dtype, chunks=(2, 3))
            dset.attrs["note"] = "an enum"
        elif feature == "big_endian":
            values = (np.random.default_rng(3).standard_normal((6, 5)) * 100).astype(">f4")
            values[0, 0], values[1, 1] = 0.0, np.nan
            dset = f.create_dataset(
                "odd", data=values, dtype=">f4", chunks=(4, 3), compression="gzip"
            )
            dset.attrs["order"] = "big"
            ints = (np.arange(12, dtype=">i2").reshape(3, 4) - 6) * 1000
            f.create_dataset("odd_i2", data=ints, dtype=">i2")
            chunked = np.arange(10, dtype=">i2") - 5
            f.create_dataset("odd_i2_chunked", data=chunked, dtype=">i2", chunks=(4,))
        elif feature == "bool":
            values = np.array([[True, False, True], [False, False, True]])
            f.create_dataset("odd", data=values)
            f.create_dataset("odd_chunked", data=np.tile(values, (3, 1)), chunks=(4, 2))
        elif feature == "compound":
            dtype = np.dtype([("a", "<i4"), ("b", "<f8")])
            values = np.array([(1, 2.5), (0, 0.0), (-3, np.nan), (7, -1.0)], dtype=dtype)
            f.create_dataset("odd", data=values, chunks=(2,))
        else:
            raise ValueError(feature)
    return path


def write_h5_series(
    directory: Path,
    lengths: Sequence[int],
    feature: str,
    *,
    chunk_time: int = 3,
    nx: int = 5,
) -> list[Path]:
    """Plain HDF5 files (h5py dimension scales ``time`` and ``x``, no netCDF) along ``time``,
    each holding ``v(time, x)`` written with ``feature``'s filter."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    start = 0
    for i, n in enumerate(lengths):
        path = directory / f"h{i:02d}.h5"
        with h5py.File(path, "w") as f:
            f.attrs["title"] = "a plain hdf5 series"
            time = f.create_dataset("time", data=np.arange(start, start + n, dtype="i4"))
            time.make_scale("time")
            x = f.create_dataset("x", data=np.arange(nx, dtype="f8") * 2.0)
            x.make_scale("x")
            data = h5_feature_values(feature, (n, nx), seed=i)
            v = f.create_dataset(
                "v", data=data, chunks=(chunk_time, nx), **h5_feature_kwargs(feature)
            )
            v.dims[0].attach_scale(time)
            v.dims[1].attach_scale(x)
            v.attrs["feature"] = feature
        paths.append(path)
        start += n
    return paths


def write_char_arrays(path: Path) -> Path:
    """A NetCDF4 file with ``S1`` char arrays along a string dimension."""
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("station", 4)
        nc.createDimension("nchar", 5)
        code = nc.createVariable("code", "S1", ("station", "nchar"))
        code.long_name = "station code"
        code[:] = netCDF4.stringtochar(np.array(["ab", "", "abcde", "x z"], dtype="S5"))
        name = nc.createVariable("name", "S1", ("station", "nchar"))
        name._Encoding = "utf-8"
        name[:] = netCDF4.stringtochar(np.array(["oslo", "rome", "bonn", "nice"], dtype="S5"))
        height = nc.createVariable("height", "f4", ("station",))
        height[:] = [0.0, 10.5, 200.0, -3.0]
    return path


def source_chunk_count(paths: Sequence[Path], name: str) -> int:
    """How many chunks ``name`` has stored in all of ``paths`` (read with h5py)."""
    total = 0
    for path in paths:
        with h5py.File(path, "r") as f:
            total += f[name].id.get_num_chunks()
    return total
