"""Kerchunk exports (``fs.to_kerchunk``, ``fsspec-virtual export``): read back through fsspec's
ReferenceFileSystem, JSON and Parquet, they equal the store (metadata, values, attributes)
and the truth (a direct read of the files), for every kind of chunk: passthrough, inline,
computed (inline, to a side store, or refused), missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import fsspec
import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import write_groups, write_packed, write_series, write_sparse
from oracle import (
    _assert_values_equal,
    assert_same_dataset,
    assert_zarr_matches_raw,
    open_truth,
)
from writers_computed import write_months

from fsspec_virtual import (
    ExportError,
    ExportExistsError,
    ExportIncompleteWarning,
    VirtualZarrFileSystem,
)
from fsspec_virtual.export import KerchunkExport
from fsspec_virtual.export.kerchunk import PROVENANCE_FILE, PROVENANCE_KEY

FORMATS = ("json", "parquet")
GZIP = {"compression": "zlib", "shuffle": True}


# -- helpers ------------------------------------------------------------------------------


def virtual(path: Any, concat_dim: str | None = "time", **kwargs: Any) -> VirtualZarrFileSystem:
    if isinstance(path, list):
        path = [str(p) for p in path]
    elif isinstance(path, Path):
        path = str(path)
    if concat_dim is not None:
        kwargs["concat_dim"] = concat_dim
    return VirtualZarrFileSystem(path, cache=False, max_workers=1, **kwargs)


def target(tmp_path: Path, fmt: str, name: str = "refs") -> str:
    return str(tmp_path / "exports" / (f"{name}.json" if fmt == "json" else f"{name}.parq"))


def export(fs: VirtualZarrFileSystem, url: str, **options: Any) -> tuple[KerchunkExport, Any]:
    """Export, and the reference filesystem reading it with the options it says."""
    report = fs.to_kerchunk(url, **options)
    reader = fsspec.filesystem("reference", fo=url, **report.reader_options)
    return report, reader


def check_truth(
    reader: Any,
    expected: xr.Dataset,
    expected_raw: xr.Dataset | None = None,
    *,
    group: str | None = None,
    raw_skip: tuple[str, ...] = (),
) -> None:
    """The export equals the truth through xarray (consolidated or not) and raw zarr."""
    if group is None:
        store: Any = reader.get_mapper("")
    else:
        store = zarr.storage.FsspecStore.from_mapper(reader.get_mapper(""), read_only=True)
    with xr.open_zarr(store, consolidated=True, group=group) as ds:
        assert_same_dataset(ds.load(), expected, "export (consolidated)")
    # the group's own mapper: ReferenceFileSystem lists nothing under "/g1", the spelling
    # zarr's FsspecStore uses for a group below the root ""
    with xr.open_zarr(reader.get_mapper(group or ""), consolidated=False, chunks=None) as ds:
        assert_same_dataset(ds.load(), expected, "export")
    if expected_raw is not None:
        root = zarr.open_group(reader.get_mapper(""), mode="r", zarr_format=2)
        node = root[group] if group else root
        assert isinstance(node, zarr.Group)
        assert_zarr_matches_raw(node, expected_raw, "export (raw zarr)", skip=raw_skip)


def check_equals_store(
    reader: Any, fs: VirtualZarrFileSystem, *, without: tuple = (), source_layout: tuple = ()
) -> None:
    """Every group and array of the store (but ``without``) is in the export with the same
    metadata (attributes, shape, chunks, dtype, codecs, fill value; chunks and codecs
    aside for the arrays of ``source_layout``) and values."""
    ours = zarr.open_group(fs.get_mapper(""), mode="r", zarr_format=2)
    theirs = zarr.open_group(reader.get_mapper(""), mode="r", zarr_format=2)

    def walk(a: zarr.Group, b: zarr.Group, where: str) -> None:
        names = sorted(n for n in b.array_keys() if f"{where}{n}" not in without)
        assert sorted(a.array_keys()) == names, f"{where}: arrays differ"
        assert sorted(a.group_keys()) == sorted(b.group_keys()), f"{where}: groups differ"
        assert a.attrs.asdict() == b.attrs.asdict(), f"{where}: attributes differ"
        for name in names:
            x, y = a[name], b[name]
            assert isinstance(x, zarr.Array) and isinstance(y, zarr.Array)
            layout = f"{where}{name}" in source_layout
            assert _spelled(x.metadata, layout) == _spelled(y.metadata, layout), (
                f"{where}{name}: metadata"
            )
            _assert_values_equal(np.asarray(x[...]), np.asarray(y[...]), f"{where}{name}")
        for name in b.group_keys():
            walk(a[name], b[name], f"{where}{name}/")  # type: ignore[arg-type]

    walk(theirs, ours, "")


def _spelled(metadata: Any, without_layout: bool = False) -> str:
    """Array metadata as text (a NaN fill value equals itself)."""
    spelled = metadata.to_dict()
    if without_layout:
        for name in ("chunks", "compressor", "filters"):
            spelled.pop(name)
    return json.dumps(spelled, sort_keys=True, default=repr)


def json_refs(url: str) -> dict[str, Any]:
    with open(url) as f:
        return json.load(f)


def quiet(fs: VirtualZarrFileSystem, url: str, **options: Any) -> tuple[KerchunkExport, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExportIncompleteWarning)
        return export(fs, url, **options)


# -- collections round-trip ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
class TestRoundTrip:
    def test_series_with_passthrough_inline_and_computed_chunks(self, tmp_path, fmt):
        # 3 steps per file on a chunk of 2: chunks straddle files, and are computed
        paths = write_series(tmp_path / "s", [[0, 1, 2], [3, 4, 5]])
        fs = virtual(tmp_path / "s")
        report, reader = export(fs, target(tmp_path, fmt))
        assert report.ranges and report.inline and report.computed_inline, report
        assert report.complete and report.format == fmt
        check_truth(reader, open_truth(paths), open_truth(paths, decode_cf=False))
        check_equals_store(reader, fs)

    def test_kerchunk_engine(self, tmp_path, fmt):
        paths = write_series(tmp_path / "s", [[0, 1, 2], [3, 4, 5]])
        url = target(tmp_path, fmt)
        virtual(tmp_path / "s").to_kerchunk(url)
        with xr.open_dataset(url, engine="kerchunk") as ds:
            assert_same_dataset(ds.load(), open_truth(paths), "engine=kerchunk")

    def test_groups(self, tmp_path, fmt):
        path = write_groups(tmp_path / "g.nc")
        fs = virtual(path, None)
        _, reader = export(fs, target(tmp_path, fmt))
        check_equals_store(reader, fs)
        for group in (None, "g1", "g1/g2"):
            expected = open_truth([path], None, group=group)
            raw = open_truth([path], None, group=group, decode_cf=False)
            check_truth(reader, expected, raw, group=group)

    def test_packed(self, tmp_path, fmt):
        # float64 packing attributes: passed through packed (float32 ones are unpacked)
        paths = write_packed(tmp_path / "p", 3, scale_dtype="f8", missing_value=True)
        fs = virtual(tmp_path / "p")
        _, reader = export(fs, target(tmp_path, fmt))
        check_truth(reader, open_truth(paths), open_truth(paths, decode_cf=False))
        check_equals_store(reader, fs)

    def test_packing_that_differs_is_computed_unpacked(self, tmp_path, fmt):
        def variables(i: int) -> dict[str, Any]:
            return {
                "t2m": {
                    "dtype": "i2",
                    "attrs": {"scale_factor": 0.01 * (i + 1), "add_offset": 273.15},
                    **GZIP,
                }
            }

        paths = write_months(tmp_path / "p", [6, 6], chunk_time=3, variables=variables)
        fs = virtual(tmp_path / "p")
        report, reader = export(fs, target(tmp_path, fmt))
        assert report.computed_inline, report
        check_truth(reader, open_truth(paths))
        check_equals_store(reader, fs)

    def test_strings(self, tmp_path, fmt):
        path = tmp_path / "s.nc"
        with netCDF4.Dataset(path, "w") as ds:
            ds.createDimension("time", 3)
            ds.createVariable("time", "f8", ("time",))[:] = [0, 1, 2]
            names = ds.createVariable("name", str, ("time",))
            for i, text in enumerate(["a", "bé", ""]):
                names[i] = text
        fs = virtual(path, None)
        _, reader = export(fs, target(tmp_path, fmt))
        check_truth(reader, open_truth([path], None))
        check_equals_store(reader, fs)

    def test_computed_strings(self, tmp_path, fmt):
        # strings in files of 4 steps on a chunk of 10: computed, encoded with vlen-utf8
        paths = write_months(
            tmp_path / "m", [4, 4], variables={"label": {"dtype": str, "dims": ("time",)}}
        )
        fs = virtual(tmp_path / "m")
        report, reader = export(fs, target(tmp_path, fmt))
        assert "label" in report.variables
        check_truth(reader, open_truth(paths))
        check_equals_store(reader, fs)

    @pytest.mark.parametrize("netcdf3", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET"])
    def test_netcdf3(self, tmp_path, fmt, netcdf3):
        paths = write_series(tmp_path / "n", [[0, 1], [2, 3, 4]], fmt=netcdf3, unlimited=True)
        fs = virtual(tmp_path / "n")
        _, reader = export(fs, target(tmp_path, fmt))
        check_truth(reader, open_truth(paths), open_truth(paths, decode_cf=False))
        check_equals_store(reader, fs)

    def test_cdf5(self, tmp_path, fmt):
        paths = [_write_cdf5(tmp_path / "c" / f"{i}.nc", start=3 * i, seed=i) for i in range(2)]
        fs = virtual(tmp_path / "c")
        _, reader = export(fs, target(tmp_path, fmt))
        check_truth(reader, open_truth(paths), open_truth(paths, decode_cf=False))
        check_equals_store(reader, fs)

    def test_external_links(self, tmp_path, fmt):
        data = tmp_path / "data" / "a.h5"
        data.parent.mkdir()
        with h5py.File(data, "w") as f:
            f.create_dataset("t2m", data=np.arange(24.0).reshape(4, 6), chunks=(2, 3))
            f.create_dataset("flag", data=np.arange(4, dtype="i2"))
        master = tmp_path / "master.h5"
        with h5py.File(master, "w") as f:
            f["own"] = np.arange(5, dtype="i4")
            f["t2m"] = h5py.ExternalLink("data/a.h5", "/t2m")
            f["flag"] = h5py.ExternalLink(str(data), "flag")
        fs = virtual(master, None)
        report, reader = export(fs, target(tmp_path, fmt))
        assert report.files == 2  # the master and the links' target, both recorded
        check_equals_store(reader, fs)
        group = zarr.open_group(reader.get_mapper(""), mode="r", zarr_format=2)
        with h5py.File(master) as f:
            for name in ("own", "t2m", "flag"):
                _assert_values_equal(np.asarray(group[name][...]), f[name][()], name)

    def test_missing_chunks_have_no_reference(self, tmp_path, fmt):
        path = write_sparse(tmp_path / "sparse.nc", [0, 1, 2, 3], declared_fill=True)
        fs = virtual(path, None)
        url = target(tmp_path, fmt)
        _, reader = export(fs, url)
        check_truth(reader, open_truth([path], None), open_truth([path], None, decode_cf=False))
        check_equals_store(reader, fs)
        for key in ("never_f8/0.0", "never_f8/1.1", "part_f4/1.1"):
            assert not fs.exists(key), f"the premise: {key} is not written"
            assert key not in reader.references, key

    def test_http_sources(self, tmp_path, http_root, fmt):
        root, base = http_root
        paths = write_series(root, [[0, 1, 2], [3, 4, 5]])
        fs = virtual([f"{base}/{p.name}" for p in paths])
        url = target(tmp_path, fmt)
        report = fs.to_kerchunk(url)
        assert report.reader_options == {"remote_protocol": "http", "remote_options": {}}
        # zarr 3 wants an asynchronous filesystem, and its HTTP filesystem asynchronous too
        # (as kerchunk's own xarray engine makes them)
        reader = fsspec.filesystem(
            "reference",
            fo=url,
            remote_protocol="http",
            remote_options={"asynchronous": True},
            asynchronous=True,
        )
        check_truth(reader, open_truth(paths), open_truth(paths, decode_cf=False))
        storage = report.reader_options
        with xr.open_dataset(url, engine="kerchunk", storage_options=storage) as ds:
            assert_same_dataset(ds.load(), open_truth(paths), "engine=kerchunk over HTTP")
        check_equals_store(reader, fs)
        ranged = [v for v in _references(reader) if isinstance(v, list)]
        assert ranged and all(str(v[0]).startswith(f"{base}/") for v in ranged)


def _write_cdf5(path: Path, start: int, seed: int) -> Path:
    """A CDF-5 file: 64-bit and unsigned types, fixed and record variables, a char array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_DATA") as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", 3)
        nc.title = "cdf5"
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        time[:] = np.arange(start, start + 3, dtype="f8")
        for dtype in ("u1", "i8", "u8", "f4"):
            fixed = nc.createVariable(f"fixed_{dtype}", dtype, ("x",))
            fixed[:] = rng.integers(0, 200, 3).astype(dtype)
            record = nc.createVariable(f"rec_{dtype}", dtype, ("time", "x"))
            record.long_name = f"record {dtype}"
            record[:] = rng.integers(0, 200, (3, 3)).astype(dtype)
        chars = nc.createVariable("chars", "S1", ("x", "x"))
        chars[:] = np.array([list("abc"), list("d\0\0"), list("efg")], dtype="S1")
    return path


