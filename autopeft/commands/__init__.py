"""One module per CLI command. Each has ``add(subparsers)`` (declares its options; imports nothing heavy) and
``run(args) -> int`` (calls only :mod:`autopeft.api`, plus printing).  :mod:`autopeft.cli` assembles them."""

from __future__ import annotations

#: command name -> module under autopeft.commands (in the order ``autopeft --help`` lists them)
COMMANDS = {"search": "search", "show": "show", "best": "best", "list": "list_", "export": "export", "train": "train",
            "plot": "plot", "dashboard": "dashboard"}
