"""Layouts beyond one time series: what ``xr.open_mfdataset`` opens, the store opens the same.

Merged variable sets (CMIP: one variable per file), ensembles x time, tiles on a lat x lon
hypercube, a dimension whose coordinate is in the file names (``coords_from_path``),
variable sets that drift over time, groups, mixed formats, HTTP. The truth is always
``xr.open_mfdataset`` on the same files (netCDF4 engine); the store is read through
``xr.open_zarr`` and compared strictly (values NaN-aware, dtypes, coordinates, attributes:
``oracle.assert_store_matches``), never through encodings.

Where ``open_mfdataset`` silently fills or drops data (a hole in a tile set, two tiles at
the same place), the store refuses instead: that is the one place it does not follow
xarray, by the rule that wrong data is never served.
"""

from __future__ import annotations

import pickle
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import fsspec
import netCDF4
import numpy as np
import pytest
import xarray as xr
from conftest import write_simple
from oracle import assert_same_dataset, assert_store_matches, faces, open_each_format
from servers import serve_directory

import fsspec_virtual.state as state_module
from fsspec_virtual import IncompatibleSourcesError, StaleSourceError

# -- file writers -----------------------------------------------------------------------------

DAYS_2000 = "days since 2000-01-01"


def write_cmip(path: Path, var: str, start_year: int, *, height: bool, seed: int) -> Path:
    """A CMIP-like file: ``var(time, lat, lon)`` float32 with a ``_FillValue`` of 1e20 (one
    value masked), ``time`` CF (noleap, 4 steps a file) with ``time_bnds(time, bnds)``,
    ``lat``/``lon``, and with ``height`` a scalar coordinate named by ``var``'s
    ``coordinates`` attribute. Global attributes differ per file (``variable_id``,
    ``tracking_id``): the first file's win."""
    times = (start_year - 2000) * 365 + np.arange(4) * 182.5
    with netCDF4.Dataset(path, "w") as nc:
        nc.Conventions = "CF-1.7 CMIP-6.2"
        nc.variable_id = var
        nc.tracking_id = f"hdl:21.14100/{var}-{start_year}"
        nc.createDimension("time", None)
        nc.createDimension("lat", 3)
        nc.createDimension("lon", 4)
        nc.createDimension("bnds", 2)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = DAYS_2000
        time.calendar = "noleap"
        time.bounds = "time_bnds"
        time.standard_name = "time"
        time.axis = "T"
        time[:] = times
        bounds = nc.createVariable("time_bnds", "f8", ("time", "bnds"))
        bounds[:] = np.stack([times - 91.25, times + 91.25], axis=1)
        lat = nc.createVariable("lat", "f8", ("lat",))
        lat.units = "degrees_north"
        lat[:] = [-30.0, 0.0, 30.0]
        lon = nc.createVariable("lon", "f8", ("lon",))
        lon.units = "degrees_east"
        lon[:] = [0.0, 90.0, 180.0, 270.0]
        v = nc.createVariable(
            var,
            "f4",
            ("time", "lat", "lon"),
            compression="zlib",
            chunksizes=(1, 3, 4),
            fill_value=np.float32(1e20),
        )
        v.units = "K" if var == "tas" else "kg m-2 s-1"
        v.cell_methods = "area: time: mean"
        if height:
            h = nc.createVariable("height", "f8", ())
            h.units = "m"
            h.axis = "Z"
            h[...] = 2.0
            v.coordinates = "height"
        data = np.random.default_rng(seed).standard_normal((4, 3, 4)).astype("f4") + 280
        data[0, 0, 0] = 1e20
        v.set_auto_maskandscale(False)
        v[:] = data
    return path


