"""Export to Icechunk (``fs.to_icechunk``): the repository, read through icechunk and
xarray, equals the store and a direct read of the files, before and after an append, a
rewrite and a second export; a second export writes only what changed; a source changed
after the export makes Icechunk's read fail."""

from __future__ import annotations

import errno
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import icechunk
import netCDF4
import numpy as np
import pytest
import xarray as xr
from conftest import write_groups, write_packed, write_series
from oracle import assert_same_dataset, open_truth
from servers import HTTPServer, serve_directory, serve_s3

from fsspec_virtual import VirtualZarrFileSystem
from fsspec_virtual.access import FileVersion
from fsspec_virtual.export.icechunk import COMMIT_KEY, _location, checksum
from fsspec_virtual.manifest import COMPUTED, INLINE
from fsspec_virtual.state import clear_states

pytestmark = pytest.mark.filterwarnings(
    "ignore:Numcodecs codecs are not in the Zarr version 3 specification"
)


def _store(path: Path | str | list[str], **kwargs: Any) -> VirtualZarrFileSystem:
    kwargs.setdefault("concat_dim", "time")
    source = path if isinstance(path, list) else str(path)
    return VirtualZarrFileSystem(source, cache=False, max_workers=1, **kwargs)


def _open(storage: Any, prefixes: tuple[str, ...], **kwargs: Any) -> xr.Dataset:
    """The repository's main branch as a reader opens it: the containers authorized."""
    repo = icechunk.Repository.open(
        storage, authorize_virtual_chunk_access={prefix: None for prefix in prefixes}
    )
    session = repo.readonly_session("main")
    with xr.open_zarr(session.store, consolidated=False, zarr_format=3, **kwargs) as ds:
        return ds.load()


def _served(fs: VirtualZarrFileSystem, **kwargs: Any) -> xr.Dataset:
    with xr.open_zarr(fs.get_mapper(""), **kwargs) as ds:
        return ds.load()


def _chunks_of(fs: VirtualZarrFileSystem, path: Path) -> dict[str, set[tuple[int, ...]]]:
    """The chunk indices of each array that are byte ranges of ``path``."""
    manifest = fs.collection().manifest
    fid = manifest.urls.index(str(path))
    return {
        name: {tuple(int(i) for i in ix) for ix in np.argwhere(a.grid.file_id == fid)}
        for name, a in manifest.arrays.items()
        if (a.grid.file_id == fid).any()
    }


def _real_chunks(fs: VirtualZarrFileSystem) -> dict[str, set[tuple[int, ...]]]:
    manifest = fs.collection().manifest
    out = {}
    for name, a in manifest.arrays.items():
        real = (a.grid.file_id == INLINE) | (a.grid.file_id == COMPUTED)
        out[name] = {tuple(int(i) for i in ix) for ix in np.argwhere(real)}
    return out


def _updated(storage: Any, before: str, after: str) -> dict[str, set[tuple[int, ...]]]:
    """The chunks Icechunk says a commit changed (its own account, not ours)."""
    repo = icechunk.Repository.open(storage)
    diff = repo.diff(from_snapshot_id=before, to_snapshot_id=after)
    return {
        path.lstrip("/"): {tuple(ix) for ix in chunks}
        for path, chunks in diff.updated_chunks.items()
    }


def test_export_reads_as_the_store_and_the_files(tmp_path: Path) -> None:
    """Files of 3 steps with chunks of 2: passthrough and computed chunks, inline
    coordinates, a scalar, every dtype."""
    files = write_series(tmp_path / "d", [[0, 1, 2], [3, 4, 5]])
    fs = _store(tmp_path / "d")
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    result = fs.to_icechunk(storage, message="first")
    assert result.committed and result.rewritten is None
    assert result.containers == (f"file://{tmp_path / 'd'}/",)
    manifest = fs.collection().manifest
    virtual = sum(int((a.grid.file_id >= 0).sum()) for a in manifest.arrays.values())
    assert result.references == virtual > 0
    assert result.chunks == sum(len(c) for c in _real_chunks(fs).values()) > 0
    exported = _open(storage, result.containers)
    assert_same_dataset(exported, open_truth(files), "icechunk vs files")
    assert_same_dataset(exported, _served(fs), "icechunk vs store")
    undecoded = _open(storage, result.containers, decode_cf=False)
    assert_same_dataset(undecoded, _served(fs, decode_cf=False), "undecoded")

    tip = icechunk.Repository.open(storage).lookup_snapshot(result.commit)
    assert tip.message == "first"
    recorded = tip.metadata[COMMIT_KEY]
    assert recorded["snapshot"] == fs.collection().id
    assert [p for p, _ in recorded["files"]] == [str(f) for f in files]
    assert recorded["references"] == result.references


