"""The fast way into ``burnmap wrap``: parse its options without click, start the program.

``burnmap wrap`` must add as little as possible before the program it supervises starts,
so the ``burnmap`` entry point sends ``wrap`` here first. This parser reads the same
options as the click command in :mod:`burnmap.cli`; anything it does not recognise (a
typo, ``--help``) is handed to click, which explains it.
"""

from __future__ import annotations

import os
import sys

# Nothing heavier than os and sys before the program starts (typing, dataclasses and
# pathlib cost ~15 ms together): annotations are strings, read only by type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "Prepared",
    "Spawned",
    "agent_kind",
    "execute",
    "foreground_preexec",
    "inject",
    "isatty",
    "main",
    "not_proxied",
    "parse",
    "prestart",
    "python_paths",
    "terminal",
]

_INJECT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inject")


class Prepared:
    """A program started before the supervisor loaded (it waits for ``tmp/ready``)."""

    __slots__ = ("proc", "scope", "tmp")

    def __init__(self, tmp: str, scope: str, proc: Any) -> None:
        self.tmp = tmp
        self.scope = scope
        self.proc = proc
        """The ``subprocess.Popen`` of the program."""


def agent_kind(command: list[str]) -> str | None:
    """A known agent CLI, from its argv (``npx @anthropic-ai/claude-code`` included)."""
    for word in command[:3]:
        name = os.path.basename(word).lower()
        for kind in ("claude", "codex", "gemini", "aider"):
            if name == kind or name.startswith((kind + "-", kind + ".")):
                return kind
            if name.startswith("@") and kind in name:
                return kind
    return None


def terminal() -> int | None:
    """The controlling terminal's descriptor, when burnmap wrap runs interactively."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            if stream.isatty():
                return int(stream.fileno())
        except (AttributeError, OSError, ValueError):
            continue
    return None


def foreground_preexec(tty: int | None) -> Any:
    """For Popen: the program takes the terminal's foreground itself, before it runs (so it
    can read the terminal and get Ctrl-C from its first instruction on)."""
    if tty is None:
        return None

    def take_foreground() -> None:
        import contextlib
        import signal

        # A background group asking for the terminal gets SIGTTOU: ignore it meanwhile.
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            os.tcsetpgrp(tty, os.getpgrp())
        signal.signal(signal.SIGTTOU, previous)

    return take_foreground


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


PENDING_SIGNALS: list[int] = []
"""SIGINT/SIGTERM/SIGHUP that reached wrap before the supervisor could pass them on."""


def hold_signals() -> None:
    """From wrap's start, keep a SIGINT/SIGTERM/SIGHUP for the program instead of dying of
    it: dying would leave the program running unsupervised. The supervisor passes them on
    once it can (a signal ignored from the start, as under nohup, stays ignored)."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, lambda signum, frame: PENDING_SIGNALS.append(signum))


def one_output() -> bool:
    """Whether our stdout and stderr are one file (``2>&1``, or one pipe)."""
    try:
        out, err = os.fstat(1), os.fstat(2)
    except OSError:
        return False
    return (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)


def not_proxied(env: dict[str, str]) -> None:
    """Loopback servers (the supervisor's, the proxy, telemetry) are never reached through
    an HTTP proxy the environment names."""
    env["NO_PROXY"] = env["no_proxy"] = ",".join(
        filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"])
    )


def inject(env: dict[str, str], *, ledger: str, scope: str, events: str) -> None:
    """The environment that budgets every Python process the program starts: the injected
    ``sitecustomize``, the shared ledger and scope, where to report calls."""
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_INJECT_DIR, env.get("PYTHONPATH")]))
    env["BURNMAP_LEDGER"] = ledger
    # The wrap's own scope, after any the program was given (BURNMAP_SCOPES=tenant:acme).
    env["BURNMAP_SCOPES"] = ",".join(filter(None, [env.get("BURNMAP_SCOPES"), scope]))
    env["BURNMAP_WRAP_EVENTS"] = events
    env["BURNMAP_WRAP_PATHS"] = python_paths()
    env["BURNMAP_WRAP_PYTHON"] = sys.implementation.cache_tag


class Spawned:
    """A program started with ``os.posix_spawn`` (importing subprocess alone costs ~13 ms):
    the few ``Popen`` methods the supervisor uses."""

    def __init__(self, pid: int, stdout: int, stderr: int | None) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdout = os.fdopen(stdout, "rb", buffering=0)
        self.stderr = None if stderr is None else os.fdopen(stderr, "rb", buffering=0)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                import subprocess

                raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0)
            time.sleep(0.005)
        assert self.returncode is not None
        return self.returncode


