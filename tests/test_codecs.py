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