@pytest.mark.parametrize("name", ["a b", "x%20y", "h#ash", "q?u", "é"])
def test_local_paths_that_urls_escape(tmp_path: Path, name: str) -> None:
    """Icechunk reads a location as a URL: a path with characters URLs escape is
    percent-encoded, in a container whose own prefix needs no escaping."""
    files = write_series(tmp_path / name, [[0, 1]])
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    result = _store(tmp_path / name).to_icechunk(storage)
    assert result.containers == (f"file://{tmp_path}/",)
    assert_same_dataset(_open(storage, result.containers), open_truth(files), name)


def test_a_reader_must_authorize_the_containers(tmp_path: Path) -> None:
    write_series(tmp_path / "d", [[0, 1]])
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    _store(tmp_path / "d").to_icechunk(storage)
    with pytest.raises(Exception, match="authoriz"):
        _open(storage, ())


def test_a_second_export_writes_only_the_appended_file(tmp_path: Path) -> None:
    files = write_series(tmp_path / "d", [[0, 1, 2], [3, 4, 5]])
    fs = _store(tmp_path / "d")
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    first = fs.to_icechunk(storage)
    again = fs.to_icechunk(storage)  # nothing changed: nothing written, no commit
    assert not again.committed and again.commit == first.commit
    assert (again.references, again.chunks, again.deleted, again.documents) == (0, 0, 0, 0)

    files += write_series(tmp_path / "d", [[6, 7, 8]], names=["part02.nc"])
    assert fs.refresh().added == (str(files[-1]),)
    second = fs.to_icechunk(storage)
    assert second.committed and second.rewritten is None
    new_file = _chunks_of(fs, files[-1])
    assert second.references == sum(len(c) for c in new_file.values()) > 0
    # Icechunk's own account of the commit: the new file's chunks, and real chunks only
    updated = _updated(storage, first.commit, second.commit)
    real = _real_chunks(fs)
    for name, chunks in new_file.items():
        assert chunks <= updated.get(name, set()), name
    for name, chunks in updated.items():
        assert chunks <= new_file.get(name, set()) | real.get(name, set()), name
    exported = _open(storage, second.containers)
    assert_same_dataset(exported, open_truth(files), "after append")
    assert_same_dataset(exported, _served(fs), "after append vs store")


def _rewrite(path: Path, seed: int) -> None:
    """New values in the same layout (the chunks stay at their offsets), and a
    modification time well after the export's."""
    with netCDF4.Dataset(path, "r+") as nc:
        for name, var in nc.variables.items():
            if name.startswith("v_"):
                var.set_auto_maskandscale(False)
                var[:] = np.asarray(var[:])[::-1]
    later = time.time() + 10
    os.utime(path, (later, later))


def test_a_rewritten_source_fails_the_read_until_exported_again(tmp_path: Path) -> None:
    files = write_series(tmp_path / "d", [[0, 1], [2, 3]])
    fs = _store(tmp_path / "d")
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    first = fs.to_icechunk(storage)
    _rewrite(files[1], seed=9)
    with pytest.raises(Exception, match="checksum of the object owning the virtual chunk"):
        _open(storage, first.containers)
    assert fs.refresh().changed == (str(files[1]),)
    second = fs.to_icechunk(storage)
    assert second.references == sum(len(c) for c in _chunks_of(fs, files[1]).values())
    assert_same_dataset(_open(storage, second.containers), open_truth(files), "rewritten")


def test_a_removed_file_deletes_its_chunks(tmp_path: Path) -> None:
    files = write_series(tmp_path / "d", [[0, 1], [2, 3], [4, 5]])
    fs = _store(tmp_path / "d")
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    fs.to_icechunk(storage)
    files[2].unlink()
    assert fs.refresh().removed == (str(files[2]),)
    second = fs.to_icechunk(storage)
    assert second.deleted > 0 and second.references == 0
    assert_same_dataset(_open(storage, second.containers), open_truth(files[:2]), "removed")


