"""Keys mean exactly one thing: one key per chunk, and a source path never changes what a
key names, except under fsspec's URL chaining, where an ambiguous key is an error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import write_series, write_simple
from oracle import assert_same_dataset, open_truth

import fsspec_virtual.state as state_module
from fsspec_virtual.keys import AmbiguousKeyError, chunk_index, resolve_key
from fsspec_virtual.manifest import ArrayMeta, ChunkGrid, VirtualArray

# -- one key per chunk ------------------------------------------------------------------------

#: Spellings ``int()`` (or ``str.isdigit``) accepts that are not ``str(int)``'s of 1 or 10.
ALIASES_2D = [
    "01.0",
    "1.00",
    "0001.0",
    "+1.0",
    " 1.0",
    "1.0 ",
    "\t1.0",
    "1.0\n",
    "1 .0",
    "1_0.0",
    "\uff11.0",  # fullwidth one
    "\u0661.0",  # Arabic-Indic one
    "\u0661\u0660.0",  # Arabic-Indic ten
    "\U0001d7cf.0",  # mathematical bold one
    "\u00b2.0",  # superscript two
    "1.\u00b2",
    "-0.0",
    "00.0",
    "0.-0",
    "0x1.0",
    "1e0.0",
    "1.0.0",
    "1",
    "",
    ".",
    "1.",
    ".0",
    "1..0",
    "1.0\x00",
]
ALIASES_1D = ["00", "01", "+0", "-0", " 0", "0 ", "\uff10", "\u0660", "\u00b2", "0.0", "", "0_0"]
ALIASES_0D = ["00", "+0", "-0", " 0", "\uff10", "\u0660", "0.0", "", "."]


def _array(shape: tuple[int, ...], chunks: tuple[int, ...]) -> VirtualArray:
    dims = tuple(f"d{i}" for i in range(len(shape)))
    meta = ArrayMeta(shape, chunks, "<f4", None, None, None, dims)
    return VirtualArray(meta, ChunkGrid.empty(meta.grid_shape))


class TestChunkIndex:
    @pytest.mark.parametrize("leaf", ALIASES_2D)
    def test_non_canonical_spellings_name_no_chunk(self, leaf):
        assert chunk_index(_array((12, 4), (1, 4)), leaf) is None

    @pytest.mark.parametrize("leaf", ALIASES_1D)
    def test_non_canonical_spellings_name_no_chunk_1d(self, leaf):
        assert chunk_index(_array((12,), (1,)), leaf) is None

    @pytest.mark.parametrize("leaf", ALIASES_0D)
    def test_a_0d_array_has_the_one_key_0(self, leaf):
        array = _array((), ())
        assert chunk_index(array, "0") == ()
        assert chunk_index(array, leaf) is None

    def test_canonical_spellings_name_their_chunk(self):
        array = _array((12, 4), (1, 2))
        for i in range(12):
            for j in range(2):
                assert chunk_index(array, f"{i}.{j}") == (i, j)
        assert chunk_index(array, "12.0") is None
        assert chunk_index(array, "0.2") is None


@pytest.fixture
def twelve_steps(tmp_path: Path) -> list[Path]:
    """One file, 12 time steps in chunks of one: chunks 1.0 and 10.0 exist."""
    return write_series(tmp_path, [list(range(12))], chunk_time=1, dtypes=["float32"])


def _store(path: str | Path, **kwargs: object) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem(
        "virtualzarr", path=str(path), concat_dim="time", skip_instance_cache=True, **kwargs
    )


class TestChunkKeysInTheStore:
    @pytest.mark.parametrize("leaf", [a for a in ALIASES_2D if a])  # "" is the array itself
    def test_aliases_are_missing_keys(self, twelve_steps, leaf):
        fs = _store(twelve_steps[0])
        key = f"v_float32/{leaf}"
        assert not fs.exists(key)
        with pytest.raises(FileNotFoundError):
            fs.cat_file(key)
        assert isinstance(fs.cat_ranges([key], [0], [4], on_error="return")[0], FileNotFoundError)
        state = fs.collection()
        assert resolve_key(state.manifest, state.metadata, key) is None

    @pytest.mark.parametrize("leaf", [a for a in ALIASES_1D if a])  # "" is the array itself
    def test_aliases_are_missing_keys_1d(self, twelve_steps, leaf):
        fs = _store(twelve_steps[0])
        assert fs.exists("x/0")
        assert not fs.exists(f"x/{leaf}")
        with pytest.raises(FileNotFoundError):
            fs.cat_file(f"x/{leaf}")

    @pytest.mark.parametrize("leaf", [a for a in ALIASES_0D if a])  # "" is the array itself
    def test_aliases_are_missing_keys_0d(self, twelve_steps, leaf):
        fs = _store(twelve_steps[0])
        assert fs.exists("height/0")
        assert not fs.exists(f"height/{leaf}")
        with pytest.raises(FileNotFoundError):
            fs.cat_file(f"height/{leaf}")

    def test_canonical_keys_are_the_ones_listed_and_read(self, twelve_steps):
        fs = _store(twelve_steps[0])
        listed = {name.rpartition("/")[2] for name in fs.ls("v_float32", detail=False)}
        assert listed == {".zarray", ".zattrs"} | {f"{i}.0" for i in range(12)}
        array = zarr.open_array(fs.get_mapper("v_float32"), mode="r")
        with xr.open_dataset(twelve_steps[0], decode_cf=False) as truth:
            np.testing.assert_array_equal(array[...], truth["v_float32"].values)


# -- a source path never changes what a key names ----------------------------------------------


def _write_named_like(directory: Path, var: str, n_files: int = 2) -> list[Path]:
    """Files in ``directory`` whose one variable has the directory's name."""
    return [
        write_simple(directory / f"part{i}.nc", [4.0 * i + k for k in range(4)], var=var, seed=i)
        for i in range(n_files)
    ]


