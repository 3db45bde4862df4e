"""HDF5 external links to files of the same filesystem are followed (the linked dataset is
served from byte ranges of the target file, at the target's version); links that cannot be
followed are left out, loudly. And dangling symbolic links among the source files."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import fsspec
import h5py
import numpy as np
import pytest
import zarr
from oracle import checked_group, open_each_format

from fsspec_virtual import ScanError, StaleSourceError, UnsupportedVariableWarning
from fsspec_virtual.state import clear_states


def _store(path: Path | list[Path], **options):
    clear_states()
    paths = [str(p) for p in path] if isinstance(path, list) else str(path)
    fs = fsspec.filesystem("virtualzarr", path=paths, skip_instance_cache=True, **options)
    return fs, checked_group(fs)  # every read also through Zarr format 3


def _write_data(path: Path, start: int, seed: int, steps: int = 4) -> Path:
    """A data file: ``time`` and ``lat`` scales, a chunked zlib ``t2m(time, lat)``, a
    contiguous ``flag(time)`` and ``grp/deep(time, lat)``."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        time = f.create_dataset("time", data=np.arange(start, start + steps, dtype="f8"))
        lat = f.create_dataset("lat", data=np.linspace(-60, 60, 6))
        time.make_scale("time")
        lat.make_scale("lat")
        t2m = f.create_dataset(
            "t2m",
            data=rng.standard_normal((steps, 6)).astype("f4"),
            chunks=(2, 3),
            compression="gzip",
        )
        flag = f.create_dataset("flag", data=rng.integers(0, 100, steps, dtype="i2"))
        deep = f.create_group("grp").create_dataset(
            "deep", data=rng.standard_normal((steps, 6)), chunks=(1, 6), compression="gzip"
        )
        for dset in (t2m, deep):
            dset.dims[0].attach_scale(time)
            dset.dims[1].attach_scale(lat)
        flag.dims[0].attach_scale(time)
        t2m.attrs["units"] = "K"
    return path


def _write_master(path: Path, links: dict[str, h5py.ExternalLink], own: bool = True) -> Path:
    with h5py.File(path, "w") as f:
        if own:
            f["own"] = np.arange(5, dtype="i4")
        for name, link in links.items():
            f[name] = link
    return path


def _truth(path: Path, name: str) -> np.ndarray:
    """What h5py reads through the master file's link."""
    with h5py.File(path, "r") as f:
        return f[name][()]


def _assert_same(served: np.ndarray, truth: np.ndarray) -> None:
    assert served.dtype == truth.dtype, (served.dtype, truth.dtype)
    np.testing.assert_array_equal(served, truth)


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """A master file linking into two data files: relative and absolute names, into a
    subgroup, chunked+zlib and contiguous targets."""
    (tmp_path / "data").mkdir()
    first = _write_data(tmp_path / "data" / "a.h5", 0, seed=1)
    _write_data(tmp_path / "data" / "b.h5", 10, seed=2)
    return _write_master(
        tmp_path / "master.h5",
        {
            "t2m": h5py.ExternalLink("data/a.h5", "/t2m"),
            "flag": h5py.ExternalLink(str(first), "flag"),
            "deep": h5py.ExternalLink("data/b.h5", "/grp/deep"),
            "other_t2m": h5py.ExternalLink("./data/../data/b.h5", "/t2m"),
        },
    )