def write_grid(
    path: Path,
    *,
    times: Sequence[float] | None = None,
    lat: Sequence[float] = (0.0, 10.0),
    lon: Sequence[float] = (0.0, 20.0),
    member: Any = None,
    seed: int = 0,
    fmt: str = "NETCDF4",
) -> Path:
    """``tas([member,] [time,] lat, lon)`` float32 with ``lat``/``lon`` coordinates, and
    with ``member`` a size-1 ``member`` dimension whose coordinate holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nc3 = fmt.startswith("NETCDF3")
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.title = "a grid"
        dims: list[str] = []
        if member is not None:
            nc.createDimension("member", 1)
            dims.append("member")
            m = nc.createVariable("member", np.asarray(member).dtype, ("member",))
            m[0] = member
        if times is not None:
            nc.createDimension("time", len(times))
            dims.append("time")
            time = nc.createVariable("time", "f8", ("time",))
            time.units = DAYS_2000
            time.calendar = "standard"
            time[:] = np.asarray(times, dtype="f8")
        nc.createDimension("lat", len(lat))
        nc.createDimension("lon", len(lon))
        dims += ["lat", "lon"]
        la = nc.createVariable("lat", "f8", ("lat",))
        la.units = "degrees_north"
        la[:] = np.asarray(lat, dtype="f8")
        lo = nc.createVariable("lon", "f8", ("lon",))
        lo.units = "degrees_east"
        lo[:] = np.asarray(lon, dtype="f8")
        shape = tuple(len(nc.dimensions[d]) for d in dims)
        kwargs: dict[str, Any] = {} if nc3 else {"compression": "zlib", "shuffle": True}
        v = nc.createVariable("tas", "f4", tuple(dims), **kwargs)
        v.units = "K"
        v[:] = np.random.default_rng(seed).standard_normal(shape).astype("f4")
    return path


def write_drift(path: Path, year: int, *, more: bool, seed: int) -> Path:
    """``t2m(time, x)`` float32; with ``more`` also ``sst(time, x)`` float64 and
    ``ice(time, x)`` int16 with ``_FillValue`` -1 (some values masked)."""
    times = (year - 2000) * 366 + np.arange(3) * 10.0
    rng = np.random.default_rng(seed)
    with netCDF4.Dataset(path, "w") as nc:
        nc.title = "drifting variable sets"
        nc.createDimension("time", 3)
        nc.createDimension("x", 4)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = DAYS_2000
        time.calendar = "standard"
        time[:] = times
        x = nc.createVariable("x", "f8", ("x",))
        x[:] = np.arange(4) * 1.5
        t2m = nc.createVariable("t2m", "f4", ("time", "x"), compression="zlib")
        t2m.units = "K"
        t2m[:] = rng.standard_normal((3, 4)).astype("f4")
        if more:
            sst = nc.createVariable("sst", "f8", ("time", "x"), chunksizes=(1, 4))
            sst.units = "K"
            sst[:] = rng.standard_normal((3, 4))
            ice = nc.createVariable("ice", "i2", ("time", "x"), fill_value=np.int16(-1))
            ice.units = "1"
            ice.set_auto_maskandscale(False)
            raw = rng.integers(0, 100, (3, 4)).astype("i2")
            raw[1, 2] = -1
            ice[:] = raw
    return path


def write_grouped(path: Path, start: int, seed: int) -> Path:
    """Root ``t2m(time, x)`` (daily) and a group ``g`` with its own ``time`` dimension
    (hourly, int32 hours) and ``wind(time, y)`` int16 packed with a ``_FillValue``."""
    with netCDF4.Dataset(path, "w") as nc:
        nc.title = "root"
        nc.createDimension("time", 2)
        nc.createDimension("x", 3)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = DAYS_2000
        time[:] = start + np.arange(2.0)
        t2m = nc.createVariable("t2m", "f4", ("time", "x"))
        t2m[:] = np.random.default_rng(seed).standard_normal((2, 3))
        g = nc.createGroup("g")
        g.description = "hourly"
        g.createDimension("time", 48)
        g.createDimension("y", 2)
        g_time = g.createVariable("time", "i4", ("time",))
        g_time.units = "hours since 2000-01-01"
        g_time[:] = 24 * start + np.arange(48)
        y = g.createVariable("y", "f4", ("y",))
        y[:] = [0.5, 1.5]
        wind = g.createVariable(
            "wind",
            "i2",
            ("time", "y"),
            fill_value=np.int16(-999),
            compression="zlib",
            chunksizes=(12, 2),
        )
        wind.scale_factor = 0.1
        wind.units = "m s-1"
        wind.set_auto_maskandscale(False)
        raw = np.random.default_rng(seed + 1).integers(-500, 500, (48, 2)).astype("i2")
        raw[3, 1] = -999
        wind[:] = raw
    return path


def tile_lat(i: int) -> tuple[float, float]:
    return (20.0 * i, 20.0 * i + 10.0)


def tile_lon(j: int) -> tuple[float, float]:
    return (30.0 * j, 30.0 * j + 15.0)


def write_tiles(
    directory: Path,
    rows: int = 2,
    cols: int = 3,
    *,
    lon: Callable[[int, int], Sequence[float]] = lambda i, j: tile_lon(j),
    leave_out: Sequence[tuple[int, int]] = (),
) -> list[Path]:
    """A ``rows x cols`` tile set in lat x lon, each tile 2 x 2 with the same two time
    steps; ``lon(i, j)`` gives a tile's longitudes."""
    return [
        write_grid(
            directory / f"tile_{i}_{j}.nc",
            times=[0.0, 1.0],
            lat=tile_lat(i),
            lon=lon(i, j),
            seed=10 * i + j,
        )
        for i in range(rows)
        for j in range(cols)
        if (i, j) not in leave_out
    ]


# -- the truth and the store ------------------------------------------------------------------

#: The store's rules for variables without a concat dimension are open_mfdataset's
#: "minimal"; compat="no_conflicts" (xarray's default) merges variable-set groups value by
#: value. NB compat="override" would be wrong here: merging {t2m} over 2000-2002 with
#: {t2m, sst} over 2003-2004 it keeps the first group's t2m, NaN over 2003-2004.
BY_COORDS: dict[str, Any] = {
    "engine": "netcdf4",
    "combine": "by_coords",
    "data_vars": "minimal",
    "coords": "minimal",
    "compat": "no_conflicts",
}

#: Concatenating along a *new* dimension: open_mfdataset refuses data_vars="minimal" there
#: ("Cannot specify both data_vars='minimal' and coords='minimal' when concatenating over a
#: new dimension"); data_vars="all" (its default) gives every data variable the new
#: dimension and leaves coordinates equal in every file (lat, lon) as they are, which is the
#: intended result. xr.concat of the per-member by_coords datasets along the same DataArray
#: gives an identical dataset (checked in test_member_from_path_by_member_and_time).
NESTED: dict[str, Any] = {
    "engine": "netcdf4",
    "combine": "nested",
    "data_vars": "all",
    "coords": "different",
    "compat": "no_conflicts",
}