def _attrs(fs: fsspec.AbstractFileSystem, key: str) -> dict[str, object]:
    return json.loads(fs.cat_file(key))


def _assert_serves(fs: fsspec.AbstractFileSystem, paths: list[Path], var: str) -> None:
    """Through xarray (the mapper at the root) and zarr (a mapper at the array)."""
    with xr.open_zarr(fs.get_mapper(""), consolidated=True) as ds:
        assert_same_dataset(ds.load(), open_truth(paths))
    with xr.open_zarr(fs.get_mapper(""), consolidated=False) as ds:
        assert_same_dataset(ds.load(), open_truth(paths))
    raw = open_truth(paths, decode_cf=False)[var].values
    np.testing.assert_array_equal(zarr.open_array(fs.get_mapper(var), mode="r")[...], raw)
    assert _attrs(fs, f"{var}/.zattrs")["_ARRAY_DIMENSIONS"] == ["time", "x"]
    assert "_ARRAY_DIMENSIONS" not in _attrs(fs, ".zattrs")


class TestSourcePathNamedLikeAVariable:
    def test_relative_path(self, tmp_path, monkeypatch):
        paths = _write_named_like(tmp_path / "t2m", "t2m")
        monkeypatch.chdir(tmp_path)
        fs = _store("t2m")
        _assert_serves(fs, paths, "t2m")
        assert fs.ls("t2m", detail=False)[:2] == ["t2m/.zarray", "t2m/.zattrs"]
        assert "t2m/0.0" in fs.ls("t2m", detail=False)

    def test_absolute_path(self, tmp_path):
        paths = _write_named_like(tmp_path / "t2m", "t2m")
        absolute = str(tmp_path / "t2m")
        fs = _store(absolute)
        _assert_serves(fs, paths, "t2m")
        # spelled like the source path, a key is still only a key: there is none there
        assert not fs.exists(f"{absolute}/t2m/0.0")

    def test_relative_path_chained(self, tmp_path, monkeypatch):
        paths = _write_named_like(tmp_path / "t2m", "t2m")
        monkeypatch.chdir(tmp_path)
        options = {"virtualzarr": {"concat_dim": "time"}}
        with xr.open_zarr("virtualzarr::t2m", storage_options=options) as ds:
            assert_same_dataset(ds.load(), open_truth(paths))

    @pytest.mark.parametrize("consolidated", [True, False])
    def test_chained_glob(self, tmp_path, consolidated):
        paths = _write_named_like(tmp_path / "t2m", "t2m")
        (tmp_path / "t2m" / "README.txt").write_text("not data\n")
        url = f"virtualzarr::{tmp_path}/t2m/*.nc"
        # fresh options each time: fsspec's chaining adds zarr's asynchronous=True to them
        options = {"virtualzarr": {"concat_dim": "time"}}
        with xr.open_zarr(url, storage_options=options, consolidated=consolidated) as ds:
            assert_same_dataset(ds.load(), open_truth(paths))
        fs, root = fsspec.core.url_to_fs(url, virtualzarr={"concat_dim": "time"})
        assert root == f"{tmp_path}/t2m/*.nc"
        # zarr lists a chained store below the root it was given, and strips it again
        assert fs.ls(f"{root}/t2m", detail=False)[0] == f"{root}/t2m/.zarray"
        _assert_serves(fs, paths, "t2m")