class TestFollowed:
    def test_values_equal_h5py_through_the_link(self, linked):
        fs, g = _store(linked)
        for name in ("own", "t2m", "flag", "deep", "other_t2m"):
            _assert_same(g[name][...], _truth(linked, name))
        assert g["t2m"].attrs["units"] == "K"
        report = {v.path: v for v in fs.report().variables}
        assert report["t2m"].how == "passthrough" and report["flag"].how == "passthrough"
        assert not fs.report().left_out

    def test_chunks_are_byte_ranges_of_the_target(self, linked, tmp_path):
        fs, _ = _store(linked)
        state = fs.collection()
        array = state.manifest.arrays["t2m"]
        urls = {state.manifest.urls[i] for i in np.unique(array.grid.file_id)}
        assert urls == {str(tmp_path / "data" / "a.h5")}
        assert set(state.versions) == {
            str(linked),
            str(tmp_path / "data" / "a.h5"),
            str(tmp_path / "data" / "b.h5"),
        }

    def test_subgroup_link_and_chained_link(self, tmp_path):
        _write_data(tmp_path / "a.h5", 0, seed=3)
        # a file whose own link leads on into a.h5
        _write_master(tmp_path / "middle.h5", {"hop": h5py.ExternalLink("a.h5", "/grp/deep")})
        master = tmp_path / "master.h5"
        with h5py.File(master, "w") as f:
            g = f.create_group("sub")
            g["t"] = h5py.ExternalLink("a.h5", "/t2m")
            f["chained"] = h5py.ExternalLink("middle.h5", "/hop")
        fs, g = _store(master)
        _assert_same(g["sub/t"][...], _truth(master, "sub/t"))
        _assert_same(g["chained"][...], _truth(master, "chained"))
        assert str(tmp_path / "a.h5") in fs.collection().versions

    def test_target_rewritten_after_open_raises_stale(self, linked, tmp_path):
        _fs, g = _store(linked)
        _assert_same(g["flag"][...], _truth(linked, "flag"))
        _write_data(tmp_path / "data" / "a.h5", 0, seed=99)  # same shapes, other values
        with pytest.raises(StaleSourceError, match=r"a\.h5"):
            g["t2m"][...]
        with pytest.raises(StaleSourceError, match=r"a\.h5"):
            g["flag"][...]
        _assert_same(g["deep"][...], _truth(linked, "deep"))  # b.h5 is unchanged

    def test_target_removed_after_open_raises_stale(self, linked, tmp_path):
        _, g = _store(linked)
        os.remove(tmp_path / "data" / "b.h5")
        with pytest.raises(StaleSourceError, match=r"b\.h5"):
            g["deep"][...]

    def test_refresh_sees_a_changed_target(self, linked, tmp_path):
        fs, _ = _store(linked)
        before = fs.collection().id
        _write_data(tmp_path / "data" / "a.h5", 0, seed=42)
        fs.refresh()
        assert fs.collection().id != before
        g = checked_group(fs)
        _assert_same(g["t2m"][...], _truth(linked, "t2m"))

    def test_scan_cache_with_the_target_changed_between_opens(self, linked, tmp_path):
        options = {"cache_dir": str(tmp_path / "cache")}
        _, g = _store(linked, **options)
        _assert_same(g["t2m"][...], _truth(linked, "t2m"))
        old = _truth(linked, "t2m")
        # other values and another shape: old offsets would read garbage or fail oddly
        _write_data(tmp_path / "data" / "a.h5", 0, seed=7, steps=6)
        # b.h5's datasets share the dimension 'time' in the master: as long as a.h5's
        _write_data(tmp_path / "data" / "b.h5", 10, seed=2, steps=6)
        _fs, g = _store(linked, **options)
        new = _truth(linked, "t2m")
        assert new.shape != old.shape
        _assert_same(g["t2m"][...], new)
        _assert_same(g["flag"][...], _truth(linked, "flag"))

    def test_masters_concatenated_along_time(self, tmp_path):
        (tmp_path / "data").mkdir()
        (tmp_path / "masters").mkdir()
        masters = []
        for i in range(3):
            data = _write_data(tmp_path / "data" / f"d{i}.h5", 4 * i, seed=i)
            masters.append(
                _write_master(
                    tmp_path / "masters" / f"m{i}.h5",
                    {
                        name: h5py.ExternalLink(f"../data/d{i}.h5" if i != 1 else str(data), name)
                        for name in ("time", "lat", "t2m", "flag")
                    },
                    own=False,
                )
            )
        fs, g = _store(tmp_path / "masters", concat_dim="time")
        for name in ("time", "t2m", "flag"):
            truth = np.concatenate([_truth(m, name) for m in masters])
            _assert_same(g[name][...], truth)
        _assert_same(g["lat"][...], _truth(masters[0], "lat"))
        ds = open_each_format(fs)
        assert ds["t2m"].dims == ("time", "lat") and ds.sizes["time"] == 12


