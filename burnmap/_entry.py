"""The ``burnmap`` console command.

``burnmap wrap`` must start its program as soon as it can, so it is parsed here without
click (see :mod:`burnmap.wrap.launch`); every other command, and any ``wrap`` option the
fast parser does not take, goes to the click application in :mod:`burnmap.cli`.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["wrap"]:
        from burnmap.wrap.launch import main as wrap_main

        code = wrap_main(argv[1:])
        if code is not None:
            sys.exit(code)
    from burnmap.cli import main as cli

    cli()
