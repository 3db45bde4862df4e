"""The decoded chunk cache's shared loads: one load for every caller at the same time."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fsspec_virtual.compute import DecodedChunkCache


def test_a_cancelled_caller_does_not_cancel_the_load_others_wait_for() -> None:
    """The first caller of a load is cancelled (a client that went away): the others get
    the chunk, loaded once."""
    cache = DecodedChunkCache()
    started = 0

    async def load() -> np.ndarray:
        nonlocal started
        started += 1
        await asyncio.sleep(0.05)
        return np.arange(4.0)

    async def main() -> tuple[np.ndarray, np.ndarray]:
        first = asyncio.ensure_future(cache.get_or_load("k", load))
        await asyncio.sleep(0)  # the first caller starts the load
        second = asyncio.ensure_future(cache.get_or_load("k", load))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        value = await second
        return value, await cache.get_or_load("k", load)

    value, again = asyncio.run(main())
    np.testing.assert_array_equal(value, np.arange(4.0))
    np.testing.assert_array_equal(again, np.arange(4.0))
    assert started == 1 and cache.loads == 1


def test_a_failed_load_fails_every_caller_and_is_tried_again() -> None:
    cache = DecodedChunkCache()
    calls = 0

    async def load() -> np.ndarray:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise OSError("unreadable")
        return np.ones(2)

    async def main() -> list[object]:
        results = await asyncio.gather(
            cache.get_or_load("k", load), cache.get_or_load("k", load), return_exceptions=True
        )
        return [*results, await cache.get_or_load("k", load)]

    first, second, third = asyncio.run(main())
    assert isinstance(first, OSError) and isinstance(second, OSError)
    np.testing.assert_array_equal(third, np.ones(2))  # type: ignore[arg-type]
    assert calls == 2
