"""Dimension coordinates other than the concat one must agree between files: refused, never
relabelled.

A non-concat dimension coordinate (``lat``, ``lon``) is served from the first file only, so
a file whose labels differ would have its data served under the first file's labels. Each
case is compared with what ``xr.open_mfdataset`` does with the same files (``nested`` along
``time`` and ``by_coords``, with the project's ``join="exact"`` and with xarray's default
join): it refuses, or gives a result other than that relabelling; where the labels agree, the
store equals it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fsspec
import netCDF4
import numpy as np
import pytest
import xarray as xr
from oracle import MFDATASET_KWARGS, assert_store_matches, open_truth
from servers import HTTPServer, serve_directory

import fsspec_virtual.state as state_module
from fsspec_virtual import IncompatibleSourcesError

LAT = np.array([-60.0, -20.0, 20.0, 60.0])
LON = np.array([0.0, 90.0, 180.0, 270.0, 359.0])
TIMES = ([0.0, 1.0], [2.0, 3.0], [4.0, 5.0])


def _fill(node: Any, times: Sequence[float], lat: np.ndarray, lon: np.ndarray, seed: int) -> None:
    """``time``, ``lat``, ``lon`` and ``v(time, lat, lon)`` in one netCDF group."""
    lat, lon = np.asarray(lat), np.asarray(lon)
    node.createDimension("time", len(times))
    node.createDimension("lat", lat.size)
    node.createDimension("lon", lon.size)
    time = node.createVariable("time", "f8", ("time",))
    time.units = "days since 2001-01-01"
    time[:] = times
    for name, values, units in (("lat", lat, "degrees_north"), ("lon", lon, "degrees_east")):
        variable = node.createVariable(name, values.dtype.str, (name,))
        variable.units = units
        variable[:] = values
    v = node.createVariable("v", "f4", ("time", "lat", "lon"))
    v.units = "K"
    v[:] = (
        np.arange(len(times) * lat.size * lon.size).reshape(len(times), -1, lon.size) + 1000 * seed
    )


def write_grid(
    path: Path,
    times: Sequence[float],
    lat: np.ndarray = LAT,
    lon: np.ndarray = LON,
    *,
    fmt: str = "NETCDF4",
    group_lat: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """A file of ``v(time, lat, lon)``; with ``group_lat``, a group ``g`` holds the same
    variables with that ``lat`` (and the root ``lat``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        _fill(nc, times, lat, lon, seed)
        if group_lat is not None:
            _fill(nc.createGroup("g"), times, group_lat, lon, seed + 10)
    return path


def write_collection(directory: Path, lats: Sequence[np.ndarray], **kwargs: Any) -> list[Path]:
    """One ``write_grid`` file per entry of ``lats`` (time order), values distinct per file."""
    lons = kwargs.pop("lons", [LON] * len(lats))
    formats = kwargs.pop("formats", ["NETCDF4"] * len(lats))
    group_lats = kwargs.pop("group_lats", [None] * len(lats))
    return [
        write_grid(
            directory / f"part{i}.nc",
            TIMES[i],
            lat,
            lon,
            fmt=fmt,
            group_lat=group_lat,
            seed=i,
            **kwargs,
        )
        for i, (lat, lon, fmt, group_lat) in enumerate(zip(lats, lons, formats, group_lats))
    ]


def virtual(path: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("concat_dim", "time")
    kwargs.setdefault("skip_instance_cache", True)
    kwargs.setdefault("cache", False)
    kwargs.setdefault("max_workers", 1)
    return fsspec.filesystem("virtualzarr", path=path, **kwargs)


@pytest.fixture(autouse=True)
def _fresh_states() -> Iterator[None]:
    state_module.clear_states()
    yield
    state_module.clear_states()


def xarray_outcomes(paths: Sequence[Path], group: str | None = None) -> dict[str, Any]:
    """What ``xr.open_mfdataset`` makes of ``paths``: a loaded dataset or the exception,
    for ``nested`` (along ``time``) and ``by_coords``, with ``join="exact"`` and with
    xarray's default join."""
    out: dict[str, Any] = {}
    for combine in ("nested", "by_coords"):
        for join in ("exact", "default"):
            kwargs: dict[str, Any] = dict(MFDATASET_KWARGS, combine=combine)
            if join == "default":
                del kwargs["join"]
            if combine == "nested":
                kwargs["concat_dim"] = "time"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # xarray's FutureWarnings about join
                    with xr.open_mfdataset([str(p) for p in paths], group=group, **kwargs) as ds:
                        out[f"{combine}/{join}"] = ds.load()
            except Exception as e:
                out[f"{combine}/{join}"] = e
    return out


def relabelled(paths: Sequence[Path], group: str | None = None) -> xr.Dataset:
    """What serving every file's data under the first file's ``lat``/``lon`` would give."""
    parts = []
    for path in paths:
        with xr.open_dataset(path, engine="netcdf4", group=group) as ds:
            parts.append(ds.load())
    first = parts[0]
    same_labels = [p.assign_coords(lat=first["lat"], lon=first["lon"]) for p in parts]
    return xr.concat(same_labels, "time", data_vars="minimal", coords="minimal", compat="override")


def assert_refused(
    paths: Sequence[Path],
    name: str,
    first_difference: str,
    other: int,
    served: Sequence[str] | None = None,
) -> None:
    """The store over ``served`` (default: ``paths``) refuses, naming the coordinate, the
    first file, file ``other`` and the first difference; no ``open_mfdataset`` outcome of
    ``paths`` is the relabelled dataset."""
    names = [str(p) for p in paths] if served is None else list(served)
    with pytest.raises(IncompatibleSourcesError) as err:
        virtual(names).cat_file(".zmetadata")
    first, second = names[0], names[other]
    shown = first_difference.format(first=first, other=second)
    assert str(err.value) == f"coordinate {name!r} differs between {first} and {second}: {shown}"
    group = name.rpartition("/")[0] or None
    wrong = relabelled(paths, group)
    for how, outcome in xarray_outcomes(paths, group).items():
        if isinstance(outcome, Exception):
            continue
        assert not outcome["v"].equals(wrong["v"]), f"open_mfdataset {how} relabels"


def assert_combines_like_xarray(fs: Any, paths: Sequence[Path], group: str | None = None) -> None:
    """The store equals ``open_mfdataset`` (by_coords and nested: both give the same)."""
    expected = open_truth(paths, group=group)
    nested = open_truth(paths, combine="nested", group=group)
    xr.testing.assert_identical(expected, nested)
    raw = None if group else open_truth(paths, decode_cf=False)
    assert_store_matches(fs, expected, raw, group=group)


SHIFTED = LAT + 20.0  # half a cell


class TestLocal:
    def test_equal_coordinates_combine(self, tmp_path):
        paths = write_collection(tmp_path, [LAT, LAT.copy(), LAT.copy()])
        assert_combines_like_xarray(virtual(str(tmp_path)), paths)

    @pytest.mark.parametrize(
        ("lats", "lons", "name", "first_difference"),
        [
            ([LAT, SHIFTED], [LON, LON], "lat", "{first}[0] = -60.0, {other}[0] = -40.0"),
            ([LAT, LAT[::-1]], [LON, LON], "lat", "{first}[0] = -60.0, {other}[0] = 60.0"),
            (
                [LAT, np.array([-60.0, -20.0, 20.5, 60.0])],
                [LON, LON],
                "lat",
                "{first}[2] = 20.0, {other}[2] = 20.5",
            ),
            (
                [LAT, LAT],
                [LON, np.array([-180.0, -90.0, 0.0, 90.0, 179.0])],
                "lon",
                "{first}[0] = 0.0, {other}[0] = -180.0",
            ),
            (
                [LAT.astype("f4") + np.float32(0.1), LAT + 0.1],
                [LON, LON],
                "lat",
                "{first}[0] = -59.900001525878906, {other}[0] = -59.9 (float32 vs float64)",
            ),
        ],
        ids=["shifted", "reversed", "one-value", "lon-0-360-vs-180", "float32-0.1"],
    )
    def test_different_coordinates_are_refused(self, tmp_path, lats, lons, name, first_difference):
        paths = write_collection(tmp_path, [*lats, lats[0]], lons=[*lons, lons[0]])
        assert_refused(paths, name, first_difference, other=1)

    def test_float32_and_float64_of_equal_values_combine(self, tmp_path):
        """Allowed where every value is equal exactly after the cast (xarray aligns them
        too): the first file's dtype is served, as ``open_mfdataset`` does."""
        halves = np.array([-1.5, -0.5, 0.5, 1.5])
        paths = write_collection(tmp_path, [halves.astype("f4"), halves, halves.astype("f4")])
        fs = virtual(str(tmp_path))
        assert_combines_like_xarray(fs, paths)
        assert fs.cat_file("lat/.zarray").decode().count('"<f4"') == 1

    def test_coordinate_in_a_group(self, tmp_path):
        same = write_collection(tmp_path / "same", [LAT] * 3, group_lats=[SHIFTED] * 3)
        assert_combines_like_xarray(virtual(str(tmp_path / "same")), same, group="g")
        paths = write_collection(tmp_path / "differ", [LAT] * 3, group_lats=[SHIFTED, SHIFTED, LAT])
        assert_refused(paths, "g/lat", "{first}[0] = -40.0, {other}[0] = -60.0", other=2)

    def test_netcdf3_and_netcdf4_mixed(self, tmp_path):
        formats = ["NETCDF4", "NETCDF3_64BIT_OFFSET", "NETCDF3_CLASSIC"]
        same = write_collection(tmp_path / "same", [LAT] * 3, formats=formats)
        assert_combines_like_xarray(virtual(str(tmp_path / "same")), same)
        paths = write_collection(tmp_path / "differ", [LAT, LAT, SHIFTED], formats=formats)
        assert_refused(paths, "lat", "{first}[0] = -60.0, {other}[0] = -40.0", other=2)

    def test_refused_again_from_the_scan_cache(self, tmp_path, scan_calls):
        """The scan cache keeps every dimension coordinate's values: a reopen that scans
        nothing still compares them."""
        paths = write_collection(tmp_path, [LAT, SHIFTED])
        for scanned in (len(paths), 0):
            scan_calls.clear()
            state_module.clear_states()
            with pytest.raises(IncompatibleSourcesError, match="coordinate 'lat' differs"):
                virtual(str(tmp_path), cache=True).cat_file(".zmetadata")
            assert len(scan_calls) == scanned

    def test_string_coordinates(self, tmp_path):
        """Variable-length strings label too (and the scan cache keeps them)."""

        def write(path: Path, times: list[float], stations: list[str]) -> Path:
            with netCDF4.Dataset(path, "w") as nc:
                nc.createDimension("time", len(times))
                nc.createDimension("station", len(stations))
                time = nc.createVariable("time", "f8", ("time",))
                time.units = "days since 2001-01-01"
                time[:] = times
                station = nc.createVariable("station", str, ("station",))
                station[:] = np.array(stations, dtype=object)
                v = nc.createVariable("v", "f4", ("time", "station"))
                v[:] = np.arange(len(times) * len(stations)).reshape(len(times), -1) + times[0]
            return path

        names = ["alpha", "bravo", "charlie"]
        same = [write(tmp_path / f"s{i}.nc", TIMES[i], names) for i in range(2)]
        assert_combines_like_xarray(virtual([str(p) for p in same], cache=True), same)
        other = write(tmp_path / "z.nc", TIMES[2], ["alpha", "bravo", "delta"])
        state_module.clear_states()
        with pytest.raises(IncompatibleSourcesError) as err:
            virtual([str(p) for p in [*same, other]], cache=True).cat_file(".zmetadata")
        assert str(err.value) == (
            f"coordinate 'station' differs between {same[0]} and {other}: "
            f"{same[0]}[2] = charlie, {other}[2] = delta"
        )


def _per_file(server: HTTPServer, paths: Sequence[Path]) -> list[int]:
    return [len([h for h in server.hits if h.path == p.name]) for p in paths]


class TestHTTP:
    def test_equal_coordinates_combine_without_extra_requests(self, tmp_path):
        """As many requests as before lat/lon were read: per NetCDF4 file a HEAD, its magic
        bytes and one block holding its metadata and every coordinate's values; per
        NetCDF3 file a HEAD, its magic bytes, the scan's HEAD and header, and one request
        for all its coordinates (merged: they lie side by side after the header)."""
        formats = ["NETCDF4", "NETCDF4", "NETCDF3_64BIT_OFFSET"]
        paths = write_collection(tmp_path / "www", [LAT] * 3, formats=formats)
        with serve_directory(tmp_path / "www") as server:
            fs = virtual(f"{server.url}/")
            fs.cat_file(".zmetadata")
            assert _per_file(server, paths) == [3, 3, 5], server.hits
            assert_combines_like_xarray(fs, paths)

    def test_different_coordinates_are_refused(self, tmp_path):
        formats = ["NETCDF4", "NETCDF3_64BIT_OFFSET", "NETCDF4"]
        paths = write_collection(tmp_path / "www", [LAT, SHIFTED, LAT[::-1]], formats=formats)
        with serve_directory(tmp_path / "www") as server:
            urls = [f"{server.url}/{p.name}" for p in paths]
            assert_refused(paths, "lat", "{first}[0] = -60.0, {other}[0] = -40.0", 1, urls)
