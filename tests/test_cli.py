"""The command line: prices, the demo, reports, and the ledger status commands."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from burnmap.cli import main
from burnmap.ledgers import LimitDef


def test_prices_shows_known_models_and_explains_unknown_ones() -> None:
    result = CliRunner().invoke(main, ["prices", "claude-sonnet-4-5", "gpt-4o-mini-2024-07-18"])
    assert result.exit_code == 0, result.output
    for text in ("$3", "$6 above 200k input", "$0.15", "gpt-4o-mini"):
        assert text in result.output
    result = CliRunner().invoke(main, ["prices", "acme-9000"])
    assert result.exit_code == 1
    assert "burnmap.prices.register" in result.output
    assert "was not sent" not in result.output  # no call was made
    typo = CliRunner().invoke(main, ["prices", "claude-sonet-4-6"])
    assert "Did you mean claude-sonnet-4-6" in typo.output


def test_demo_stops_the_agent_before_its_budget() -> None:
    result = CliRunner().invoke(main, ["demo", "--budget", "0.10"])
    assert result.exit_code == 0, result.output
    assert "was not sent" in result.output
    assert "stopped early" in result.output


def test_report_reads_a_saved_run_report(tmp_path: Path) -> None:
    import burnmap

    with burnmap.run("saved", budget=1) as r:
        pass
    path = tmp_path / "r.json"
    path.write_text(r.report.to_json())
    result = CliRunner().invoke(main, ["report", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == r.report.summary() + "\n"
    for text in ("{}", "[]", '{"job_name": "x", "total_cost": "a lot", "cost_by_call": []}'):
        path.write_text(text)
        result = CliRunner().invoke(main, ["report", str(path)])
        assert result.exit_code == 1
        assert "not a burnmap run report" in result.output


@pytest.mark.usefixtures("fresh_budgets")
@pytest.mark.parametrize("command", [["limits"], ["spent", "user:u"]])
def test_looking_at_spend_never_reaps_the_fleets_expired_holds(
    tmp_path: Path, command: list[str]
) -> None:
    """The fleet releases expired holds (expired_holds="release"); an operator who looks
    with the CLI must not charge a dead worker's hold in full, nor change anything."""
    from burnmap.ledgers.sqlite import SQLiteLedger

    path = tmp_path / "spend.db"
    fleet = SQLiteLedger(path, charge_expired=False)
    fleet.set_limit(LimitDef("user:u", 1_000_000, None, "UTC"))
    assert fleet.reserve("dead-worker", ["global", "user:u"], 400_000, ttl=0.01) is None
    time.sleep(0.05)  # the worker died: its hold has expired, and nobody has reaped it
    result = CliRunner().invoke(main, [*command, "--ledger", f"sqlite:///{path}"])
    assert result.exit_code == 0, result.output
    assert "│ $0.000000 │ $0.400000 │" in result.output  # spent nothing, still reserved
    assert fleet.status(["user:u"], reap=False)[0].spent == 0
    fleet.reap()  # the fleet's next reservation, with its own policy
    assert (fleet.status(["user:u"])[0].spent, fleet.status(["user:u"])[0].reserved) == (0, 0)
    fleet.close()


@pytest.mark.usefixtures("fresh_budgets")
def test_scope_names_are_shown_as_written_never_as_markup(tmp_path: Path) -> None:
    """Scopes hold user ids: '[/]' in one must not crash the listing, nor '[red]' colour
    it."""
    from burnmap.ledgers.sqlite import SQLiteLedger

    path = tmp_path / "[bold]spend.db"
    store = SQLiteLedger(path)
    for scope in ("user:[/]", "user:[red]alice"):
        store.set_limit(LimitDef(scope, 1_000_000, None, "UTC"))
    store.close()
    url = f"sqlite:///{path}"
    for command in (["limits"], ["spent", "user:[red]alice", "user:[/]"]):
        result = CliRunner().invoke(main, [*command, "--ledger", url])
        assert result.exit_code == 0, result.output
        assert "│ user:[/]        │ $1.00 │" in result.output
        assert "│ user:[red]alice │ $1.00 │" in result.output
        assert "[bold]spend.db" in result.output