def _left_out(master: Path, name: str, reason: str) -> None:
    with pytest.warns(UnsupportedVariableWarning) as caught:
        fs, g = _store(master)
        _assert_same(g["own"][...], _truth(master, "own"))
    messages = [str(w.message) for w in caught if w.category is UnsupportedVariableWarning]
    assert any(master.name in m and repr(name) in m and reason in m for m in messages), messages
    assert name not in fs.collection().manifest.arrays
    assert reason in fs.collection().manifest.skipped[name]


class TestLeftOut:
    def test_missing_target(self, tmp_path):
        master = _write_master(tmp_path / "m.h5", {"x": h5py.ExternalLink("gone.h5", "/x")})
        _left_out(master, "x", "does not exist")

    def test_missing_dataset_in_the_target(self, tmp_path):
        _write_data(tmp_path / "a.h5", 0, seed=0)
        master = _write_master(tmp_path / "m.h5", {"x": h5py.ExternalLink("a.h5", "/nope")})
        _left_out(master, "x", "holds no dataset /nope")

    def test_link_to_a_group(self, tmp_path):
        _write_data(tmp_path / "a.h5", 0, seed=0)
        master = _write_master(tmp_path / "m.h5", {"x": h5py.ExternalLink("a.h5", "/grp")})
        _left_out(master, "x", "group")

    def test_cycle(self, tmp_path):
        _write_master(tmp_path / "b.h5", {"back": h5py.ExternalLink("m.h5", "/x")})
        master = _write_master(tmp_path / "m.h5", {"x": h5py.ExternalLink("b.h5", "/back")})
        _left_out(master, "x", "cycle")

    def test_target_not_hdf5(self, tmp_path):
        (tmp_path / "a.h5").write_bytes(b"not an HDF5 file at all" * 100)
        master = _write_master(tmp_path / "m.h5", {"x": h5py.ExternalLink("a.h5", "/x")})
        _left_out(master, "x", "is not an HDF5 file")

    def test_target_on_another_filesystem(self, tmp_path):
        url = "s3://bucket/a.h5"
        master = _write_master(tmp_path / "m.h5", {"x": h5py.ExternalLink(url, "/x")})
        _left_out(master, "x", "another filesystem")


class TestDanglingSymlinks:
    def test_dangling_link_named_like_data_names_itself_and_its_target(self, tmp_path):
        _write_data(tmp_path / "a.h5", 0, seed=0)
        target = tmp_path / "elsewhere" / "gone.nc"
        (tmp_path / "b.nc").symlink_to(target)
        with pytest.raises(ScanError) as caught:
            _store(tmp_path).collection()
        message = str(caught.value)
        assert "dangling symbolic link" in message
        assert str(tmp_path / "b.nc") in message and str(target) in message
        assert "empty" not in message

    def test_dangling_link_skipped_with_on_error_skip(self, tmp_path):
        _write_data(tmp_path / "a.h5", 0, seed=0)
        (tmp_path / "b.nc").symlink_to(tmp_path / "gone.nc")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _fs, g = _store(tmp_path, on_error="skip")
            _assert_same(g["t2m"][...], _truth(tmp_path / "a.h5", "t2m"))
        assert any("dangling symbolic link" in str(w.message) for w in caught)

    def test_dangling_link_not_named_like_data_is_ignored(self, tmp_path):
        _write_data(tmp_path / "a.h5", 0, seed=0)
        (tmp_path / "README").symlink_to(tmp_path / "gone")
        _, g = _store(tmp_path)
        _assert_same(g["t2m"][...], _truth(tmp_path / "a.h5", "t2m"))