def _references(reader: Any) -> list[Any]:
    refs = reader.references
    return [refs[k] for k in list(refs) if not k.rpartition("/")[2].startswith(".z")]


# -- what is written ---------------------------------------------------------------------


def test_json_documents_are_the_stores_byte_for_byte(tmp_path):
    write_series(tmp_path / "s", [[0, 1, 2], [3, 4, 5]])
    fs = virtual(tmp_path / "s", decode="store")  # an export is client-mode, always
    url = target(tmp_path, "json")
    fs.to_kerchunk(url)
    refs = json_refs(url)["refs"]
    documents = fs.collection().metadata
    assert {k: v for k, v in refs.items() if k in documents} == {
        k: v.decode() for k, v in documents.items()
    }
    assert (
        json.loads(refs["v_float32/.zarray"])["compressor"] is not None
        or json.loads(refs["v_float32/.zarray"])["filters"]
    ), "the premise: the variable has codecs, which store mode would not declare"


@pytest.mark.parametrize("fmt", FORMATS)
def test_provenance_records_snapshot_and_versions(tmp_path, fmt):
    paths = write_series(tmp_path / "s", [[0, 1], [2, 3]])
    fs = virtual(tmp_path / "s")
    url = target(tmp_path, fmt)
    report, reader = export(fs, url)
    if fmt == "json":
        recorded = json_refs(url)[PROVENANCE_KEY]
    else:
        recorded = json.loads(Path(url, PROVENANCE_FILE).read_text())
    state = fs.collection()
    assert recorded["snapshot"] == state.id == report.snapshot
    files = {f["url"]: f for f in recorded["files"]}
    assert set(files) == {str(p) for p in paths}
    for source in state.files:
        assert files[source.path]["size"] == source.version.size
        assert files[source.path]["mtime_ns"] == source.version.mtime_ns
    assert recorded["reader"] == report.reader_options
    assert reader.cat(".zgroup") == state.metadata[".zgroup"]  # the key is ignored by readers