def natural(path: Path | str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def by_coords(
    paths: Sequence[Path], *, join: str = "outer", group: str | None = None
) -> xr.Dataset:
    """``open_mfdataset(..., combine="by_coords")``, loaded; files in listing (natural
    name) order, which decides whose global attributes win."""
    ordered = [str(p) for p in sorted(paths, key=natural)]
    with xr.open_mfdataset(ordered, join=join, group=group, **BY_COORDS) as ds:
        return ds.load()


def member_coordinate(values: Sequence[Any]) -> xr.DataArray:
    return xr.DataArray(list(values), dims="member", name="member")


def nested(grid: Any, concat_dim: Any) -> xr.Dataset:
    """``open_mfdataset(grid, combine="nested", concat_dim=...)``, loaded."""
    with xr.open_mfdataset(grid, concat_dim=concat_dim, join="outer", **NESTED) as ds:
        return ds.load()


def virtual(path: Any, **kwargs: Any) -> Any:
    return fsspec.filesystem(
        "virtualzarr",
        path=str(path) if isinstance(path, Path) else path,
        cache=False,
        max_workers=1,
        skip_instance_cache=True,
        **kwargs,
    )


def opened(fs: Any) -> xr.Dataset:
    """The store through ``xr.open_zarr``, the same as Zarr format 2 and 3."""
    return open_each_format(fs)


@pytest.fixture(autouse=True)
def _fresh_states() -> Iterator[None]:
    state_module.clear_states()
    yield
    state_module.clear_states()


# -- 1. CMIP: one variable per file, merged, each a time series ---------------------------------


@pytest.fixture
def cmip(tmp_path: Path) -> list[Path]:
    paths = []
    for k, var in enumerate(("tas", "pr")):
        for start in (2000, 2002):
            name = f"{var}_day_M_{start}-{start + 1}.nc"
            paths.append(
                write_cmip(tmp_path / name, var, start, height=var == "tas", seed=10 * k + start)
            )
    return paths


@pytest.mark.parametrize("concat_dim", [None, "time"])
def test_cmip_variables_merged_and_concatenated(tmp_path, cmip, concat_dim):
    # open_mfdataset refuses concat_dim with combine="by_coords" ("has no effect"); the store
    # accepts it as the name of the one dimension files are concatenated along
    expected = by_coords(cmip)
    assert set(expected.data_vars) == {"tas", "pr", "time_bnds"}
    assert "height" in expected.coords and expected.attrs["variable_id"] == "pr"
    assert_store_matches(virtual(tmp_path, concat_dim=concat_dim), expected)


# -- 2. ensemble x time, member coordinate in each file -----------------------------------------


def write_ensemble(directory: Path, members: Sequence[int] = (1, 2)) -> list[Path]:
    return [
        write_grid(
            directory / f"tas_m{m}_{k}.nc",
            times=np.arange(3.0) + 3 * k,
            member=np.int32(m),
            seed=10 * m + k,
        )
        for m in members
        for k in range(2)
    ]


@pytest.mark.parametrize("concat_dim", [None, ["member", "time"]])
def test_ensemble_by_time_from_coordinates(tmp_path, concat_dim):
    paths = write_ensemble(tmp_path)
    expected = by_coords(paths)
    assert dict(expected.sizes) == {"member": 2, "time": 6, "lat": 2, "lon": 2}
    assert_store_matches(virtual(tmp_path, concat_dim=concat_dim), expected)


# -- 3. tiles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concat_dim", "join"), [(None, "outer"), (["lat", "lon"], "outer"), (None, "exact")]
)
def test_tiles_lat_by_lon(tmp_path, concat_dim, join):
    paths = write_tiles(tmp_path)
    expected = by_coords(paths, join=join)  # a complete tile set passes join="exact" too
    assert dict(expected.sizes) == {"time": 2, "lat": 4, "lon": 6}
    # the same as nesting the tiles by hand (rows of lon inside lat)
    grid = [[str(tmp_path / f"tile_{i}_{j}.nc") for j in range(3)] for i in range(2)]
    with xr.open_mfdataset(grid, combine="nested", concat_dim=["lat", "lon"], **_minimal()) as ds:
        assert_same_dataset(ds.load(), expected, "nested tiles")
    assert_store_matches(virtual(tmp_path, concat_dim=concat_dim, join=join), expected)


def _minimal() -> dict[str, Any]:
    return {k: v for k, v in BY_COORDS.items() if k != "combine"}


def test_tiles_in_descending_longitude(tmp_path):
    # every tile's lon decreasing: open_mfdataset orders the tiles in decreasing lon too
    write_tiles(tmp_path, lon=lambda i, j: tile_lon(j)[::-1])
    expected = by_coords(sorted(tmp_path.glob("*.nc")))
    assert expected.lon.values.tolist() == [75.0, 60.0, 45.0, 30.0, 15.0, 0.0]
    try:
        fs = virtual(tmp_path)
        assert_store_matches(fs, expected)
    except NotImplementedError as error:  # not supported yet: acceptable if it says so
        assert "lon" in str(error), error


# -- 4. a dimension from the file names ---------------------------------------------------------


def _member_number(path: str) -> int:
    found = re.search(r"_r(\d+)i", Path(path).name)
    assert found is not None, path
    return int(found.group(1))


MEMBER_CASES = {
    "regex-int": ({"member": r"_r(\d+)i"}, [1, 2, 10]),
    "regex-text": ({"member": r"_(r\d+i\d+p\d+)_"}, ["r1i1p1", "r2i1p1", "r10i1p1"]),
    "callable": ({"member": _member_number}, [1, 2, 10]),
}


@pytest.mark.parametrize("case", sorted(MEMBER_CASES))
def test_member_from_path(tmp_path, case):
    from_path, values = MEMBER_CASES[case]
    paths = [
        write_grid(tmp_path / f"tas_r{m}i1p1_2000.nc", times=np.arange(3.0), seed=m)
        for m in (10, 2, 1)
    ]
    # nested: members in natural file-name order (r1, r2, r10), text values too
    ordered = sorted(paths, key=natural)
    expected = nested([str(p) for p in ordered], member_coordinate(values))
    assert expected.tas.dims == ("member", "time", "lat", "lon")
    assert expected.lat.dims == ("lat",)
    fs = virtual(tmp_path, combine="nested", concat_dim=["member"], coords_from_path=from_path)
    assert_store_matches(fs, expected)


