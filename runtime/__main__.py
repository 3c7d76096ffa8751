"""``python -m runtime``: the same command line as ``jarvis-runtime``."""

from runtime.cli import main

raise SystemExit(main())