def _which(name: str) -> str | None:
    if os.sep in name:
        return name if os.access(name, os.X_OK) and not os.path.isdir(name) else None
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or ".", name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def prestart(command: list[str]) -> Prepared:
    """Start a program that needs nothing but the injected budget (no proxy, no telemetry
    receiver), before the supervisor's modules load: what burnmap wrap adds to the
    program's start is then a Python start-up and this function. The program's first
    budgeted call waits until the supervisor has written its budget (``tmp/ready``).
    Raises ``FileNotFoundError``."""
    executable = _which(command[0])
    if executable is None:
        raise FileNotFoundError(command[0])
    tmp = os.path.join(os.environ.get("TMPDIR") or "/tmp", "burnmap-wrap-" + os.urandom(8).hex())
    os.mkdir(tmp, 0o700)
    try:
        return _prestart(command, executable, tmp)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # the program never started: nothing to keep
        raise


def _prestart(command: list[str], executable: str, tmp: str) -> Prepared:
    scope = "wrap:" + os.urandom(6).hex()
    env = dict(os.environ)
    not_proxied(env)
    inject(
        env,
        # (The program must not start a ledger of its own when the supervisor's is gone.)
        ledger=f"sqlite:///{os.path.join(tmp, 'ledger.db')}?create=false",
        scope=scope,
        events=os.path.join(tmp, "events.jsonl"),
    )
    env["BURNMAP_WRAP_READY"] = os.path.join(tmp, "ready")
    tty = terminal()
    if tty is not None:
        # Interactive: the program must take the terminal before it runs, which needs a
        # preexec step posix_spawn cannot do.
        import subprocess

        proc: Any = subprocess.Popen(
            [executable, *command[1:]],
            env=env,
            process_group=0,
            preexec_fn=foreground_preexec(tty),  # noqa: PLW1509 - single-threaded here
        )
        return Prepared(tmp, scope, proc)
    # Not a terminal: the output is read for usage, through pipes (one for both when our
    # stdout and stderr are one file, `2>&1`: their lines keep their order).
    actions: list[tuple[int, ...]] = []
    ours: list[int] = []
    theirs: list[int] = []
    for targets in ((1, 2),) if one_output() else ((1,), (2,)):
        read, write = os.pipe()
        actions += [(os.POSIX_SPAWN_DUP2, write, target) for target in targets]
        ours.append(read)
        theirs.append(write)
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in ours + theirs]
    # (Python ignores SIGPIPE and SIGXFSZ, and a spawned program would inherit that:
    # `yes | head -1` would never end. subprocess restores them; so does this.)
    import signal

    pid = os.posix_spawn(
        executable,
        [executable, *command[1:]],
        env,
        file_actions=actions,
        setpgroup=0,
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
    )
    for fd in theirs:
        os.close(fd)
    return Prepared(tmp, scope, Spawned(pid, ours[0], ours[1] if len(ours) > 1 else None))