@pytest.mark.parametrize("combine", ["nested", "by_coords"])
def test_member_from_path_by_member_and_time(tmp_path, combine):
    grid = [
        [
            str(write_grid(tmp_path / f"tas_r{m}i1p1_{2000 + k}.nc", times=np.arange(3.0) + 3 * k))
            for k in range(2)
        ]
        for m in (1, 2, 10)
    ]
    members = member_coordinate([1, 2, 10])
    expected = nested(grid, [members, "time"])
    per_member = []
    for row in grid:
        with xr.open_mfdataset(row, **BY_COORDS) as ds:
            per_member.append(ds.load())
    assert_same_dataset(xr.concat(per_member, dim=members), expected, "xr.concat of members")
    fs = virtual(
        tmp_path,
        combine=combine,
        concat_dim=["member", "time"],
        coords_from_path={"member": r"_r(\d+)i"},
    )
    assert_store_matches(fs, expected)


def test_nested_without_coordinates_in_natural_name_order(tmp_path):
    # no coordinate, no coords_from_path: the new dimension has no coordinate and the
    # files sit in natural name order (run1, run2, run10), not in text order
    for k in (10, 1, 2):
        write_grid(tmp_path / f"run{k}.nc", times=np.arange(2.0), seed=k)
    ordered = [str(tmp_path / f"run{k}.nc") for k in (1, 2, 10)]
    expected = nested(ordered, "run")
    assert "run" not in expected.coords and expected.tas.dims[0] == "run"
    assert_store_matches(virtual(tmp_path, combine="nested", concat_dim="run"), expected)


def test_nested_along_a_dimension_without_coordinate(tmp_path):
    # the files' own ``time`` dimension, with no coordinate: natural name order too
    for k in (10, 1, 2):
        write_simple(tmp_path / f"step{k}.nc", None, nt=2, seed=k)
    ordered = [str(tmp_path / f"step{k}.nc") for k in (1, 2, 10)]
    expected = nested(ordered, "time")
    assert "time" not in expected.coords and expected.sizes["time"] == 6
    assert_store_matches(virtual(tmp_path, combine="nested", concat_dim="time"), expected)


def test_two_callables_are_two_collections(tmp_path):
    # the same directory under two different callables: each store serves its own values
    # (callables must not be told apart by their name alone)
    for m in (1, 2):
        write_grid(tmp_path / f"tas_r{m}i1p1_2000.nc", times=[0.0], seed=m)
    ordered = [str(tmp_path / f"tas_r{m}i1p1_2000.nc") for m in (1, 2)]
    for offset in (0, 100):
        fs = virtual(
            tmp_path,
            combine="nested",
            concat_dim="member",
            coords_from_path={"member": lambda p, o=offset: _member_number(p) + o},
        )
        expected = nested(ordered, member_coordinate([1 + offset, 2 + offset]))
        assert_store_matches(fs, expected)


# -- 5. variable sets that drift ----------------------------------------------------------------


@pytest.mark.parametrize("concat_dim", [None, "time"])
def test_drifting_variable_sets(tmp_path, concat_dim):
    for k, year in enumerate(range(2000, 2005)):
        write_drift(tmp_path / f"era_{year}.nc", year, more=year >= 2003, seed=k)
    expected = by_coords(sorted(tmp_path.glob("*.nc")))
    assert int(expected.sst.isnull().sum()) == 36 and not expected.t2m.isnull().any()
    assert expected.ice.dtype == np.float32 and int(expected.ice.isnull().sum()) == 38
    assert_store_matches(virtual(tmp_path, concat_dim=concat_dim), expected)


def test_drifting_integer_and_boolean_variables_without_fill_are_promoted(tmp_path):
    """xarray's outer join promotes an int (no _FillValue) or a netCDF boolean to float64
    with NaN in the gaps: so do we (the boolean's 'dtype' marker would cast NaN to True)."""
    for i in range(4):
        times = np.arange(2 * i, 2 * i + 2)
        ds = xr.Dataset(
            {"t2m": (("time", "x"), np.full((2, 3), float(i)))},
            coords={"time": ("time", times, {"units": "days since 2000-01-01"}), "x": [0, 1, 2]},
        )
        if i >= 2:
            ds["count"] = (("time", "x"), np.full((2, 3), 7 + i, dtype="i4"))
            ds["flag"] = (("time",), np.array([True, False]))
        ds.to_netcdf(tmp_path / f"f{i}.nc", encoding={"time": {"dtype": "i4"}})
    expected = by_coords(sorted(tmp_path.glob("*.nc")))
    assert expected["count"].dtype == expected["flag"].dtype == np.float64
    assert_store_matches(virtual(tmp_path), expected)


def test_drifting_variable_sets_refused_under_join_exact(tmp_path):
    for k, year in enumerate(range(2000, 2004)):
        write_drift(tmp_path / f"era_{year}.nc", year, more=year >= 2002, seed=k)
    with pytest.raises(ValueError, match="join='exact'"):  # xarray refuses too
        by_coords(sorted(tmp_path.glob("*.nc")), join="exact")
    with pytest.raises(IncompatibleSourcesError, match=r"time|sst|ice"):
        opened(virtual(tmp_path, join="exact"))


# -- 6. a plain time series, concat_dim inferred ------------------------------------------------