def test_chunks_that_become_missing_are_deleted(tmp_path: Path) -> None:
    """A file removed (the arrays shrink, and grow again), and a file rewritten with
    fewer variables (theirs are missing there now): no reference to what is gone
    survives, and the missing chunks read as fill values."""
    files = write_series(tmp_path / "d", [[0, 1], [2, 3], [4, 5], [6, 7]])
    fs = _store(tmp_path / "d")
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    fs.to_icechunk(storage)
    files[3].unlink()
    fs.refresh()
    fs.to_icechunk(storage)
    write_series(tmp_path / "d", [[6, 7]], names=["part04.nc"])
    files[2].unlink()
    write_series(tmp_path / "d", [[4, 5]], dtypes=["int8"], names=["part02.nc"])
    later = time.time() + 10
    os.utime(files[2], (later, later))
    changes = fs.refresh()
    assert changes.changed == (str(files[2]),)
    result = fs.to_icechunk(storage)
    assert result.deleted > 0
    exported = _open(storage, result.containers)
    assert np.isnan(exported["v_float64"].values[4:6]).all()
    assert_same_dataset(exported, _served(fs), "missing")


def test_an_unknown_previous_snapshot_rewrites_everything(tmp_path: Path) -> None:
    files = write_series(tmp_path / "d", [[0, 1, 2], [3, 4, 5]])
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    _store(tmp_path / "d").to_icechunk(storage)
    files += write_series(tmp_path / "d", [[6, 7, 8]], names=["part02.nc"])
    clear_states()  # another process: the first snapshot is known nowhere (no scan cache)
    fs = _store(tmp_path / "d")
    result = fs.to_icechunk(storage)
    assert result.rewritten is not None and "neither kept" in result.rewritten
    manifest = fs.collection().manifest
    assert result.references == sum(
        int((a.grid.file_id >= 0).sum()) for a in manifest.arrays.values()
    )
    assert_same_dataset(_open(storage, result.containers), open_truth(files), "rewritten")


def test_a_repository_written_by_others_is_replaced(tmp_path: Path) -> None:
    import zarr

    files = write_series(tmp_path / "d", [[0, 1]])
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    session = repo.writable_session("main")
    root = zarr.create_group(session.store)
    root.create_array("foreign", shape=(3,), dtype="i4")[:] = [1, 2, 3]
    session.commit("someone else's")
    result = _store(tmp_path / "d").to_icechunk(repo)
    assert result.rewritten == "the branch's last commit was not written by fsspec-virtual"
    assert_same_dataset(_open(repo.storage, result.containers), open_truth(files), "replaced")


def test_another_branch(tmp_path: Path) -> None:
    files = write_series(tmp_path / "d", [[0, 1]])
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    result = _store(tmp_path / "d").to_icechunk(storage, branch="daily")
    repo = icechunk.Repository.open(
        storage, authorize_virtual_chunk_access={p: None for p in result.containers}
    )
    assert repo.lookup_branch("daily") == result.commit
    store = repo.readonly_session("daily").store
    with xr.open_zarr(store, consolidated=False, zarr_format=3) as ds:
        assert_same_dataset(ds.load(), open_truth(files), "branch")


@pytest.mark.parametrize(
    "case", ["groups", "packed", "netcdf3", "strings", "computed_packing"], ids=str
)
def test_round_trips(tmp_path: Path, case: str) -> None:
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    if case == "groups":
        (tmp_path / "d").mkdir()
        path = write_groups(tmp_path / "d" / "g.nc")
        fs = _store(path, concat_dim=None)
        result = fs.to_icechunk(storage)
        for group in (None, "g1", "g1/g2"):
            repo = icechunk.Repository.open(
                storage, authorize_virtual_chunk_access={p: None for p in result.containers}
            )
            store = repo.readonly_session("main").store
            with xr.open_zarr(store, group=group, consolidated=False, zarr_format=3) as ds:
                truth = open_truth([path], None, group=group)
                assert_same_dataset(ds.load(), truth, f"group {group}")
        return
    if case == "packed":
        files = write_packed(tmp_path / "d")
    elif case == "computed_packing":  # packing differs between files: chunks computed
        files = write_packed(tmp_path / "d", 1)
        files += write_packed(tmp_path / "e", 2, scale_dtype="f8")[1:]
        files = [files[0], files[1].rename(tmp_path / "d" / files[1].name)]
    elif case == "netcdf3":
        files = write_series(tmp_path / "d", [[0, 1, 2], [3, 4]], fmt="NETCDF3_CLASSIC")
    else:
        files = []
        for i in range(2):
            path = tmp_path / "d" / f"s{i}.nc"
            path.parent.mkdir(exist_ok=True)
            with netCDF4.Dataset(path, "w") as nc:
                nc.createDimension("time", 2)
                nc.createVariable("time", "f8", ("time",))[:] = [2 * i, 2 * i + 1]
                names = nc.createVariable("name", str, ("time",))
                for k, text in enumerate(["a", "bé"] if i == 0 else ["", "long text"]):
                    names[k] = text
            files.append(path)
    fs = _store(tmp_path / "d")
    result = fs.to_icechunk(storage)
    exported = _open(storage, result.containers)
    assert_same_dataset(exported, open_truth(files), case)
    assert_same_dataset(exported, _served(fs), f"{case} vs store")


