"""A newer snapshot keeps what an older one's keys mean only if it adds to it: files
appended at the end, new variables. Re-encoding, removal, rewrites and insertions before
the end are each named (:func:`fsspec_virtual.continuity.meaning_changes`), for clients in
other processes (the HTTP server) that keep reading keys by metadata they hold."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import fsspec
import netCDF4
import numpy as np
import pytest
import xarray as xr
from conftest import write_steps

from fsspec_virtual.continuity import meaning_changes


def _store(directory: Path, **kwargs: Any) -> Any:
    return fsspec.filesystem(
        "virtualzarr",
        path=str(directory / "*.nc"),
        concat_dim="time",
        cache=False,
        skip_instance_cache=True,
        **kwargs,
    )


def _packed(path: Path, start: int, scale: float, *, steps: int = 2, fill: int = -1) -> Path:
    """int64 ``pk`` with a scale_factor, uncompressed: served as stored while the files
    agree, unpacked to float64 (the same chunk size) once one file's scale differs."""
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", 3)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:] = np.arange(start, start + steps)
        v = nc.createVariable("pk", "i8", ("time", "x"), fill_value=np.int64(fill))
        v.scale_factor = scale
        v.set_auto_maskandscale(False)
        v[:] = np.arange(steps * 3, dtype="i8").reshape(steps, 3) + 10 * start
    return path


def _refreshed(fs: Any) -> tuple[Any, Any]:
    before = fs.collection()
    fs.refresh()
    return before, fs.collection()


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_files_appended_at_the_end_only_add(tmp_path: Path, zarr_format: int) -> None:
    for i in range(3):
        write_steps(tmp_path / f"s{i}.nc", 3 * i, float(i))
    fs = _store(tmp_path, zarr_format=zarr_format)
    assert len(fs.collection().files) == 3
    write_steps(tmp_path / "s3.nc", 9, 3.0)
    before, after = _refreshed(fs)
    assert len(after.files) == 4
    assert meaning_changes(before, after) == []
    # and the older snapshot's values are the newer one's where it has values
    old = xr.open_zarr(_store(tmp_path, snapshot=before.id).get_mapper("")).load()
    new = xr.open_zarr(fs.get_mapper("")).load()
    xr.testing.assert_identical(old, new.isel(time=slice(0, old.sizes["time"])))


def test_packed_files_appended_with_the_same_packing_only_add(tmp_path: Path) -> None:
    for i in range(2):
        _packed(tmp_path / f"p{i}.nc", 2 * i, 0.01)
    fs = _store(tmp_path)
    fs.collection()
    _packed(tmp_path / "p2.nc", 4, 0.01)
    before, after = _refreshed(fs)
    assert meaning_changes(before, after) == []


@pytest.mark.parametrize(
    "change",
    ["other scale_factor", "other fill value"],
)
def test_a_file_appended_that_reencodes_a_variable_is_named(tmp_path: Path, change: str) -> None:
    for i in range(2):
        _packed(tmp_path / f"p{i}.nc", 2 * i, 0.01)
    fs = _store(tmp_path)
    fs.collection()
    if change == "other scale_factor":
        _packed(tmp_path / "p2.nc", 4, 0.02)
    else:
        _packed(tmp_path / "p2.nc", 4, 0.01, fill=-2)
    before, after = _refreshed(fs)
    old_meta = before.manifest.arrays["pk"].meta
    new_meta = after.manifest.arrays["pk"].meta
    served = (old_meta.dtype, old_meta.fill_value), (new_meta.dtype, new_meta.fill_value)
    assert served[0] != served[1], "the case must re-encode pk, or it tests nothing"
    reasons = meaning_changes(before, after)
    assert any("'pk'" in r and "encoding" in r for r in reasons), reasons


def test_a_removed_file_is_named(tmp_path: Path) -> None:
    for i in range(3):
        write_steps(tmp_path / f"s{i}.nc", 3 * i, float(i))
    fs = _store(tmp_path)
    fs.collection()
    gone = tmp_path / "s2.nc"
    shutil.move(gone, tmp_path / "away")
    before, after = _refreshed(fs)
    reasons = meaning_changes(before, after)
    assert any(str(gone) in r and "gone" in r for r in reasons), reasons
    assert any("'v'" in r for r in reasons), reasons  # its shape shrank