@pytest.fixture
def in_memory(tmp_path: Path) -> Iterator[list[Path]]:
    """A collection at ``memory://data`` whose variable is ``data``: the chained root
    (``/data``) is also a variable's name."""
    paths = _write_named_like(tmp_path / "data", "data")
    memory = fsspec.filesystem("memory")
    for path in paths:
        memory.pipe_file(f"/data/{path.name}", path.read_bytes())
    state_module.clear_states()
    yield paths
    memory.rm("/data", recursive=True)
    state_module.clear_states()


class TestChainedRootNamedLikeAVariable:
    @property
    def OPTIONS(self) -> dict[str, object]:
        # fresh each time: fsspec's chaining adds zarr's asynchronous=True to them
        return {"concat_dim": "time", "cache": False}

    def test_path_is_never_stripped(self, in_memory):
        fs = _store("/data", target_protocol="memory", cache=False)
        _assert_serves(fs, in_memory, "data")

    def test_chained_url_refuses_the_ambiguous_keys(self, in_memory):
        with pytest.raises(AmbiguousKeyError, match=r"'\.zattrs'.*'data/\.zattrs'"):
            options = {"virtualzarr": self.OPTIONS}
            xr.open_zarr("virtualzarr::memory://data", storage_options=options)

    def test_chained_keys_below_the_root(self, in_memory):
        fs, root = fsspec.core.url_to_fs("virtualzarr::memory://data", virtualzarr=self.OPTIONS)
        assert root == "/data"
        truth = open_truth(in_memory, decode_cf=False)["data"]
        # below the root, unambiguous: only one reading names something
        assert _attrs(fs, "/data/data/.zattrs")["_ARRAY_DIMENSIONS"] == ["time", "x"]
        array = zarr.open_array(fs.get_mapper("/data/data"), mode="r")
        np.testing.assert_array_equal(array[...], truth.values)
        assert "/data/data/0.0" in fs.ls("/data/data", detail=False)
        for ambiguous in ["/data/.zattrs", "/data", "data/.zattrs", "data"]:
            with pytest.raises(AmbiguousKeyError):
                fs.info(ambiguous)
        with pytest.raises(AmbiguousKeyError):
            fs.cat_file("/data/.zattrs")

    def test_get_mapper_on_a_chained_instance(self, in_memory):
        fs = fsspec.filesystem("virtualzarr", fo="/data", target_protocol="memory", **self.OPTIONS)
        # the root's own keys do not start with "data": consolidated metadata and chunk keys
        # ("data/0.0": nothing below the root is called "0.0") are unambiguous
        with xr.open_zarr(fs.get_mapper(""), consolidated=True) as ds:
            assert_same_dataset(ds.load(), open_truth(in_memory))
        mapper = fs.get_mapper("")
        with pytest.raises(AmbiguousKeyError, match=r"'\.zattrs'"):
            mapper["data/.zattrs"]
        with pytest.raises(AmbiguousKeyError):
            zarr.open_array(fs.get_mapper("data"), mode="r")

    def test_first_access_through_a_mapper(self, in_memory):
        # nothing scanned yet: the key is read on the event loop, before any state exists
        fs = fsspec.filesystem("virtualzarr", fo="/data", target_protocol="memory", **self.OPTIONS)
        with pytest.raises(AmbiguousKeyError):
            fs.get_mapper("")["data/.zattrs"]
        state_module.clear_states()
        options = {"fo": "/data", "target_protocol": "memory", **self.OPTIONS}
        fresh = fsspec.filesystem("virtualzarr", **options)
        chunk = fresh.get_mapper("")["data/0.0"]
        state = fresh.collection()
        source = resolve_key(state.manifest, state.metadata, "data/0.0")
        end = source.offset + source.length
        assert chunk == fsspec.filesystem("memory").cat_file(source.url, source.offset, end)

    def test_undecided_before_the_scan_is_decided_by_the_lookup(self, in_memory):
        fs, _ = fsspec.core.url_to_fs(
            "virtualzarr::memory://data", virtualzarr={**self.OPTIONS, "asynchronous": True}
        )

        async def first_access() -> bytes:
            return await fs._cat_file("data/0.0")  # the very first access: nothing scanned

        chunk = fsspec.asyn.sync(fsspec.asyn.get_loop(), first_access)
        state = state_module.peek_state(fs._spec)
        source = resolve_key(state.manifest, state.metadata, "data/0.0")
        assert chunk == fsspec.filesystem("memory").cat_file(
            source.url, source.offset, source.offset + source.length
        )
