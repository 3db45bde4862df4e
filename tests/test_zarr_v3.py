"""Zarr format 3 (``zarr_format=3``): the same values, attributes and byte ranges as format 2.

The codec translation is checked through zarr-python itself: zarr writes an array in
format 2 (the v2 pipeline is its truth), the store's v3 document of that array is put
beside the same chunk bytes under v3 keys, and zarr reads both. The filesystem is checked
against direct reads of real files (netCDF4, h5py, ``xr.open_mfdataset``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import pickle
import struct
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import fsspec
import netCDF4
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import write_groups, write_packed, write_simple, write_sparse, write_steps
from oracle import assert_same_dataset, open_truth
from writers_computed import write_months
from zarr.core.buffer import cpu as _cpu
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import GroupMetadata
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.storage import FsspecStore, MemoryStore
from zarr.testing.store import StoreTests

import fsspec_virtual.serving
from fsspec_virtual import ReadOnlyError, VirtualZarrFileSystem, ZarrFormatNotServedError
from fsspec_virtual.codecs import decoded_bytes
from fsspec_virtual.codecs_v3 import store_decodes, v3_codecs
from fsspec_virtual.keys import resolve_key
from fsspec_virtual.manifest import ArrayMeta, ChunkGrid, Manifest, VirtualArray
from fsspec_virtual.metadata_v3 import render_metadata_v3

# -- the codec translation, through zarr-python ------------------------------------------


def _zarr_v2(values: np.ndarray, chunks: tuple[int, ...], **kwargs: Any) -> MemoryStore:
    """``values`` written by zarr-python as a format 2 array (the v2 truth): its chunks
    equal to the fill are not written."""
    store = MemoryStore()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = zarr.create_array(
            store, shape=values.shape, chunks=chunks, dtype=values.dtype, zarr_format=2, **kwargs
        )
        array[...] = values
    return store


def _v2_by_hand(values: np.ndarray, chunks: tuple[int, ...], filters: list[Any]) -> MemoryStore:
    """``values`` as a format 2 array of ``filters`` that zarr-python will not write
    (v2 allows any order), every chunk encoded by numcodecs in v2 order."""
    store = MemoryStore()
    codecs = [f.get_config() for f in filters]
    zarray = {
        "zarr_format": 2,
        "shape": list(values.shape),
        "chunks": list(chunks),
        "dtype": values.dtype.str,
        "compressor": None,
        "filters": codecs,
        "fill_value": None,
        "order": "C",
    }
    store._store_dict[".zarray"] = zarr.core.buffer.cpu.Buffer.from_bytes(
        json.dumps(zarray).encode()
    )
    grid = [range(-(-n // c)) for n, c in zip(values.shape, chunks)]
    for index in np.ndindex(*(len(g) for g in grid)):
        chunk = np.zeros(chunks, dtype=values.dtype)
        part = values[tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks))]
        chunk[tuple(slice(0, n) for n in part.shape)] = part
        encoded: Any = chunk
        for codec in filters:
            encoded = codec.encode(encoded)
        key = ".".join(map(str, index))
        store._store_dict[key] = zarr.core.buffer.cpu.Buffer.from_bytes(bytes(encoded))
    return store


def _meta_of(store: MemoryStore) -> ArrayMeta:
    zarray = json.loads(store._store_dict[".zarray"].to_bytes())
    dtype = zarray["dtype"]
    return ArrayMeta(
        shape=tuple(zarray["shape"]),
        chunks=tuple(zarray["chunks"]),
        dtype=json.dumps(dtype) if isinstance(dtype, list) else dtype,
        compressor=zarray["compressor"],
        filters=tuple(zarray["filters"]) if zarray["filters"] else None,
        # zarr gives text a fill value ("") of its own; the scans declare one only where
        # the source does (text with one is refused in format 3: see below)
        fill_value=None if np.dtype(dtype).kind in "SUO" else zarray["fill_value"],
        dimensions=tuple(f"d{i}" for i in range(len(zarray["shape"]))),
        attrs={"units": "m"},
        order=zarray["order"],
    )


def _v3_twin(store: MemoryStore, meta: ArrayMeta, *, decoded: bool = False) -> MemoryStore:
    """The store's v3 documents of ``meta`` as array ``a`` with ``store``'s chunks under
    v3 keys (decoded where a v3 store serves them decoded)."""
    array = VirtualArray(meta, ChunkGrid.empty(meta.grid_shape))
    manifest = Manifest(("none.nc",), {"": {}}, {"a": array})
    twin = MemoryStore()
    for key, doc in render_metadata_v3(manifest, decoded=decoded).items():
        twin._store_dict[key] = zarr.core.buffer.cpu.Buffer.from_bytes(doc)
    serve_decoded = store_decodes(meta, decoded)
    for key, buffer in store._store_dict.items():
        if key.startswith("."):
            continue
        raw = buffer.to_bytes()
        data = decoded_bytes(raw, meta) if serve_decoded else raw
        name = "a/c" if not meta.shape else "a/c/" + key.replace(".", "/")
        twin._store_dict[name] = zarr.core.buffer.cpu.Buffer.from_bytes(data)
    return twin


def _read(store: MemoryStore, path: str = "") -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        node = zarr.open_array(store, path=path, mode="r")
        values = node[...]
    # zarr gives a 0-d array's value as a numpy scalar (``np.bytes_`` shortens its type)
    return values if np.ndim(values) else np.asarray(values, dtype=node.dtype)


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.byteorder in "<>" else dtype


def _assert_identical(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal values of the same type (v3 reads every type in native byte order)."""
    assert _native(actual.dtype) == _native(expected.dtype) or (
        expected.dtype.kind == "O" and actual.dtype.kind in "OT"
    ), (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape
    if expected.dtype.kind in "fc":
        np.testing.assert_array_equal(actual, expected)  # NaN-aware
        assert np.array_equal(np.signbit(actual.real), np.signbit(expected.real))
    else:
        assert actual.tolist() == expected.tolist()


def _values(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype).kind
    if kind == "f":
        out = np.round(rng.standard_normal(shape) * 100, 2).astype(dtype)
        out.reshape(-1)[:3] = [np.nan, -0.0, np.inf][: out.size]
    elif kind == "c":
        out = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    elif kind == "b":
        out = rng.integers(0, 2, shape).astype(bool)
    elif kind in "iu":
        info = np.iinfo(dtype)
        out = rng.integers(max(info.min, -3000), min(info.max, 3000), shape).astype(dtype)
    elif kind == "S":
        out = np.array([b"ab", b"", b"xyz", b"a\x00b"] * 100, dtype=dtype)[: math.prod(shape)]
        out = out.reshape(shape)
    elif kind == "U":
        out = np.array(["ab", "", "\u00e9t\u00e9", "x"] * 100, dtype=dtype)[: math.prod(shape)]
        out = out.reshape(shape)
    else:
        raise AssertionError(dtype)
    out = np.asarray(out).astype(dtype)  # a 0-d result is a scalar of the native order
    if out.ndim >= 2:  # a chunk of fill values is not written: a missing chunk
        out[: min(2, out.shape[0]), : min(3, out.shape[1])] = out.dtype.type(0)
    return out


#: (dtype, filters, compressor, order) as zarr-python writes format 2: every codec the
#: scans declare (shuffle, zlib, blosc, zstd, vlen-utf8), others numcodecs has, big-endian
#: NetCDF3 types, Fortran order
PIPELINES: list[tuple[str, list[Any] | None, Any, str]] = [
    ("<f4", None, None, "C"),
    (">f4", None, None, "C"),
    (">f8", None, None, "F"),
    (">i2", None, numcodecs.Zlib(level=1), "C"),
    ("<f8", [numcodecs.Shuffle(elementsize=8), numcodecs.Zlib(level=4)], None, "C"),
    ("<f4", [numcodecs.Shuffle(elementsize=4)], numcodecs.Zlib(level=4), "F"),
    (">i4", [numcodecs.Delta(dtype=">i4")], numcodecs.Zlib(level=1), "F"),
    ("<i8", [numcodecs.Delta(dtype="<i8")], numcodecs.Blosc("zstd", 3, 2), "C"),
    ("<f4", None, numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE), "C"),
    (">f8", None, numcodecs.Blosc("zlib", 1, numcodecs.Blosc.BITSHUFFLE), "C"),
    ("|u1", None, numcodecs.Blosc("blosclz", 1, numcodecs.Blosc.AUTOSHUFFLE), "C"),
    ("<i2", None, numcodecs.Blosc("lz4hc", 1, numcodecs.Blosc.NOSHUFFLE, blocksize=64), "C"),
    ("<f4", None, numcodecs.GZip(level=2), "C"),
    ("<u2", None, numcodecs.Zstd(level=3, checksum=True), "C"),
    ("<f8", [numcodecs.Zlib(level=1)], numcodecs.CRC32C(), "C"),
    ("<f8", [numcodecs.CRC32()], numcodecs.Fletcher32(), "C"),
    ("<i4", [numcodecs.Adler32()], numcodecs.BZ2(level=1), "C"),
    ("<f4", None, numcodecs.LZMA(preset=1), "C"),
    ("<f4", None, numcodecs.LZ4(acceleration=1), "C"),
    ("<f8", [numcodecs.FixedScaleOffset(offset=1, scale=100, dtype="<f8")], None, "C"),
    ("<f4", [numcodecs.BitRound(keepbits=8)], numcodecs.Zlib(level=1), "C"),
    ("|b1", None, numcodecs.Zlib(level=1), "C"),
    ("<c8", None, numcodecs.Zstd(level=1), "C"),
    (">c16", None, None, "F"),
    ("|S4", None, numcodecs.Zlib(level=1), "C"),
    ("<U4", [numcodecs.Shuffle(elementsize=4)], None, "C"),
    (">U4", None, None, "C"),
]


