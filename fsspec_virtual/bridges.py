"""Every crossing between blocking code and coroutines, under one rule.

The rule: **work runs where its kind belongs, and a crossing names which kind it is.**

- Reading sources is asynchronous (``access/``, ``reader.py``, ``compute.py``) and runs on
  the loop of whoever reads: zarr's loop for a store, a loop of our own elsewhere.
- Listing, scanning and combining are blocking functions of files (``source.py``,
  ``scan/``, ``combine.py``, ``state.py``); they never run on an event loop's thread.

Four crossings, and nothing else:

=====================================  ================================================
from -> to                             function
=====================================  ================================================
blocking code -> our coroutine         :func:`run_blocking` (a loop of its own)
blocking code -> a filesystem's        :func:`blocking_on_own_loop` (fsspec's ``sync``
coroutine                              on the loop the filesystem's sessions belong to)
coroutine -> a filesystem's coroutine  :func:`on_own_loop`
coroutine -> a build (list, scan,      :func:`in_builder` (threads of our own; never the
combine: seconds to minutes)           loop's default executor, which zarr needs)
=====================================  ================================================

Short CPU work that releases the GIL (decoding, encoding a chunk) and a blocking
filesystem's calls are the fifth, ordinary case: ``asyncio.to_thread`` from a coroutine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem, sync

__all__ = ["run_blocking", "blocking_on_own_loop", "on_own_loop", "in_builder", "awaited"]

T = TypeVar("T")

#: Builds started from coroutines run here (see :func:`in_builder`). A build mostly waits
#: (on a server, on the scan processes), and concurrent callers of one collection share
#: one build, so threads are many: a few slow collections must not hold up the first
#: open of another.
_builder = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="vz-scan")


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion from blocking code, on a loop of its own.

    Called from a thread that runs an event loop (a notebook cell), the coroutine runs on
    a thread of its own rather than nesting loops.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:  # not inside the except: its error would be every later one's context
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


def blocking_on_own_loop(
    fs: AbstractFileSystem, function: Callable[[], Coroutine[Any, Any, T]]
) -> T:
    """``function()``'s coroutine, awaited from blocking code on ``fs``'s own loop (an
    async filesystem's sessions belong to it: fsspec's I/O thread)."""
    assert isinstance(fs, AsyncFileSystem)
    return sync(fs.loop, function)  # type: ignore[no-any-return]


async def on_own_loop(fs: AsyncFileSystem, coroutine: Coroutine[Any, Any, T]) -> T:
    """Await ``coroutine`` of ``fs`` on the event loop ``fs`` belongs to.

    A filesystem made in blocking mode (``asynchronous=False``, as fsspec makes them) owns
    sessions bound to fsspec's I/O loop (aiohttp's for HTTP): awaiting its coroutines on
    another loop (zarr's) fails, so they run there and we await the result.
    """
    own = getattr(fs, "_loop", None)
    if fs.asynchronous or own is None or own is asyncio.get_running_loop():
        return await coroutine
    return await awaited(asyncio.run_coroutine_threadsafe(coroutine, own))


def in_builder(function: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
    """Start ``function(*args)``, a build, on the builder threads.

    Never a loop's default executor: zarr's loop needs its executor's threads for the
    codec work kerchunk's translation asks of it, and concurrent first reads would
    otherwise all block in that pool.
    """
    return _builder.submit(function, *args)


async def awaited(future: concurrent.futures.Future[T]) -> T:
    """Await a thread's ``future`` from a coroutine.

    Unlike ``asyncio.wrap_future``, a caller that stops waiting does not cancel the work
    (others may be waiting for the same build), and an error is marked seen as soon as it
    is handed over: ``asyncio.gather`` stops listening at the first error, and a loop that
    ends first (an interpreter exiting) would otherwise print "Future exception was never
    retrieved" for the others' copies. Every caller still waiting gets the error.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def settle(done: concurrent.futures.Future[T]) -> None:  # on the loop
        if waiter.done():
            return
        if done.cancelled():
            waiter.cancel()
            return
        error = done.exception()
        if error is None:
            waiter.set_result(done.result())
        else:
            waiter.set_exception(error)
            waiter.exception()

    def handed_over(done: concurrent.futures.Future[T]) -> None:  # on the thread
        if loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(settle, done)
        except RuntimeError:  # the loop closed in between
            pass

    future.add_done_callback(handed_over)
    return await waiter
