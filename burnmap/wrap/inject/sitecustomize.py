"""burnmap wrap: budget every httpx / httpx2 client a wrapped Python program creates.

``burnmap wrap`` puts this folder first on the child's ``PYTHONPATH``, so Python imports it
at start-up in the child and in every Python process the child starts (subprocesses,
``multiprocessing`` spawn children), as they inherit the environment.

At import it uses the standard library only, and only installs an import hook. When the
program imports ``httpx`` or ``httpx2``, their ``Client`` / ``AsyncClient`` are patched so
that each new client's transports are wrapped in burnmap's budget transport (clients that
already have one, like ``burnmap.client()``, are left alone); burnmap is imported then,
not before. The child shares the supervisor's budget through a ledger file
(``BURNMAP_LEDGER``, scope in ``BURNMAP_SCOPES``) and reports each call and refusal to an
events file (``BURNMAP_WRAP_EVENTS``). Nothing here may raise into the program: every
failure is reported to the events file and the program runs on, unbudgeted.

Any ``sitecustomize`` the program's environment already had is run afterwards.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
from types import ModuleType
from typing import Any

__all__: list[str] = []

_HERE = os.path.dirname(os.path.abspath(__file__))
_PATCHED = "_burnmap_patched"
_state: dict[str, Any] = {"burnmap": None, "failed": False}


def _event(kind: str, **fields: Any) -> None:
    path = os.environ.get("BURNMAP_WRAP_EVENTS")
    if not path:
        return
    line = json.dumps({"kind": kind, "pid": os.getpid(), "time": time.time(), **fields})
    try:
        # One write per line on an O_APPEND descriptor: lines from many processes interleave
        # whole.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def _burnmap() -> Any:
    """burnmap, imported on first use (from the parent's paths if the child lacks it)."""
    if _state["burnmap"] is not None or _state["failed"]:
        return _state["burnmap"]
    ready = os.environ.get("BURNMAP_WRAP_READY")
    if ready:
        # The program was started before the supervisor wrote its budget: wait for it.
        deadline = time.monotonic() + 30
        while not os.path.exists(ready) and time.monotonic() < deadline:
            time.sleep(0.002)
        if not os.path.exists(ready):
            _event("inject-failed", error="the supervisor never wrote the budget")
    try:
        try:
            import burnmap
        except ImportError:
            wrapping = os.environ.get("BURNMAP_WRAP_PYTHON")
            if wrapping and wrapping != sys.implementation.cache_tag:
                # Another Python: the packages burnmap wrap runs on (compiled for its own
                # Python) cannot load here, and mixing them in would break the program.
                raise ImportError(
                    f"burnmap is not installed for this Python ({sys.implementation.cache_tag}"
                    f"; burnmap wrap runs on {wrapping}): install it there to budget this "
                    "program's calls"
                ) from None
            extra = os.environ.get("BURNMAP_WRAP_PATHS", "")
            for path in extra.split(os.pathsep):
                if path and path not in sys.path:
                    sys.path.append(path)
            import burnmap
        import genai_prices  # noqa: F401 - loaded here, where a failure is caught, not mid-call

        # BURNMAP_LEDGER (the supervisor's ledger) is burnmap's default: a program that
        # configures its own ledger keeps it.
        from burnmap.runs import observe

        observe(lambda kind, fields: _event(kind, **fields))
        _state["burnmap"] = burnmap
        _event("attached", python=sys.version.split()[0], argv=sys.argv[:3])
    except Exception as exc:
        _state["failed"] = True
        _event("inject-failed", error=f"{type(exc).__name__}: {exc}")
    return _state["burnmap"]


def _wrap_client(client: Any, asynchronous: bool) -> None:
    try:
        bm = _burnmap()
        if bm is None:
            return
        cls = bm.AsyncTransport if asynchronous else bm.Transport
        current = getattr(client, "_transport", None)
        if current is not None and not isinstance(current, bm.Transport | bm.AsyncTransport):
            client._transport = cls(current)
        mounts = getattr(client, "_mounts", None)
        if isinstance(mounts, dict):
            for pattern, transport in list(mounts.items()):
                if transport is not None and not isinstance(
                    transport, bm.Transport | bm.AsyncTransport
                ):
                    mounts[pattern] = cls(transport)
    except Exception as exc:
        _event("inject-failed", error=f"{type(exc).__name__}: {exc}")


def _patch(module: ModuleType) -> None:
    for name, asynchronous in (("Client", False), ("AsyncClient", True)):
        cls = getattr(module, name, None)
        if cls is None or getattr(cls, _PATCHED, False):
            continue
        original = cls.__init__

        def __init__(
            self: Any,
            *args: Any,
            __original: Any = original,
            __asynchronous: bool = asynchronous,
            **kwargs: Any,
        ) -> None:
            __original(self, *args, **kwargs)
            _wrap_client(self, __asynchronous)

        cls.__init__ = __init__
        setattr(cls, _PATCHED, True)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        try:
            _patch(module)
        except Exception as exc:
            _event("inject-failed", error=f"{type(exc).__name__}: {exc}")


class _Finder(importlib.abc.MetaPathFinder):
    targets = ("httpx", "httpx2")

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.targets:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


def _install() -> None:
    if not os.environ.get("BURNMAP_LEDGER"):
        return
    for name in _Finder.targets:
        module = sys.modules.get(name)
        if module is not None:
            _patch(module)
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _chain() -> None:
    """Run the sitecustomize this one shadows, if the environment has one."""
    paths = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", paths)
    if spec is None or spec.loader is None or spec.origin == __file__:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["_burnmap_chained_sitecustomize"] = module
    spec.loader.exec_module(module)


try:
    _install()
except Exception as exc:  # never break the program's start-up
    _event("inject-failed", error=f"{type(exc).__name__}: {exc}")
_chain()