def test_arrays_without_a_v3_codec_spelling_are_written_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An array whose codec pipeline has no Zarr v3 spelling is declared with ``bytes``
    alone: its chunks are written decoded, as real chunks, never as references to the
    encoded bytes (read through that document, they would be wrong values). Here the
    int16 and float64 pipelines are made unspellable; a second export after an append
    writes the new file's chunks of them only."""
    from fsspec_virtual import codecs_v3

    spelled = codecs_v3.v3_codecs

    def unspellable(meta: Any) -> Any:
        coded = meta.compressor or meta.filters
        return None if meta.dtype in ("<i2", "<f8") and coded else spelled(meta)

    monkeypatch.setattr(codecs_v3, "v3_codecs", unspellable)
    files = write_series(tmp_path / "d", [[0, 1], [2, 3]])
    fs = _store(tmp_path / "d")
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    first = fs.to_icechunk(storage)
    exported = _open(storage, first.containers)
    assert_same_dataset(exported, open_truth(files), "decoded")
    session = icechunk.Repository.open(storage).readonly_session("main")
    for name in ("v_int16", "v_float64", "v_int32"):
        kind = session.chunk_type(f"/{name}", [0, 0])
        assert (kind == icechunk.ChunkType.VIRTUAL) == (name == "v_int32"), (name, kind)
    files += write_series(tmp_path / "d", [[4, 5]], names=["part02.nc"])
    fs.refresh()
    second = fs.to_icechunk(storage)
    updated = _updated(storage, first.commit, second.commit)
    new_file = _chunks_of(fs, files[-1])
    assert updated["v_int16"] == new_file["v_int16"] == {(2, 0)}
    assert updated["v_float64"] == new_file["v_float64"]
    assert_same_dataset(_open(storage, second.containers), open_truth(files), "appended")


def test_checksums() -> None:
    url = "https://example.org/f.nc"
    strong = FileVersion(10, etag='"abc"', last_modified="Wed, 02 Dec 2026 13:59:23 GMT")
    assert checksum(url, strong) == {"etag_checksum": '"abc"'}
    weak = FileVersion(10, etag='W/"abc"', last_modified="Wed, 02 Dec 2026 13:59:23 GMT")
    when = checksum(url, weak)["last_updated_at_checksum"]
    assert when.isoformat() == "2026-12-02T13:59:23+00:00"
    s3 = FileVersion(10, last_modified="2026-12-02 13:59:23+00:00")
    assert checksum(url, s3)["last_updated_at_checksum"] == when
    local = FileVersion(10, mtime_ns=1_700_000_000_250_000_000, inode=1, ctime_ns=1)
    # rounded up: Icechunk compares whole seconds and refuses a file modified after
    assert checksum(url, local)["last_updated_at_checksum"].timestamp() == 1_700_000_001
    with pytest.raises(ValueError, match="neither a strong ETag nor a modification time"):
        checksum(url, FileVersion(10))


def test_without_icechunk_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_series(tmp_path / "d", [[0, 1]])
    monkeypatch.setitem(sys.modules, "icechunk", None)
    with pytest.raises(ImportError, match=r"pip install fsspec-virtual\[icechunk\]"):
        _store(tmp_path / "d").to_icechunk(str(tmp_path / "repo"))


def test_not_a_repository_nor_a_storage(tmp_path: Path) -> None:
    write_series(tmp_path / "d", [[0, 1]])
    with pytest.raises(TypeError, match=r"icechunk\.Repository or an icechunk\.Storage"):
        _store(tmp_path / "d").to_icechunk(str(tmp_path / "repo"))


# -- HTTP sources ------------------------------------------------------------------------------


