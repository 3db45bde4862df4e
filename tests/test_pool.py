"""The scan worker pool: ordered results, failures returned in place, hung tasks killed."""

from __future__ import annotations

import math
import time

import pytest

from fsspec_virtual.pool import WorkerPool, WorkerTimeout


@pytest.fixture(scope="module")
def pool():
    pool = WorkerPool(2)
    yield pool
    pool.close()


class TestWorkerPool:
    def test_results_in_order(self, pool):
        assert pool.map(math.sqrt, [(x,) for x in (4.0, 9.0, 16.0, 25.0, 36.0)]) == [
            2.0,
            3.0,
            4.0,
            5.0,
            6.0,
        ]

    def test_exceptions_are_returned_in_place(self, pool):
        out = pool.map(math.sqrt, [(4.0,), (-1.0,), (9.0,)])
        assert out[0] == 2.0 and out[2] == 3.0
        assert isinstance(out[1], ValueError)

    def test_hung_task_is_killed_and_pool_recovers(self, pool):
        out = pool.map(time.sleep, [(30,), (0,)], timeout=1.0)
        assert isinstance(out[0], WorkerTimeout)
        assert out[1] is None
        assert pool.map(math.sqrt, [(x,) for x in (1.0, 4.0, 9.0)]) == [1.0, 2.0, 3.0]


def test_a_task_that_cannot_be_sent_fails_alone():
    """An argument pickle cannot carry fails its own call; the worker stays in the pool."""
    import threading

    from fsspec_virtual.pool import WorkerPool

    pool = WorkerPool(1)
    try:
        results = pool.map(len, [("ab",), (threading.Lock(),), ("abc",)])
        assert results[0] == 2 and results[2] == 3
        assert isinstance(results[1], TypeError) and "cannot send" in str(results[1])
        assert pool.map(len, [("abcd",)]) == [4]  # the worker is still there
    finally:
        pool.close()
