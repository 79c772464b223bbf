"""``tslm-fleet results``, ``compare``, ``query``, ``runs`` and ``export``: reading the
results database.

Every command takes ``--db URL`` (else ``TSLM_DB``, else ``./results.db``) and opens the
database read-only; ``--format`` is one of table (rich), json, csv or markdown. Tables
print medians with no more digits than their spread supports.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.commands.options import FORMATS, DbOption, FormatOption, RunOption
from tasks.errors import ConfigError
from tasks.numbers import MISSING, format_sig

if TYPE_CHECKING:
    from db.formatting import TextTable

PIPE_WIDTH = 400
RUNS_HEADERS = [
    "run",
    "status",
    "started",
    "finished",
    "model",
    "devices",
    "trials",
    "ok",
    "failed",
]


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def _parse_since(since: str | None) -> datetime | None:
    if since is None:
        return None
    try:
        value = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"--since {since!r} is not an ISO date or time",
            hint="e.g. --since 2025-05-01 or --since 2025-05-01T12:00",
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _open(db: str | None) -> Any:
    from db.store import open_store

    return open_store(db, read_only=True)


def _emit_records(records: list[dict[str, Any]], fmt: str, table: Any) -> None:
    """``records`` as JSON or CSV, else ``table()`` (a TextTable) as a table or markdown."""
    from db.formatting import records_to_csv, to_json

    if fmt == "json":
        typer.echo(to_json(records), nl=False)
    elif fmt == "csv":
        typer.echo(records_to_csv(records), nl=False)
    else:
        _emit_table(table(), fmt)


def _emit_table(table: TextTable, fmt: str) -> None:
    if fmt == "markdown":
        typer.echo(table.to_markdown(), nl=False)
    elif fmt == "csv":
        typer.echo(table.to_csv(), nl=False)
    else:
        _print_rich(table)


def print_compare(
    store: Any, *, run_id: str | None = None, by: str = "variant", task: str | None = None
) -> None:
    """Print the comparison table of a run (used at the end of `tslm-fleet run`)."""
    _print_rich(store.compare(run_id, by=by, task=task).to_text_table())


def _print_rich(table: TextTable) -> None:
    from rich.console import Console
    from rich.table import Table

    rich_table = Table(title=table.title, header_style="bold", show_lines=False)
    labels: list[str] = []
    for label, span in table.groups or [("", len(table.headers))]:
        labels += [label] * span
    for i, header in enumerate(table.headers):
        label = labels[i] if i < len(labels) else ""
        numeric = all(_looks_numeric(row[i]) for row in table.rows if i < len(row))
        rich_table.add_column(
            f"{label}\n{header}" if label else header,
            no_wrap=True,
            justify="right" if numeric and table.rows else "left",
        )
    for row in table.rows:
        rich_table.add_row(*row)
    # piped output is not cut to 80 columns: the reader did not choose that width
    console = Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)
    console.print(rich_table)
    for note in table.notes:
        console.print(f"  {note}", style="dim", highlight=False)


def _looks_numeric(cell: str) -> bool:
    head = cell.split(" ± ")[0].lstrip("-")
    return head in ("", MISSING) or head.replace(".", "", 1).replace("e", "", 1).isdigit()


def _vs_source(row: Any) -> str:
    from db.formatting import format_vs_source

    return format_vs_source(row.compression_ratio_source, row.source_format)


def _peak_rss(row: Any) -> str:
    """Peak resident set in MB; a peak over the whole agent process is marked ``(process)``."""
    if row.peak_rss_bytes is None:
        return MISSING
    text = format_sig(row.peak_rss_bytes / 1e6)
    return text if row.peak_rss_scope != "process" else f"{text} (process)"


def results_text_table(rows: list[Any]) -> TextTable:
    """The results view: one line per (run, device, variant, task)."""
    from db.formatting import TextTable, format_spread

    def half(iqr: float | None) -> float | None:
        return None if iqr is None else iqr / 2

    headers = [
        "run",
        "device",
        "variant",
        "method",
        "ratio",
        "vs_source",
        "disk_mb",
        "task",
        "n",
        "latency_s",
        "p90_s",
        "ttft_s",
        "tok/s",
        "decode_ms",
        "rss_mb",
        "energy_j/q",
        "net_j/q",
        "j/prefill_tok",
        "j/decode_tok",
        "idle_w",
        "ppl",
        "status",
        "flags",
    ]
    body = [
        [
            r.run_id,
            r.device,
            r.variant,
            r.method or MISSING,
            format_sig(r.compression_ratio),
            _vs_source(r),
            format_sig(None if r.size_bytes is None else r.size_bytes / 1e6),
            r.task,
            str(r.n_queries),
            format_spread(r.latency_s_median, half(r.latency_s_iqr)),
            format_sig(r.latency_s_p90),
            format_sig(r.ttft_s_median),
            format_sig(r.tokens_per_s_median),
            format_sig(None if r.decode_s_per_token is None else r.decode_s_per_token * 1e3),
            _peak_rss(r),
            format_spread(r.energy_j_per_query_median, half(r.energy_j_per_query_iqr)),
            format_spread(r.net_energy_j_per_query_median, half(r.net_energy_j_per_query_iqr)),
            format_spread(
                r.energy_j_per_prefill_token_median, half(r.energy_j_per_prefill_token_iqr)
            ),
            format_spread(
                r.energy_j_per_decode_token_median, half(r.energy_j_per_decode_token_iqr)
            ),
            format_sig(r.idle_power_w),
            format_sig(r.perplexity),
            r.status,
            ", ".join(f for f in r.flags if not f.startswith("energy-from-")),
        ]
        for r in rows
    ]
    return TextTable(
        headers=headers,
        rows=body,
        notes=[
            "values: median ± half the interquartile range",
            "decode_ms: median time per generated token after the first; rss_mb: the agent "
            "process's peak resident set over the trial",
        ]
        if rows
        else [],
    )


def register(app: typer.Typer) -> None:
    """Add ``results``, ``compare``, ``query``, ``runs`` and ``export`` to the CLI."""
    app.command("results")(results_cmd)
    app.command("compare")(compare_cmd)
    app.command("query")(query_cmd)
    app.command("runs")(runs_cmd)
    app.command("export")(export_cmd)


def results_cmd(
    run: RunOption = None,
    device: Annotated[str | None, typer.Option("--device", help="Only this device.")] = None,
    variant: Annotated[str | None, typer.Option("--variant", help="Only this variant.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Only this task.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only runs started at or after this ISO date or time (UTC unless given).",
        ),
    ] = None,
    fmt: FormatOption = "table",
    db: DbOption = None,
) -> None:
    """Aggregated results: median, p90, spread and CI per trial.

    One line per (run, device, variant, task).
    """
    from db.formatting import round_record
    from db.results import ResultFilter

    fmt = _check_format(fmt)
    filters = ResultFilter(
        run_id=run,
        device=device,
        variant=variant,
        task=task,
        model=model,
        since=_parse_since(since),
    )
    with _open(db) as store:
        rows = store.results(filters)
    records = [round_record(r.to_dict()) for r in rows]
    _emit_records(records, fmt, lambda: results_text_table(rows))


def compare_cmd(
    run: Annotated[
        str | None, typer.Option("--run", metavar="ID", help="Run id (default: the latest run).")
    ] = None,
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="Rows: variant (devices as column groups) or device (variants as column groups).",
        ),
    ] = "variant",
    task: Annotated[str | None, typer.Option("--task", help="Only this task.")] = None,
    fmt: FormatOption = "table",
    db: DbOption = None,
) -> None:
    """The paper-style table: ratio, perplexity, latency, energy.

    Energy and latency are per query: median ± half the interquartile range.
    """
    from db.formatting import to_json

    fmt = _check_format(fmt)
    with _open(db) as store:
        table = store.compare(run, by=by, task=task)
    if fmt == "json":
        typer.echo(to_json(table.to_records()), nl=False)
    else:
        _emit_table(table.to_text_table(), fmt)


def query_cmd(
    sql: Annotated[str, typer.Argument(help="One SQL statement (read-only).")],
    fmt: FormatOption = "table",
    max_rows: Annotated[
        int | None, typer.Option("--max-rows", metavar="N", help="Print at most N rows.")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="Results database URL (default: $TSLM_QUERY_DB, else $TSLM_DB, else "
            "sqlite:///results.db). On PostgreSQL, a role that can only read "
            "(tslm-fleet db create-reader).",
        ),
    ] = None,
) -> None:
    """Run one read-only SQL statement on the results database.

    Writes are refused by the database itself (SQLite opened read-only; PostgreSQL in a
    read-only transaction, and only as a role that can do nothing but read).
    """
    from db.formatting import TextTable, records_to_csv, round_sig, to_json
    from db.urls import resolve_query_url

    fmt = _check_format(fmt)
    with _open(resolve_query_url(db)) as store:
        result = store.query(sql, max_rows)
    records = [{k: round_sig(v) for k, v in rec.items()} for rec in result.records()]
    if fmt == "json":
        typer.echo(to_json(records), nl=False)
    elif fmt == "csv":
        typer.echo(records_to_csv(records, result.columns), nl=False)
    else:
        cells = [["" if v is None else str(v) for v in rec.values()] for rec in records]
        _emit_table(TextTable(headers=result.columns, rows=cells), fmt)


def runs_cmd(
    limit: Annotated[
        int | None, typer.Option("--limit", metavar="N", help="Only the N newest runs.")
    ] = None,
    fmt: FormatOption = "table",
    db: DbOption = None,
) -> None:
    """List runs, newest first, with their status and trial counts."""
    fmt = _check_format(fmt)
    with _open(db) as store:
        rows = store.runs(limit)
    _emit_records([r.to_dict() for r in rows], fmt, lambda: runs_text_table(rows))


def runs_text_table(rows: list[Any]) -> TextTable:
    """The runs view: one line per run."""
    from db.formatting import TextTable

    cells = [
        [
            r.run_id,
            r.status,
            r.started_at or "",
            r.finished_at or "",
            r.model or "",
            str(r.devices),
            str(r.trials),
            str(r.trials_ok),
            str(r.trials_failed),
        ]
        for r in rows
    ]
    return TextTable(headers=RUNS_HEADERS, rows=cells)


def export_cmd(
    run: Annotated[str, typer.Option("--run", metavar="ID", help="The run to export.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output file: .csv (one line per query) "
            "or .json (run, results, trials with all their rows).",
        ),
    ],
    db: DbOption = None,
) -> None:
    """Export one run to CSV or JSON."""
    from db.export import export_run

    with _open(db) as store:
        path = export_run(store.engine, run, out)
    typer.echo(f"wrote {path}")
