"""``python -m fsspec_virtual``: the command line."""

from .cli import main

raise SystemExit(main())