@pytest.mark.parametrize("moved", [False, True], ids=["same-times", "other-times"])
def test_a_file_rewritten_in_place_keeps_meaning_unless_its_times_move(
    tmp_path: Path, moved: bool
) -> None:
    """A rewrite at the same positions with the same encoding is the live update a client
    should see (its chunks read the new values); one whose times moved relabels them."""
    for i in range(2):
        write_steps(tmp_path / f"s{i}.nc", 3 * i, float(i))
    fs = _store(tmp_path)
    fs.collection()
    target = tmp_path / "s1.nc"
    stat = target.stat()
    write_steps(target, 4 if moved else 3, 7.0)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    before, after = _refreshed(fs)
    assert before.versions[str(target)] != after.versions[str(target)]
    reasons = meaning_changes(before, after)
    if moved:
        assert any("'time'" in r and "values changed" in r for r in reasons), reasons
    else:
        assert reasons == []


def test_a_file_inserted_before_the_end_is_named(tmp_path: Path) -> None:
    write_steps(tmp_path / "s0.nc", 0, 0.0)
    write_steps(tmp_path / "s2.nc", 6, 2.0)
    fs = _store(tmp_path)
    fs.collection()
    write_steps(tmp_path / "s1.nc", 3, 1.0)
    before, after = _refreshed(fs)
    reasons = meaning_changes(before, after)
    assert any("'v'" in r for r in reasons), reasons
    assert any("'time'" in r for r in reasons), reasons


def test_a_file_inserted_among_computed_chunks_is_named(tmp_path: Path) -> None:
    """Chunks of 2 steps over files of 3: every joined chunk is computed, so only the
    plan tells an insertion from an append."""

    def write(i: int) -> None:
        xr.Dataset(
            {"v": (("time", "x"), np.full((3, 4), float(i), dtype="f4"))},
            coords={"time": ("time", np.arange(3 * i, 3 * i + 3, dtype="f8"))},
        ).to_netcdf(tmp_path / f"c{i}.nc", encoding={"v": {"chunksizes": (2, 4)}})

    write(0)
    write(2)
    fs = _store(tmp_path)
    assert fs.collection().manifest.arrays["v"].plan is not None, "computed chunks expected"
    write(1)
    before, after = _refreshed(fs)
    reasons = meaning_changes(before, after)
    assert any("'v'" in r for r in reasons), reasons
    write(3)
    before, after = _refreshed(fs)
    assert meaning_changes(before, after) == []


def test_the_server_keeps_its_snapshot_when_a_refresh_would_reencode(tmp_path: Path) -> None:
    """Over HTTP, a client that opened the dataset keeps reading the values it opened
    while a refresh that re-encodes ``pk`` is found, and a refresh that only appends is
    served at the root as before."""
    import time

    from serve_helpers import get, serving

    for i in range(2):
        _packed(tmp_path / f"p{i}.nc", 2 * i, 0.01)
    fs = _store(tmp_path)
    with serving(fs, listing_ttl=0.05) as url:
        first = get(url + ".zmetadata").headers["X-Snapshot"]
        opened = xr.open_zarr(url)
        truth = opened.load()
        with xr.open_mfdataset(sorted(tmp_path.glob("p*.nc")), engine="netcdf4") as direct:
            xr.testing.assert_identical(truth.pk, direct.pk.load())
        _packed(tmp_path / "p2.nc", 4, 0.02)  # unpacks pk to float64 in a new snapshot
        time.sleep(0.2)
        assert get(url + ".zmetadata").headers["X-Snapshot"] == first
        again = xr.open_zarr(url).load()
        xr.testing.assert_identical(again, truth)
        np.testing.assert_array_equal(opened.pk.values, truth.pk.values)
        # the new snapshot is one a client may still ask for by name
        refreshed = _store(tmp_path)
        newer = refreshed.collection()
        assert newer.id != first
        at = xr.open_zarr(f"{url}snapshot/{newer.id}/").load()
        assert at.sizes["time"] == 6
    with serving(_store(tmp_path), listing_ttl=0.05) as url:
        first = get(url + ".zmetadata").headers["X-Snapshot"]
        _packed(tmp_path / "p3.nc", 6, 0.02)  # same packing as the files served now
        time.sleep(0.2)
        assert get(url + ".zmetadata").headers["X-Snapshot"] != first
        assert xr.open_zarr(url).sizes["time"] == 8


