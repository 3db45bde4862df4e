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


class TestTransformed:
    """Decoding in threads: each result in its place, errors in theirs, from any loop."""

    @staticmethod
    def _inputs(n: int, size: int) -> list[bytes]:
        return [bytes([i % 256]) * size for i in range(n)]

    @pytest.mark.parametrize("size", [10, 100_000], ids=["on-the-loop", "in-threads"])
    def test_results_and_errors_in_place(self, size):
        from fsspec_virtual.reader import transformed

        def fails(data: bytes) -> bytes:
            raise ValueError("refused")

        data: list[bytes | BaseException] = list(self._inputs(5, size))
        data[3] = OSError("read failed")
        transforms = [bytes.upper, None, fails, bytes.upper, lambda b: b[::-1]]
        out = asyncio.run(transformed(data, transforms))
        assert out[0] == data[0].upper()  # type: ignore[union-attr]
        assert out[1] is data[1]
        assert isinstance(out[2], ValueError) and str(out[2]) == "refused"
        assert out[3] is data[3]
        assert out[4] == data[4][::-1]  # type: ignore[index]

    def test_many_loops_at_once(self):
        import threading

        from fsspec_virtual.reader import transformed

        inputs = self._inputs(40, 50_000)
        results: dict[int, list[bytes | BaseException]] = {}

        def run(k: int) -> None:
            shift = bytes(range(256))[k:] + bytes(range(256))[:k]

            def translate(b: bytes) -> bytes:
                return b.translate(shift)

            results[k] = asyncio.run(transformed(inputs, [translate] * len(inputs)))

        threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in range(4):
            shift = bytes(range(256))[k:] + bytes(range(256))[:k]
            assert results[k] == [b.translate(shift) for b in inputs]

    def test_a_cancelled_reader_leaves_the_threads_working(self):
        import threading

        from fsspec_virtual.reader import transformed

        release = threading.Event()

        def slow(b: bytes) -> bytes:
            release.wait(10)
            return b

        async def cancel_one() -> None:
            task = asyncio.ensure_future(transformed(self._inputs(1, 100_000), [slow]))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()

        asyncio.run(cancel_one())
        inputs = self._inputs(6, 100_000)
        assert asyncio.run(transformed(inputs, [bytes.upper] * 6)) == [b.upper() for b in inputs]