class TestOverHTTP:
    def test_relative_link_followed_on_the_same_server(self, http_root):
        root, base = http_root
        (root / "data").mkdir()
        _write_data(root / "data" / "a.h5", 0, seed=5)
        master = _write_master(
            root / "m.h5",
            {
                "t2m": h5py.ExternalLink("data/a.h5", "/t2m"),
                "abs": h5py.ExternalLink(str(root / "data" / "a.h5"), "/flag"),
            },
        )
        with pytest.warns(UnsupportedVariableWarning, match=r"m\.h5.*'abs'.*absolute path"):
            fs, g = _store(f"{base}/m.h5")
            _assert_same(g["t2m"][...], _truth(master, "t2m"))
        assert f"{base}/data/a.h5" in fs.collection().versions
        target = _write_data(root / "data" / "a.h5", 0, seed=6)
        # this server's version is Last-Modified, in whole seconds: a rewrite within the
        # second of the scan cannot show there (documented), so the rewrite is dated later
        later = target.stat().st_mtime + 10
        os.utime(target, (later, later))
        with pytest.raises(StaleSourceError, match=r"a\.h5"):
            g["t2m"][...]


class TestSnapshots:
    def test_pickled_store_serves_its_snapshot_or_raises_stale(self, linked, tmp_path):
        import pickle

        fs, _ = _store(linked, cache=False)
        fs.collection()
        blob = pickle.dumps(fs)
        clear_states()
        again = zarr.open_group(pickle.loads(blob).get_mapper(""), mode="r")
        _assert_same(again["t2m"][...], _truth(linked, "t2m"))
        _write_data(tmp_path / "data" / "a.h5", 0, seed=11)
        clear_states()  # another process: the snapshot must be rebuilt, and cannot be
        with pytest.raises(StaleSourceError):
            zarr.open_group(pickle.loads(blob).get_mapper(""), mode="r")["t2m"][...]


def _write_netcdf(path: Path, times: np.ndarray, lat: int = 3, tag: str = "") -> Path:
    """A NetCDF4 file: ``time`` and ``lat`` coordinates, ``t2m(time, lat)``, ``label(time)``
    variable-length strings."""
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", len(times))
        nc.createDimension("lat", lat)
        nc.createVariable("time", "f8", ("time",))[:] = times
        nc.createVariable("lat", "f4", ("lat",))[:] = np.arange(lat, dtype="f4")
        t2m = nc.createVariable("t2m", "f4", ("time", "lat"))
        t2m[:] = np.arange(len(times) * lat, dtype="f4").reshape(len(times), lat) + times[0]
        label = nc.createVariable("label", str, ("time",))
        for i in range(len(times)):
            label[i] = f"{tag}{i}"
    return path


def _add_links(path: Path, links: dict[str, h5py.ExternalLink]) -> Path:
    with h5py.File(path, "a") as f:
        for name, link in links.items():
            f[name] = link
    return path


def _caught(master: Path | str, **options) -> tuple[list[str], object, object]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs, g = _store(master, **options)
    messages = [str(w.message) for w in caught if w.category is UnsupportedVariableWarning]
    return messages, fs, g


