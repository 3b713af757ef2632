"""``python -m autopeft``: the ``autopeft`` command (for an environment whose scripts folder is not on PATH)."""

from autopeft.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
