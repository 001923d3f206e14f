"""``python -m burnmap``: the ``burnmap`` command."""

from burnmap._entry import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
