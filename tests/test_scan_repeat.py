"""A file whose structure repeats one scanned before is scanned from its template
(scan/repeat.py): the result must be exactly the full scan's, and any file that differs in
structure must be scanned in full.

Each case writes a base file and a variant differing in one way; the template is learnt
from the base's full scan, then the variant's fast scan (if the template is taken) is
compared with its own full scan, pickled byte for byte. Variants that only move bytes
(other values, other compressed sizes) must take the fast path; variants whose structure
differs must not, or must give the full scan's result all the same.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import fsspec
import h5py
import netCDF4
import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem
from oracle import assert_store_matches, open_truth

from fsspec_virtual.manifest import Manifest
from fsspec_virtual.scan import repeat
from fsspec_virtual.scan.hdf5 import LinkResolver, scan_hdf5


@pytest.fixture(autouse=True)
def _no_templates() -> Any:
    repeat.forget()
    yield
    repeat.forget()


def _full(path: Path) -> tuple[Manifest, list[str]]:
    with open(path, "rb") as f:
        return scan_hdf5(f, str(path), LinkResolver(LocalFileSystem()))


def _learn(path: Path) -> bool:
    """Forget every template, then learn ``path``'s (as a scan does: look, scan in full,
    learn); whether it became one."""
    repeat.forget()
    with open(path, "rb") as f:
        fast, look = repeat.rescan(f, str(path))
        assert fast is None  # no template yet
        manifest, messages = scan_hdf5(f, str(path), LinkResolver(LocalFileSystem()))
    return repeat.learn(look, str(path), manifest, messages)


def _fast(path: Path) -> Manifest | None:
    """The fast scan of ``path``: read through its file object, and from its bytes in
    memory (a file image), which must see the same structure."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        through_file, look = repeat.rescan(f, str(path))
    with open(path, "rb") as f:
        from_image, look_image = repeat.rescan(f, str(path), size)
    if look.structure is None or look_image.structure is None:
        assert look.structure is look_image.structure is None
    else:
        assert look.structure.signature == look_image.structure.signature
    assert (through_file is None) == (from_image is None)
    if through_file is not None and from_image is not None:
        assert _pickled(through_file) == _pickled(from_image)
    return through_file


def _pickled(manifest: Manifest) -> bytes:
    return pickle.dumps(manifest, protocol=5)


def _check(base: Path, variant: Path, fast_expected: bool) -> None:
    assert _learn(base)
    fast = _fast(variant)
    full, messages = _full(variant)
    if fast_expected:
        assert fast is not None, "the variant repeats the base's structure: fast path expected"
        assert not messages
    else:
        assert fast is None, "the variant's structure differs: a full scan expected"
    if fast is not None:
        assert _pickled(fast) == _pickled(full)


# -- files -----------------------------------------------------------------------------------

LAT, LON = 6, 8


