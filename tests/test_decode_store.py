"""The store decoding chunks itself (``decode="store"``) serves what the files hold.

Every round-trip, computed-chunk, merged-chunk, snapshot and staleness case of
test_roundtrip, test_computed, test_coarsen, test_snapshots and test_refresh runs again
here with stores made with ``decode="store"`` (an autouse fixture makes it the default),
against the same direct reads; the tests below check what differs between the modes:
the ``.zarray`` documents, sizes, byte ranges and the option's travel through JSON/pickle.
"""

from __future__ import annotations

import pickle
from typing import Any

import fsspec
import h5py
import netCDF4
import numpy as np
import pytest
import zarr
from conftest import write_series
from oracle import read_each_format
from test_coarsen import (
    test_few_tiny_chunks_pass_through,
    test_tiny_chunks_are_merged_and_read_equal,
)
from test_computed import (
    TestChunkCache,
    TestDifferencesBetweenFiles,
    TestHDF5Features,
    TestMixedCollection,
    TestStillIncompatible,
    TestUnequalLengths,
    memory_root,
)
from test_refresh import (
    TestStaleReads,
    scans,
    test_a_client_opened_before_a_refresh_reads_its_snapshot_or_raises,
    test_changed_and_deleted_files,
    test_new_file_extends_the_axis_where_it_falls,
)
from test_roundtrip import (
    TestAttributes,
    TestConcurrency,
    TestDtypesAndLayouts,
    TestGroups,
    TestNetCDF3,
    TestOddFeatures,
    TestPacking,
    TestPartialChunks,
    TestPlainHDF5,
    TestTime,
    TestUnwrittenChunks,
)
from test_snapshots import (
    TestLocalReadsAreCheckedAfterwardsToo,
    TestOpenObjectsKeepTheirSnapshot,
    TestVersionsAreChecked,
    _fresh_states,
)

from fsspec_virtual import VirtualZarrFileSystem
from fsspec_virtual.codecs import decode_chunk

__all__ = [  # the cases collected again here, in decode="store" mode
    "TestAttributes",
    "TestChunkCache",
    "TestConcurrency",
    "TestDifferencesBetweenFiles",
    "TestDtypesAndLayouts",
    "TestGroups",
    "TestHDF5Features",
    "TestLocalReadsAreCheckedAfterwardsToo",
    "TestMixedCollection",
    "TestNetCDF3",
    "TestOddFeatures",
    "TestOpenObjectsKeepTheirSnapshot",
    "TestPacking",
    "TestPartialChunks",
    "TestPlainHDF5",
    "TestStaleReads",
    "TestStillIncompatible",
    "TestTime",
    "TestUnequalLengths",
    "TestUnwrittenChunks",
    "TestVersionsAreChecked",
    "_fresh_states",
    "memory_root",
    "scans",
    "test_a_client_opened_before_a_refresh_reads_its_snapshot_or_raises",
    "test_changed_and_deleted_files",
    "test_few_tiny_chunks_pass_through",
    "test_new_file_extends_the_axis_where_it_falls",
    "test_tiny_chunks_are_merged_and_read_equal",
]

_ORIGINAL_INIT = VirtualZarrFileSystem.__init__


@pytest.fixture(autouse=True)
def _store_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores made in this module's tests decode, unless a test says otherwise."""

    def init(self: Any, *args: Any, decode: str = "store", **kwargs: Any) -> None:
        _ORIGINAL_INIT(self, *args, decode=decode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(VirtualZarrFileSystem, "__init__", init)


def _store(path: Any, **kwargs: Any) -> Any:
    return fsspec.filesystem("virtualzarr", path=str(path), concat_dim="time", **kwargs)


def _collection(tmp_path: Any) -> list[Any]:
    return write_series(tmp_path / "src", [[0, 1, 2, 3], [4, 5, 6, 7]], chunk_time=2)


def _compressed(fs: Any) -> list[str]:
    """The arrays whose chunks the files hold compressed (as a passthrough store says)."""
    group = zarr.open_group(fs.get_mapper(""), mode="r")
    return [name for name in group.array_keys() if group[name].filters or group[name].compressors]


def test_the_fixture_makes_stores_decode(tmp_path):
    """The cases above run decoding: compressed arrays declare no codecs."""
    root = _collection(tmp_path)[0].parent
    fs = _store(root)
    assert fs._decode == "store"
    compressed = _compressed(_store(root, decode="client"))
    assert compressed, "the collection has compressed arrays"
    group = zarr.open_group(fs.get_mapper(""), mode="r")
    for name in compressed:
        assert not group[name].filters and group[name].compressors == ()


def test_chunks_are_the_decoded_values(tmp_path):
    paths = _collection(tmp_path)
    root = paths[0].parent
    fs = _store(root)
    names = [n for n in _compressed(_store(root, decode="client")) if n.startswith("v_")]
    assert names
    for name in names:
        parts = []
        for path in paths:
            with h5py.File(path, "r") as h5:
                parts.append(h5[name][...])
        truth = np.concatenate(parts)
        chunk = fs.cat_file(f"{name}/1.0")
        assert chunk == np.ascontiguousarray(truth[2:4]).tobytes(), name
        assert fs.info(f"{name}/1.0")["size"] == len(chunk)
        assert {e["name"]: e["size"] for e in fs.ls(name)}[f"{name}/1.0"] == len(chunk)
        assert fs.cat_file(f"{name}/1.0", start=1, end=5) == chunk[1:5]
        assert fs.cat_file(f"{name}/1.0", start=-3) == chunk[-3:]
        both = fs.cat_ranges([f"{name}/1.0"] * 2, [0, -4], [4, None])
        assert both == [chunk[:4], chunk[-4:]]
        with fs.open(f"{name}/1.0") as f:
            assert f.read() == chunk
        served = read_each_format(fs, name)  # Zarr format 3 reads the same
        assert served.dtype == truth.dtype
        assert np.array_equal(served, truth, equal_nan=served.dtype.kind == "f")


def test_string_arrays_keep_their_codecs(tmp_path):
    path = tmp_path / "s.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", 3)
        ds.createVariable("time", "f8", ("time",))[:] = [0, 1, 2]
        names = ds.createVariable("name", str, ("time",))
        for i, text in enumerate(["a", "bé", ""]):
            names[i] = text
    fs = _store(path)
    client = _store(path, decode="client")
    assert fs.cat_file("name/.zarray") == client.cat_file("name/.zarray")
    assert list(read_each_format(fs, "name")) == ["a", "bé", ""]