class TestTargetNames:
    """A link's file name resolved as the OS (and HDF5) resolve it, its object path as
    HDF5 looks it up."""

    def test_dotdot_after_a_symbolic_link_to_a_directory(self, tmp_path, monkeypatch):
        src, other = tmp_path / "src", tmp_path / "elsewhere"
        (other / "deep").mkdir(parents=True)
        src.mkdir()
        _write_data(src / "a.h5", 0, seed=1)  # 'sub/../a.h5' read as text
        _write_data(other / "a.h5", 0, seed=2)  # what the OS opens
        (src / "sub").symlink_to(other / "deep")
        master = _write_master(src / "m.h5", {"t2m": h5py.ExternalLink("sub/../a.h5", "/t2m")})
        monkeypatch.chdir(tmp_path)  # HDF5 would try the working directory last
        fs, g = _store(master)
        _assert_same(g["t2m"][...], _truth(master, "t2m"))
        assert str(other / "a.h5") in fs.collection().versions

    def test_dotdot_from_a_directory_reached_through_a_symbolic_link(self, tmp_path, monkeypatch):
        real = tmp_path / "storage" / "x" / "runs"
        real.mkdir(parents=True)
        (tmp_path / "storage" / "x" / "static").mkdir()
        (tmp_path / "data" / "static").mkdir(parents=True)
        _write_data(tmp_path / "storage" / "x" / "static" / "grid.h5", 0, seed=3)
        _write_data(tmp_path / "data" / "static" / "grid.h5", 0, seed=4)
        (tmp_path / "data" / "runs").symlink_to(real)
        _write_master(real / "m.h5", {"t2m": h5py.ExternalLink("../static/grid.h5", "/t2m")})
        monkeypatch.chdir("/")
        listed = tmp_path / "data" / "runs" / "m.h5"
        _fs, g = _store(tmp_path / "data" / "runs")
        _assert_same(g["t2m"][...], _truth(listed, "t2m"))

    def test_file_names_with_url_characters_over_http(self, http_root):
        root, base = http_root
        names = {"pct": "%41.h5", "hash": "b.h5#c.h5", "query": "d.h5?x=1", "space": "e f.h5"}
        decoys = {"pct": "A.h5", "hash": "b.h5", "query": "d.h5", "space": "e%20f.h5"}
        for seed, (key, name) in enumerate(names.items()):
            _write_data(root / name, 0, seed=seed)
            _write_data(root / decoys[key], 0, seed=seed + 10)
        master = _write_master(
            root / "m.h5", {key: h5py.ExternalLink(name, "/t2m") for key, name in names.items()}
        )
        _fs, g = _store(f"{base}/m.h5", cache=False)
        for key in names:
            _assert_same(g[key][...], _truth(master, key))

    def test_object_path_with_dotdot_left_out_with_dot_followed(self, tmp_path):
        with h5py.File(tmp_path / "a.h5", "w") as f:
            f["t2m"] = np.arange(6, dtype="f4")
            f.create_group("grp")
        master = _write_master(
            tmp_path / "m.h5",
            {
                "up": h5py.ExternalLink("a.h5", "/grp/../t2m"),
                "here": h5py.ExternalLink("a.h5", "./t2m"),
            },
        )
        with h5py.File(master, "r") as f, pytest.raises(KeyError):
            f["up"]  # HDF5 has no parent step
        _left_out(master, "up", "'..' component")
        messages, _fs, g = _caught(master)
        _assert_same(g["here"][...], _truth(master, "here"))
        assert len(messages) == 1


class TestTargetChangedDuringTheScan:
    def test_build_refused_naming_the_target(self, tmp_path):
        (tmp_path / "t").mkdir()
        target = _write_netcdf(tmp_path / "t" / "T.nc", np.arange(2.0), tag="old")
        for i in range(2):
            _write_master(
                tmp_path / f"m{i}.h5",
                {
                    "time": h5py.ExternalLink("t/T.nc", "/time"),
                    "label": h5py.ExternalLink("t/T.nc", "/label"),
                },
                own=False,
            )

        def rewrite(done: int, total: int) -> None:
            if done == 1:  # between the two linking files' scans
                _write_netcdf(target, np.arange(2.0) + 5, tag="new")

        with pytest.raises(StaleSourceError) as caught:
            _store(tmp_path, cache=False, max_workers=1, progress=rewrite)
        message = str(caught.value)
        assert str(target) in message and "changed while the collection was scanned" in message
        # "-1" (an unknown version) outside the paths: pytest's own directories hold "-1"
        assert "two versions" in message and "-1" not in message.replace(str(tmp_path), "")