def _write(path: Path, day: int = 0, **change: Any) -> Path:
    """A daily NetCDF4 file as the archive benchmark writes it; ``change`` alters one
    thing (see the cases)."""
    rng = np.random.default_rng(day)
    with netCDF4.Dataset(path, "w", format=change.get("format", "NETCDF4")) as nc:
        nc.Conventions = "CF-1.8"
        nc.title = change.get("title", "repeat test")
        if "extra_global" in change:
            nc.setncattr("history", change["extra_global"])
        if "string_global" in change:
            nc.setncattr_string("note", change["string_global"])
        nc.createDimension("time", None)
        nc.createDimension("lat", LAT)
        nc.createDimension("lon", LON)
        steps = change.get("steps", 1)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = change.get("time_units", "days since 2000-01-01")
        t.calendar = "standard"
        t[:] = day + np.arange(steps) / steps
        y = nc.createVariable("lat", "f8", ("lat",))
        y.units = "degrees_north"
        y[:] = np.linspace(-50, 50, LAT)
        x = nc.createVariable("lon", "f8", ("lon",), contiguous=True)
        x.units = "degrees_east"
        x[:] = np.linspace(0, 350, LON)
        dims = change.get("dims", ("time", "lat", "lon"))
        for name in change.get("variables", ("t2m", "u10")):
            kwargs: dict[str, Any] = dict(
                zlib=change.get("zlib", True),
                complevel=change.get("complevel", 4),
                shuffle=change.get("shuffle", True),
                chunksizes=change.get("chunks", (1, LAT, LON)),
                fill_value=np.dtype(change.get("dtype", "f4")).type(change.get("fill", 1e20)),
            )
            v = nc.createVariable(name, change.get("dtype", "f4"), dims, **kwargs)
            v.units = change.get("units", "K")
            v.long_name = f"{name} field"
            for i in range(change.get("extra_attrs", 0)):
                v.setncattr(f"note_{i}", change.get("extra_value", "same"))
            if "string_attr" in change:
                v.setncattr_string("comment", change["string_attr"])
            if not change.get("unwritten", False):
                shape = (steps, LAT, LON) if dims[0] == "time" else (LAT, LON, steps)
                v[:] = (rng.standard_normal(shape) * 10 + 280).astype(change.get("dtype", "f4"))
        if change.get("extra_variable"):
            z = nc.createVariable("z", "i4", ("lat",))
            z[:] = np.arange(LAT)
        if change.get("non_coord"):  # stored as _nc4_non_coord_c, shown as c
            nc.createDimension("c", 3)
            c = nc.createVariable("c", "f4", ("time", "c"), chunksizes=(1, 3))
            c[:] = rng.standard_normal((steps, 3)).astype("f4")
        if change.get("group"):
            g = nc.createGroup("extra")
            g.createVariable("w", "f4", ("lat",))[:] = np.ones(LAT)
    return path


def _write_h5(path: Path, day: int = 0, **change: Any) -> Path:
    """A plain HDF5 file (h5py), for what netCDF4 cannot write."""
    rng = np.random.default_rng(day)
    with h5py.File(path, "w", userblock_size=change.get("userblock", 0)) as f:
        f.attrs["title"] = "plain"
        f.create_dataset("a", data=rng.standard_normal((4, 6)), chunks=(2, 3), compression="gzip")
        f.create_dataset("b", data=np.arange(5, dtype="i4") + day)
        if change.get("external"):
            f["linked"] = h5py.ExternalLink(change["external"], "/b")
        if change.get("soft"):
            f["soft"] = h5py.SoftLink("/b")
        if change.get("hard"):
            f["again"] = f["b"]
        if change.get("fletcher32"):
            f.create_dataset("c", data=np.arange(8.0), chunks=(4,), fletcher32=True)
    return path


# -- the cases -------------------------------------------------------------------------------


def test_same_structure_other_values_takes_the_fast_path(tmp_path: Path) -> None:
    base = _write(tmp_path / "a.nc", 0)
    for day in range(1, 4):  # other values: other compressed sizes, other offsets
        _check(base, _write(tmp_path / f"b{day}.nc", day), fast_expected=True)


def test_many_chunks_and_several_records(tmp_path: Path) -> None:
    change = dict(chunks=(1, 2, 3), steps=3)
    base = _write(tmp_path / "a.nc", 0, **change)
    _check(base, _write(tmp_path / "b.nc", 1, **change), fast_expected=True)


def test_a_variable_netcdf_stores_under_another_name_repeats(tmp_path: Path) -> None:
    base = _write(tmp_path / "a.nc", 0, non_coord=True, steps=2)
    _check(base, _write(tmp_path / "b.nc", 1, non_coord=True, steps=2), fast_expected=True)
    assert "c" in _full(base)[0].arrays


def test_dense_attributes_and_variable_length_strings_repeat(tmp_path: Path) -> None:
    """More than 8 attributes (HDF5 keeps them in a fractal heap) and NC_STRING
    attributes (their values in the global heap) are compared by value."""
    change = dict(extra_attrs=10, string_attr="kept", string_global="kept too")
    base = _write(tmp_path / "a.nc", 0, **change)
    _check(base, _write(tmp_path / "b.nc", 1, **change), fast_expected=True)


def test_plain_hdf5_repeats(tmp_path: Path) -> None:
    _check(_write_h5(tmp_path / "a.h5", 0), _write_h5(tmp_path / "b.h5", 1), fast_expected=True)


