"""The ``burnmap`` command: ``wrap``, ``report``, ``demo``, ``prices``, ``limits``, ``spent``."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

from burnmap._core.money import usd
from burnmap.errors import UnknownModelError

__all__ = [
    "main",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="burnmap")
def main() -> None:
    """burnmap: budget enforcement for LLM agents."""


def _money(value: Decimal | None, places: int = 6) -> str:
    return "-" if value is None else f"${value:.{places}f}"


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--provider", default=None, help="genai-prices provider id (openai, anthropic…).")
def prices(models: tuple[str, ...], provider: str | None) -> None:
    """Show the prices burnmap uses for MODELS (USD per million tokens)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from burnmap.prices import lookup

    console = Console()
    failed = False
    for model in models:
        try:
            sheet = lookup(model, provider)
        except UnknownModelError as exc:
            guess = f" Did you mean {' or '.join(exc.similar)}?" if exc.similar else ""
            said = escape(
                f"No price is known for {model!r}.{guess} Calls to it are refused until one "
                f"is registered: burnmap.prices.register({model!r}, input=…, output=…) (USD "
                "per million tokens)."
            )
            console.print(f"[red]{said}[/red]", soft_wrap=True)
            failed = True
            continue
        table = Table(title=f"{model} → {sheet.model} ({sheet.source})", show_header=False)
        table.add_column("what")
        table.add_column("USD per million tokens")
        for label, rate in (
            ("input", sheet.input),
            ("output", sheet.output),
            ("cache read", sheet.cache_read),
            ("cache write (5m)", sheet.cache_write),
            ("cache write (1h)", sheet.cache_write_1h),
            ("input audio", sheet.input_audio),
            ("output audio", sheet.output_audio),
        ):
            if rate is not None:
                tiers = "".join(f", ${p} above {t // 1000}k input" for t, p in rate.tiers)
                table.add_row(label, f"${rate.base}{tiers}")
        if sheet.web_search:
            table.add_row("web search", f"${sheet.web_search} each")
        window = f"{sheet.context_window:,}" if sheet.context_window else "?"
        table.add_row("context window", window)
        table.add_row("max output", f"{sheet.max_output:,}" if sheet.max_output else "?")
        console.print(table)
    if failed:
        sys.exit(1)


_LEDGER_OPTION = click.option(
    "--ledger",
    envvar="BURNMAP_LEDGER",
    default="memory://",
    show_default=True,
    help="Ledger URL (sqlite:///spend.db, redis://host:6379/0); or BURNMAP_LEDGER.",
)


def _wide_console() -> Console:
    from rich.console import Console

    # Piped output is read by scripts and logs: never truncate it to 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=200)


def _status_table(rows: list[Any], title: str) -> Table:
    from rich.table import Table
    from rich.text import Text

    # Text, never markup: scopes hold user ids, and "[/]" or "[red]" in one is not ours
    # to interpret (it crashed the command, or changed how the scope showed).
    table = Table(
        "scope",
        "limit",
        "per",
        "window",
        "spent",
        "reserved",
        "left",
        "resets (UTC)",
        title=Text(title),
    )
    for row in rows:
        table.add_row(
            Text(row.scope),
            _money(row.limit, 2) if row.limit is not None else "none",
            row.per or "lifetime",
            Text(row.window),
            _money(row.spent),
            _money(row.reserved),
            _money(row.remaining) if row.remaining is not None else "-",
            f"{row.resets_at:%Y-%m-%d %H:%M}" if row.resets_at else "-",
        )
    return table


