"""Listings find every data file and nothing outside the directory: HTTP index pages'
other links are not files of the directory, HDF5 files with a user block are data, and a
file named like NetCDF/HDF5 whose bytes are not is an error, never silently left out."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import fsspec
import h5netcdf
import h5py
import numpy as np
import pytest
import xarray as xr
from conftest import write_random, write_simple
from fsspec.implementations.local import LocalFileSystem
from oracle import assert_same_dataset, open_each_format, open_truth
from servers import serve_directory

from fsspec_virtual import NoSourceFilesError, ScanError, SkippedFileWarning, source
from fsspec_virtual.source import hdf5_signature_offsets, list_source_files

OPTIONS = {"concat_dim": "time", "skip_instance_cache": True, "cache": False}


def _open(path: str | Sequence[str], **kwargs: object) -> xr.Dataset:
    fs = fsspec.filesystem("virtualzarr", path=path, **{**OPTIONS, **kwargs})
    return open_each_format(fs, consolidated=True)  # Zarr format 3 gives the same


def _listed(path: str, **kwargs: object) -> list[str]:
    fs = fsspec.filesystem("virtualzarr", path=path, **{**OPTIONS, **kwargs})
    return [f.path for f in fs.collection().files]


# -- HTTP index pages ---------------------------------------------------------------------------

#: Links real index pages carry that are not files of the directory listed.
FOREIGN_LINKS = [
    "../",
    "..",
    "../outside.nc",
    "/outside.nc",
    "/other/outside.nc",
    "../other/outside.nc",
    "sub/../../outside.nc",
    "%2e%2e/outside.nc",
    "?C=M;O=A",
    "?C=N;O=D",
    "#top",
    "#",
    "#top.nc",
    "./?C=S;O=A",
]


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, list[Path]]:
    """``root/data/`` holds the collection; ``root/outside.nc`` and
    ``root/other/outside.nc`` are data files the collection must not take in."""
    root = tmp_path / "root"
    paths = [
        write_simple(root / "data" / f"part{i}.nc", [2.0 * i, 2.0 * i + 1], seed=i) for i in (0, 1)
    ]
    write_simple(root / "outside.nc", [4.0, 5.0], seed=7)
    write_simple(root / "other" / "outside.nc", [6.0, 7.0], seed=8)
    return root, paths


class TestIndexPages:
    def test_only_links_below_the_directory(self, served):
        root, paths = served
        with serve_directory(root) as server:
            port = server.url.rpartition(":")[2]
            server.extra_links = [
                *FOREIGN_LINKS,
                f"https://127.0.0.1:{port}/data/part0.nc",  # another scheme
                f"http://localhost:{port}/data/part0.nc",  # another host name
                "./part1.nc",  # itself, once
            ]
            url = f"{server.url}/data/"
            assert sorted(_listed(url)) == [f"{server.url}/data/{p.name}" for p in paths]
            assert_same_dataset(_open(url), open_truth(paths))
            assert sorted(_listed(url.rstrip("/"))) == sorted(_listed(url))

    def test_globs_match_only_links_below_the_directory(self, served):
        root, paths = served
        with serve_directory(root) as server:
            server.extra_links = FOREIGN_LINKS
            url = f"{server.url}/data/*.nc"
            assert sorted(_listed(url)) == [f"{server.url}/data/{p.name}" for p in paths]
            assert_same_dataset(_open(url), open_truth(paths))


# -- HDF5 files with a user block ---------------------------------------------------------------


def _write_h5netcdf(path: Path, times: Sequence[float], seed: int, userblock: int = 0) -> Path:
    """A NetCDF4 file written by h5netcdf (h5py), after a user block of ``userblock`` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"userblock_size": userblock} if userblock else {}
    with h5netcdf.File(path, "w", **kwargs) as f:
        f.dimensions = {"time": len(times), "x": 6}
        time = f.create_variable("time", ("time",), "f8")
        time[:] = np.asarray(times, dtype="f8")
        time.attrs["units"] = "days since 2001-01-01"
        time.attrs["calendar"] = "standard"
        x = f.create_variable("x", ("x",), "f8")
        x[:] = np.arange(6) * 10.0
        v = f.create_variable("t", ("time", "x"), "f4", chunks=(1, 6), compression="gzip")
        v[:] = np.random.default_rng(seed).normal(size=(len(times), 6)).astype("f4")
        v.attrs["units"] = "K"
    return path