#: One change each: the variant's structure differs from the base's.
DIFFERENT: dict[str, dict[str, Any]] = {
    "attribute value": dict(units="degC"),
    "time units": dict(time_units="hours since 2000-01-01"),
    "global attribute value": dict(title="other"),
    "global attribute added": dict(extra_global="made today"),
    "attribute added": dict(extra_attrs=1),
    "dense attribute value": dict(extra_attrs=10, extra_value="other"),
    "string attribute value": dict(string_attr="other"),
    "string global attribute": dict(string_global="other"),
    "variable added": dict(extra_variable=True),
    "variable removed": dict(variables=("t2m",)),
    "dtype": dict(dtype="f8"),
    "fill value": dict(fill=-999.0),
    "compression level": dict(complevel=1),
    "no compression": dict(zlib=False, shuffle=False),
    "no shuffle": dict(shuffle=False),
    "chunking": dict(chunks=(1, 3, 4)),
    "group added": dict(group=True),
    "more records": dict(steps=2),
    "never written": dict(unwritten=True),
    "dimensions swapped": dict(dims=("time", "lon", "lat")),
}


@pytest.mark.parametrize("case", sorted(DIFFERENT))
def test_a_different_structure_is_scanned_in_full(tmp_path: Path, case: str) -> None:
    change = DIFFERENT[case]
    if case == "dimensions swapped":  # lat and lon of one length, so that only names differ
        global LAT, LON
        lat, lon = LAT, LON
        LAT = LON = 6
        try:
            base = _write(tmp_path / "a.nc", 0)
            variant = _write(tmp_path / "b.nc", 1, **change)
        finally:
            LAT, LON = lat, lon
    else:
        base = _write(tmp_path / "a.nc", 0)
        variant = _write(tmp_path / "b.nc", 1, **change)
    _check(base, variant, fast_expected=False)
    # and the other way round: the variant as the template
    _check(variant, base, fast_expected=False)


def _write_scales(path: Path, day: int, swapped: bool) -> Path:
    """Plain HDF5 with two dimension scales of one length: only the DIMENSION_LIST
    (references in the global heap) tells which axis is which."""
    with h5py.File(path, "w", libver="latest") as f:
        x = f.create_dataset("x", data=np.arange(4.0))
        x.make_scale("x")
        y = f.create_dataset("y", data=np.arange(4.0) * 2)
        y.make_scale("y")
        v = f.create_dataset("v", data=np.full((4, 4), float(day)), chunks=(2, 2))
        v.dims[0].attach_scale(x if swapped else y)
        v.dims[1].attach_scale(y if swapped else x)
    return path


def test_dimension_scales_are_compared(tmp_path: Path) -> None:
    base = _write_scales(tmp_path / "a.h5", 0, swapped=False)
    _check(base, _write_scales(tmp_path / "b.h5", 1, swapped=False), fast_expected=True)
    _check(base, _write_scales(tmp_path / "c.h5", 1, swapped=True), fast_expected=False)
    assert _full(tmp_path / "c.h5")[0].arrays["v"].meta.dimensions == ("x", "y")


def test_a_dense_attribute_changed_among_many(tmp_path: Path) -> None:
    base = _write(tmp_path / "a.nc", 0, extra_attrs=12)
    variant = _write(tmp_path / "b.nc", 1, extra_attrs=12, extra_value="other")
    _check(base, variant, fast_expected=False)


def test_netcdf4_classic_is_its_own_structure(tmp_path: Path) -> None:
    base = _write(tmp_path / "a.nc", 0)
    classic = _write(tmp_path / "b.nc", 1, format="NETCDF4_CLASSIC")
    _check(base, classic, fast_expected=False)
    _check(classic, _write(tmp_path / "c.nc", 2, format="NETCDF4_CLASSIC"), fast_expected=True)