def _read_ledger(url: str, scopes: list[str] | None) -> tuple[list[Any], str]:
    """The status rows of ``scopes`` (every limit when ``None``), and the ledger's URL.

    Only read: expired holds are not reaped here. Reaping charges or releases them by the
    ``expired_holds`` of the process that reaps, which the CLI does not know; the fleet's
    next reservation does it with the fleet's own setting. Until then they count as
    reserved."""
    import burnmap
    from burnmap import budgets

    try:
        store = budgets.configure(ledger=url)
        rows = [budgets._status(row) for row in store.status(scopes, reap=False)]
    except burnmap.LedgerUnavailableError as exc:
        # Its own message is for a refused call (on_unavailable=...): here none was made.
        if exc.url.startswith("sqlite:"):
            fix = (
                "Check the path, and that you may write to the file and to its directory "
                "(SQLite needs to, even to read)."
            )
        else:
            fix = "Check that the store is running and that this machine can reach it."
        raise click.ClickException(
            f"cannot read the spend ledger {exc.url} ({exc.cause}). {fix}"
        ) from None
    except burnmap.LedgerError as exc:
        raise click.ClickException(str(exc)) from None
    return rows, store.url


@main.command("limits")
@_LEDGER_OPTION
def limits_command(ledger: str) -> None:
    """List the standing budgets in LEDGER with their spend in the current window.

    Read-only: "reserved" includes holds that have expired but that no process has
    reaped yet (the next reservation charges or releases them, per expired_holds).
    """
    # The ledger's own URL, never the one given: it has no password in it.
    rows, url = _read_ledger(ledger, None)
    if not rows:
        click.echo(f"no standing budgets in {url} (set one with burnmap.limit(...))")
        return
    _wide_console().print(_status_table(rows, f"standing budgets in {url}"))