@pytest.mark.parametrize("fmt", FORMATS)
def test_many_tiny_chunks_are_exported_in_their_source_layout(tmp_path, fmt):
    # 1x1 chunks, which the store serves merged (computed): exported as they are in the
    # file, 2,000 byte ranges, in Parquet records of 300 (the last one partial)
    path = tmp_path / "many.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("y", 40)
        nc.createDimension("x", 50)
        v = nc.createVariable("v", "i4", ("y", "x"), chunksizes=(1, 1), fill_value=np.int32(-1))
        v[:] = np.arange(2000, dtype="i4").reshape(40, 50)
        w = nc.createVariable("w", "f4", ("y", "x"), chunksizes=(7, 9), fill_value=np.nan)
        w[:5, :] = 1.5
    fs = virtual(path, None)
    assert fs.report().variables[0].how == "computed", "the premise: served merged"
    report, reader = export(fs, target(tmp_path, fmt), record_size=300)
    assert report.ranges >= 2000 and report.computed_inline == 0
    check_truth(reader, open_truth([path], None), open_truth([path], None, decode_cf=False))
    check_equals_store(reader, fs, source_layout=("v",))
    assert zarr.open_array(reader.get_mapper("v"), mode="r", zarr_format=2).chunks == (1, 1)
    with h5py.File(path) as f:
        info = f["v"].id.get_chunk_info_by_coord((39, 49))
    assert reader.references["v/39.49"][1:] == [info.byte_offset, info.size]


