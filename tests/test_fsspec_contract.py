"""The fsspec face: listing, reading, ranges, errors, read-only, registration, serialisation.

Expected bytes always come from another face of the same store (``cat_file(key)`` sliced in
Python, ``.zmetadata`` against the individual keys) or from the source files.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import math
import pickle
import re
import uuid
from pathlib import Path
from typing import Any

import fsspec
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import write_groups, write_series, write_simple, write_sparse
from fsspec.asyn import AsyncFileSystem
from oracle import assert_same_dataset, open_truth

from fsspec_virtual import ReadOnlyError, VirtualZarrFileSystem

METADATA_NAMES = (".zgroup", ".zattrs", ".zarray", ".zmetadata")


def _write_store(kind: str, root: Path) -> dict[str, Any]:
    if kind == "series":
        paths = write_series(root, [[0, 1, 2, 3], [4, 5, 6, 7]], dtypes=["float32", "int16"])
        return {"path": str(root), "concat_dim": "time"}
    if kind == "groups":
        return {"path": str(write_groups(root / "groups.nc"))}
    if kind == "sparse":
        paths = [
            write_sparse(root / f"s{i}.nc", [4 * i + k for k in range(4)], declared_fill=True)
            for i in range(2)
        ]
        return {"path": [str(p) for p in paths], "concat_dim": "time"}
    raise ValueError(kind)


@pytest.fixture(scope="module", params=["series", "groups", "sparse"])
def store(request, tmp_path_factory) -> tuple[Any, dict[str, Any]]:
    """(fs, kwargs): a virtual store over real files, and the arguments that built it."""
    kwargs = _write_store(request.param, tmp_path_factory.mktemp(request.param))
    return fsspec.filesystem("virtualzarr", **kwargs), kwargs


@pytest.fixture(scope="module")
def series_store(tmp_path_factory) -> Any:
    return fsspec.filesystem(
        "virtualzarr", **_write_store("series", tmp_path_factory.mktemp("series"))
    )


@pytest.fixture(scope="module")
def sparse_store(tmp_path_factory) -> Any:
    return fsspec.filesystem(
        "virtualzarr", **_write_store("sparse", tmp_path_factory.mktemp("sparse"))
    )


def _parent(key: str) -> str:
    return key.rsplit("/", 1)[0] if "/" in key else ""


def _is_chunk(key: str) -> bool:
    return key.rsplit("/", 1)[-1] not in METADATA_NAMES


def _arrays(keys: set[str]) -> list[str]:
    return sorted(_parent(k) for k in keys if k.endswith(".zarray"))


def _chunk_index(key: str, zarray: dict[str, Any]) -> tuple[int, ...]:
    separator = zarray.get("dimension_separator", ".")
    name = key.rsplit("/", 1)[-1]
    return tuple(int(p) for p in name.split(separator))


def _grid(zarray: dict[str, Any]) -> tuple[int, ...]:
    return tuple(math.ceil(s / c) for s, c in zip(zarray["shape"], zarray["chunks"]))


def _largest_chunk(fs: Any) -> str:
    keys = [k for k in fs.find("") if _is_chunk(k)]
    return max(keys, key=lambda k: fs.info(k)["size"])


class TestRegistration:
    def test_entry_point(self):
        assert fsspec.get_filesystem_class("virtualzarr") is VirtualZarrFileSystem

    def test_filesystem_factory(self, tmp_path):
        fs = fsspec.filesystem("virtualzarr", path=str(tmp_path / "x"), concat_dim="time")
        assert isinstance(fs, VirtualZarrFileSystem)
        assert isinstance(fs, AsyncFileSystem)
        protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
        assert "virtualzarr" in protocols

    def test_recorded_class_path_is_importable(self, tmp_path):
        # fsspec's from_json silently falls back to the protocol's class when the recorded class
        # is not importable
        fs = fsspec.filesystem("virtualzarr", path=str(tmp_path / "x"), concat_dim="time")
        recorded = json.loads(fs.to_json())["cls"]  # "module:Class" (or "module.Class")
        module, _, name = recorded.rpartition(":") if ":" in recorded else recorded.rpartition(".")
        assert getattr(importlib.import_module(module), name) is VirtualZarrFileSystem


class TestLaziness:
    def test_construction_does_not_list(self, tmp_path):
        directory = tmp_path / "later"
        fs = fsspec.filesystem("virtualzarr", path=str(directory), concat_dim="time")
        # files appear after construction: they must be found at first access
        paths = [write_simple(directory / f"f{i}.nc", [2 * i, 2 * i + 1]) for i in range(2)]
        with xr.open_zarr(fs.get_mapper(""), consolidated=True) as ds:
            assert_same_dataset(ds.load(), open_truth(paths))

    def test_construction_on_nonexistent_path(self, tmp_path):
        fs = fsspec.filesystem("virtualzarr", path=str(tmp_path / "nope"), concat_dim="time")
        fs.to_json()
        pickle.dumps(fs)

    def test_explicit_concat_dim_none(self, tmp_path):
        path = write_simple(tmp_path / "one.nc", [0, 1, 2, 3])
        fs = fsspec.filesystem("virtualzarr", path=str(path), concat_dim=None)
        fs2 = fsspec.AbstractFileSystem.from_json(fs.to_json())
        assert fs2.cat_file(".zgroup") == fs.cat_file(".zgroup")
        with xr.open_zarr(fs.get_mapper(""), consolidated=True) as ds:
            assert_same_dataset(ds.load(), open_truth([path]))


class TestListing:
    def test_metadata_keys_present(self, store):
        fs, _ = store
        keys = set(fs.find(""))
        assert {".zgroup", ".zattrs", ".zmetadata"} <= keys
        arrays = _arrays(keys)
        assert arrays
        for array in arrays:
            assert f"{array}/.zattrs" in keys
        assert any(_is_chunk(k) for k in keys)

    def test_every_key_is_consistent(self, store):
        fs, _ = store
        keys = fs.find("")
        assert len(set(keys)) == len(keys), "find returned duplicates"
        listings: dict[str, dict[str, Any]] = {}
        for key in keys:
            assert fs.exists(key), key
            assert fs.isfile(key), key
            assert not fs.isdir(key), key
            info = fs.info(key)
            assert info["type"] == "file", key
            assert info["size"] == len(fs.cat_file(key)), key
            parent = _parent(key)
            if parent not in listings:
                listings[parent] = {e["name"]: e for e in fs.ls(parent, detail=True)}
            assert key in listings[parent], f"{key} not in ls({parent!r})"
            assert listings[parent][key]["size"] == info["size"], key
            assert listings[parent][key]["type"] == "file", key

    @pytest.mark.parametrize("decode", ["client", "store"])
    def test_computed_chunks_sizes_and_reads_agree(self, tmp_path, decode):
        """Chunks straddling two zlib files are computed and encoded: ``info`` (and
        ``open``) must give their encoded size, which ``ls`` does not know (None)."""
        write_simple(tmp_path / "a.nc", [0, 1, 2], chunks=(2, 4), seed=0)
        write_simple(tmp_path / "b.nc", [3, 4, 5], chunks=(2, 4), seed=1)
        fs = VirtualZarrFileSystem(str(tmp_path), concat_dim="time", cache=False, decode=decode)
        listed = {e["name"]: e["size"] for e in fs.ls("t", detail=True)}
        chunks = [k for k in listed if not k.rsplit("/", 1)[1].startswith(".")]
        assert "t/1.0" in chunks  # steps 2 and 3: one from each file
        for key in chunks:
            whole = fs.cat_file(key)
            assert fs.info(key)["size"] == len(whole), key
            with fs.open(key) as f:
                assert f.read() == whole, key
            assert listed[key] in (None, len(whole)), key
        served = zarr.open_group(fs.get_mapper(""), mode="r")["t"][:]
        with xr.open_mfdataset([tmp_path / "a.nc", tmp_path / "b.nc"]) as truth:
            np.testing.assert_array_equal(served, truth["t"].values)

    def test_directories_are_consistent(self, store):
        fs, _ = store
        keys = set(fs.find(""))
        directories = {_parent(k) for k in keys} - {""}
        for directory in list(directories):
            while "/" in directory:
                directory = _parent(directory)
                directories.add(directory)
        for directory in directories:
            assert fs.isdir(directory), directory
            assert fs.exists(directory), directory
            assert fs.info(directory)["type"] == "directory", directory
            assert directory in fs.ls(_parent(directory), detail=False), directory
        with_dirs = set(fs.find("", withdirs=True))
        assert with_dirs == keys | directories

    def test_ls_names_only_existing_entries(self, store):
        fs, _ = store
        keys = set(fs.find(""))
        directories = {_parent(k) for k in keys}
        for directory in directories:
            for entry in fs.ls(directory, detail=True):
                name = entry["name"]
                assert _parent(name) == directory, (directory, name)
                if entry["type"] == "file":
                    assert name in keys
                else:
                    assert fs.isdir(name)

    def test_walk_agrees_with_find(self, store):
        fs, _ = store
        walked = set()
        for root, _dirs, files in fs.walk(""):
            for name in files:
                walked.add(f"{root}/{name}".lstrip("/") if root else name)
        assert walked == set(fs.find(""))

    def test_glob(self, store):
        fs, _ = store
        keys = set(fs.find(""))
        top = {k for k in keys if k.count("/") == 1 and k.endswith("/.zarray")}
        assert set(fs.glob("*/.zarray")) == top
        assert set(fs.glob("**/.zarray")) == {k for k in keys if k.endswith(".zarray")}
        assert set(fs.glob(".z*")) == {k for k in keys if "/" not in k and k.startswith(".z")}

    def test_zmetadata_matches_the_individual_keys(self, store):
        fs, _ = store
        keys = set(fs.find(""))
        consolidated = json.loads(fs.cat_file(".zmetadata"))
        assert consolidated["zarr_consolidated_format"] == 1
        metadata = consolidated["metadata"]
        expected = {k for k in keys if k.rsplit("/", 1)[-1] in (".zgroup", ".zattrs", ".zarray")}
        assert set(metadata) == expected
        for key in expected:
            assert metadata[key] == json.loads(fs.cat_file(key)), key

    def test_chunk_keys_lie_on_the_grid(self, store):
        fs, _ = store
        keys = set(fs.find(""))
        for array in _arrays(keys):
            zarray = json.loads(fs.cat_file(f"{array}/.zarray"))
            assert zarray["zarr_format"] == 2
            zattrs = json.loads(fs.cat_file(f"{array}/.zattrs"))
            assert len(zattrs["_ARRAY_DIMENSIONS"]) == len(zarray["shape"]), array
            grid = _grid(zarray)
            for key in keys:
                if _parent(key) == array and _is_chunk(key):
                    index = _chunk_index(key, zarray)
                    assert len(index) == max(len(grid), 1), key
                    assert all(0 <= i < max(n, 1) for i, n in zip(index, grid)), key

    def test_missing_chunks_are_missing_keys(self, sparse_store):
        fs = sparse_store
        keys = set(fs.find(""))
        missing = []
        for array in _arrays(keys):
            zarray = json.loads(fs.cat_file(f"{array}/.zarray"))
            grid = _grid(zarray)
            if not grid:
                continue
            sep = zarray.get("dimension_separator", ".")
            for index in itertools.product(*(range(n) for n in grid)):
                key = f"{array}/" + sep.join(map(str, index))
                if key not in keys:
                    missing.append(key)
        assert missing, "the sparse files have unwritten chunks"
        for key in missing:
            assert not fs.exists(key), key
            with pytest.raises(FileNotFoundError):
                fs.cat_file(key)
            with pytest.raises(FileNotFoundError):
                fs.info(key)

    @pytest.mark.parametrize(
        "key",
        ["nope", "nope/.zarray", ".zarray", "{array}/99.99", "{array}/0.0.0.0", "{array}/a.b"],
    )
    def test_nonexistent_keys(self, series_store, key):
        fs = series_store
        key = key.format(array="v_float32")
        assert not fs.exists(key)
        with pytest.raises(FileNotFoundError):
            fs.cat_file(key)
        with pytest.raises(FileNotFoundError):
            fs.info(key)
        with pytest.raises(FileNotFoundError):
            fs.open(key, "rb").read()

    def test_group_keys(self, tmp_path):
        fs = fsspec.filesystem("virtualzarr", path=str(write_groups(tmp_path / "g.nc")))
        for key in ("g1/.zgroup", "g1/g2/.zgroup", "g1/g2/d/.zarray", "g1/a/.zattrs", "g3/.zattrs"):
            assert fs.exists(key), key
        assert json.loads(fs.cat_file("g1/g2/d/.zattrs"))["_ARRAY_DIMENSIONS"] == ["x", "z"]


RANGES = [
    (None, None),
    (0, None),
    (3, None),
    (None, 5),
    (2, 7),
    (0, 1),
    (-5, None),
    (None, -3),
    (-7, -2),
    (-3, 2),
    (5, 2),
    (4, 4),
    (0, 10**9),
    (10**9, None),
    (-(10**9), None),
    (None, -(10**9)),
]


class TestCatFile:
    @pytest.mark.parametrize(("start", "end"), RANGES, ids=str)
    @pytest.mark.parametrize("which", ["chunk", "zmetadata", "time-chunk"])
    def test_ranges_slice_like_python(self, series_store, which, start, end):
        fs = series_store
        key = {"chunk": _largest_chunk(fs), "zmetadata": ".zmetadata", "time-chunk": "time/0"}[
            which
        ]
        full = fs.cat_file(key)
        assert len(full) > 10
        assert fs.cat_file(key, start=start, end=end) == full[start:end]

    def test_cat_ranges_return_errors_in_place(self, series_store):
        fs = series_store
        chunk = _largest_chunk(fs)
        paths = [chunk, "missing/0.0", ".zmetadata", chunk, "v_float32/99.99", ".zgroup"]
        starts = [0, 0, -10, 3, None, None]
        ends = [5, 5, None, -3, None, None]
        results = fs.cat_ranges(paths, starts, ends, on_error="return")
        assert len(results) == len(paths)
        for path, start, end, result in zip(paths, starts, ends, results):
            if path.startswith("missing") or "99" in path:
                assert isinstance(result, FileNotFoundError), (path, result)
            else:
                assert result == fs.cat_file(path)[start:end], path

    def test_cat_ranges_raise(self, series_store):
        with pytest.raises(FileNotFoundError):
            series_store.cat_ranges(
                [".zgroup", "missing"], [None, None], [None, None], on_error="raise"
            )

    def test_cat_ranges_many_chunks(self, series_store):
        fs = series_store
        chunks = [k for k in fs.find("") if _is_chunk(k)]
        results = fs.cat_ranges(chunks, [None] * len(chunks), [None] * len(chunks))
        assert results == [fs.cat_file(k) for k in chunks]

    def test_cat_many(self, series_store):
        fs = series_store
        chunk = _largest_chunk(fs)
        out = fs.cat([".zgroup", chunk])
        assert out == {".zgroup": fs.cat_file(".zgroup"), chunk: fs.cat_file(chunk)}
        assert fs.cat(".zattrs") == fs.cat_file(".zattrs")

    def test_cat_missing(self, series_store):
        fs = series_store
        with pytest.raises(FileNotFoundError):
            fs.cat("missing/.zarray")
        out = fs.cat([".zgroup", "missing/.zarray"], on_error="return")
        assert out[".zgroup"] == fs.cat_file(".zgroup")
        assert isinstance(out["missing/.zarray"], FileNotFoundError)

    @pytest.mark.parametrize("which", ["chunk", ".zmetadata"])
    def test_open(self, series_store, which):
        fs = series_store
        key = _largest_chunk(fs) if which == "chunk" else which
        full = fs.cat_file(key)
        with fs.open(key, "rb") as f:
            assert f.read() == full
        with fs.open(key, "rb") as f:
            f.seek(3)
            assert f.read(4) == full[3:7]
            f.seek(-2, 2)
            assert f.read() == full[-2:]
        assert fs.open(key).size == len(full)

    def test_mapper(self, series_store):
        fs = series_store
        mapper = fs.get_mapper("")
        keys = set(fs.find(""))
        assert set(mapper) == keys
        chunk = _largest_chunk(fs)
        assert mapper[chunk] == fs.cat_file(chunk)
        assert ".zgroup" in mapper
        assert "missing" not in mapper
        with pytest.raises(KeyError):
            mapper["missing/0"]

    def test_chunk_bytes_are_the_source_bytes(self, tmp_path):
        # an uncompressed chunk is the variable's raw bytes, straight from the file
        path = write_simple(
            tmp_path / "raw.nc", [0, 1, 2, 3], compression=None, shuffle=False, chunks=(2, 4)
        )
        fs = fsspec.filesystem("virtualzarr", path=str(path))
        zarray = json.loads(fs.cat_file("t/.zarray"))
        assert zarray["compressor"] is None and not zarray.get("filters")
        with netCDF4.Dataset(path) as nc:
            nc.set_auto_maskandscale(False)
            values = nc["t"][2:4, :]
        assert fs.cat_file("t/1.0") == np.ascontiguousarray(values, dtype=zarray["dtype"]).tobytes()


class TestAsync:
    def test_coroutines_in_a_running_loop(self, series_store):
        # coroutines must never call synced methods (that raises inside a running loop)
        sync = series_store
        chunk = _largest_chunk(sync)
        storage_args, storage_options = sync.storage_args, sync.storage_options

        async def run() -> dict[str, Any]:
            fs = VirtualZarrFileSystem(*storage_args, **storage_options, asynchronous=True)
            return {
                "ls": await fs._ls("", detail=False),
                "info": await fs._info(chunk),
                "cat_file": await fs._cat_file(chunk, start=-5, end=None),
                "cat_ranges": await fs._cat_ranges([chunk, "missing"], [0, 0], [3, 3]),
                "find": await fs._find(""),
                "exists": await fs._exists(".zgroup"),
                "cat": await fs._cat([".zgroup", chunk]),
            }

        out = asyncio.run(run())
        assert sorted(out["ls"]) == sorted(sync.ls("", detail=False))
        assert out["info"]["size"] == sync.info(chunk)["size"]
        assert out["cat_file"] == sync.cat_file(chunk)[-5:]
        assert out["cat_ranges"][0] == sync.cat_file(chunk)[:3]
        assert isinstance(out["cat_ranges"][1], FileNotFoundError)
        assert out["find"] == sync.find("")
        assert out["exists"] is True
        assert out["cat"] == {".zgroup": sync.cat_file(".zgroup"), chunk: sync.cat_file(chunk)}

    def test_rebuilt_like_zarr_does(self, series_store):
        # zarr's FsspecStore: type(fs)(*fs.storage_args, **fs.storage_options, asynchronous=True)
        fs = series_store
        rebuilt = type(fs)(*fs.storage_args, **fs.storage_options, asynchronous=False)
        assert rebuilt.find("") == fs.find("")


def _write_op(fs: Any, tmp_path: Path, op: str) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(b"123")
    ops = {
        "pipe_file": lambda: fs.pipe_file(".zgroup", b"{}"),
        "pipe_new": lambda: fs.pipe_file("new/.zarray", b"{}"),
        "pipe": lambda: fs.pipe({"new": b"1"}),
        "rm": lambda: fs.rm(".zgroup"),
        "rm_recursive": lambda: fs.rm("v_float32", recursive=True),
        "rm_file": lambda: fs.rm_file(".zattrs"),
        "open_wb": lambda: fs.open("new_key", "wb"),
        "open_ab": lambda: fs.open(".zattrs", "ab"),
        "open_r+b": lambda: fs.open(".zattrs", "r+b"),
        "mkdir": lambda: fs.mkdir("newdir"),
        "makedirs": lambda: fs.makedirs("a/b/c"),
        "rmdir": lambda: fs.rmdir("v_float32"),
        "touch": lambda: fs.touch("touched"),
        "put_file": lambda: fs.put_file(str(local), "uploaded"),
        "put": lambda: fs.put(str(local), "uploaded"),
        "cp_file": lambda: fs.cp_file(".zgroup", "copy"),
        "copy": lambda: fs.copy(".zgroup", "copy"),
        "mv": lambda: fs.mv(".zattrs", "moved"),
        "mapper_setitem": lambda: fs.get_mapper("").__setitem__("new", b"1"),
    }
    ops[op]()


WRITE_OPS = [
    "pipe_file",
    "pipe_new",
    "pipe",
    "rm",
    "rm_recursive",
    "rm_file",
    "open_wb",
    "open_ab",
    "open_r+b",
    "mkdir",
    "makedirs",
    "rmdir",
    "touch",
    "put_file",
    "put",
    "cp_file",
    "copy",
    "mv",
    "mapper_setitem",
]


class TestReadOnly:
    @pytest.mark.parametrize("op", WRITE_OPS)
    def test_write_is_refused(self, series_store, tmp_path, op):
        fs = series_store
        before = {k: fs.cat_file(k) for k in (".zgroup", ".zattrs")}
        keys = fs.find("")
        with pytest.raises(ReadOnlyError) as info:
            _write_op(fs, tmp_path, op)
        assert isinstance(info.value, PermissionError)
        assert fs.find("") == keys
        assert {k: fs.cat_file(k) for k in before} == before

    def test_zarr_refuses_to_write(self, series_store):
        with pytest.raises((ReadOnlyError, ValueError, PermissionError)):
            zarr.open_group(series_store.get_mapper(""), mode="r+").create_array(
                "new", shape=(2,), dtype="i4"
            )
        assert "new/.zarray" not in series_store.find("")


class TestSerialisation:
    def _assert_equivalent(self, fs2: Any, fs: Any) -> None:
        assert type(fs2) is type(fs)
        keys = fs.find("")
        assert fs2.find("") == keys
        for key in keys[:: max(len(keys) // 20, 1)]:
            assert fs2.cat_file(key) == fs.cat_file(key), key

    def test_json_round_trip(self, store):
        fs, _ = store
        self._assert_equivalent(fsspec.AbstractFileSystem.from_json(fs.to_json()), fs)

    def test_pickle_round_trip(self, store):
        fs, _ = store
        self._assert_equivalent(pickle.loads(pickle.dumps(fs)), fs)

    def test_pickle_stays_small(self, many_files):
        fs = fsspec.filesystem("virtualzarr", path=str(many_files[0].parent), concat_dim="time")
        n_keys = len(fs.find(""))  # scanned: the manifest exists now
        assert n_keys > 400  # 400 time steps, one chunk each
        assert len(pickle.dumps(fs)) < 10_000
        assert len(fs.to_json()) < 10_000
        self._assert_equivalent(pickle.loads(pickle.dumps(fs)), fs)

    def test_dask_tokenize_is_cheap_and_stable(self, series_store):
        import dask.base as dask_base

        assert dask_base.tokenize(series_store) == dask_base.tokenize(series_store)


class TestChaining:
    def test_url_to_fs(self, tmp_path):
        paths = [write_simple(tmp_path / f"f{i}.nc", [2 * i, 2 * i + 1]) for i in range(2)]
        fs, root = fsspec.core.url_to_fs(
            f"virtualzarr::{tmp_path}/*.nc", virtualzarr={"concat_dim": "time"}
        )
        assert isinstance(fs, VirtualZarrFileSystem)
        mapper = fsspec.get_mapper(
            f"virtualzarr::{tmp_path}/*.nc", virtualzarr={"concat_dim": "time"}
        )
        assert mapper[".zgroup"] == fs.cat_file(".zgroup")
        with xr.open_zarr(mapper, consolidated=True) as ds:
            assert_same_dataset(ds.load(), open_truth(paths))
        del root

    def test_fo_keyword(self, tmp_path):
        paths = [write_simple(tmp_path / f"f{i}.nc", [2 * i, 2 * i + 1]) for i in range(2)]
        fs = fsspec.filesystem("virtualzarr", fo=str(tmp_path), concat_dim="time")
        with xr.open_zarr(fs.get_mapper(""), consolidated=True) as ds:
            assert_same_dataset(ds.load(), open_truth(paths))

    def test_chained_file_url(self, tmp_path):
        paths = [write_simple(tmp_path / f"f{i}.nc", [2 * i, 2 * i + 1]) for i in range(2)]
        with xr.open_zarr(
            f"virtualzarr::file://{tmp_path}",
            storage_options={"virtualzarr": {"concat_dim": "time"}},
            consolidated=True,
        ) as ds:
            assert_same_dataset(ds.load(), open_truth(paths))

    def test_memory_target(self, tmp_path):
        source = write_simple(tmp_path / "m.nc", [0, 1, 2, 3])
        root = f"/vz-contract-{uuid.uuid4().hex}"
        memory = fsspec.filesystem("memory")
        memory.pipe_file(f"{root}/m.nc", source.read_bytes())
        try:
            fs = fsspec.filesystem(
                "virtualzarr", path=f"{root}/m.nc", target_protocol="memory", target_options={}
            )
            with xr.open_zarr(fs.get_mapper(""), consolidated=True) as ds:
                assert_same_dataset(ds.load(), open_truth([source]))
        finally:
            memory.rm(root, recursive=True)


def test_chunk_key_pattern(series_store):
    """Chunk keys are Zarr v2 keys: dot-separated integers (or '0' for scalars)."""
    for key in series_store.find(""):
        if _is_chunk(key):
            assert re.fullmatch(r"(.+/)?\d+(\.\d+)*", key), key