def test_time_series_without_concat_dim(tmp_path):
    paths = [
        write_grid(tmp_path / f"day{k}.nc", times=np.arange(2.0) + 2 * k, seed=k) for k in (2, 0, 1)
    ]
    expected = by_coords(paths)
    assert expected.sizes["time"] == 6
    assert_store_matches(virtual(tmp_path), expected)


# -- 7. groups ----------------------------------------------------------------------------------


def test_groups_each_a_time_series(tmp_path):
    paths = [write_grouped(tmp_path / f"g{k}.nc", 2 * k, k) for k in range(3)]
    fs = virtual(tmp_path)
    expected_g = by_coords(paths, group="g")
    assert expected_g.sizes["time"] == 144
    assert_store_matches(fs, by_coords(paths))
    assert_store_matches(fs, expected_g, group="g")
    for face in faces(fs):
        with xr.open_zarr(
            face.fs.get_mapper("g"), consolidated=False, zarr_format=face.zarr_format
        ) as ds:
            assert_same_dataset(ds.load(), expected_g, f"fs.get_mapper('g') ({face.label})")


# -- 8. mixed formats, HTTP ---------------------------------------------------------------------


def test_netcdf3_and_netcdf4_in_one_series(tmp_path):
    formats = ["NETCDF3_64BIT_OFFSET", "NETCDF4", "NETCDF3_CLASSIC", "NETCDF4_CLASSIC"]
    paths = [
        write_grid(tmp_path / f"f{k}.nc", times=np.arange(2.0) + 2 * k, seed=k, fmt=fmt)
        for k, fmt in enumerate(formats)
    ]
    assert_store_matches(virtual(tmp_path), by_coords(paths))


def test_ensemble_over_http(tmp_path):
    paths = write_ensemble(tmp_path / "www")
    expected = by_coords(paths)
    with serve_directory(tmp_path / "www") as server:
        assert_store_matches(virtual(f"{server.url}/"), expected)


# -- 9. refused -------------------------------------------------------------------------------


def test_missing_tile_is_refused(tmp_path):
    # open_mfdataset fills the missing tile with NaN (join="outer"), silently: the store
    # refuses, naming a dimension and where the hole is (lat=20, lon=60)
    paths = write_tiles(tmp_path, leave_out=[(1, 2)])
    assert int(by_coords(paths).tas.isnull().sum()) == 8
    with pytest.raises(IncompatibleSourcesError) as error:
        opened(virtual(tmp_path))
    message = str(error.value)
    assert re.search(r"\blat\b|\blon\b", message), message
    assert re.search(r"\b(20|60)(\.0*)?\b", message), message
    with pytest.raises(ValueError, match="join='exact'"):  # xarray refuses under exact
        by_coords(paths, join="exact")
    with pytest.raises(IncompatibleSourcesError, match=r"\blat\b|\blon\b"):
        opened(virtual(tmp_path, join="exact"))


def test_one_reversed_tile_is_refused(tmp_path):
    # the message names the reversed tile (a "hole" elsewhere would send the user hunting)
    write_tiles(tmp_path, lon=lambda i, j: tile_lon(j)[::-1] if (i, j) == (0, 1) else tile_lon(j))
    with pytest.raises(ValueError, match="monotonically"):
        by_coords(sorted(tmp_path.glob("*.nc")))
    with pytest.raises(IncompatibleSourcesError, match=r"lon") as error:
        opened(virtual(tmp_path))
    assert "tile_0_1.nc" in str(error.value), error.value


def test_overlapping_tiles_are_refused(tmp_path):
    write_tiles(tmp_path, lon=lambda i, j: (10.0 * j, 10.0 * j + 15.0))  # 0-15, 10-25, ...
    with pytest.raises(ValueError, match="monotonic global indexes along dimension lon"):
        by_coords(sorted(tmp_path.glob("*.nc")))
    with pytest.raises(IncompatibleSourcesError, match="lon"):
        opened(virtual(tmp_path))


def test_duplicate_tiles_are_refused(tmp_path):
    # two tiles of a row with the same lon: open_mfdataset keeps one of them and drops the
    # other, silently, even with join="exact"; the store names both files
    write_tiles(tmp_path, lon=lambda i, j: tile_lon(min(j, 1)))
    paths = sorted(tmp_path.glob("*.nc"))
    assert by_coords(paths).sizes["lon"] == 4  # 6 files of 2 x 2, 4 x 4 values
    with pytest.raises(IncompatibleSourcesError, match=r"tile_(\d)_[12]\.nc.*tile_\1_[12]\.nc"):
        opened(virtual(tmp_path))


def test_member_nowhere_points_at_coords_from_path(tmp_path):
    for k in range(2):
        write_grid(tmp_path / f"tas_{2000 + k}.nc", times=np.arange(2.0) + 2 * k, seed=k)
    with pytest.raises(IncompatibleSourcesError, match="coords_from_path") as error:
        opened(virtual(tmp_path, concat_dim=["member", "time"]))
    assert "member" in str(error.value)