@pytest.mark.parametrize(
    ("dtype", "filters", "compressor", "order"),
    PIPELINES,
    ids=[
        f"{d}-{'+'.join(c.codec_id for c in f or [])}-{k.codec_id if k else 'none'}-{o}"
        for d, f, k, o in PIPELINES
    ],
)
@pytest.mark.parametrize("shape", [(7, 10), (5,), ()], ids=["2d", "1d", "0d"])
@pytest.mark.parametrize("decoded", [False, True], ids=["client", "store"])
def test_every_codec_pipeline_reads_as_format_2(
    dtype: str,
    filters: list[Any] | None,
    compressor: Any,
    order: str,
    shape: tuple[int, ...],
    decoded: bool,
) -> None:
    values = _values(dtype, shape)
    chunks = tuple(max(1, (n + 1) // 3) for n in shape)
    v2 = _zarr_v2(values, chunks, filters=filters, compressors=compressor, order=order)
    meta = _meta_of(v2)
    assert meta.order == (order if len(shape) >= 2 else meta.order)
    twin = _v3_twin(v2, meta, decoded=decoded)
    expected = _read(v2)
    _assert_identical(expected, values if values.dtype.kind != "f" else expected)
    _assert_identical(_read(twin, "a"), expected)
    document = json.loads(twin._store_dict["a/zarr.json"].to_bytes())
    ArrayV3Metadata.from_dict(document)  # zarr-python's own validation
    codecs = [c["name"] for c in document["codecs"]]
    if decoded or (filters is None and compressor is None):
        assert codecs in (["bytes"], ["transpose", "bytes"]), codecs
    if np.dtype(dtype).byteorder == ">" and np.dtype(dtype).itemsize > 1:
        (serializer,) = [c for c in document["codecs"] if c["name"] == "bytes"]
        assert serializer["configuration"]["endian"] == "big"
    assert ("transpose" in codecs) == (order == "F" and len(shape) >= 2)


@pytest.mark.parametrize(
    ("filters", "compressor", "core"),
    [
        (None, numcodecs.GZip(level=2), "gzip"),
        (None, numcodecs.Zstd(level=3), "zstd"),
        (None, numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE), "blosc"),
        ([numcodecs.Zlib(level=1)], numcodecs.CRC32C(), "crc32c"),
        ([numcodecs.Shuffle(elementsize=8)], numcodecs.Zlib(level=1), "numcodecs.zlib"),
        (None, numcodecs.CRC32C(location="start"), "numcodecs.crc32c"),
    ],
)
def test_codecs_use_the_v3_core_codecs_where_they_decode_the_same(
    filters: list[Any] | None, compressor: Any, core: str
) -> None:
    values = _values("<f8", (6, 4))
    v2 = _zarr_v2(values, (3, 2), filters=filters, compressors=compressor)
    meta = _meta_of(v2)
    codecs = v3_codecs(meta)
    assert codecs is not None and codecs[-1]["name"] == core
    _assert_identical(_read(_v3_twin(v2, meta), "a"), _read(v2))


def test_a_pipeline_without_a_v3_spelling_is_served_decoded() -> None:
    """An array->array filter after a bytes->bytes one (v2 allows any order), a codec
    zarr-python does not register, a filter that changes the dtype: the v3 document
    declares ``bytes`` alone and the store serves the chunks decoded, in both modes."""
    values = _values("<i4", (6, 4))
    for filters in (
        [numcodecs.Zlib(level=1), numcodecs.Delta(dtype="u1")],
        [numcodecs.Delta(dtype="<i4", astype="<i2"), numcodecs.Zlib(level=1)],
        [numcodecs.Shuffle(elementsize=4), numcodecs.Delta(dtype="<i4")],
    ):
        v2 = _v2_by_hand(values, (3, 2), filters)
        meta = _meta_of(v2)
        _assert_identical(_read(v2), values)  # what format 2 serves
        assert v3_codecs(meta) is None
        assert store_decodes(meta, False) and store_decodes(meta, True)
        twin = _v3_twin(v2, meta)
        document = json.loads(twin._store_dict["a/zarr.json"].to_bytes())
        assert [c["name"] for c in document["codecs"]] == ["bytes"]
        _assert_identical(_read(twin, "a"), values)
    unknown = ArrayMeta((4,), (2,), "<f4", {"id": "no-such-codec"}, None, None, ("x",))
    assert v3_codecs(unknown) is None and store_decodes(unknown, False)


def test_a_pipeline_without_a_v3_spelling_is_decoded_by_the_store_when_read() -> None:
    values = _values("<i4", (6, 4))
    v2 = _v2_by_hand(values, (3, 2), [numcodecs.Zlib(1), numcodecs.Delta("u1")])
    meta = _meta_of(v2)
    raw = v2._store_dict["1.1"].to_bytes()
    array = VirtualArray(meta, ChunkGrid.single_inline(raw, 2).__class__.empty((2, 2)))
    source = fsspec_virtual.keys.InlineSource(raw, array)
    options = fsspec_virtual.reader.DEFAULT_READ_OPTIONS
    read = fsspec_virtual.serving.read_source
    served_v3 = asyncio.run(read(None, source, None, None, "client", options, 3))  # type: ignore[arg-type]
    served_v2 = asyncio.run(read(None, source, None, None, "client", options, 2))  # type: ignore[arg-type]
    assert served_v2 == raw  # format 2 passes it through
    assert served_v3 == values[3:6, 2:4].tobytes()


def test_object_codecs_without_a_v3_codec_are_refused_by_name() -> None:
    meta = ArrayMeta((3,), (3,), "|O", None, ({"id": "pickle"},), None, ("x",))
    array = VirtualArray(meta, ChunkGrid.empty((1,)))
    manifest = Manifest(("a.nc",), {"": {}, "g": {}}, {"g/odd": array})
    with pytest.raises(ZarrFormatNotServedError, match=r"'g/odd'.*zarr_format=2"):
        render_metadata_v3(manifest)


@pytest.mark.parametrize("compressor", [None, numcodecs.Zlib(level=1)])
def test_strings_are_served_as_zarr_python_3_writes_them(compressor: Any) -> None:
    texts = ["a", "", "\u00e9t\u00e9", "xyz", "q"]
    for codec, data_type, values in (
        (numcodecs.VLenUTF8(), "string", np.array(texts, dtype=object)),
        (
            numcodecs.VLenBytes(),
            "variable_length_bytes",
            np.array([t.encode() for t in texts], dtype=object),
        ),
    ):
        filters = [codec] + ([compressor] if compressor else [])
        v2 = _v2_by_hand(values, (2,), filters)
        meta = _meta_of(v2)
        _assert_identical(_read(v2), values)
        twin = _v3_twin(v2, meta)
        document = json.loads(twin._store_dict["a/zarr.json"].to_bytes())
        assert document["data_type"] == data_type
        names = [c["name"] for c in document["codecs"]]
        assert names == [codec.codec_id] + (["numcodecs.zlib"] if compressor else [])
        assert _read(twin, "a").tolist() == values.tolist()
        assert not store_decodes(meta, True)  # strings are never served decoded


# -- fill values and _FillValue ----------------------------------------------------------


def _rendered(meta: ArrayMeta) -> dict[str, Any]:
    manifest = Manifest(
        ("a.nc",), {"": {}}, {"v": VirtualArray(meta, ChunkGrid.empty(meta.grid_shape))}
    )
    return json.loads(render_metadata_v3(manifest)["v/zarr.json"])


@pytest.mark.parametrize(
    ("dtype", "fill", "fill_value", "attribute"),
    [
        ("<f4", None, 0.0, None),
        ("<f4", "NaN", "NaN", struct.pack("<d", float("nan"))),
        (
            ">f4",
            9.969209968386869e36,
            float(np.float32(9.969209968386869e36)),
            struct.pack("<d", float(np.float32(9.969209968386869e36))),
        ),
        ("<f8", -999.5, -999.5, struct.pack("<d", -999.5)),
        ("<i2", -32767, -32767, -32767),
        ("|u1", None, 0, None),
    ],
)
def test_fill_value_and_fill_attribute(
    dtype: str, fill: Any, fill_value: Any, attribute: Any
) -> None:
    """``fill_value`` is what an unwritten chunk reads as (the v2 fill, or zero where v2
    declares none); ``_FillValue`` is an attribute exactly where xarray sees one from v2
    (the v2 fill_value), spelled as xarray's v3 reader decodes it."""
    meta = ArrayMeta((4,), (2,), dtype, None, None, fill, ("x",), attrs={"units": "K"})
    document = _rendered(meta)
    if fill_value == "NaN":
        assert document["fill_value"] == "NaN"
    else:
        assert document["fill_value"] == fill_value
    attrs = document["attributes"]
    assert "_ARRAY_DIMENSIONS" not in attrs and document["dimension_names"] == ["x"]
    if fill is None:
        assert "_FillValue" not in attrs
    elif isinstance(attribute, bytes):
        assert base64.standard_b64decode(attrs["_FillValue"]) == attribute or (
            np.isnan(struct.unpack("<d", base64.standard_b64decode(attrs["_FillValue"]))[0])
        )
    else:
        assert attrs["_FillValue"] == (attribute if fill is not None else None)
    if dtype == ">f4" and fill is not None:  # a float fill: the base64 of its double
        decoded = struct.unpack("<d", base64.standard_b64decode(attrs["_FillValue"]))[0]
        assert decoded == float(np.float32(fill))


@pytest.mark.parametrize(("dtype", "fill"), [("|S3", "eHk="), ("|O", ""), ("<U2", "ab")])
def test_text_with_a_fill_value_is_refused_by_name(dtype: str, fill: str) -> None:
    """xarray's v3 reader decodes a numeric ``_FillValue`` only (a text one raises), and
    without it xarray would not mask what it masks from format 2: refused, never served
    unmasked. Text without a fill value is served (see the real-file tests)."""
    filters = ({"id": "vlen-utf8"},) if dtype == "|O" else None
    meta = ArrayMeta((4,), (2,), dtype, None, filters, fill, ("x",))
    with pytest.raises(ZarrFormatNotServedError, match=r"variable 'v'.*_FillValue.*zarr_format=2"):
        _rendered(meta)
    assert "_FillValue" not in _rendered(replace(meta, fill_value=None))["attributes"]


def test_text_with_a_fill_value_in_real_files(tmp_path: Path) -> None:
    path = tmp_path / "text.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("station", 3)
        nc.createDimension("nchar", 2)
        code = nc.createVariable("code", "S1", ("station", "nchar"), fill_value=b"x")
        code[:] = netCDF4.stringtochar(np.array(["ab", "x", "cd"], dtype="S2"))
        nc.createVariable("h", "f4", ("station",))[:] = [1.0, 2.0, 3.0]
    v2, v3 = _both(str(path))
    assert_same_dataset(xr.open_zarr(v2.get_mapper("")).load(), open_truth([path], None))
    with pytest.raises(ZarrFormatNotServedError, match=r"variable 'code'"):
        xr.open_zarr(v3.get_mapper(""), zarr_format=3)
    with pytest.raises(ZarrFormatNotServedError, match=r"variable 'code'"):
        xr.open_zarr(v3.get_mapper(""))  # found, not asked: the same refusal


# -- the filesystem against real files ---------------------------------------------------


def _fs(path: Any, **kwargs: Any) -> Any:
    return fsspec.filesystem("virtualzarr", path=path, cache=False, **kwargs)


def _both(path: Any, **kwargs: Any) -> tuple[Any, Any]:
    return _fs(path, **kwargs), _fs(path, zarr_format=3, **kwargs)


def _opens(fs: Any, group: str | None = None) -> list[xr.Dataset]:
    mapper = fs.get_mapper("")
    store = mapper if group is None else FsspecStore.from_mapper(mapper, read_only=True)
    consolidated = [
        xr.open_zarr(store, group=group, zarr_format=3, consolidated=True),
        xr.open_zarr(store, group=group),
    ]
    if group is None:
        consolidated.append(xr.open_zarr(mapper, zarr_format=3, consolidated=False))
    else:
        sub = fs.get_mapper(group)
        consolidated.append(xr.open_zarr(sub, zarr_format=3, consolidated=False))
    return [d.load() for d in consolidated]


def test_open_mfdataset_equals_format_3(tmp_path: Path) -> None:
    steps = [write_steps(tmp_path / f"s{i}.nc", 3 * i, float(i)) for i in range(3)]
    truth = open_truth(steps)
    v2, v3 = _both(str(tmp_path / "s*.nc"), concat_dim="time")
    for opened in _opens(v3):
        assert_same_dataset(opened, truth)
    group = zarr.open_group(v3.get_mapper(""), mode="r")
    assert group.metadata.zarr_format == 3
    assert_same_dataset(xr.open_zarr(v2.get_mapper("")).load(), truth)


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF4"])
def test_netcdf3_big_endian_and_netcdf4(tmp_path: Path, fmt: str) -> None:
    paths = [
        write_simple(tmp_path / f"f{i}.nc", [float(2 * i), float(2 * i + 1)], fmt=fmt, seed=i)
        for i in range(3)
    ]
    _, v3 = _both(str(tmp_path / "f*.nc"), concat_dim="time")
    truth = open_truth(paths)
    for opened in _opens(v3):
        assert_same_dataset(opened, truth)
    document = json.loads(v3.cat_file("t/zarr.json"))
    (serializer,) = [c for c in document["codecs"] if c["name"] == "bytes"]
    assert serializer["configuration"]["endian"] == ("little" if fmt == "NETCDF4" else "big")


def test_groups_strings_fill_and_packing(tmp_path: Path) -> None:
    groups = write_groups(tmp_path / "groups.nc")
    v3 = _fs(str(groups), zarr_format=3)
    for group in ("g1", "g1/g2"):
        for opened in _opens(v3, group):
            assert_same_dataset(opened, open_truth([groups], None, group=group), group)
    tree = zarr.open_group(v3.get_mapper(""), mode="r")
    with netCDF4.Dataset(groups) as nc:
        np.testing.assert_array_equal(tree["g1/g2/d"][:], nc["g1/g2/d"][:])

    strings = tmp_path / "strings.nc"
    with netCDF4.Dataset(strings, "w") as nc:
        nc.createDimension("station", 4)
        names = nc.createVariable("name", str, ("station",))
        names[:] = np.array(["oslo", "", "s\u00e3o paulo", "x"], dtype=object)
        names.long_name = "station name"
        nc.createDimension("nchar", 3)
        code = nc.createVariable("code", "S1", ("station", "nchar"))
        code[:] = netCDF4.stringtochar(np.array(["ab", "", "abc", "x"], dtype="S3"))
    for opened in _opens(_fs(str(strings), zarr_format=3)):
        assert_same_dataset(opened, open_truth([strings], None))

    packed = write_packed(tmp_path / "packed", missing_value=True)
    sparse = [
        write_sparse(tmp_path / f"sp{i}.nc", [2.0 * i, 2.0 * i + 1], declared_fill=i == 0, seed=i)
        for i in range(2)
    ]
    for paths in (packed, sparse):
        v2, v3 = _both([str(p) for p in paths], concat_dim="time")
        truth = open_truth(paths)
        for opened in _opens(v3):
            assert_same_dataset(opened, truth)
        raw2 = xr.open_zarr(v2.get_mapper(""), decode_cf=False).load()
        raw3 = xr.open_zarr(v3.get_mapper(""), decode_cf=False).load()
        for name in raw2.variables:
            np.testing.assert_array_equal(raw3[name].values, raw2[name].values)
            assert raw3[name].dtype == raw2[name].dtype
            assert set(raw3[name].attrs) == set(raw2[name].attrs), name


@pytest.mark.parametrize("decode", ["client", "store"])
def test_computed_chunks_and_decode_store(tmp_path: Path, decode: str) -> None:
    """Files whose lengths straddle the chunk grid: computed chunks, encoded with the v2
    pipeline, read through the v3 codecs; in store mode served decoded (``bytes``)."""
    paths = write_months(tmp_path, [5, 3, 4], chunk_time=2)
    v2, v3 = _both([str(p) for p in paths], concat_dim="time", decode=decode)
    truth = open_truth(paths)
    for opened in _opens(v3):
        assert_same_dataset(opened, truth)
    computed = [
        name for name, array in v3.collection().manifest.arrays.items() if array.plan is not None
    ]
    assert computed, "the collection has computed chunks"
    for name in computed:
        document = json.loads(v3.cat_file(f"{name}/zarr.json"))
        names = [c["name"] for c in document["codecs"]]
        if decode == "store":
            assert names == ["bytes"], names
        group2 = zarr.open_group(v2.get_mapper(""), mode="r")
        group3 = zarr.open_group(v3.get_mapper(""), mode="r")
        _assert_identical(group3[name][...], group2[name][...])


def test_the_same_file_range_is_read_in_both_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [write_steps(tmp_path / f"s{i}.nc", 3 * i, float(i)) for i in range(2)]
    v2, v3 = _both([str(p) for p in paths], concat_dim="time")
    requests: list[tuple[str, int, int]] = []
    real = fsspec_virtual.serving.read_one

    async def recording(fs: Any, request: Any, *args: Any, **kwargs: Any) -> bytes:
        requests.append((request.url, request.start, request.end))
        return await real(fs, request, *args, **kwargs)

    monkeypatch.setattr(fsspec_virtual.serving, "read_one", recording)
    manifest = v2.collection().manifest
    grid = manifest.arrays["v"].grid
    for index in zip(*np.nonzero(grid.file_id >= 0)):
        requests.clear()
        v2_key = "v/" + ".".join(str(int(i)) for i in index)
        v3_key = "v/c/" + "/".join(str(int(i)) for i in index)
        data2 = v2.cat_file(v2_key)
        data3 = v3.cat_file(v3_key)
        assert data2 == data3
        assert len(requests) == 2 and requests[0] == requests[1], requests
        url, start, end = requests[0]
        with open(url, "rb") as f:
            f.seek(start)
            assert f.read(end - start) == data3
    assert resolve_key(manifest, {}, "v/c/0/0", 3) == resolve_key(manifest, {}, "v/0.0", 2)


def test_chunk_keys_have_one_spelling(tmp_path: Path) -> None:
    paths = [write_steps(tmp_path / f"s{i}.nc", 3 * i, float(i)) for i in range(2)]
    v2, v3 = _both([str(p) for p in paths], concat_dim="time")
    assert v3.cat_file("v/c/1/0") == v2.cat_file("v/1.0")
    for key in (
        "v/c/01/0",
        "v/c/1/00",
        "v/c/+1/0",
        "v/c/ 1/0",
        "v/c//1/0",
        "v/c/1.0",
        "v/c/1",
        "v/c/1/0/0",
        "v/c/\u0661/0",
        "v/c/\uff11/0",
        "v/1.0",
        "v/C/1/0",
        "v/c/99/0",
        "v/c",
    ):
        with pytest.raises(FileNotFoundError):
            v3.cat_file(key)
    with pytest.raises(FileNotFoundError):
        v2.cat_file("v/c/1/0")
    for store, key in (
        (v2, "zarr.json"),
        (v2, "v/zarr.json"),
        (v3, "v/.zarray"),
        (v3, ".zmetadata"),
    ):
        with pytest.raises(ZarrFormatNotServedError):  # a document of the other format alone
            store.cat_file(key)
    # 0-d arrays: the one chunk is "x/c"
    with netCDF4.Dataset(tmp_path / "scalar.nc", "w") as nc:
        nc.createVariable("x", "f8", ())[...] = 2.5
    scalar = _fs(str(tmp_path / "scalar.nc"), zarr_format=3)
    assert np.frombuffer(scalar.cat_file("x/c"), "<f8").tolist() == [2.5]
    for key in ("x/c/0", "x/0", "x/c0", "x/C"):
        with pytest.raises(FileNotFoundError):
            scalar.cat_file(key)
    assert xr.open_zarr(scalar.get_mapper(""), zarr_format=3)["x"].values.tolist() == 2.5


def test_listing(tmp_path: Path) -> None:
    """``ls``/``find``/``info`` on v3 keys: chunk keys nest (``v/c/0/0``), missing chunks
    are not listed, and zarr's listing opens (``consolidated=False``) read the store."""
    paths = [
        write_sparse(tmp_path / f"sp{i}.nc", [2.0 * i, 2.0 * i + 1], declared_fill=True, seed=i)
        for i in range(2)
    ]
    v3 = _fs([str(p) for p in paths], concat_dim="time", zarr_format=3)
    manifest = v3.collection().manifest
    expected = {"zarr.json"}
    for path in manifest.groups:
        expected.add(f"{path}/zarr.json" if path else "zarr.json")
    for path, array in manifest.arrays.items():
        expected.add(f"{path}/zarr.json")
        grid = array.grid
        if not array.meta.shape:
            if grid.file_id[()] != -1:
                expected.add(f"{path}/c")
            continue
        for index in zip(*np.nonzero(grid.file_id != -1)):
            expected.add(f"{path}/c/" + "/".join(str(int(i)) for i in index))
    found = set(v3.find(""))
    assert found == expected
    assert any((a.grid.file_id == -1).any() for a in manifest.arrays.values())
    top = {e["name"]: e["type"] for e in v3.ls("", detail=True)}
    assert top["zarr.json"] == "file"
    assert all(top[name] == "directory" for name in manifest.arrays)
    name = next(
        n
        for n, a in manifest.arrays.items()
        if len(a.meta.shape) >= 2 and (a.grid.file_id != -1).any()
    )
    assert v3.info(name)["type"] == "directory"
    assert v3.info(f"{name}/c")["type"] == "directory"
    first = sorted(k for k in expected if k.startswith(f"{name}/c/"))[0]
    assert v3.info(first.rsplit("/", 1)[0])["type"] == "directory"
    assert v3.info(first) == {"name": first, "size": len(v3.cat_file(first)), "type": "file"}
    with pytest.raises(FileNotFoundError):
        v3.info(f"{name}/c/999")
    sizes = {e["name"]: e["size"] for e in v3.ls(first.rsplit("/", 1)[0], detail=True)}
    for key, size in sizes.items():
        assert size == len(v3.cat_file(key))
    for opened in _opens(v3):
        assert_same_dataset(opened, open_truth(paths))


def test_listing_skips_levels_without_chunks(tmp_path: Path) -> None:
    """A level of v3 chunk keys exists only where a chunk below it was written."""
    path = tmp_path / "holes.nc"
    with netCDF4.Dataset(path, "w") as nc:
        for name, size in (("time", 3), ("y", 2), ("x", 4)):
            nc.createDimension(name, size)
        w = nc.createVariable("w", "f4", ("time", "y", "x"), chunksizes=(1, 1, 4), fill_value=-1.0)
        w[0] = np.arange(8, dtype="f4").reshape(2, 4)
        w[2, 1] = np.arange(4, dtype="f4")
    v3 = _fs(str(path), zarr_format=3)
    assert v3.ls("w/c", detail=False) == ["w/c/0", "w/c/2"]
    assert v3.ls("w/c/0", detail=False) == ["w/c/0/0", "w/c/0/1"]
    assert v3.ls("w/c/2", detail=False) == ["w/c/2/1"]
    assert v3.ls("w/c/2/1", detail=False) == ["w/c/2/1/0"]
    assert v3.info("w/c/2/1/0")["type"] == "file"
    for key in ("w/c/1", "w/c/2/0", "w/c/2/0/0", "w/c/3"):
        with pytest.raises(FileNotFoundError):
            v3.info(key)
    assert sorted(v3.find("w")) == [
        "w/c/0/0/0",
        "w/c/0/1/0",
        "w/c/2/1/0",
        "w/zarr.json",
    ]
    for opened in _opens(v3):
        assert_same_dataset(opened, open_truth([path], None))


@pytest.mark.parametrize("decode", ["client", "store"])
def test_find_in_one_pass_equals_fsspecs_walk(tmp_path: Path, decode: str) -> None:
    """``find`` lists every file below a directory at once in format 3: the same names,
    sizes and order as fsspec's own walk, level by level, through ``ls``."""
    from fsspec.asyn import AsyncFileSystem, sync

    paths = [
        write_sparse(tmp_path / f"sp{i}.nc", [2.0 * i, 2.0 * i + 1], declared_fill=True, seed=i)
        for i in range(2)
    ]
    groups = write_groups(tmp_path / "groups.nc")
    for fs in (
        _fs([str(p) for p in paths], concat_dim="time", zarr_format=3, decode=decode),
        _fs(str(groups), zarr_format=3, decode=decode),
    ):
        manifest = fs.collection().manifest
        chunked = [n for n, a in manifest.arrays.items() if (a.grid.file_id != -1).any()]
        directories = ["", *manifest.groups, *chunked, *(f"{n}/c" for n in chunked)]
        for path in directories:
            for detail in (False, True):
                walked = sync(fs.loop, AsyncFileSystem._find, fs, path, detail=detail)
                assert fs.find(path, detail=detail) == walked, (path, detail)
                if detail:
                    assert all(e["type"] == "file" for e in walked.values())
        assert fs.find("", maxdepth=1) == sync(fs.loop, AsyncFileSystem._find, fs, "", maxdepth=1)
        assert len(fs.find("")) > len(manifest.arrays)


def test_the_option_travels_and_is_checked(tmp_path: Path) -> None:
    paths = [write_steps(tmp_path / f"s{i}.nc", 3 * i, float(i)) for i in range(2)]
    v3 = _fs(str(tmp_path / "s*.nc"), concat_dim="time", zarr_format=3)
    document = v3.cat_file("zarr.json")
    for copy in (
        pickle.loads(pickle.dumps(v3)),
        fsspec.AbstractFileSystem.from_json(v3.to_json()),
    ):
        assert copy.cat_file("zarr.json") == document
    mapper = fsspec.get_mapper(
        "virtualzarr::" + str(tmp_path / "s*.nc"),
        virtualzarr={"concat_dim": "time", "zarr_format": 3, "cache": False},
    )
    assert_same_dataset(xr.open_zarr(mapper, zarr_format=3).load(), open_truth(paths))
    for bad in (4, "3", True, None):
        with pytest.raises(ValueError, match="zarr_format"):
            _fs(str(tmp_path / "s*.nc"), zarr_format=bad)


def test_refresh_serves_new_files_in_format_3(tmp_path: Path) -> None:
    paths = [write_steps(tmp_path / f"s{i}.nc", 3 * i, float(i)) for i in range(2)]
    v3 = _fs(str(tmp_path / "s*.nc"), concat_dim="time", zarr_format=3)
    before = xr.open_zarr(v3.get_mapper(""), zarr_format=3).load()
    assert_same_dataset(before, open_truth(paths))
    paths.append(write_steps(tmp_path / "s2.nc", 6, 2.0))
    assert v3.refresh().added
    after = xr.open_zarr(v3.get_mapper(""), zarr_format=3).load()
    assert_same_dataset(after, open_truth(paths))
    assert json.loads(v3.cat_file("v/zarr.json"))["shape"][0] == after.sizes["time"]


def test_documents_are_what_zarr_python_reads(tmp_path: Path) -> None:
    groups = write_groups(tmp_path / "groups.nc")
    v3 = _fs(str(groups), zarr_format=3)
    root = json.loads(v3.cat_file("zarr.json"))
    consolidated = root["consolidated_metadata"]
    assert consolidated["kind"] == "inline" and consolidated["must_understand"] is False
    for path, document in consolidated["metadata"].items():
        own = json.loads(v3.cat_file(f"{path}/zarr.json"))
        if document["node_type"] == "group":
            assert document["consolidated_metadata"]["metadata"] == {}
            del document["consolidated_metadata"]
            GroupMetadata.from_dict(own)
        else:
            ArrayV3Metadata.from_dict(own)
        assert own == document
    names = list(consolidated["metadata"])
    assert names == sorted(names, key=lambda p: (p.count("/"), p.casefold()))
    manifest = v3.collection().manifest
    assert set(names) == (set(manifest.groups) | set(manifest.arrays)) - {""}


# -- zarr-python's own store tests, on the read-only store -------------------------------


@pytest.fixture(scope="module")
def contract_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    directory = tmp_path_factory.mktemp("contract")
    return [
        write_sparse(directory / f"sp{i}.nc", [2.0 * i, 2.0 * i + 1], declared_fill=True, seed=i)
        for i in range(2)
    ]


def _truth_of(fs: Any, key: str) -> bytes:
    """What ``key`` holds, read around the store: its metadata document as rendered from
    the manifest, or its chunk's bytes read from the source file with ``open``."""
    state = fs.collection()
    documents = fsspec_virtual.serving.served_metadata(state, "client", fs._format)
    source = resolve_key(state.manifest, documents, key, fs._format)
    if source is None:
        raise FileNotFoundError(key)
    if isinstance(source, fsspec_virtual.keys.RangeSource):
        with open(source.url, "rb") as f:
            f.seek(source.offset)
            return f.read(source.length)
    assert isinstance(source, fsspec_virtual.keys.InlineSource), source
    return source.data


class TestZarrStoreContract(StoreTests[FsspecStore, _cpu.Buffer]):  # type: ignore[type-var]
    """zarr-python's ``StoreTests`` on an ``FsspecStore`` over the v3 store.

    ``StoreTests`` writes keys and reads them back; a virtual store's keys come from its
    files, so every test that writes is overridden: the same reads are checked against
    keys the store has (their bytes read around the store, :func:`_truth_of`), and every
    write (``set``, ``delete``, ``clear``...) must be refused by the store itself
    (:class:`ReadOnlyError`, a ``PermissionError``), even through an ``FsspecStore``
    opened writable. Tests that are inherited run unchanged: equality, context manager,
    read-only flags, ``getsize`` of a missing key.
    """

    pytestmark = pytest.mark.anyio
    store_cls = FsspecStore
    buffer_cls = _cpu.Buffer
    zarr_format = 3

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def store_kwargs(self, contract_files: list[Path]) -> dict[str, Any]:
        fs = VirtualZarrFileSystem(
            path=[str(p) for p in contract_files],
            concat_dim="time",
            zarr_format=self.zarr_format,
            cache=False,
            asynchronous=True,
        )
        return {"fs": fs, "path": "", "read_only": False}

    @pytest.fixture
    def store(self, open_kwargs: dict[str, Any]) -> FsspecStore:
        """Opened without an event loop of the test's own (the inherited fixture is a
        coroutine, which the synchronous tests cannot take without pytest-asyncio)."""
        return zarr.core.sync.sync(self.store_cls.open(**open_kwargs))

    @pytest.fixture
    def store_not_open(self, store_kwargs: dict[str, Any]) -> FsspecStore:
        return self.store_cls(**store_kwargs)

    @pytest.fixture
    def keys(self, store_kwargs: dict[str, Any]) -> list[str]:
        fs = store_kwargs["fs"]
        blocking = VirtualZarrFileSystem(**{**fs.storage_options, "asynchronous": False})
        return sorted(blocking.find(""))

    def _spell(self, key: str) -> str:
        """A key written in format 3 as this store's format spells it."""
        if self.zarr_format == 3:
            return key
        path, _, leaf = key.rpartition("/")
        if leaf == "zarr.json":
            return f"{path}/.zarray" if path else ".zmetadata"
        head, _, indices = key.partition("/c")
        if indices == "":
            return f"{head}/0"  # a 0-d array's chunk
        return f"{head}/" + ".".join(indices.strip("/").split("/"))

    def _blocking(self, store: FsspecStore) -> Any:
        return VirtualZarrFileSystem(**{**store.fs.storage_options, "asynchronous": False})

    async def set(self, store: FsspecStore, key: str, value: Any) -> None:
        raise NotImplementedError("a virtual store's keys come from its source files")

    async def get(self, store: FsspecStore, key: str) -> Any:
        return self.buffer_cls.from_bytes(_truth_of(self._blocking(store), key))

    def test_store_repr(self, store: FsspecStore) -> None:
        assert "VirtualZarrFileSystem" in repr(store.fs)

    def test_store_supports_writes(self, store: FsspecStore) -> None:
        """FsspecStore claims writes for any filesystem; ours refuses them (below)."""
        assert store.supports_writes

    def test_store_supports_listing(self, store: FsspecStore) -> None:
        assert store.supports_listing

    def test_store_read_only(self, store: FsspecStore) -> None:
        """Opened writable, as the inherited test wants; the writes still fail."""
        assert not store.read_only
        with pytest.raises(AttributeError):
            store.read_only = False  # type: ignore[misc]

    async def _refuses(self, store: FsspecStore, key: str = "zarr.json") -> None:
        key = self._spell(key)
        before = await store.get(key, prototype=default_buffer_prototype())
        for write in (
            store.set(key, self.buffer_cls.from_bytes(b"bar")),
            store.set("foo/c/0", self.buffer_cls.from_bytes(b"bar")),
            store.delete(key),
            store.delete_dir(""),
            store.clear(),
            store.set_if_not_exists("new/zarr.json", self.buffer_cls.from_bytes(b"bar")),
        ):
            with pytest.raises(ReadOnlyError):
                await write
        after = await store.get(key, prototype=default_buffer_prototype())
        assert before is not None and after is not None
        assert after.to_bytes() == before.to_bytes()

    async def test_serializable_store(self, store: FsspecStore) -> None:
        new_store = pickle.loads(pickle.dumps(store))
        assert new_store == store
        assert new_store.read_only == store.read_only
        for key in map(self._spell, ("zarr.json", "part_f4/c/0/0")):
            observed = await new_store.get(key, prototype=default_buffer_prototype())
            assert observed.to_bytes() == _truth_of(self._blocking(store), key)

    async def test_with_read_only_store(self, open_kwargs: dict[str, Any]) -> None:
        store = await self.store_cls.open(**{**open_kwargs, "read_only": True})
        with pytest.raises(ValueError, match="read-only mode"):
            await store.set("foo", self.buffer_cls.from_bytes(b"bar"))
        writer = store.with_read_only(read_only=False)
        assert not writer.read_only
        await self._refuses(writer)

    @pytest.mark.parametrize("key", ["zarr.json", "part_f4/c/0/0", "scalar_i2/c"])
    @pytest.mark.parametrize(
        "byte_range",
        [
            None,
            zarr.abc.store.RangeByteRequest(1, 4),
            zarr.abc.store.OffsetByteRequest(1),
            zarr.abc.store.SuffixByteRequest(1),
        ],
    )
    async def test_get(self, store: FsspecStore, key: str, byte_range: Any) -> None:  # type: ignore[override]
        key = self._spell(key)
        truth = _truth_of(self._blocking(store), key)
        observed = await store.get(key, prototype=default_buffer_prototype(), byte_range=byte_range)
        if byte_range is None:
            expected = truth
        elif isinstance(byte_range, zarr.abc.store.RangeByteRequest):
            expected = truth[byte_range.start : byte_range.end]
        elif isinstance(byte_range, zarr.abc.store.OffsetByteRequest):
            expected = truth[byte_range.offset :]
        else:
            expected = truth[-byte_range.suffix :]
        assert observed is not None and observed.to_bytes() == expected

    async def test_get_not_open(self, store_not_open: FsspecStore) -> None:
        assert not store_not_open._is_open
        key = self._spell("zarr.json")
        observed = await store_not_open.get(key, prototype=default_buffer_prototype())
        assert observed.to_bytes() == _truth_of(self._blocking(store_not_open), key)

    async def test_get_raises(self, store: FsspecStore) -> None:
        with pytest.raises((ValueError, TypeError), match=r"Unexpected byte_range, got.*"):
            await store.get(
                self._spell("zarr.json"),
                prototype=default_buffer_prototype(),
                byte_range=(0, 2),  # type: ignore[arg-type]
            )

    async def test_get_many(self, store: FsspecStore, keys: list[str]) -> None:
        prototype = default_buffer_prototype()
        requests = [(k, prototype, None) for k in keys]
        observed = {k: b.to_bytes() async for k, b in store._get_many(requests)}  # type: ignore[union-attr]
        blocking = self._blocking(store)
        assert observed == {k: _truth_of(blocking, k) for k in keys}
        missing = [
            (self._spell("part_f4/c/0/1"), prototype, None),
            (self._spell("never_f8/c/0/0"), prototype, None),
        ]
        assert [b async for _, b in store._get_many(missing)] == [None, None]

    @pytest.mark.parametrize("key", ["zarr.json", "part_f4/c/0/0", "part_i4/c/1/1", "scalar_i2/c"])
    async def test_getsize(self, store: FsspecStore, key: str) -> None:  # type: ignore[override]
        key = self._spell(key)
        assert await store.getsize(key) == len(_truth_of(self._blocking(store), key))

    async def test_getsize_prefix(self, store: FsspecStore, keys: list[str]) -> None:
        blocking = self._blocking(store)
        for prefix in ("part_f4", "part_i4/c") if self.zarr_format == 3 else ("part_f4",):
            expected = sum(len(_truth_of(blocking, k)) for k in keys if k.startswith(prefix + "/"))
            assert expected > 0
            assert await store.getsize_prefix(prefix) == expected

    @pytest.mark.parametrize("key", ["zarr.json", "c/0", "part_f4/c/0/0", "foo/0/0"])
    async def test_set(self, store: FsspecStore, key: str) -> None:  # type: ignore[override]
        key = self._spell(key)
        with pytest.raises(ReadOnlyError):
            await store.set(key, self.buffer_cls.from_bytes(b"\x01\x02"))

    async def test_set_not_open(self, store_not_open: FsspecStore) -> None:
        with pytest.raises(ReadOnlyError):
            await store_not_open.set("c/0", self.buffer_cls.from_bytes(b"\x01\x02"))

    async def test_set_many(self, store: FsspecStore) -> None:
        with pytest.raises(ReadOnlyError):
            await store._set_many([("zarr.json", self.buffer_cls.from_bytes(b"{}"))])

    @pytest.mark.parametrize(
        "key_ranges",
        [
            [],
            [("zarr.json", zarr.abc.store.RangeByteRequest(0, 2))],
            [("part_f4/c/0/0", zarr.abc.store.RangeByteRequest(0, 2)), ("zarr.json", None)],
            [
                ("part_i4/c/0/1", zarr.abc.store.RangeByteRequest(0, 2)),
                ("part_i4/c/1/1", zarr.abc.store.SuffixByteRequest(2)),
                ("time/c/0", zarr.abc.store.OffsetByteRequest(2)),
            ],
        ],
    )
    async def test_get_partial_values(self, store: FsspecStore, key_ranges: list[Any]) -> None:
        key_ranges = [(self._spell(k), r) for k, r in key_ranges]
        observed = await store.get_partial_values(default_buffer_prototype(), key_ranges)
        for (key, byte_range), got in zip(key_ranges, observed, strict=True):
            whole = await store.get(key, default_buffer_prototype(), byte_range=byte_range)
            assert got is not None and whole is not None and got.to_bytes() == whole.to_bytes()

    async def test_exists(self, store: FsspecStore) -> None:
        assert not await store.exists("foo")
        spell = self._spell
        assert await store.exists(spell("zarr.json")) and await store.exists(spell("part_f4/c/0/0"))
        assert not await store.exists(spell("part_f4/c/0/1"))  # a missing chunk: a missing key
        assert not await store.exists(spell("part_f4/c/00/0"))

    async def test_delete(self, store: FsspecStore) -> None:
        await self._refuses(store)

    async def test_delete_dir(self, store: FsspecStore) -> None:
        with pytest.raises(ReadOnlyError):
            await store.delete_dir("part_f4")
        assert await store.exists(self._spell("part_f4/c/0/0"))

    async def test_delete_nonexistent_key_does_not_raise(self, store: FsspecStore) -> None:
        """A read-only store refuses every delete, even of a key it does not have."""
        with pytest.raises(ReadOnlyError):
            await store.delete("nonexistent_key")

    async def test_is_empty(self, store: FsspecStore) -> None:
        assert not await store.is_empty("")
        assert not await store.is_empty("part_f4")
        assert not await store.is_empty("part_f4/")
        assert await store.is_empty("part")
        assert await store.is_empty("spam/")
        assert await store.is_empty(self._spell("never_f8/c/0/0"))  # no chunk ever written

    async def test_clear(self, store: FsspecStore) -> None:
        with pytest.raises(ReadOnlyError):
            await store.clear()
        assert not await store.is_empty("")

    async def test_list(self, store: FsspecStore, keys: list[str]) -> None:
        observed = sorted([k async for k in store.list()])
        assert observed == keys
        assert self._spell("part_f4/c/0/0") in observed
        assert self._spell("part_f4/c/0/1") not in observed

    async def test_list_prefix(self, store: FsspecStore, keys: list[str]) -> None:
        prefixes = ["", "part_f4/", "scalar_i2/"]
        if self.zarr_format == 3:
            prefixes += ["part_i4/c/", "part_i4/c/1/"]
        for prefix in prefixes:
            observed = sorted([k async for k in store.list_prefix(prefix)])
            assert observed == [k for k in keys if k.startswith(prefix)], prefix

    async def test_list_empty_path(self, store: FsspecStore, keys: list[str]) -> None:
        assert sorted([k async for k in store.list_prefix("")]) == keys

    async def test_list_dir(self, store: FsspecStore, keys: list[str]) -> None:
        roots = ["", "part_f4", "scalar_i2", "never_f8"]
        if self.zarr_format == 3:
            roots += ["part_f4/c", "part_i4/c/1"]
        for root in roots:
            below = [k.removeprefix(f"{root}/" if root else "") for k in keys]
            expected = sorted(
                {k.split("/")[0] for k, full in zip(below, keys) if full.startswith(root)}
            )
            for spelled in (root, root + "/" if root else root):
                assert sorted([k async for k in store.list_dir(spelled)]) == expected, spelled
        documents = ["zarr.json"] if self.zarr_format == 3 else [".zarray", ".zattrs"]
        assert sorted([k async for k in store.list_dir("never_f8")]) == documents

    async def test_set_if_not_exists(self, store: FsspecStore) -> None:
        with pytest.raises(ReadOnlyError):
            await store.set_if_not_exists("k2", self.buffer_cls.from_bytes(b"1111"))
        assert not await store.exists("k2")

    async def test_get_bytes(self, store: FsspecStore) -> None:
        key = self._spell("zarr.json")
        truth = _truth_of(self._blocking(store), key)
        assert await store._get_bytes(key, prototype=default_buffer_prototype()) == truth
        with pytest.raises(FileNotFoundError):
            await store._get_bytes("nonexistent_key", prototype=default_buffer_prototype())

    def test_get_bytes_sync(self, store: FsspecStore) -> None:
        key = self._spell("part_f4/zarr.json")
        truth = _truth_of(self._blocking(store), key)
        assert store._get_bytes_sync(key, prototype=default_buffer_prototype()) == truth

    async def test_get_json(self, store: FsspecStore) -> None:
        key = self._spell("zarr.json")
        truth = json.loads(_truth_of(self._blocking(store), key))
        assert await store._get_json(key, prototype=default_buffer_prototype()) == truth

    def test_get_json_sync(self, store: FsspecStore) -> None:
        key = self._spell("zarr.json")
        truth = json.loads(_truth_of(self._blocking(store), key))
        assert store._get_json_sync(key, prototype=default_buffer_prototype()) == truth

    # FsspecStore has no synchronous get/set/delete (zarr's SupportsSyncStore): the
    # inherited tests would skip; these check that they do not apply instead.
    def test_get_sync(self, store: FsspecStore) -> None:
        assert not isinstance(store, zarr.abc.store.SupportsGetSync)

    def test_get_sync_missing(self, store: FsspecStore) -> None:
        assert not isinstance(store, zarr.abc.store.SupportsGetSync)

    def test_set_sync(self, store: FsspecStore) -> None:
        assert not isinstance(store, zarr.abc.store.SupportsSetSync)

    def test_delete_sync(self, store: FsspecStore) -> None:
        assert not isinstance(store, zarr.abc.store.SupportsDeleteSync)

    def test_delete_sync_missing(self, store: FsspecStore) -> None:
        assert not isinstance(store, zarr.abc.store.SupportsDeleteSync)


class TestZarrStoreContractFormat2(TestZarrStoreContract):
    """The same on the format 2 store (keys spelled ``part_f4/0.0``, ``.zmetadata``)."""

    zarr_format = 2


def test_remote_reads_are_read_ahead_through_v3_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-ahead follows v3 chunk keys (``v/c/3/0``) as it follows v2 ones: zarr's
    whole read of a remote array finds most chunks read ahead, with the same values."""
    from servers import serve_directory

    import fsspec_virtual.readahead as readahead
    import fsspec_virtual.state as state_module

    root = tmp_path / "www"
    root.mkdir()
    paths = []
    for i in range(3):
        path = root / f"f{i}.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("time", None)
            nc.createDimension("x", 50)
            t = nc.createVariable("time", "f8", ("time",))
            t.units = "days since 2000-01-01"
            t[:] = np.arange(10 * i, 10 * i + 10, dtype="f8")
            v = nc.createVariable("v", "f4", ("time", "x"), chunksizes=(1, 50), zlib=True)
            v[:] = np.random.default_rng(i).normal(size=(10, 50)).astype("f4")
        paths.append(path)
    seen: list[bool] = []
    take = readahead.ReadAhead.take

    def spy(self: Any, state: Any, request: Any) -> Any:
        entry = take(self, state, request)
        seen.append(entry is not None)
        return entry

    monkeypatch.setattr(readahead.ReadAhead, "take", spy)
    state_module.clear_states()
    try:
        with serve_directory(root) as server:
            fs = fsspec.filesystem(
                "virtualzarr",
                path=f"{server.url}/",
                concat_dim="time",
                zarr_format=3,
                cache=False,
                skip_instance_cache=True,
            )
            array = zarr.open_group(fs.get_mapper(""), mode="r", zarr_format=3)["v"]
            values = array[...]
    finally:
        state_module.clear_states()
    with xr.open_mfdataset(paths, engine="netcdf4", combine="by_coords") as truth:
        np.testing.assert_array_equal(values, truth["v"].values, strict=True)
    assert len(seen) >= 30 and sum(seen) >= 15, seen