def _with_header(path: Path, header: bytes) -> Path:
    """``header`` written at the start of the file's user block (as MATLAB does)."""
    with open(path, "r+b") as f:
        f.write(header)
    return path


MATLAB_73 = (
    b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2001 HDF5 schema"
)


class TestUserBlock:
    def test_signature_offsets(self):
        assert hdf5_signature_offsets(0) == [0]
        assert hdf5_signature_offsets(519) == [0]
        assert hdf5_signature_offsets(520) == [0, 512]
        assert hdf5_signature_offsets(5000) == [0, 512, 1024, 2048, 4096]

    @pytest.mark.parametrize("userblock", [512, 2048, 131072])
    def test_alone(self, tmp_path, userblock):
        path = _write_h5netcdf(tmp_path / "ub.nc", [0.0, 1.0, 2.0], seed=1, userblock=userblock)
        assert path.read_bytes()[userblock : userblock + 4] == b"\x89HDF"
        ds = _open(str(path))
        assert_same_dataset(ds, open_truth([path]))
        with h5py.File(path, "r") as f:
            assert f.userblock_size == userblock
            np.testing.assert_array_equal(ds["t"].values, f["t"][...])

    def test_matlab_header(self, tmp_path):
        path = _with_header(_write_h5netcdf(tmp_path / "run.mat", [0.0, 1.0], 3, 512), MATLAB_73)
        assert_same_dataset(_open(str(path)), open_truth([path]))

    def test_mixed_with_normal_files(self, tmp_path):
        paths = [
            _write_h5netcdf(tmp_path / "a.nc", [0.0, 1.0], seed=0),
            _write_h5netcdf(tmp_path / "b.nc", [2.0, 3.0], seed=1, userblock=512),
            _write_h5netcdf(tmp_path / "c.h5", [4.0, 5.0], seed=2),
            _write_h5netcdf(tmp_path / "d.nc", [6.0, 7.0], seed=3, userblock=131072),
            _with_header(_write_h5netcdf(tmp_path / "e.mat", [8.0, 9.0], 4, 1024), MATLAB_73),
        ]
        (tmp_path / "README.txt").write_text("not data\n" * 200)
        assert_same_dataset(_open(str(tmp_path)), open_truth(paths))

    def test_one_batched_read_per_round(self, tmp_path, monkeypatch):
        normal = _write_h5netcdf(tmp_path / "a.nc", [0.0, 1.0], seed=0)
        near = _write_h5netcdf(tmp_path / "b.nc", [2.0, 3.0], seed=1, userblock=512)
        far = _write_h5netcdf(tmp_path / "c.nc", [4.0, 5.0], seed=2, userblock=131072)
        readme = tmp_path / "README.txt"
        readme.write_text("not data\n" * 200)  # 1800 bytes: searched at 512 and 1024 only
        rounds: list[list[tuple[str, int, int]]] = []
        original = source._read_round

        def counted(fs, reads):
            rounds.append(sorted((Path(p).name, s, e) for p, s, e in reads))
            return original(fs, reads)

        monkeypatch.setattr(source, "_read_round", counted)
        listed = list_source_files(LocalFileSystem(), [str(tmp_path)])
        assert sorted(f.path for f in listed) == sorted(str(p) for p in (normal, near, far))
        near_end, small = 65536 + 8, near.stat().st_size
        assert small < near_end < far.stat().st_size
        assert rounds == [
            [("README.txt", 0, 8), ("a.nc", 0, 8), ("b.nc", 0, 8), ("c.nc", 0, 8)],
            [("README.txt", 512, 1800), ("b.nc", 512, small), ("c.nc", 512, near_end)],
            [("c.nc", 131072, 131080)],
        ]

    def test_over_http_normal_files_cost_one_read(self, tmp_path):
        _write_h5netcdf(tmp_path / "a.nc", [0.0, 1.0], seed=0)
        ub = _write_h5netcdf(tmp_path / "b.nc", [2.0, 3.0], seed=1, userblock=512)
        (tmp_path / "README.txt").write_text("not data\n" * 200)
        with serve_directory(tmp_path) as server:
            ds = _open(f"{server.url}/")
            assert_same_dataset(ds, open_truth([tmp_path / "a.nc", ub]))
            probes = {
                name: sorted(
                    h.range
                    for h in server.gets(name)
                    if h.range == "bytes=0-7" or (h.range or "").startswith("bytes=512-")
                )
                for name in ("a.nc", "b.nc", "README.txt")
            }
        assert probes == {
            "a.nc": ["bytes=0-7"],
            "b.nc": ["bytes=0-7", f"bytes=512-{ub.stat().st_size - 1}"],
            "README.txt": ["bytes=0-7", "bytes=512-1799"],
        }