@pytest.mark.parametrize("join", ["exact", "outer"])
def test_other_coordinate_differs_between_files(tmp_path, join):
    write_grid(tmp_path / "a.nc", times=[0.0, 1.0], lat=(0.0, 10.0), seed=1)
    write_grid(tmp_path / "b.nc", times=[2.0, 3.0], lat=(0.0, 12.5), seed=2)
    paths = sorted(tmp_path.glob("*.nc"))
    fs = virtual(tmp_path, join=join)
    if join == "exact":
        with pytest.raises(ValueError, match="join='exact'"):
            by_coords(paths, join="exact")
        with pytest.raises(IncompatibleSourcesError, match="lat"):
            opened(fs)
        return
    # open_mfdataset outer-joins lat (0, 10, 12.5) and fills NaN: the store gives the same
    # or refuses clearly, never the second file's data under the first file's lat
    expected = by_coords(paths)
    assert expected.lat.values.tolist() == [0.0, 10.0, 12.5]
    try:
        assert_store_matches(fs, expected)
    except (IncompatibleSourcesError, NotImplementedError) as error:
        assert "lat" in str(error), error


# -- 10. refresh -------------------------------------------------------------------------------


def test_new_member_joins_on_refresh(tmp_path):
    def add(m: int) -> None:
        write_grid(tmp_path / f"tas_r{m}i1p1_2000.nc", times=np.arange(2.0), seed=m)

    for m in (1, 2, 10):
        add(m)
    fs = virtual(
        tmp_path, combine="nested", concat_dim="member", coords_from_path={"member": r"_r(\d+)i"}
    )
    assert opened(fs).sizes["member"] == 3
    add(3)
    fs.refresh()
    files = [str(tmp_path / f"tas_r{m}i1p1_2000.nc") for m in (1, 2, 3, 10)]
    assert_store_matches(fs, nested(files, member_coordinate([1, 2, 3, 10])))


def test_new_tile_column_joins_on_refresh(tmp_path):
    write_tiles(tmp_path, cols=2)
    fs = virtual(tmp_path)
    assert opened(fs).sizes["lon"] == 4
    staging = tmp_path.parent / f"{tmp_path.name}-staging"
    new = write_tiles(staging, cols=3, leave_out=[(i, j) for i in range(2) for j in range(2)])
    for path in new:  # the column's two tiles appear together
        shutil.move(path, tmp_path / path.name)
    fs.refresh()
    assert_store_matches(fs, by_coords(sorted(tmp_path.glob("*.nc"))))


def test_mixed_calendars_are_refused_naming_both_files(tmp_path):
    for name, start, calendar in (("a.nc", 0, "noleap"), ("b.nc", 2, "standard")):
        with netCDF4.Dataset(tmp_path / name, "w") as nc:
            nc.createDimension("time", None)
            t = nc.createVariable("time", "f8", ("time",))
            t.units, t.calendar = "days since 2000-01-01", calendar
            t[:] = [start, start + 1]
            nc.createVariable("v", "f4", ("time",))[:] = [1, 2]
    for concat_dim in (None, "time"):
        with pytest.raises(IncompatibleSourcesError, match=r"'noleap' in .*a\.nc and 'standard'"):
            opened(virtual(tmp_path, concat_dim=concat_dim))


# -- found by attacking the combine -----------------------------------------------------------


def test_packed_concat_coordinate_is_ordered_and_served_by_value(tmp_path):
    """depth packed as int16 with another scale_factor per file: joined by value, not raw."""
    for i, (scale, depth) in enumerate([(1.0, [10.0, 11.0]), (0.1, [5.0, 6.0])]):
        depth = np.array(depth)
        xr.Dataset({"T": ("depth", depth * 100)}, coords={"depth": depth}).to_netcdf(
            tmp_path / f"f{i}.nc",
            encoding={"depth": {"dtype": "i2", "scale_factor": scale, "_FillValue": None}},
        )
    expected = by_coords(sorted(tmp_path.glob("*.nc")))
    np.testing.assert_allclose(expected.depth.values, [5, 6, 10, 11])
    with open_each_format(virtual(tmp_path)) as ours:
        np.testing.assert_allclose(ours.depth.values, expected.depth.values)
        np.testing.assert_array_equal(ours.T.values, expected.T.values)


def test_packed_label_coordinates_that_differ_by_value_are_refused(tmp_path):
    """The same raw lat [1, 2, 3] under scale 0.5 and 1: different labels (xarray refuses)."""
    for i, scale in enumerate([0.5, 1.0]):
        time, lat = np.arange(2) + 2 * i, np.array([1, 2, 3]) * scale
        xr.Dataset(
            {"tas": (("time", "lat"), np.add.outer(time * 10.0, lat))},
            coords={"time": time, "lat": lat},
        ).to_netcdf(
            tmp_path / f"f{i}.nc",
            encoding={"lat": {"dtype": "i2", "scale_factor": scale, "_FillValue": None}},
        )
    with pytest.raises(IncompatibleSourcesError, match="lat"):
        opened(virtual(tmp_path, concat_dim="time"))


def test_merged_groups_with_conflicting_scalar_coordinates_are_refused(tmp_path):
    """tas at 2 m and uas at 10 m: open_mfdataset raises MergeError; never one height for both."""
    t = np.arange(4.0)
    for name, height in (("uas", 10.0), ("tas", 2.0)):
        xr.Dataset(
            {name: ("time", t + height)},
            coords={"time": ("time", t, {"units": "days since 2000-01-01"}), "height": height},
        ).to_netcdf(tmp_path / f"{name}_day.nc")
    with pytest.raises(IncompatibleSourcesError, match="'height'"):
        opened(virtual(tmp_path))


def test_merged_groups_must_agree_on_dimension_lengths(tmp_path):
    for name, n, with_time in (("tas", 8, True), ("pr", 6, False)):
        ds = xr.Dataset({name: ("time", np.arange(float(n)))})
        if with_time:
            ds = ds.assign_coords(time=("time", np.arange(n), {"units": "days since 2000-01-01"}))
        ds.to_netcdf(tmp_path / f"{name}.nc")
    with pytest.raises(IncompatibleSourcesError, match="'time' has length"):
        opened(virtual(tmp_path))