@pytest.mark.parametrize(
    "change",
    [dict(userblock=512), dict(soft=True), dict(hard=True), dict(fletcher32=True)],
    ids=["user block", "soft link", "second hard link", "fletcher32"],
)
def test_files_never_templates_nor_matched(tmp_path: Path, change: dict[str, Any]) -> None:
    """A user block, a soft link, an object linked twice, Fletcher-32 checksums: neither
    learnt from nor matched (the full scan handles each its own way)."""
    odd = _write_h5(tmp_path / "odd.h5", 0, **change)
    assert not _learn(odd)
    assert _fast(_write_h5(tmp_path / "odd2.h5", 1, **change)) is None
    assert _learn(_write_h5(tmp_path / "plain.h5", 0))
    assert _fast(odd) is None


def test_an_external_link_is_never_repeated(tmp_path: Path) -> None:
    target = _write_h5(tmp_path / "target.h5", 5)
    linking = _write_h5(tmp_path / "a.h5", 0, external=str(target))
    assert not _learn(linking)  # its scan follows the link: not a plain scan
    assert _learn(_write_h5(tmp_path / "plain.h5", 0))
    assert _fast(linking) is None


def test_a_template_must_rebuild_its_own_scan(tmp_path: Path) -> None:
    """learn() refuses a scan its structure does not rebuild (here: another file's)."""
    a = _write(tmp_path / "a.nc", 0)
    b = _write(tmp_path / "b.nc", 1)
    with open(a, "rb") as f:
        _, look = repeat.rescan(f, str(a))
    other, messages = _full(b)
    assert not repeat.learn(look, str(a), other, messages)


def test_a_corrupt_repeat_is_left_to_the_full_scan(tmp_path: Path) -> None:
    """A file whose chunk index is damaged is never rebuilt from the template."""
    base = _write(tmp_path / "a.nc", 0)
    variant = _write(tmp_path / "b.nc", 1)
    assert _learn(base)
    with h5py.File(variant) as f:
        where = f["u10"].id.get_chunk_info(0).byte_offset
    data = bytearray(variant.read_bytes())
    # the B-tree node of u10's chunks sits before its chunk: damage its signature
    node = data.rfind(b"TREE", 0, where)
    data[node : node + 4] = b"XXXX"
    variant.write_bytes(bytes(data))
    assert _fast(variant) is None


# -- through the store ---------------------------------------------------------------------


def _collection(directory: Path) -> list[Path]:
    directory.mkdir()
    files = [_write(directory / f"d{day:02d}.nc", day) for day in range(6)]
    files.append(_write(directory / "d06.nc", 6, extra_global="a history of its own"))
    files.append(_write(directory / "d07.nc", 7, extra_attrs=1))  # the first file's attributes win
    files.append(_write(directory / "d08.nc", 8, complevel=1))
    files += [_write(directory / f"d{day:02d}.nc", day) for day in range(9, 12)]
    files.append(_write(directory / "d12.nc", 12, extra_attrs=10))
    files += [_write(directory / f"d{day:02d}.nc", day, extra_attrs=10) for day in (13, 14)]
    return files


@pytest.fixture
def fast_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files scanned through a template, in this process."""
    taken: list[str] = []
    rescan = repeat.rescan

    def counting(f: Any, url: str, size: int | None = None) -> Any:
        out = rescan(f, url, size)
        if out[0] is not None:
            taken.append(url)
        return out

    monkeypatch.setattr(repeat, "rescan", counting)
    return taken


def test_a_collection_reads_as_open_mfdataset(tmp_path: Path, fast_scans: list[str]) -> None:
    files = _collection(tmp_path / "files")
    fs = fsspec.filesystem(
        "virtualzarr", path=str(tmp_path / "files"), concat_dim="time", cache=False, max_workers=1
    )
    assert_store_matches(fs, open_truth(files))
    names = {Path(p).name for p in fast_scans}
    # all but the first scanned of each structure took the fast path; unique ones never
    common = {f"d{day:02d}.nc" for day in (0, 1, 2, 3, 4, 5, 9, 10, 11)}
    assert len(names & common) == len(common) - 1
    assert len(names & {"d12.nc", "d13.nc", "d14.nc"}) == 2
    assert not names & {"d06.nc", "d07.nc", "d08.nc"}


def test_the_same_collection_with_templates_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is the same whether the files were scanned from templates or not."""
    files = _collection(tmp_path / "files")

    def store(fast: bool) -> dict[str, bytes]:
        repeat.forget()
        if not fast:
            monkeypatch.setattr(repeat, "rescan", lambda *args: (None, repeat.Look(None)))
        fs = fsspec.filesystem(
            "virtualzarr",
            path=[str(p) for p in files],
            concat_dim="time",
            cache=False,
            max_workers=1,
        )
        return {key: fs.cat_file(key) for key in sorted(fs.find(""))}

    with_templates = store(True)
    without = store(False)
    assert with_templates == without