@pytest.mark.parametrize("fmt", FORMATS)
def test_inline_bytes_spelled_base64_read_back_exactly(tmp_path, fmt):
    # a compact dataset (held inline by the store) whose bytes are text that starts
    # "base64:": ReferenceFileSystem decodes such text, so it must be written encoded
    path = tmp_path / "inline.h5"
    text = np.frombuffer(b"base64:not-really", dtype="u1")
    with h5py.File(path, "w") as f:
        for name, data in (("text", text), ("binary", np.arange(250, dtype="u1"))):
            space = h5py.h5s.create_simple(data.shape)
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            plist.set_layout(h5py.h5d.COMPACT)
            made = h5py.h5d.create(f.id, name.encode(), h5py.h5t.NATIVE_UINT8, space, plist)
            h5py.Dataset(made)[...] = data
    fs = virtual(path, None)
    assert fs.report().variables[0].how == "inline", "the premise: held inline"
    report, reader = export(fs, target(tmp_path, fmt))
    assert report.inline == 2
    group = zarr.open_group(reader.get_mapper(""), mode="r", zarr_format=2)
    assert bytes(np.asarray(group["text"][...])) == b"base64:not-really"
    assert np.array_equal(np.asarray(group["binary"][...]), np.arange(250, dtype="u1"))