def test_a_variable_held_whole_from_the_first_file_is_checked_by_file(tmp_path: Path) -> None:
    """A static variable taken from the first file (one chunk) that now comes from a file
    inserted before it is named, though its byte range is the same: file ids index each
    snapshot's own URL table."""

    def write(name: str, value: float) -> None:
        with netCDF4.Dataset(tmp_path / name, "w") as nc:
            nc.createDimension("time", None)
            nc.createDimension("x", 3)
            nc.createVariable("v", "f4", ("time", "x"), chunksizes=(1, 3))[:] = np.full(
                (2, 3), value, dtype="f4"
            )
            nc.createVariable("land", "f4", ("x",), contiguous=True)[:] = np.full(3, value)

    write("f1.nc", 1.0)
    write("f2.nc", 2.0)
    fs = _store(tmp_path, combine="nested")
    assert fs.collection().manifest.arrays["land"].meta.chunks == (3,)
    write("f0.nc", 0.0)
    before, after = _refreshed(fs)
    reasons = meaning_changes(before, after)
    assert any("'land'" in r for r in reasons), reasons


def _rows(path: Path, n: int, value: float) -> None:
    """``v(time, x)`` of ``n`` rows in chunks of 2 rows, and no time coordinate."""
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", 3)
        v = nc.createVariable("v", "f4", ("time", "x"), chunksizes=(2, 3))
        v[:] = value + np.arange(n * 3, dtype="f4").reshape(n, 3)


@pytest.mark.parametrize("combine", ["by_coords", "nested"])
def test_a_file_inserted_before_the_last_partial_chunk_is_named(
    tmp_path: Path, combine: str
) -> None:
    """Without a time coordinate, a file inserted before the last one moves the last
    file's rows out of the old last (partial) chunk, which no coordinate check sees."""
    _rows(tmp_path / "a.nc", 4, 0.0)
    _rows(tmp_path / "c.nc", 1, 300.0)
    fs = _store(tmp_path, combine=combine)
    assert fs.collection().manifest.arrays["v"].meta.shape == (5, 3)
    _rows(tmp_path / "b.nc", 2, 100.0)
    before, after = _refreshed(fs)
    reasons = meaning_changes(before, after)
    assert any("'v'" in r and "partial chunk" in r for r in reasons), reasons
    # while one appended after the last file leaves the partial chunk's start in place
    fs = _store(tmp_path, combine=combine)
    fs.collection()
    _rows(tmp_path / "d.nc", 2, 400.0)
    before, after = _refreshed(fs)
    assert meaning_changes(before, after) == []


def test_a_file_rewritten_with_other_coordinates_is_named(tmp_path: Path) -> None:
    """Rewrites in place keep the encoding but flip ``lat``: a client holds the old
    labels, so the rewrites change what its keys mean."""

    def write(path: Path, start: int, lat: list[float]) -> None:
        xr.Dataset(
            {"v": (("time", "lat"), np.arange(6, dtype="f4").reshape(2, 3) + start)},
            coords={"time": ("time", [float(start), start + 1.0]), "lat": ("lat", lat)},
        ).to_netcdf(path)

    for i in range(2):
        write(tmp_path / f"l{i}.nc", 2 * i, [10.0, 20.0, 30.0])
    fs = _store(tmp_path)
    fs.collection()
    for i in range(2):  # both rewritten: the files still agree with each other
        target = tmp_path / f"l{i}.nc"
        stat = target.stat()
        write(target, 2 * i, [30.0, 20.0, 10.0])
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    before, after = _refreshed(fs)
    reasons = meaning_changes(before, after)
    for i in range(2):
        target = tmp_path / f"l{i}.nc"
        assert any(str(target) in r and "'lat'" in r for r in reasons), reasons


def test_the_server_does_not_adopt_a_snapshot_it_could_not_serve(tmp_path: Path) -> None:
    """A new file bringing a variable HTTP clients cannot name (``x?y``) is not adopted:
    adopted, it would answer every request 503."""
    import time

    from serve_helpers import get, serving

    for i in range(2):
        write_steps(tmp_path / f"s{i}.nc", 3 * i, float(i))
    with serving(_store(tmp_path), listing_ttl=0.05) as url:
        first = get(url + ".zmetadata")
        assert first.status == 200
        write_steps(tmp_path / "new.nc", 6, 2.0)  # an append like any other ...
        with netCDF4.Dataset(tmp_path / "new.nc", "a") as nc:  # ... with one odd name
            nc.createVariable("x?y", "f4", ("time",))[:] = [1.0, 2.0, 3.0]
        shutil.move(tmp_path / "new.nc", tmp_path / "s2.nc")
        probe = _store(tmp_path)
        probe.refresh()
        assert "x?y" in probe.collection().manifest.arrays
        time.sleep(0.2)
        again = get(url + ".zmetadata")
        assert again.status == 200
        assert again.headers["X-Snapshot"] == first.headers["X-Snapshot"]
        assert get(url + "v/0.0").status == 200