@main.command("spent")
@click.argument("scopes", nargs=-1, required=True)
@_LEDGER_OPTION
def spent_command(scopes: tuple[str, ...], ledger: str) -> None:
    """Show limit, spent, reserved and window for each of SCOPES (user:ID, job:NAME, global).

    Read-only: "reserved" includes holds that have expired but that no process has
    reaped yet (the next reservation charges or releases them, per expired_holds).
    """
    rows, url = _read_ledger(ledger, list(scopes))
    _wide_console().print(_status_table(rows, f"spend in {url}"))


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--budget", default=None, help="Stop the program before it spends more (USD).")
@click.option("--job", default=None, help="Job name for the report (default: the command).")
@click.option(
    "--grace",
    default=5.0,
    show_default=True,
    type=float,
    help="Seconds between SIGTERM and SIGKILL when stopping the program.",
)
@click.option(
    "--report-json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the final report as JSON to this file.",
)
@click.option(
    "--proxy",
    is_flag=True,
    help="Route the program's API calls through a loopback metering forwarder "
    "(exact pre-call enforcement for any language).",
)
@click.option(
    "--call-rate-limit", type=int, default=None, help="As in burnmap.run(); 0 turns it off."
)
@click.option(
    "--context-growth-limit", type=float, default=None, help="As in burnmap.run(); 0 turns it off."
)
@click.option("--repeat-limit", type=int, default=None, help="As in burnmap.run(); 0 turns it off.")
@click.option(
    "--meter/--no-meter",
    default=None,
    help="Live spend meter on stderr (default: when stderr is a terminal).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def wrap(  # noqa: PLR0917 - one parameter per option, as click passes them
    budget: str | None,
    job: str | None,
    grace: float,
    report_json: Path | None,
    proxy: bool,
    call_rate_limit: int | None,
    context_growth_limit: float | None,
    repeat_limit: int | None,
    meter: bool | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND, follow its LLM spend, and stop it at its budget.

    \b
    burnmap wrap --budget 5.00 --job auth-refactor -- python my_agent.py
    burnmap wrap --budget 2 --proxy -- claude -p "refactor auth"

    Exit status: the program's own (128+N if a signal ended it); 80 when burnmap
    stopped it at its budget, 81 for a runaway loop, 127 if COMMAND was not found.
    """
    from burnmap.wrap.launch import execute

    values: dict[str, Any] = {
        "budget": budget,
        "job": job,
        "grace": grace,
        "report_json": report_json,
        "proxy": proxy,
        "call_rate_limit": call_rate_limit,
        "context_growth_limit": context_growth_limit,
        "repeat_limit": repeat_limit,
        "meter": meter,
        "command": list(command),
    }
    code = execute({k: v for k, v in values.items() if v is not None})
    sys.exit(code)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def report(path: Path) -> None:
    """Show a run report written by ``burnmap wrap --report-json`` (or ``to_json()``)."""
    import json

    from burnmap.runs import RunReport

    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        saved = RunReport.from_dict(data)
    except ValueError as exc:
        raise click.ClickException(f"{path} is not a burnmap run report ({exc})") from None
    click.echo(saved.summary())
    if "exit_status" in data:
        stopped = data.get("stopped_by_burnmap")
        click.echo(
            f"  exit status {data['exit_status']}"
            + (f" (burnmap stopped the program: {stopped})" if stopped else "")
        )


@main.command()
@click.option("--budget", default="0.25", show_default=True, help="The run's budget in USD.")
@click.option("--model", default="claude-sonnet-4-6", show_default=True)
def demo(budget: str, model: str) -> None:
    """Run a runaway agent against a local stand-in LLM and stop it at its budget.

    No API key and no network: the stand-in server listens on 127.0.0.1 and answers like
    the Anthropic API, always asking for one more tool call, as a stuck agent's model would.
    """
    try:
        import anthropic
    except ImportError:
        raise click.ClickException(
            'the demo drives the anthropic SDK: pip install "burnmap[anthropic]"'
        ) from None

    import burnmap
    from burnmap.standin import Script, StandIn

    try:
        limit = usd(budget)
    except (ArithmeticError, ValueError, TypeError):
        raise click.BadParameter(f"{budget!r} is not an amount of dollars") from None

    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    stack = "httpx2" if int(anthropic.__version__.split(".")[0]) >= 1 else "httpx"
    script = Script(
        reply_text="Let me look at the files again.",
        tool_use={"name": "bash", "input": {"command": "ls -R src/"}},
    )
    with StandIn(script=script) as server:
        client = anthropic.Anthropic(
            api_key="demo-no-key-needed",
            base_url=server.anthropic_base_url,
            http_client=burnmap.client(stack),  # type: ignore[call-overload]
        )
        console.print(
            f"[bold]burnmap demo[/bold]: an agent loop on {model} against a stand-in server at "
            f"{server.url}, budget [bold]{_money(limit, 2)}[/bold]\n"
        )
        table = Table("call", "input tok", "output tok", "held", "cost", "spent", "left")
        history: list[Any] = [{"role": "user", "content": "Refactor the auth module."}]
        with burnmap.run("demo-agent", budget=limit) as run:
            try:
                while True:
                    reply = client.messages.create(model=model, max_tokens=2048, messages=history)
                    row = run.report.cost_by_call[-1]
                    table.add_row(
                        str(run.call_count),
                        str(row["input_tokens"]),
                        str(row["output_tokens"]),
                        _money(row["reserved"]),
                        _money(row["cost"]),
                        _money(run.spent),
                        _money(run.remaining),
                    )
                    tool = next(b for b in reply.content if b.type == "tool_use")
                    history.append({"role": "assistant", "content": reply.content})
                    history.append(
                        {
                            "role": "user",
                            "content": [
                                {
                                    "type": "tool_result",
                                    "tool_use_id": tool.id,
                                    # A different result each turn: busy, not stuck.
                                    "content": f"step {run.call_count}: "
                                    + "src/auth.py src/session.py src/tokens.py\n" * 40,
                                }
                            ],
                        }
                    )
            except burnmap.BudgetExceededError as exc:
                console.print(table)
                console.print(f"\n[bold red]stopped:[/bold red] {exc}\n")
        client.close()
        report = run.report
        billed = len(server.calls)
    console.print(report.summary())
    console.print(
        f"\nThe stand-in billed {billed} calls; burnmap counted {report.call_count}. "
        f"Spent {_money(report.total_cost)} of {_money(limit, 2)}: the call that could have "
        "overspent was never sent."
    )


if __name__ == "__main__":  # pragma: no cover
    main()