def test_a_group_coordinate_out_of_the_files_order_is_refused(tmp_path):
    for i, group_start in enumerate([3, 0, 6]):
        path = tmp_path / f"f{i}.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("time", None)
            t = nc.createVariable("time", "f8", ("time",))
            t.units = "days since 2000-01-01"
            t[:] = [3 * i, 3 * i + 1, 3 * i + 2]
            g = nc.createGroup("g")
            g.createDimension("time", None)
            gt = g.createVariable("time", "f8", ("time",))
            gt.units = "days since 2000-01-01"
            gt[:] = [group_start, group_start + 1, group_start + 2]
            g.createVariable("v", "f8", ("time",))[:] = [1.0, 2.0, 3.0]
    with pytest.raises(IncompatibleSourcesError, match="'g/time' is not monotonic"):
        opened(virtual(tmp_path))


# -- found by the fourth attack round ------------------------------------------------------


@pytest.mark.parametrize("dim", ["run", "obs"])
def test_nested_files_with_different_variables_keep_their_places(tmp_path, dim):
    """Each file its own place along the stacking dimension, NaN where it lacks a variable."""
    for i, name in enumerate(["n", "n", "tas", "tas"]):
        if dim == "run":
            ds = xr.Dataset({name: ("time", np.arange(2) + 100.0 * i)}, coords={"time": [0, 1]})
        else:
            ds = xr.Dataset({name: ("obs", np.arange(3) + 10.0 * i)})
        ds.to_netcdf(tmp_path / f"f{i}.nc")
    paths = sorted(tmp_path.glob("*.nc"))
    with xr.open_mfdataset(paths, combine="nested", concat_dim=dim) as truth:
        expected = truth.load()
    fs = virtual(tmp_path, combine="nested", concat_dim=dim)
    with open_each_format(fs) as ours:
        for name in ("n", "tas"):
            np.testing.assert_array_equal(ours[name].values, expected[name].values)


def test_a_variable_only_in_the_middle_files(tmp_path):
    for i in range(3):
        ds = xr.Dataset(
            {"tas": ("time", np.arange(2.0) + 2 * i)},
            coords={"time": ("time", np.arange(2) + 2 * i, {"units": "days since 2000-01-01"})},
        )
        if i == 1:
            ds["pr"] = ("time", np.array([20.0, 30.0]))
        ds.to_netcdf(tmp_path / f"f{i}.nc")
    assert_store_matches(virtual(tmp_path), by_coords(sorted(tmp_path.glob("*.nc"))))


@pytest.mark.parametrize(
    "files",
    [
        [([0, 1], "days since 2000-01-01", "f8"), ([48, 72], "hours since 2000-01-01", "f8")],
        [([0, 1], "days since 2000-01-01", "i4"), ([2.5, 3.5], "days since 2000-01-01", "f8")],
    ],
    ids=["other-units", "finer-units"],
)
def test_time_bounds_follow_the_joined_time_units(tmp_path, files):
    for i, (t, units, dtype) in enumerate(files):
        with netCDF4.Dataset(tmp_path / f"f{i}.nc", "w") as nc:
            nc.createDimension("time", None)
            nc.createDimension("nv", 2)
            tv = nc.createVariable("time", dtype, ("time",))
            tv.units, tv.bounds = units, "time_bnds"
            tv[:] = t
            half = 12 if units.startswith("hours") else 0.5
            nc.createVariable("time_bnds", dtype, ("time", "nv"))[:] = np.stack(
                [t, np.asarray(t) + half], 1
            )
            nc.createVariable("tas", "f4", ("time",))[:] = np.arange(len(t))
    expected = by_coords(sorted(tmp_path.glob("*.nc")))
    with open_each_format(virtual(tmp_path)) as ours:
        np.testing.assert_array_equal(ours.time_bnds.values, expected.time_bnds.values)
        np.testing.assert_array_equal(ours.time.values, expected.time.values)


def _members_by_callable(directory, member_of):
    """The files of ``directory`` stacked along ``member``, numbered by ``member_of``,
    with a scan cache of their own."""
    return fsspec.filesystem(
        "virtualzarr",
        path=str(directory / "*.nc"),
        combine="nested",
        concat_dim="member",
        coords_from_path={"member": member_of},
        max_workers=1,
        cache_dir=str(directory / "cache"),
    )


def test_an_edited_callable_is_another_collection(tmp_path):
    """Two functions of one name: the second (an edit) must not reuse the first's snapshot
    from the persistent scan cache."""
    for member in (1, 2):
        write_grid(tmp_path / f"tas_p{3 - member}_r{member}i1.nc", times=[0.0], seed=member)

    def member_of(path):  # first version: the wrong number
        return int(re.search(r"_p(\d+)", path)[1])

    def store(member_of):
        return _members_by_callable(tmp_path, member_of)

    first = store(member_of)
    assert list(opened(first).member.values) == [1, 2]
    wrong = opened(first).tas.values

    def member_of(path):
        return int(re.search(r"_r(\d+)i", path)[1])

    state_module.clear_states()
    second = store(member_of)
    assert second.collection().id != first.collection().id
    np.testing.assert_array_equal(opened(second).tas.values, wrong[::-1])


_MEMBER_OFFSET = {"value": 0}


def _member_with_offset(path):
    """A callable whose result depends on a global: no identity of the function sees it."""
    return int(re.search(r"_r(\d+)i", path)[1]) + _MEMBER_OFFSET["value"]