# -- files named like data that are not ---------------------------------------------------------

NOT_DATA = {
    "empty": (b"", "empty"),
    "three bytes": (b"\x89HD", "only 3 byte"),
    "random": (None, "neither NetCDF3"),
    "HDF4": (b"\x0e\x03\x13\x01" + bytes(4000), "HDF4"),
    "gzip": (b"\x1f\x8b\x08\x00" + bytes(100), "gzip"),
    "HTML error page": (b"<html><body>404 Not Found</body></html>", "HTML"),
}


def _write_not_data(path: Path, content: bytes | None) -> Path:
    if content is None:
        return write_random(path)
    path.write_bytes(content)
    return path


def _good(directory: Path) -> list[Path]:
    return [write_simple(directory / f"good{i}.nc", [2.0 * i, 2.0 * i + 1], seed=i) for i in (0, 1)]


class TestNamedLikeData:
    @pytest.mark.parametrize("kind", list(NOT_DATA))
    @pytest.mark.parametrize("name", ["zz.nc", "zz.h5", "zz.NC4", "zz.hdf", "zz.mat"])
    def test_is_an_error(self, tmp_path, kind, name):
        content, said = NOT_DATA[kind]
        _good(tmp_path)
        bad = _write_not_data(tmp_path / name, content)
        with pytest.raises(ScanError, match=said) as raised:
            _open(str(tmp_path))
        assert str(bad) in str(raised.value)
        assert "named like a NetCDF/HDF5 file" in str(raised.value)

    @pytest.mark.parametrize("kind", list(NOT_DATA))
    def test_is_skipped_with_a_warning(self, tmp_path, kind):
        content, said = NOT_DATA[kind]
        paths = _good(tmp_path)
        bad = _write_not_data(tmp_path / "zz.nc", content)
        with pytest.warns(SkippedFileWarning, match=said) as caught:
            ds = _open(str(tmp_path), on_error="skip")
        assert any(str(bad) in str(w.message) for w in caught)
        assert_same_dataset(ds, open_truth(paths))

    def test_alone_is_an_error_naming_it(self, tmp_path):
        bad = _write_not_data(tmp_path / "only.nc", b"")
        with pytest.raises(ScanError, match="empty") as raised:
            _open(str(tmp_path))
        assert str(bad) in str(raised.value)

    def test_other_names_are_ignored_silently(self, tmp_path):
        paths = _good(tmp_path)
        (tmp_path / "README.txt").write_text("readme\n")
        (tmp_path / "meta.json").write_text("{}")
        (tmp_path / "empty").write_bytes(b"")
        (tmp_path / "good0.nc.md5").write_text("d41d8cd98f00b204e9800998ecf8427e\n")
        write_random(tmp_path / "blob.bin")
        (tmp_path / "old.mat").write_bytes(b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + bytes(200))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds = _open(str(tmp_path))
        assert_same_dataset(ds, open_truth(paths))

    def test_over_http(self, tmp_path):
        _good(tmp_path)
        (tmp_path / "zz.nc").write_bytes(b"<html><body>Service Unavailable</body></html>")
        with serve_directory(tmp_path) as server:
            with pytest.raises(ScanError, match=r"zz\.nc.*HTML"):
                _open(f"{server.url}/")


# -- local directories: one stat per file, reads without file objects ---------------------------


class _GenericLocal(LocalFileSystem):
    """The local filesystem taken the generic way (``fs.ls``, ``cat_ranges``, one
    ``listed_version`` per file): what the local fast path must equal."""


def _mixed_directory(tmp_path: Path) -> Path:
    root = tmp_path / "mixed"
    root.mkdir()
    write_simple(root / "a.nc", [0.0, 1.0])
    write_simple(root / "b.nc", [2.0, 3.0], fmt="NETCDF3_64BIT_OFFSET", chunks=None)
    _write_h5netcdf(root / "c.h5", [4.0, 5.0], seed=2, userblock=512)
    (root / "README.txt").write_text("not data\n" * 200)
    (root / "empty").write_bytes(b"")
    (root / "sub").mkdir()
    write_simple(root / "sub" / "inner.nc", [8.0, 9.0])
    (root / "linked.nc").symlink_to(root / "a.nc")
    (root / "linked-dir").symlink_to(root / "sub")
    return root