def python_paths() -> str:
    """Where burnmap and its dependencies live, for a child that cannot import them: this
    package's root and this interpreter's site-packages (read off ``sys.path``, free)."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    roots = [package_root, *(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))]
    return os.pathsep.join(dict.fromkeys(roots))


_VALUED = {
    "--budget": "budget",
    "--job": "job",
    "--grace": "grace",
    "--report-json": "report_json",
    "--call-rate-limit": "call_rate_limit",
    "--context-growth-limit": "context_growth_limit",
    "--repeat-limit": "repeat_limit",
}
_FLAGS = {"--proxy": ("proxy", True), "--meter": ("meter", True), "--no-meter": ("meter", False)}


class UsageError(ValueError):
    """Options the fast parser cannot take: click handles (and explains) them."""


def parse(argv: list[str]) -> dict[str, Any]:
    """The wrap options and command in ``argv`` (the words after ``wrap``).

    >>> parse(["--budget", "5", "--", "python", "a.py", "--budget", "1"])["command"]
    ['python', 'a.py', '--budget', '1']
    """
    values: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if not word.startswith("-") or word == "-":
            break
        name, has_value, value = word.partition("=")
        if name in _VALUED:
            if not has_value:
                index += 1
                if index >= len(argv):
                    raise UsageError(word)
                value = argv[index]
            values[_VALUED[name]] = value
        elif name in _FLAGS and not has_value:
            key, flag = _FLAGS[name]
            values[key] = flag
        else:
            raise UsageError(word)
        index += 1
    values["command"] = argv[index:]
    if not values["command"]:
        raise UsageError("no command")
    return values


def execute(values: dict[str, Any]) -> int:
    """Check the options, run the supervisor; the exit status to use."""
    from decimal import Decimal, InvalidOperation

    def fail(option: str, message: str) -> int:
        print(
            "Usage: burnmap wrap [OPTIONS] COMMAND...\nTry 'burnmap wrap --help' for help.\n\n"
            f"Error: Invalid value for '{option}': {message}",
            file=sys.stderr,
        )
        return 2

    budget = values.get("budget")
    limit = None
    if budget is not None:
        try:
            limit = Decimal(str(budget))
        except (InvalidOperation, ValueError):
            limit = None
        if limit is None or not limit.is_finite() or limit < 0:
            return fail("--budget", f"{budget!r} is not an amount of dollars (e.g. --budget 5.00)")
    try:
        given_grace = _number("grace", values.get("grace"), float)
        loops = {
            name: (number or None)
            for name, kind in (
                ("call_rate_limit", int),
                ("context_growth_limit", float),
                ("repeat_limit", int),
            )
            if (number := _number(name, values.get(name), kind)) is not None
        }
    except ValueError as exc:
        return fail("--" + str(exc).replace("_", "-"), "not a number")
    from burnmap._core.limits import check_loop_limit

    for name, number in loops.items():
        try:
            check_loop_limit(name, number, whole=name != "context_growth_limit", least=1)
        except ValueError:
            least = "more than 1" if name == "context_growth_limit" else "at least 1"
            return fail("--" + name.replace("_", "-"), f"must be {least} (0 turns it off)")
    grace = 5.0 if given_grace is None else given_grace
    if grace < 0:
        return fail("--grace", "must be >= 0 seconds")
    command: list[str] = values["command"]
    report = values.get("report_json")
    if report and not os.path.isdir(os.path.dirname(os.path.abspath(report))):
        # Found out only at the end, it would lose the report of a whole run.
        return fail("--report-json", f"{os.path.dirname(os.path.abspath(report))} is no folder")
    if values.get("proxy"):
        from urllib.parse import urlsplit

        for name in ("ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
            upstream = os.environ.get(name)
            parts = urlsplit(upstream) if upstream else None
            if parts is not None and (parts.scheme not in ("http", "https") or not parts.hostname):
                # The proxy forwards there: say which setting is wrong, not a traceback.
                return fail("--proxy", f"{name}={upstream!r} is not an http(s) URL with a host")
    hold_signals()
    prepared = None
    # Known agent CLIs need the supervisor ready before they start (a telemetry receiver,
    # or the list of session files that existed before them): only other programs
    # start early.
    if not values.get("proxy") and agent_kind(command) in (None, "aider"):
        try:
            prepared = prestart(command)
        except FileNotFoundError:
            print(f"burnmap wrap: command not found: {command[0]}", file=sys.stderr)
            return 127
        except OSError as exc:
            # Found but not runnable (as a shell says it, and with its status): not
            # executable, or a script without a #! line (Exec format error).
            hint = " (a script needs a #! line)" if exc.errno == 8 else ""
            print(f"burnmap wrap: cannot run {command[0]}: {exc.strerror}{hint}", file=sys.stderr)
            return 126
    from pathlib import Path

    from burnmap.wrap.supervisor import EXIT_NOT_FOUND, Supervisor, WrapOptions

    options = WrapOptions(
        command=command,
        budget=limit,
        job=values.get("job") or os.path.basename(command[0]),
        grace=grace,
        report_json=Path(report) if report else None,
        proxy=bool(values.get("proxy")),
        loop_limits=loops,
        meter=values.get("meter"),
    )
    try:
        return Supervisor(options, prepared=prepared).execute()
    except FileNotFoundError:
        print(f"burnmap wrap: command not found: {command[0]}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except BaseException:
        # The supervisor failed after the program started: the program must not run on
        # unsupervised (it would wait for its budget, then spend without one).
        if prepared is not None and prepared.proc.poll() is None:
            import contextlib
            import signal

            with contextlib.suppress(OSError):
                os.killpg(prepared.proc.pid, signal.SIGKILL)
        raise


def _number(option: str, value: object, kind: type[int] | type[float]) -> int | float | None:
    """``value`` as a number of ``kind``; a ``ValueError`` naming ``option`` if it is not."""
    if value is None:
        return None
    try:
        return kind(str(value))
    except ValueError:
        raise ValueError(option) from None


def main(argv: list[str]) -> int | None:
    """Run ``burnmap wrap`` from ``argv`` (after ``wrap``); ``None``: let click do it."""
    try:
        values = parse(argv)
    except UsageError:
        return None
    return execute(values)