# -- computed chunks ----------------------------------------------------------------------


def _months(tmp_path: Path) -> tuple[list[Path], VirtualZarrFileSystem]:
    """``tas`` computed (31 + 28 steps on chunks of 10: chunks straddle files), 480 bytes
    a chunk decoded; ``orog`` passed through."""
    paths = write_months(tmp_path / "m", [31, 28], variables={"tas": {"dtype": "f4", **GZIP}})
    return paths, virtual(tmp_path / "m")


@pytest.mark.parametrize("fmt", FORMATS)
def test_computed_variable_over_the_threshold_is_left_out_and_named(tmp_path, fmt):
    paths, fs = _months(tmp_path)
    url = target(tmp_path, fmt)
    with pytest.warns(ExportIncompleteWarning, match=r"tas is left out .*inline_computed=100"):
        report, reader = export(fs, url, inline_computed=100)
    assert [item.path for item in report.left_out] == ["tas"]
    assert "computed_to" in report.left_out[0].reason and not report.complete
    assert "tas" in str(report) and "left out" in str(report)
    group = zarr.open_group(reader.get_mapper(""), mode="r", zarr_format=2)
    assert "tas" not in group.array_keys()  # never metadata without its chunks (fill values)
    assert not any(k.startswith("tas/") for k in reader.references)
    expected = open_truth(paths).drop_vars("tas")
    with xr.open_zarr(reader.get_mapper(""), consolidated=True) as ds:
        assert_same_dataset(ds.load(), expected, "export without tas")
    check_equals_store(reader, fs, without=("tas",))


@pytest.mark.parametrize("fmt", FORMATS)
def test_computed_chunks_inline_under_the_threshold(tmp_path, fmt):
    paths, fs = _months(tmp_path)
    report, reader = export(fs, target(tmp_path, fmt), inline_computed=480)
    assert report.complete and report.computed_inline > 0
    check_truth(reader, open_truth(paths), open_truth(paths, decode_cf=False))
    check_equals_store(reader, fs)


@pytest.mark.parametrize("fmt", FORMATS)
def test_computed_chunks_to_a_side_store(tmp_path, fmt):
    paths, fs = _months(tmp_path)
    side = tmp_path / "side"
    report, reader = export(fs, target(tmp_path, fmt), inline_computed=0, computed_to=str(side))
    assert report.complete and report.computed_files > 0 and report.computed_inline == 0
    written = sorted(p.relative_to(side).as_posix() for p in side.rglob("*") if p.is_file())
    assert len(written) == report.computed_files and all(w.startswith("tas/") for w in written)
    check_truth(reader, open_truth(paths), open_truth(paths, decode_cf=False))
    check_equals_store(reader, fs)
    # a second export into the same side store would overwrite the first's chunks
    with pytest.raises(ExportExistsError, match="side store"):
        fs.to_kerchunk(target(tmp_path, fmt, "again"), inline_computed=0, computed_to=str(side))