@contextmanager
def _served_on_port_80(root: Path) -> Iterator[HTTPServer]:
    """``root`` over HTTP on port 80 of a loopback address of its own (Icechunk 1.1 reads
    virtual chunks from the default port only)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(20):
        host = f"127.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}.{rng.randrange(2, 255)}"
        try:
            with serve_directory(root, host=host, port=80) as server:
                yield server
                return
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise RuntimeError("no free loopback address on port 80")


@pytest.mark.parametrize(
    ("etags", "port"),
    [(True, ""), (False, ""), (True, ":80")],
    ids=["etag", "last-modified", "port-80-spelled"],
)
def test_http_sources(tmp_path: Path, etags: bool, port: str) -> None:
    """Files on an HTTP server, checked by their ETag (Icechunk's If-Match) or, from a
    server that sends none, their Last-Modified (If-Unmodified-Since); a URL that spells
    the default port out is referenced without it, as Icechunk reads it."""
    www = tmp_path / "www"
    files = write_series(www, [[0, 1, 2], [3, 4, 5]])
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    with _served_on_port_80(www) as server:
        server.etags = etags
        fs = _store(server.url + port + "/")
        result = fs.to_icechunk(storage)
        assert result.containers == (server.url + "/",)
        exported = _open(storage, result.containers)
        assert_same_dataset(exported, open_truth(files), "http")
        assert_same_dataset(exported, _served(fs), "http vs store")
        server.reset()
        recorded = icechunk.Repository.open(storage).lookup_snapshot(result.commit)
        versions = [v for _, v in recorded.metadata[COMMIT_KEY]["files"]]
        assert all((FileVersion.from_list(v).etag is not None) == etags for v in versions)
        # a rewrite: the server's ETag or Last-Modified changes, and Icechunk is refused
        _rewrite(files[0], seed=3)
        with pytest.raises(Exception, match="checksum of the object owning the virtual chunk"):
            _open(storage, result.containers)
        assert any(h.status == 412 for h in server.hits)


def test_http_sources_on_another_port_are_refused(
    tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    root, url = http_root
    write_series(root, [[0, 1]])
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    with pytest.raises(NotImplementedError, match="drops the port of virtual chunk URLs"):
        _store(url + "/").to_icechunk(storage)
    assert not icechunk.Repository.exists(storage)  # refused before anything was written


def test_http_sources_with_credentials_in_their_urls_are_refused(tmp_path: Path) -> None:
    """A reference holds its URL: a password or a signature in it would be published
    with the repository."""
    www = tmp_path / "www"
    write_series(www, [[0, 1]])
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    with serve_directory(www) as server:
        url = server.require_basic_auth("reader", "s3cret")
        with pytest.raises(ValueError, match="holds credentials") as err:
            _store(url + "/").to_icechunk(storage)
    assert "s3cret" not in str(err.value)
    assert not icechunk.Repository.exists(storage)
    signed = "https://example.org/f.nc?X-Amz-Signature=s3cret"
    with pytest.raises(ValueError, match="holds credentials") as err:
        _location(signed, "https")
    assert "s3cret" not in str(err.value)


def test_s3_sources(tmp_path: Path) -> None:
    """Objects in a bucket of an S3-compatible server: the container takes the endpoint
    from the source's options, a reader gives the bucket's credentials, and a rewritten
    object (a new ETag) is refused by Icechunk's If-Match."""
    import fsspec

    files = write_series(tmp_path / "d", [[0, 1, 2], [3, 4, 5]])
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    with serve_s3() as s3:
        s3fs = fsspec.filesystem("s3", **s3.options())
        s3fs.mkdir("bucket")
        for path in files:
            s3fs.pipe_file(f"bucket/data/{path.name}", path.read_bytes())
        fs = _store("s3://bucket/data/", target_options=s3.options())
        result = fs.to_icechunk(storage)
        assert result.containers == ("s3://bucket/",)
        key = icechunk.s3_static_credentials(
            access_key_id="testing-key", secret_access_key="testing-secret"
        )
        repo = icechunk.Repository.open(
            storage,
            authorize_virtual_chunk_access=icechunk.containers_credentials({"s3://bucket/": key}),
        )

        def read() -> xr.Dataset:
            store = repo.readonly_session("main").store
            with xr.open_zarr(store, consolidated=False, zarr_format=3) as ds:
                return ds.load()

        assert_same_dataset(read(), open_truth(files), "s3")
        s3fs.pipe_file("bucket/data/part00.nc", files[1].read_bytes())
        with pytest.raises(Exception, match="checksum of the object owning the virtual chunk"):
            read()


def test_sources_icechunk_cannot_read_are_refused(tmp_path: Path) -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    write_series(tmp_path / "d", [[0, 1]])
    memory.put(str(tmp_path / "d" / "part00.nc"), "/ice/part00.nc")
    storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    with pytest.raises(NotImplementedError, match="'memory'"):
        _store("memory:///ice/").to_icechunk(storage)