class TestNotCachedWhenALinkWasTried:
    """What a link made of its target (followed or refused) hangs on the target's state."""

    def _master(self, tmp_path: Path) -> Path:
        return _write_master(tmp_path / "m.h5", {"t2m": h5py.ExternalLink("a.h5", "/t2m")})

    @pytest.mark.parametrize("before", ["missing", "not hdf5", "no such dataset"])
    def test_reopen_with_the_scan_cache_sees_the_target_now(self, tmp_path, before):
        master = self._master(tmp_path)
        if before == "not hdf5":
            (tmp_path / "a.h5").write_bytes(b"partial" * 100)
        elif before == "no such dataset":
            with h5py.File(tmp_path / "a.h5", "w") as f:
                f["other"] = np.zeros(3)
        options = {"cache_dir": str(tmp_path / "cache")}
        messages, _, g = _caught(master, **options)
        assert "t2m" not in g and any("'t2m'" in m for m in messages)
        _write_data(tmp_path / "a.h5", 0, seed=8)
        messages, _, g = _caught(master, **options)
        _assert_same(g["t2m"][...], _truth(master, "t2m"))
        assert not messages

    def test_refresh_sees_the_target_now(self, tmp_path):
        master = self._master(tmp_path)
        _, fs, g = _caught(master)
        assert "t2m" not in g
        _write_data(tmp_path / "a.h5", 0, seed=9)
        fs.refresh()
        g = checked_group(fs)
        _assert_same(g["t2m"][...], _truth(master, "t2m"))


class TestDimensionNames:
    """A linked dataset keeps its target's dimension names only where they mean the same
    dimension in the linking file."""

    def _master(self, tmp_path: Path, times: np.ndarray) -> Path:
        master = _write_netcdf(tmp_path / "m.nc", times, tag="m")
        return _add_links(master, {"linked": h5py.ExternalLink("a.nc", "/t2m")})

    def _assert_left_out(self, master: Path, target: Path, words: str) -> None:
        messages, fs, g = _caught(master)
        assert "linked" not in g
        assert any(
            str(master) in m
            and "'linked'" in m
            and "'time'" in m
            and str(target) in m
            and words in m
            for m in messages
        ), messages
        ds = open_each_format(fs)
        np.testing.assert_array_equal(ds["t2m"].values, _truth(master, "t2m"))

    def test_other_length_left_out(self, tmp_path):
        target = _write_netcdf(tmp_path / "a.nc", np.arange(4.0))
        master = self._master(tmp_path, np.arange(10.0) + 100)
        self._assert_left_out(master, target, "4 long")

    def test_same_length_other_coordinate_values_left_out(self, tmp_path):
        target = _write_netcdf(tmp_path / "a.nc", np.arange(4.0))
        master = self._master(tmp_path, np.arange(4.0) + 100)
        self._assert_left_out(master, target, "100.0")

    def test_same_dimension_kept(self, tmp_path):
        _write_netcdf(tmp_path / "a.nc", np.arange(4.0))
        master = self._master(tmp_path, np.arange(4.0))
        messages, fs, g = _caught(master)
        assert not messages
        _assert_same(g["linked"][...], _truth(master, "linked"))
        ds = open_each_format(fs)
        assert ds["linked"].dims == ("time", "lat")

    def test_dimension_the_linking_file_lacks_kept(self, tmp_path):
        _write_netcdf(tmp_path / "a.nc", np.arange(4.0))
        master = _write_master(tmp_path / "m.h5", {"linked": h5py.ExternalLink("a.nc", "/t2m")})
        messages, _, g = _caught(master)
        assert not messages
        assert g["linked"].attrs["_ARRAY_DIMENSIONS"] == ["time", "lat"]
        _assert_same(g["linked"][...], _truth(master, "linked"))


class TestBrokenSymlinks:
    def test_symlink_loop_named_like_data_says_loop(self, tmp_path):
        _write_data(tmp_path / "a.h5", 0, seed=0)
        (tmp_path / "loop.nc").symlink_to("loop.nc")
        with pytest.raises(ScanError, match="loop of symbolic links"):
            _store(tmp_path).collection()

    def test_dangling_symlink_given_as_path_says_dangling(self, tmp_path):
        from fsspec_virtual import NoSourceFilesError

        (tmp_path / "b.nc").symlink_to(tmp_path / "gone.nc")
        with pytest.raises(NoSourceFilesError, match=r"dangling symbolic link to .*gone\.nc"):
            _store(tmp_path / "b.nc").collection()
        (tmp_path / "loop.nc").symlink_to("loop.nc")
        with pytest.raises(NoSourceFilesError, match="loop of symbolic links"):
            _store(tmp_path / "loop.nc").collection()