class TestLocalDirectory:
    def test_same_files_versions_and_formats_as_the_generic_listing(self, tmp_path, monkeypatch):
        root = _mixed_directory(tmp_path)
        expected = list_source_files(_GenericLocal(), [str(root)])
        from fsspec_virtual.access.adapters import LocalAdapter

        looked_up: list[str] = []
        original = LocalAdapter.listed_version

        def counted(self, path, info):
            looked_up.append(Path(path).name)
            return original(self, path, info)

        monkeypatch.setattr(LocalAdapter, "listed_version", counted)
        listed = list_source_files(LocalFileSystem(), [str(root)])
        assert sorted(listed, key=lambda f: f.path) == sorted(expected, key=lambda f: f.path)
        assert {f.format for f in listed} == {"hdf5", "netcdf3"}
        assert looked_up == ["linked.nc"]  # the listing's own stat versions the others

    @pytest.mark.parametrize(
        "bad",
        [
            lambda p: p.write_bytes(b"<html>Service Unavailable</html>"),
            lambda p: p.write_bytes(b""),
            lambda p: p.write_bytes(b"CDF"),
            lambda p: p.symlink_to(p.parent / "gone.nc"),
        ],
        ids=["html", "empty", "short", "dangling-link"],
    )
    def test_refuses_what_the_generic_listing_refuses(self, tmp_path, bad):
        root = _mixed_directory(tmp_path)
        bad(root / "zz.nc")
        with pytest.raises(ScanError) as generic:
            list_source_files(_GenericLocal(), [str(root)])
        with pytest.raises(ScanError) as fast:
            list_source_files(LocalFileSystem(), [str(root)])
        assert str(fast.value) == str(generic.value)
        assert str(root / "zz.nc") in str(fast.value)


# -- lists of paths: every entry names a file, literally if it exists as written ------------------


def _bracketed(directory: Path) -> list[Path]:
    """``b.nc`` and ``c[2].nc``: the second's name is also a glob matching ``c2.nc``."""
    return [
        write_simple(directory / "b.nc", [0.0, 1.0], seed=1),
        write_simple(directory / "c[2].nc", [2.0, 3.0], seed=2),
    ]


class TestPathLists:
    @pytest.mark.parametrize("generic", [False, True], ids=["local", "generic"])
    def test_a_name_with_glob_characters_is_that_file(self, tmp_path, generic):
        paths = _bracketed(tmp_path)
        fs = _GenericLocal() if generic else LocalFileSystem()
        listed = list_source_files(fs, [str(p) for p in paths])
        assert [f.path for f in listed] == [str(p) for p in paths]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds = _open([str(p) for p in paths])
        assert_same_dataset(ds, open_truth(paths))

    def test_a_single_path_existing_as_written_is_that_file(self, tmp_path):
        _, bracketed = _bracketed(tmp_path)
        write_simple(tmp_path / "c2.nc", [8.0, 9.0], seed=3)  # what the glob would match
        assert _listed(str(bracketed)) == [str(bracketed)]

    def test_a_single_glob_still_matches(self, tmp_path):
        paths = _bracketed(tmp_path)
        assert sorted(_listed(str(tmp_path / "[bc]*.nc"))) == sorted(str(p) for p in paths)

    @pytest.mark.parametrize("entry", ["zz*.nc", "missing.nc", "empty"])
    def test_an_entry_naming_no_file_is_an_error_naming_it(self, tmp_path, entry):
        paths = _bracketed(tmp_path)
        (tmp_path / "empty").mkdir()
        listed = [str(paths[0]), str(tmp_path / entry)]
        with pytest.raises(NoSourceFilesError) as raised:
            _open(listed)
        assert str(tmp_path / entry) in str(raised.value)

    @pytest.mark.parametrize("entry", ["zz*.nc", "missing.nc"])
    def test_an_entry_naming_no_file_is_skipped_with_a_warning(self, tmp_path, entry):
        paths = _bracketed(tmp_path)
        listed = [*(str(p) for p in paths), str(tmp_path / entry)]
        with pytest.warns(SkippedFileWarning) as caught:
            ds = _open(listed, on_error="skip")
        assert any(str(tmp_path / entry) in str(w.message) for w in caught)
        assert_same_dataset(ds, open_truth(paths))