def test_netcdf3_files_mixed_in(tmp_path: Path, fast_scans: list[str]) -> None:
    directory = tmp_path / "files"
    directory.mkdir()
    files = [_write(directory / f"d{day}.nc", day, zlib=False, shuffle=False) for day in range(3)]
    files.append(_write(directory / "d3.nc", 3, format="NETCDF3_64BIT_OFFSET", zlib=False))
    files += [_write(directory / f"d{day}.nc", day, zlib=False, shuffle=False) for day in (4, 5)]
    fs = fsspec.filesystem(
        "virtualzarr", path=str(directory), concat_dim="time", cache=False, max_workers=1
    )
    assert_store_matches(fs, open_truth(files))
    assert {Path(p).name for p in fast_scans} == {"d1.nc", "d2.nc", "d4.nc", "d5.nc"}


# -- how scans travel back from worker processes -------------------------------------------


def test_packed_windows_are_the_scans(tmp_path: Path) -> None:
    """A window's scans pickled with chunk grids as bytes (scheduling.scan_window_packed)
    unpickle to the same results, a file that fails to scan included."""
    from fsspec_virtual.access import adapter_for
    from fsspec_virtual.scheduling import (
        PackedScans,
        scan_window_in_worker,
        scan_window_packed,
        unpacked,
    )
    from fsspec_virtual.source import SourceFile

    files = [_write(tmp_path / f"d{day}.nc", day, chunks=(1, 2, 3)) for day in range(3)]
    files.append(_write_h5(tmp_path / "plain.h5", 0))
    bad = tmp_path / "bad.nc"
    bad.write_bytes(files[0].read_bytes()[:600])
    adapter = adapter_for(LocalFileSystem())
    window = [SourceFile(str(p), adapter.current_version(str(p)), "hdf5") for p in [*files, bad]]
    direct = scan_window_in_worker("file", {}, window, "time", {})
    packed = scan_window_packed("file", {}, window, "time", {})
    assert isinstance(packed, PackedScans)
    back = unpacked(pickle.loads(pickle.dumps(packed)))
    assert len(back) == len(direct) == 5
    for mine, theirs in zip(back, direct):
        assert type(mine) is type(theirs)
        if isinstance(theirs, Exception):
            assert str(mine) == str(theirs)
        else:
            assert _pickled(mine) == _pickled(theirs)  # type: ignore[arg-type]
            for path, array in theirs.scanned.manifest.arrays.items():
                grid = mine.scanned.manifest.arrays[path].grid  # type: ignore[union-attr]
                for a, b in zip(
                    (grid.file_id, grid.offset, grid.length),
                    (array.grid.file_id, array.grid.offset, array.grid.length),
                ):
                    assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all()
                    assert not a.flags.writeable


def test_local_windows_keep_every_worker_busy() -> None:
    from fsspec_virtual.scheduling import _local_window

    assert _local_window(10_000, 2) == 32
    assert _local_window(1000, 2) == 32
    assert _local_window(300, 2) == 18
    assert _local_window(80, 2) == 5
    assert _local_window(10, 8) == 1


def test_the_parse_memo_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Header parses are kept by their bytes up to a bound; past it they are parsed anew,
    with the same result."""
    monkeypatch.setattr(repeat, "_PARSED_BYTES", 2000)
    base = _write(tmp_path / "a.nc", 0, extra_attrs=6)
    for day in range(1, 4):
        _check(base, _write(tmp_path / f"b{day}.nc", day, extra_attrs=6), fast_expected=True)
        assert repeat._parsed_bytes[0] <= 2000 + max(
            len(k[-1]) if isinstance(k[-1], bytes) else sum(map(len, k[-1])) for k in repeat._parsed
        )