def test_decode_travels_with_the_store(tmp_path):
    fs = _store(_collection(tmp_path)[0].parent)
    assert pickle.loads(pickle.dumps(fs))._decode == "store"
    assert fsspec.AbstractFileSystem.from_json(fs.to_json())._decode == "store"


def test_an_unknown_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="decode must be one of"):
        _store(tmp_path, decode="zarr")


def test_a_corrupt_chunk_is_a_source_read_error_naming_the_file(tmp_path: Any) -> None:
    """A chunk its codecs refuse (bytes flipped in the file) fails as SourceReadError
    naming the file and the byte range, never a bare codec error."""
    from conftest import write_simple

    from fsspec_virtual import SourceReadError, VirtualZarrFileSystem

    path = write_simple(tmp_path / "a.nc", list(range(8)), chunks=(2, 4), seed=0)
    with h5py.File(path) as f:
        chunk = f["t"].id.get_chunk_info(1)
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset + 4)
        good = fh.read(4)
        fh.seek(chunk.byte_offset + 4)
        fh.write(bytes(b ^ 0xFF for b in good))
    fs = VirtualZarrFileSystem(str(path), cache=False, decode="store")
    with pytest.raises(SourceReadError, match=r"a\.nc \(bytes \d+-\d+\).*could not be decoded"):
        zarr.open_group(fs.get_mapper(""), mode="r")["t"][...]
    with pytest.raises(SourceReadError, match="could not be decoded"):
        fs.cat_file("t/1.0")
    np.testing.assert_array_equal(  # the other chunks still read
        zarr.open_group(fs.get_mapper(""), mode="r")["t"][:2], netCDF4.Dataset(path)["t"][:2]
    )


SHUFFLED_TYPES = ["i1", "<u2", ">i2", "<f4", "S5", "<i8", ">f8", "<c8", "<c16"]


@pytest.mark.parametrize("dtype", SHUFFLED_TYPES)
def test_shuffled_chunks_of_every_item_size(tmp_path: Any, dtype: str) -> None:
    """HDF5 chunks shuffled at every item size (1, 2, 4, 5, 8, 16 bytes: the store undoes
    shuffle its own way) read as h5py reads them, and each served chunk is the bytes of
    the client's own decoding (numcodecs), the partial chunk at the edge included."""
    kind = np.dtype(dtype)
    rng = np.random.default_rng(kind.itemsize)
    values = rng.integers(0, 256, 6 * 7 * kind.itemsize, dtype=np.uint8).view(kind)
    if kind.kind in "fc":  # no NaNs: compared bit for bit below anyway
        values = rng.random(6 * 7).astype(kind)
    path = tmp_path / "shuffled.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "v", data=values.reshape(6, 7), chunks=(4, 7), shuffle=True, compression="gzip"
        )
    with h5py.File(path, "r") as f:
        truth = f["v"][...]
    fs = fsspec.filesystem("virtualzarr", path=str(path), cache=False)
    client = fsspec.filesystem("virtualzarr", path=str(path), cache=False, decode="client")
    assert _compressed(client) == ["v"]
    served = read_each_format(fs, "v")  # Zarr format 3 reads the same
    assert served.dtype == truth.dtype
    assert served.tobytes() == truth.tobytes()
    meta = client.collection().manifest.arrays["v"].meta
    for key in ("v/0.0", "v/1.0"):
        assert fs.cat_file(key) == decode_chunk(client.cat_file(key), meta).tobytes()
