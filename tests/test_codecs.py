"""Computed chunks are encoded at a codec's fastest setting; the declared codec reads them."""

from __future__ import annotations

import numpy as np
import pytest

from fsspec_virtual.codecs import decode_chunk, encode_chunk
from fsspec_virtual.manifest import ArrayMeta

DECLARED = [
    {"id": "zlib", "level": 9},
    {"id": "gzip", "level": 9},
    {"id": "blosc", "cname": "zstd", "clevel": 9, "shuffle": 1, "blocksize": 0},
    {"id": "zstd", "level": 19},
    {"id": "bz2", "level": 9},
    {"id": "lzma", "format": 1, "check": -1, "preset": 9, "filters": None},
]


@pytest.mark.parametrize("compressor", DECLARED, ids=[c["id"] for c in DECLARED])
def test_fastest_encoding_decodes_with_the_declared_codec(compressor):
    meta = ArrayMeta(
        shape=(6, 40),
        chunks=(3, 40),
        dtype="<f4",
        compressor=compressor,
        filters=({"id": "shuffle", "elementsize": 4},),
        fill_value=None,
        dimensions=("t", "x"),
    )
    data = np.random.default_rng(0).random((3, 40)).astype("f4")
    fast = encode_chunk(data, meta, fastest=True)
    np.testing.assert_array_equal(decode_chunk(fast, meta), data, strict=True)


@pytest.mark.parametrize("elementsize", range(1, 18))
@pytest.mark.parametrize("count", [0, 1, 3, 1000])
def test_unshuffled_equals_numcodecs(elementsize, count):
    from numcodecs import Shuffle

    from fsspec_virtual.codecs import unshuffled

    rng = np.random.default_rng(elementsize * 1000 + count)
    shuffled = rng.integers(0, 256, elementsize * count, dtype=np.uint8).tobytes()
    expected = bytes(Shuffle(elementsize).decode(shuffled))
    assert bytes(memoryview(unshuffled(shuffled, elementsize))) == expected


def test_unshuffled_refuses_a_partial_element():
    from fsspec_virtual.codecs import unshuffled

    with pytest.raises(ValueError, match="multiple of elementsize"):
        unshuffled(b"12345", 4)


SHUFFLE = {"id": "shuffle"}
PIPELINES = {  # (compressor, filters) as kerchunk and h5py-written .zarray spell them
    "kerchunk-hdf5": (None, (SHUFFLE, {"id": "zlib", "level": 4})),
    "zlib+shuffle": ({"id": "zlib", "level": 1}, (SHUFFLE,)),
    "zlib": ({"id": "zlib", "level": 9}, None),
    "shuffle": (None, (SHUFFLE,)),
    "gzip+shuffle": ({"id": "gzip", "level": 5}, (SHUFFLE,)),
    "blosc": ({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0}, None),
}
ITEM_SIZES = ["i1", "<u2", ">i2", "<f4", "S5", ">f8", "<c8", "<c16"]


@pytest.mark.parametrize("pipeline", PIPELINES, ids=list(PIPELINES))
@pytest.mark.parametrize("dtype", ITEM_SIZES)
def test_decoded_bytes_equal_numcodecs_decoding(pipeline, dtype):
    """The store's decoding (zlib and shuffle done its own way) gives byte for byte what
    numcodecs' codecs give, for every item size shuffle sees in netCDF/HDF5 files."""
    from fsspec_virtual.codecs import decoded_bytes

    compressor, filters = PIPELINES[pipeline]
    itemsize = np.dtype(dtype).itemsize
    filters = tuple(
        {**f, "elementsize": itemsize} if f["id"] == "shuffle" else f for f in filters or ()
    )
    meta = ArrayMeta(
        shape=(5, 7),
        chunks=(3, 7),
        dtype=np.dtype(dtype).str,
        compressor=compressor,
        filters=filters or None,
        fill_value=None,
        dimensions=("t", "x"),
    )
    rng = np.random.default_rng(itemsize)
    values = rng.integers(0, 256, 21 * itemsize, dtype=np.uint8).view(dtype).reshape(3, 7)
    raw = encode_chunk(values, meta)
    assert decoded_bytes(raw, meta) == decode_chunk(raw, meta).tobytes() == values.tobytes()


def test_a_chunk_decoding_to_another_size_is_refused():
    from fsspec_virtual.codecs import decoded_bytes

    meta = ArrayMeta(
        shape=(4,),
        chunks=(4,),
        dtype="<f4",
        compressor=None,
        filters=({"id": "shuffle", "elementsize": 4}, {"id": "zlib", "level": 1}),
        fill_value=None,
        dimensions=("x",),
    )
    short = encode_chunk(np.arange(3, dtype="<f4"), meta)
    with pytest.raises(ValueError, match="decodes to 12 bytes, not the 16"):
        decoded_bytes(short, meta)