@pytest.mark.redis
@pytest.mark.usefixtures("fresh_budgets")
def test_the_ledger_password_is_never_printed(redis_url: str) -> None:
    import uuid

    import redis

    from burnmap.ledgers import open_ledger

    admin = redis.Redis.from_url(redis_url)
    user = f"cli-{uuid.uuid4().hex[:8]}"
    admin.acl_setuser(
        user, enabled=True, passwords=["+hunter2secret"], keys=["*"], commands=["+@all"]
    )
    try:
        url = redis_url.replace("redis://", f"redis://{user}:hunter2secret@")
        shown = redis_url.replace("redis://", f"redis://{user}:***@")
        prefix = uuid.uuid4().hex[:8]
        result = CliRunner().invoke(main, ["limits", "--ledger", f"{url}?prefix={prefix}"])
        assert result.exit_code == 0, result.output
        assert f"no standing budgets in {shown}" in result.output
        store = open_ledger(f"{url}?prefix={prefix}")
        store.set_limit(LimitDef("user:u", 1_000_000, None, "UTC"))
        store.close()
        for command in (["limits"], ["spent", "user:u"]):
            result = CliRunner().invoke(main, [*command, "--ledger", f"{url}?prefix={prefix}"])
            assert result.exit_code == 0, result.output
            assert "user:u" in result.output and shown in result.output
            assert "hunter2secret" not in result.output
        for bad in ("wrongpassword", "x"):  # and in errors
            wrong = redis_url.replace("redis://", f"redis://{user}:{bad}hunter2secret@")
            result = CliRunner().invoke(main, ["limits", "--ledger", wrong])
            assert result.exit_code == 1
            assert "hunter2secret" not in result.output
    finally:
        admin.acl_deluser(user)
        admin.close()


@pytest.mark.usefixtures("fresh_budgets")
def test_a_malformed_ledger_url_is_an_error_message_not_a_traceback() -> None:
    pytest.importorskip("redis")
    result = CliRunner().invoke(main, ["limits", "--ledger", "redis://127.0.0.1:abc/0"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "bad ledger URL 'redis://127.0.0.1:abc/0' (Port could not be cast" in result.output


@pytest.mark.usefixtures("fresh_budgets")
def test_an_unreachable_ledger_is_explained_to_an_operator_not_as_a_refused_call() -> None:
    result = CliRunner().invoke(main, ["spent", "global", "--ledger", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1
    assert "cannot read the spend ledger redis://127.0.0.1:1/0 (" in result.output
    assert "running" in result.output
    assert "was not sent" not in result.output and "on_unavailable" not in result.output


def test_a_sqlite_ledger_in_a_directory_this_user_cannot_write_says_so() -> None:
    """SQLite needs to write spend.db-wal and -shm next to the file, even to read it: a
    directory the user cannot write is named as the cause, not 'unable to open'."""
    import os
    import shutil
    import tempfile
    import warnings

    from burnmap.ledgers.sqlite import SQLiteLedger

    # Outside pytest's private tmp_path: an unprivileged user must reach the file.
    directory = Path(tempfile.mkdtemp(prefix="bm-ro-"))
    try:
        SQLiteLedger(directory / "spend.db").set_limit(LimitDef("global", 1, None, "UTC"))
        for leftover in directory.glob("spend.db-*"):
            leftover.unlink()
        directory.chmod(0o555)
        url = f"sqlite:///{directory / 'spend.db'}"
        read, write = os.pipe()
        with warnings.catch_warnings():  # (3.12+ warns of forking with threads running)
            warnings.simplefilter("ignore", DeprecationWarning)
            child = os.fork()  # as root, the CLI runs as nobody, who may not write there
        if child == 0:  # pragma: no cover - the child reports through the pipe
            try:
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                result = CliRunner().invoke(main, ["limits", "--ledger", url])
                os.write(write, f"{result.exit_code}\n{result.output}".encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            code, output = pipe.read().split("\n", 1)
        os.waitpid(child, 0)
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)
    assert code == "1", output
    assert f"directory not writable: this user cannot write to {directory}" in output
    assert "spend.db-wal" in output and "was not sent" not in output