def test_a_callable_reading_a_global_is_called_again_by_a_new_store(tmp_path):
    """Neither the process's snapshots nor the persistent scan cache may answer for a
    callable: a new store calls it again; a store already open keeps its snapshot."""
    for member in (1, 2):
        write_grid(tmp_path / f"tas_r{member}i1.nc", times=[0.0], seed=member)

    def store():
        return _members_by_callable(tmp_path, _member_with_offset)

    _MEMBER_OFFSET["value"] = 0
    first = store()
    assert list(opened(first).member.values) == [1, 2]
    first.collection()  # pinned: its pickle carries the snapshot
    pickled = pickle.dumps(first)
    _MEMBER_OFFSET["value"] = 100
    assert list(opened(store()).member.values) == [101, 102]  # same process
    state_module.clear_states()
    assert list(opened(store()).member.values) == [101, 102]  # as if a new process
    # a process whose callable answers otherwise cannot have the first snapshot
    with pytest.raises(StaleSourceError, match="can no longer be had"):
        opened(pickle.loads(pickled))


@pytest.mark.parametrize("scales", [(0.1, 1.0)])
def test_packed_scalar_coordinates_are_compared_by_value(tmp_path, scales):
    for i, scale in enumerate(scales):
        ds = xr.Dataset(
            {"tas": ("time", np.arange(2.0) + 2 * i)},
            coords={"time": np.arange(2) + 2 * i, "height": 2.0 if i == 0 else 20.0},
        )
        ds.to_netcdf(
            tmp_path / f"f{i}.nc",
            encoding={"height": {"dtype": "i2", "scale_factor": scale, "_FillValue": None}},
        )
    with pytest.raises(IncompatibleSourcesError, match="'height'"):
        opened(virtual(tmp_path))


def test_scalar_text_coordinates_are_compared(tmp_path):
    for i, source in enumerate(["modelA", "modelB"]):
        t = np.arange(2) + 2 * i
        xr.Dataset({"tas": ("time", t * 1.0)}, coords={"time": t, "source": source}).to_netcdf(
            tmp_path / f"f{i}.nc"
        )
    with pytest.raises(IncompatibleSourcesError, match="'source'"):
        opened(virtual(tmp_path))


def test_a_text_concat_coordinate_is_served_as_text(tmp_path):
    for i, names in enumerate([["a", "b"], ["c", "d"]]):
        xr.Dataset(
            {"tas": ("station", np.arange(2.0) + 2 * i)},
            coords={"station": np.array(names, dtype=object)},
        ).to_netcdf(tmp_path / f"f{i}.nc")
    expected = by_coords(sorted(tmp_path.glob("*.nc")))
    with open_each_format(virtual(tmp_path)) as ours:
        assert list(ours.station.values) == list(expected.station.values) == ["a", "b", "c", "d"]
        np.testing.assert_array_equal(ours.tas.values, expected.tas.values)


def test_coords_from_path_labels_a_dimension_the_files_have_without_coordinate(tmp_path):
    for day in ["2000-01-03", "2000-01-01", "2000-01-02"]:
        xr.Dataset({"tas": (("time", "x"), [[int(day[-1])] * 2])}).to_netcdf(
            tmp_path / f"tas_{day}.nc"
        )
    fs = virtual(tmp_path, concat_dim="time", coords_from_path={"time": r"_(\d{4}-\d\d-\d\d)"})
    with open_each_format(fs) as ours:
        assert ours.tas.dims == ("time", "x")
        np.testing.assert_array_equal(ours.tas.values, [[1, 1], [2, 2], [3, 3]])
        assert [str(t)[:10] for t in ours.time.values] == ["2000-01-01", "2000-01-02", "2000-01-03"]


def test_merged_groups_share_an_equal_grid_mapping(tmp_path):
    for name in ("tas", "pr"):
        ds = xr.Dataset(
            {name: ("time", np.arange(2.0)), "crs": ((), np.int32(0), {"grid_mapping_name": "x"})},
            coords={"time": [0, 1]},
        )
        ds[name].attrs["grid_mapping"] = "crs"
        ds.to_netcdf(tmp_path / f"{name}.nc")
    assert_store_matches(virtual(tmp_path), by_coords(sorted(tmp_path.glob("*.nc"))))


def test_what_a_callable_returns_is_checked(tmp_path):
    """A callable's error names the file and the dimension; it returns one value; dates
    become datetime64 as a regex's ISO dates do."""
    import datetime

    for month in (1, 2):
        write_grid(tmp_path / f"tas_2000-0{month}-01.nc", times=[0.0], seed=month)

    def month_of(path):
        return datetime.date(2000, int(re.search(r"2000-0(\d)", path)[1]), 1)

    by_date = opened(_members_by_callable(tmp_path, month_of))
    by_regex = opened(
        fsspec.filesystem(
            "virtualzarr",
            path=str(tmp_path / "*.nc"),
            combine="nested",
            concat_dim="member",
            coords_from_path={"member": r"_(\d{4}-\d\d-\d\d)\.nc"},
            cache=False,
        )
    )
    assert by_date["member"].dtype.kind == "M"
    np.testing.assert_array_equal(by_date["member"].values, by_regex["member"].values)
    np.testing.assert_array_equal(by_date["tas"].values, by_regex["tas"].values)

    def fails_for_february(path):
        return 1 // ("-01-" in path)

    with pytest.raises(IncompatibleSourcesError, match=r"'member'.*ZeroDivisionError.*02-01"):
        opened(_members_by_callable(tmp_path, fails_for_february))
    with pytest.raises(IncompatibleSourcesError, match="must return one"):
        opened(_members_by_callable(tmp_path, lambda path: (1, 2)))
