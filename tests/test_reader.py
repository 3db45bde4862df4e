"""Range rules and read planning (pure), and reads against a real local file."""

from __future__ import annotations

import asyncio

import fsspec
import pytest

from fsspec_virtual.errors import StaleSourceError
from fsspec_virtual.reader import Request, absolute_range, fetch_ranges, plan_reads


class TestAbsoluteRange:
    @pytest.mark.parametrize(
        ("start", "end"),
        [
            (None, None),
            (0, None),
            (3, None),
            (-4, None),
            (None, 5),
            (None, -2),
            (2, 7),
            (-6, -1),
            (7, 2),
            (50, None),
            (None, 50),
            (-50, None),
            (8, 8),
        ],
    )
    def test_matches_python_slicing(self, start, end):
        block = bytes(range(10))
        begin, stop = absolute_range(start, end, len(block))
        assert block[begin:stop] == block[start:end]


class TestPlanReads:
    def test_merges_adjacent_and_near_ranges_per_file(self):
        reqs = [
            Request("a", 100, 200),
            Request("b", 0, 10),
            Request("a", 0, 100),
            Request("a", 250, 300),
            Request("a", 10_000, 10_010),
        ]
        plan = plan_reads(reqs, max_gap=50)
        spans = sorted((r.url, r.start, r.end, r.members) for r in plan)
        assert spans == [("a", 0, 300, (2, 0, 3)), ("a", 10_000, 10_010, (4,)), ("b", 0, 10, (1,))]

    def test_block_limit(self):
        reqs = [Request("a", i * 10, i * 10 + 10) for i in range(10)]
        plan = plan_reads(reqs, max_gap=0, max_block=30)
        assert [r.end - r.start for r in plan] == [30, 30, 30, 10]

    def test_overlapping_requests(self):
        plan = plan_reads([Request("a", 0, 50), Request("a", 10, 20)], max_gap=0)
        assert [(r.start, r.end) for r in plan] == [(0, 50)]


class TestFetchRanges:
    def test_scatter_back_and_errors_in_place(self, tmp_path):
        path = tmp_path / "data.bin"
        payload = bytes(range(256)) * 4
        path.write_bytes(payload)
        fs = fsspec.filesystem("file")
        reqs = [
            Request(str(path), 5, 9),
            Request(str(path), 0, 3),
            Request(str(path), 900, 1024),
            Request(str(tmp_path / "nope"), 0, 3),
            Request(str(path), 1000, 2000),
        ]
        out = asyncio.run(fetch_ranges(fs, reqs))
        assert out[0] == payload[5:9] and out[1] == payload[0:3] and out[2] == payload[900:1024]
        # a vanished source is stale, never FileNotFoundError (zarr would fill the chunk)
        assert isinstance(out[3], StaleSourceError) and not isinstance(out[3], FileNotFoundError)
        assert isinstance(out[4], OSError) and "shorter" in str(out[4])