def test_computed_chunks_are_encoded_at_the_declared_level(tmp_path):
    # the store encodes computed chunks at zlib level 0 (stored blocks: fast to serve);
    # an export is kept, and compresses them as the array declares
    paths = write_months(
        tmp_path / "m",
        [31, 28],
        variables={"tas": {"dtype": "f4", "compression": "zlib"}},
    )
    for path in paths:  # compressible values
        with netCDF4.Dataset(path, "a") as nc:
            nc["tas"][:] = np.zeros(nc["tas"].shape, dtype="f4") + 280.0
    fs = virtual(tmp_path / "m")
    url = target(tmp_path, "json")
    report, reader = export(fs, url)
    assert report.computed_inline
    computed = [k for k in fs.collection().manifest.arrays["tas"].grid.file_id.ravel() if k == -3]
    assert computed, "the premise: tas has computed chunks"
    key = "tas/3.0.0"  # steps 30..39: straddles the two files
    exported, served = reader.cat_file(key), fs.cat_file(key)
    assert zlib.decompress(exported) == zlib.decompress(served)
    assert len(exported) < len(served) / 4, (len(exported), len(served))


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_existing_target_is_refused_unless_overwrite(tmp_path, fmt):
    write_series(tmp_path / "s", [[0, 1], [2, 3]])
    fs = virtual(tmp_path / "s")
    url = target(tmp_path, fmt)
    fs.to_kerchunk(url)
    with pytest.raises(ExportExistsError, match=r"refs\.(json|parq) exists.*overwrite=True"):
        fs.to_kerchunk(url)
    assert isinstance(ExportExistsError("x"), FileExistsError)
    report = fs.to_kerchunk(url, overwrite=True)
    reader = fsspec.filesystem("reference", fo=url, **report.reader_options)
    check_equals_store(reader, fs)
    leftovers = [p.name for p in Path(url).parent.iterdir() if "partial" in p.name]
    assert leftovers == []


def test_unknown_or_contradictory_format_is_refused(tmp_path):
    write_series(tmp_path / "s", [[0, 1], [2, 3]])
    fs = virtual(tmp_path / "s")
    with pytest.raises(ExportError, match="unknown export format 'csv'"):
        fs.to_kerchunk(str(tmp_path / "r.csv"), format="csv")
    with pytest.raises(ExportError, match=r"\.parq.*read as Parquet"):
        fs.to_kerchunk(str(tmp_path / "r.parq"), format="json")
    with pytest.raises(ExportError, match=r"'\.json'.*read as JSON"):
        fs.to_kerchunk(str(tmp_path / "r.json"), format="parquet")
    assert not any(tmp_path.glob("r.*"))


