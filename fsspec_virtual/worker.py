"""Entry point of a scan worker process (see :mod:`fsspec_virtual.pool`)."""

from __future__ import annotations

import os
import pickle
import sys

from .pool import receive_message, send_message


def serve() -> None:
    """Run tasks read from stdin until it closes, replying on the original stdout."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # nothing a task prints may corrupt the replies
    import fsspec_virtual.scan  # noqa: F401 - import the heavy modules while the parent lists

    stdin = sys.stdin.fileno()
    while True:
        try:
            function, args = receive_message(stdin)
        except EOFError:
            return
        try:
            reply = (True, function(*args))
        except BaseException as e:
            reply = (False, e)
        try:
            send_message(replies, reply)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            send_message(replies, (False, RuntimeError(f"{reply[1]!r} (unpicklable: {e})")))


if __name__ == "__main__":
    serve()