def test_skipped_variables_are_named_as_left_out(tmp_path):
    path = tmp_path / "backslash.h5"
    with h5py.File(path, "w") as f:
        f["a\\b"] = np.arange(3)
        f["kept"] = np.arange(4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fs = virtual(path, None)
        fs.collection()
    with pytest.warns(ExportIncompleteWarning, match=r"a\\b is left out .*not served"):
        report, reader = export(fs, target(tmp_path, "json"))
    assert [item.path for item in report.left_out] == ["a\\b"]
    assert report.variables == ("kept",)
    check_equals_store(reader, fs)


def test_source_urls_with_credentials_are_refused(tmp_path, http_root):
    root, base = http_root
    paths = write_series(root, [[0, 1], [2, 3]])
    with_password = base.replace("http://", "http://user:hunter2@")
    fs = virtual([f"{with_password}/{p.name}" for p in paths])
    with pytest.raises(ExportError, match="carries a credential") as caught:
        fs.to_kerchunk(target(tmp_path, "json"))
    assert "hunter2" not in str(caught.value)
    assert not (tmp_path / "exports").exists()


def test_credentials_in_options_are_not_recorded(tmp_path, http_root):
    root, base = http_root
    paths = write_series(root, [[0, 1], [2, 3]])
    options = {"headers": {"Authorization": "Bearer s3cr3t", "X-Trace": "on"}}
    fs = virtual([f"{base}/{p.name}" for p in paths], target_options=options)
    url = target(tmp_path, "json")
    report = fs.to_kerchunk(url)
    assert "s3cr3t" not in Path(url).read_text()
    assert report.withheld_options == ("headers.Authorization",)
    assert report.reader_options["remote_options"] == {"headers": {"X-Trace": "on"}}


# -- the command ------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsspec_virtual", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


@pytest.mark.parametrize("name", ["refs.json", "refs.parq"])
def test_cli_export(tmp_path, name):
    paths = write_series(tmp_path / "s", [[0, 1, 2], [3, 4, 5]])
    out = tmp_path / name
    done = run("export", str(tmp_path / "s"), "--to", str(out), "--concat-dim", "time")
    assert done.returncode == 0, done.stderr
    assert f"references at {out}" in done.stdout and "computed inline" in done.stdout
    reader = fsspec.filesystem("reference", fo=str(out))
    check_truth(reader, open_truth(paths), open_truth(paths, decode_cf=False))
    again = run("export", str(tmp_path / "s"), "--to", str(out))
    assert again.returncode == 1
    assert "ExportExistsError" in again.stderr and "--overwrite" in again.stderr
    assert run("export", str(tmp_path / "s"), "--to", str(out), "--overwrite").returncode == 0


def test_cli_export_names_what_is_left_out_and_writes_a_side_store(tmp_path):
    paths = write_months(tmp_path / "m", [31, 28], variables={"tas": {"dtype": "f4", **GZIP}})
    out = tmp_path / "refs.json"
    done = run("export", str(tmp_path / "m"), "--to", str(out), "--inline-computed", "0")
    assert done.returncode == 0, done.stderr
    assert "left out (1)" in done.stdout and "tas: " in done.stdout
    assert "ExportIncompleteWarning: tas is left out" in done.stderr
    side = tmp_path / "side"
    args = ["--inline-computed", "0", "--computed-to", str(side), "--overwrite"]
    done = run("export", str(tmp_path / "m"), "--to", str(out), *args)
    assert done.returncode == 0, done.stderr
    assert "left out" not in done.stdout and any(side.rglob("*.0.0"))
    check_truth(fsspec.filesystem("reference", fo=str(out)), open_truth(paths))
    shutil.rmtree(side)
    bad = run("export", str(tmp_path / "m"), "--to", str(out), "--inline-computed", "-1")
    assert bad.returncode == 2 and "--inline-computed must be >= 0" in bad.stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_inline_chunks_of_several_files(tmp_path, fmt):
    # a compact dataset per file, concatenated: one inline chunk per file, each its own
    paths = []
    for i in range(3):
        path = tmp_path / "c" / f"part{i}.h5"
        path.parent.mkdir(exist_ok=True)
        with h5py.File(path, "w") as f:
            time = f.create_dataset("time", data=np.arange(4.0) + 4 * i)
            time.make_scale("time")
            space = h5py.h5s.create_simple((4,))
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            plist.set_layout(h5py.h5d.COMPACT)
            made = h5py.h5d.create(f.id, b"flag", h5py.h5t.NATIVE_INT16, space, plist)
            flag = h5py.Dataset(made)
            flag[...] = np.arange(4, dtype="i2") * (i + 1) - 7
            flag.dims[0].attach_scale(time)
        paths.append(path)
    fs = virtual(tmp_path / "c")
    grid = fs.collection().manifest.arrays["flag"].grid
    assert sorted(grid.offset[grid.file_id == -2].tolist()) == [0, 1, 2], "the premise"
    report, reader = export(fs, target(tmp_path, fmt))
    assert report.inline >= 3
    check_equals_store(reader, fs)
    served = zarr.open_group(reader.get_mapper(""), mode="r", zarr_format=2)["flag"][...]
    truth = np.concatenate([h5py.File(p, "r")["flag"][()] for p in paths])
    _assert_values_equal(np.asarray(served), truth, "flag")


# -- S3 sources ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Any:
    from servers import serve_s3

    with serve_s3() as server:
        yield server


def _s3_collection(s3: Any, tmp_path: Path) -> tuple[list[Path], str]:
    import uuid

    bucket = f"b{uuid.uuid4().hex[:12]}"
    s3fs = fsspec.filesystem("s3", **s3.options())
    s3fs.mkdir(bucket)
    paths = write_months(tmp_path / "m", [31, 28], variables={"tas": {"dtype": "f4", **GZIP}})
    for p in paths:
        s3fs.pipe_file(f"{bucket}/data/{p.name}", p.read_bytes())
    return paths, bucket


@pytest.mark.parametrize("fmt", FORMATS)
def test_s3_sources_and_side_store(tmp_path, s3, fmt):
    paths, bucket = _s3_collection(s3, tmp_path)
    fs = virtual(f"s3://{bucket}/data/", target_options=s3.options())
    side = f"s3://{bucket}/side"
    report = fs.to_kerchunk(
        target(tmp_path, fmt),
        inline_computed=0,
        computed_to=side,
        computed_options=s3.options(),
    )
    assert report.complete and report.computed_files
    assert sorted(report.withheld_options) == [
        "computed_options.key",
        "computed_options.secret",
        "key",
        "secret",
    ]
    options = report.reader_options["remote_options"]
    assert report.reader_options["remote_protocol"] == "s3"
    assert options["client_kwargs"] == {"endpoint_url": s3.endpoint}
    credentials = {"key": "testing-key", "secret": "testing-secret", "asynchronous": True}
    reader = fsspec.filesystem(  # asynchronous, as zarr 3 wants it (see test_http_sources)
        "reference",
        fo=target(tmp_path, fmt),
        remote_protocol="s3",
        remote_options={**options, **credentials},
        asynchronous=True,
    )
    urls = [v[0] for v in _references(reader) if isinstance(v, list)]
    assert urls and all(u.startswith(f"s3://{bucket}/") for u in urls)
    assert any(u.startswith(f"{side}/tas/") for u in urls)
    check_truth(reader, open_truth(paths), open_truth(paths, decode_cf=False))
    check_equals_store(reader, fs)


def test_a_side_store_on_another_protocol_is_refused(tmp_path, s3):
    # ReferenceFileSystem reads one protocol's references: local paths among S3 ones
    # would be read from S3
    _, bucket = _s3_collection(s3, tmp_path)
    fs = virtual(f"s3://{bucket}/data/", target_options=s3.options())
    side = tmp_path / "side"
    with pytest.raises(ExportError, match=r"side store is on 'file' and the sources on 's3'"):
        fs.to_kerchunk(target(tmp_path, "json"), inline_computed=0, computed_to=str(side))
    assert not (tmp_path / "exports").exists() and not side.exists()


def test_a_format_3_store_exports_format_2_references(tmp_path):
    # kerchunk references are Zarr format 2: the documents of decode="client", format 2
    paths = write_series(tmp_path / "s", [[0, 1, 2], [3, 4, 5]])
    fs = virtual(tmp_path / "s", zarr_format=3)
    url = target(tmp_path, "json")
    _, reader = export(fs, url)
    assert ".zmetadata" in reader.references and "zarr.json" not in reader.references
    refs = json_refs(url)["refs"]
    documents = fs.collection().metadata
    assert {k: refs[k] for k in documents} == {k: v.decode() for k, v in documents.items()}
    check_truth(reader, open_truth(paths), open_truth(paths, decode_cf=False))


@pytest.mark.parametrize("dtype", ["f4", "i2"])
def test_one_file_served_unpacked_is_exported_unpacked(tmp_path, dtype):
    # float32 packing attributes: the store unpacks the one file's variable (computed from a
    # single part covering it); its source chunks hold the packed values, never exported
    # as they are. (float32 data with a NaN fill: the same dtype and fill as served.)
    attrs = {"scale_factor": np.float32(0.5), "add_offset": np.float32(10.0)}
    fill = {"fill_value": np.float32(np.nan)} if dtype == "f4" else {}
    paths = write_months(
        tmp_path / "p",
        [6],
        chunk_time=3,
        variables={"t2m": {"dtype": dtype, "attrs": attrs, **fill, **GZIP}},
    )
    fs = virtual(paths[0], None)
    plan = fs.collection().manifest.arrays["t2m"].plan
    assert plan is not None and len(plan.parts) == 1 and plan.parts[0].unpack, "the premise"
    report, reader = export(fs, target(tmp_path, "json"))
    assert report.computed_inline and report.ranges < 10
    check_truth(reader, open_truth(paths, None))
    check_equals_store(reader, fs)
