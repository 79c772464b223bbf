"""What a user sees while ``tslm-fleet run`` works: a live table or plain log lines.

:func:`make_display` picks the view. On a terminal it is a rich ``Live`` table, redrawn
about four times a second from :meth:`RunProgress.snapshot` (the snapshot copies the
state under the progress lock; rendering happens outside it). Elsewhere (a pipe, a CI
log, ``--no-dashboard``) it prints one timestamped line per state change, warning and
error, plus a one-line summary per active device every ``summary_interval_s``.

Numbers and sparklines are formatted by :mod:`orchestrator.formatting`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from rich import box
from rich.console import (
    Console,
    ConsoleOptions,
    Group,
    JustifyMethod,
    RenderableType,
    RenderResult,
)
from rich.progress_bar import ProgressBar
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from orchestrator.formatting import (
    format_duration,
    format_energy,
    format_latency,
    format_power,
    format_temp,
    sparkline,
)
from orchestrator.progress import TERMINAL_STATES, DeviceProgress, RunProgress
from tasks.numbers import MISSING

SPARK_WIDTH = 12
#: power changes smaller than this are meter noise; the sparkline does not magnify them
SPARK_MIN_SPAN_W = 0.1
BAR_WIDTH = 12
MESSAGE_MAX_CHARS = 60
#: after the temperature: the board reported throttling during the trial
THROTTLE_MARKER = "⚠"

#: device state -> rich style of its cell
STATE_STYLES: dict[str, str] = {
    "pending": "dim",
    "waiting": "yellow",
    "connecting": "cyan",
    "deploying": "cyan",
    "starting": "cyan",
    "loading": "blue",
    "warmup": "blue",
    "settling": "magenta",
    "idle baseline": "magenta",
    "running": "bold green",
    "reconnecting": "yellow",
    "done": "green",
    "failed": "bold red",
    "interrupted": "yellow",
    "skipped": "yellow",
}


# --------------------------------------------------------------------------- formatting


def truncate(text: str, max_chars: int = MESSAGE_MAX_CHARS) -> str:
    """First line of ``text``, cut to ``max_chars`` with an ellipsis."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= max_chars else line[: max_chars - 1] + "…"


# --------------------------------------------------------------------------- rendering


def _trial_label(d: DeviceProgress) -> str:
    if d.trials_total <= 0:
        return d.trial or MISSING
    current = d.trials_done if d.state in TERMINAL_STATES else d.trials_done + 1
    count = f"{min(current, d.trials_total)}/{d.trials_total}"
    return f"{count} {d.trial}" if d.trial else count


def _queries_cell(d: DeviceProgress) -> RenderableType:
    if d.queries_total <= 0:
        return Text(f"{d.queries_done}" if d.queries_done else MISSING)
    grid = Table.grid(padding=(0, 1))
    grid.add_row(
        ProgressBar(
            total=d.queries_total,
            completed=min(d.queries_done, d.queries_total),
            width=BAR_WIDTH,
            complete_style="green",
            finished_style="bold green",
        ),
        Text(f"{d.queries_done}/{d.queries_total}"),
    )
    return grid


def _power_cell(d: DeviceProgress) -> Text:
    spark = sparkline(d.power_history_w, width=SPARK_WIDTH, min_span=SPARK_MIN_SPAN_W)
    cell = Text(format_power(d.power_w))
    if spark:
        cell.append(" ")
        cell.append(spark, style="cyan")
    return cell


def _temp_cell(d: DeviceProgress) -> Text:
    cell = Text(format_temp(d.temp_c) if d.temp_c is not None or not d.throttled else "")
    if d.throttled:
        cell.append(THROTTLE_MARKER, style="bold red")
    return cell


def _message_cell(d: DeviceProgress) -> Text:
    if d.error:
        return Text(truncate(d.error), style="red", overflow="ellipsis", no_wrap=True)
    if d.last_message:
        return Text(truncate(d.last_message), style="yellow", overflow="ellipsis", no_wrap=True)
    return Text("")


def _state_counts(devices: list[DeviceProgress]) -> str:
    counts: dict[str, int] = {}
    for d in devices:
        counts[d.state] = counts.get(d.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


@dataclass(frozen=True)
class _Column:
    header: str
    min_width: int
    cell: Callable[[DeviceProgress], RenderableType]
    justify: JustifyMethod = "left"


#: the optional columns of the table, by key
_COLUMNS: dict[str, _Column] = {
    "trial": _Column(
        "trial", 22, lambda d: Text(_trial_label(d), overflow="ellipsis", no_wrap=True)
    ),
    "queries": _Column("queries", BAR_WIDTH + 6, _queries_cell),
    "power+spark": _Column("power", 7 + SPARK_WIDTH, _power_cell),
    "power": _Column("power", 7, lambda d: Text(format_power(d.power_w))),
    "latency": _Column("latency", 7, lambda d: Text(format_latency(d.last_latency_s)), "right"),
    "energy": _Column("J/query", 8, lambda d: Text(format_energy(d.energy_j_per_query)), "right"),
    "temp": _Column(f"temp {THROTTLE_MARKER}", 8, _temp_cell),
}
#: column sets from the richest to the leanest; the first that fits the width is used
_LAYOUTS: tuple[tuple[str, ...], ...] = (
    ("trial", "queries", "power+spark", "latency", "energy", "temp"),
    ("trial", "queries", "power", "latency", "energy", "temp"),
    ("trial", "queries", "power", "latency", "energy"),
    ("trial", "queries", "power"),
    ("queries",),
    (),
)
#: what the message column keeps at least, and what each column adds (padding, divider)
_MESSAGE_MIN_WIDTH = 12
_COLUMN_GAP = 2


def _layout(width: int, fixed: int) -> tuple[str, ...]:
    for keys in _LAYOUTS:
        needed = 1 + fixed + sum(_COLUMNS[k].min_width + _COLUMN_GAP for k in keys)
        if needed + _MESSAGE_MIN_WIDTH + _COLUMN_GAP <= width:
            return keys
    return _LAYOUTS[-1]


class DashboardView:
    """Renderable live view of a run: a header line and one table row per device.

    Each rendering takes a fresh snapshot (the progress lock is held only while copying)
    and fits the columns to the width available, dropping the least important first.
    """

    def __init__(self, progress: RunProgress) -> None:
        self.progress = progress

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.render(options.max_width)

    def render(self, width: int) -> RenderableType:
        """The header and the table for a terminal ``width`` characters wide."""
        progress = self.progress
        devices = progress.snapshot()
        header = Text.assemble(
            ("run ", "bold"),
            (progress.run_id, "bold cyan"),
            "   elapsed ",
            (format_duration(progress.elapsed_s()), "bold"),
            "   ETA ",
            (format_duration(progress.eta_s()), "bold"),
            f"   {len(devices)} device{'s' if len(devices) != 1 else ''}: ",
            _state_counts(devices),
        )
        name_width = max(6, *(len(d.name) for d in devices)) if devices else 6
        state_width = max(map(len, STATE_STYLES))
        keys = _layout(width, name_width + state_width + 2 * _COLUMN_GAP)
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, expand=True)
        table.add_column("device", style="bold", no_wrap=True, min_width=name_width)
        table.add_column("state", no_wrap=True, min_width=state_width)
        for key in keys:
            column = _COLUMNS[key]
            table.add_column(
                column.header, no_wrap=True, min_width=column.min_width, justify=column.justify
            )
        # the message column takes whatever width is left (ratio) and ends in an ellipsis
        # there; without a ratio column rich would crop the whole line instead
        table.add_column("last warning / error", no_wrap=True, overflow="ellipsis", ratio=1)
        for d in devices:
            table.add_row(
                Text(d.name, overflow="ellipsis", no_wrap=True),
                Text(d.state, style=STATE_STYLES.get(d.state, "")),
                *(_COLUMNS[key].cell(d) for key in keys),
                _message_cell(d),
            )
        return Group(header, table)


#: the share of one core the live dashboard may spend drawing itself: with many devices a
#: table costs milliseconds per row, so a large fleet is redrawn less often
DASHBOARD_CPU_BUDGET = 0.05


class ThrottledView:
    """A renderable that redraws ``view`` only as often as ``cpu_budget`` allows.

    Each real rendering is timed; until ``cost / cpu_budget`` seconds have passed, the
    lines of the last one are shown again (a change of width redraws at once).
    """

    def __init__(self, view: Any, cpu_budget: float = DASHBOARD_CPU_BUDGET) -> None:
        self.view = view
        self.cpu_budget = cpu_budget
        self.renders = 0
        self.last_cost_s = 0.0
        self._lines: list[list[Segment]] | None = None
        self._width: int | None = None
        self._next = 0.0

    def invalidate(self) -> None:
        """Redraw on the next refresh (the final state of a run)."""
        self._lines = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        now = time.monotonic()
        if self._lines is None or now >= self._next or options.max_width != self._width:
            t0 = time.perf_counter()
            self._lines = console.render_lines(self.view, options, pad=False)
            self.last_cost_s = time.perf_counter() - t0
            self._next = now + self.last_cost_s / self.cpu_budget
            self._width = options.max_width
            self.renders += 1
        for line in self._lines:
            yield from line
            yield Segment.line()


def render_dashboard(progress: RunProgress) -> RenderableType:
    """The live view of ``progress`` as a rich renderable (fits the console it prints on)."""
    return DashboardView(progress)


def summary_line(d: DeviceProgress) -> str:
    """One plain line describing a device, for logs."""
    parts = [d.state]
    if d.trial:
        parts.append(_trial_label(d))
    if d.queries_total:
        parts.append(f"{d.queries_done}/{d.queries_total} queries")
    if d.power_w is not None:
        parts.append(format_power(d.power_w))
    if d.last_latency_s is not None:
        parts.append(f"latency {format_latency(d.last_latency_s)}")
    if d.energy_j_per_query is not None:
        parts.append(f"{format_energy(d.energy_j_per_query)}/query")
    if d.temp_c is not None:
        parts.append(format_temp(d.temp_c))
    if d.throttled:
        parts.append("THROTTLED")
    if d.error:
        parts.append(f"error: {truncate(d.error)}")
    return "  ".join(parts)


# --------------------------------------------------------------------------- displays


def _timestamp() -> str:
    return time.strftime("%H:%M:%S")


class Display:
    """A context manager that shows a run's progress while it is open.

    ``log(message)`` prints a line for the user (above the live area when there is one).
    """

    def __init__(self, progress: RunProgress, console: Console) -> None:
        self.progress = progress
        self.console = console
        self._open = False
        self._width = max((len(d.name) for d in progress.snapshot()), default=0)

    def __enter__(self) -> Display:
        if not self._open:
            self._open = True
            self.progress.add_listener(self._on_change)
            self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop showing progress (idempotent)."""
        if self._open:
            self._open = False
            self.progress.remove_listener(self._on_change)
            self._stop()

    def log(self, message: str) -> None:
        """Print one timestamped line for the user."""
        self._print(f"{_timestamp()} {message}")

    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _device_line(self, device: str, text: str) -> str:
        return f"{_timestamp()} {device:<{self._width}}  {text}"

    # overridden by the two views
    def _start(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _stop(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _on_change(self, device: str, kind: str, text: str) -> None:  # pragma: no cover
        raise NotImplementedError


class LiveDisplay(Display):
    """A rich Live table, redrawn ``refresh_per_second`` times from snapshots."""

    def __init__(
        self, progress: RunProgress, console: Console, *, refresh_per_second: float = 4.0
    ) -> None:
        super().__init__(progress, console)
        from rich.live import Live

        self._view = ThrottledView(DashboardView(progress))
        self._live = Live(
            console=console,
            get_renderable=self._render,
            refresh_per_second=refresh_per_second,
            transient=False,
        )

    def _render(self) -> RenderableType:
        return self._view

    def _start(self) -> None:
        self._live.start(refresh=True)

    def _stop(self) -> None:
        self._view.invalidate()
        self._live.stop()  # draws the final state once more and leaves it on screen

    def _on_change(self, device: str, kind: str, text: str) -> None:
        # the table shows the current state; above it, keep a history of what matters later
        # (state texts read "<state> [trial][: message]")
        state = text.split(" ", 1)[0].rstrip(":") if kind == "state" else None
        if kind == "error":
            self._print(self._device_line(device, f"error: {text}"))
        elif state in ("failed", "interrupted", "skipped", "waiting"):
            self._print(self._device_line(device, text))


class PlainDisplay(Display):
    """Timestamped log lines: every change as it happens, a summary every interval."""

    def __init__(
        self, progress: RunProgress, console: Console, *, summary_interval_s: float = 10.0
    ) -> None:
        super().__init__(progress, console)
        self.summary_interval_s = summary_interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self.log(f"run {self.progress.run_id}: {len(self.progress.snapshot())} device(s)")
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._summaries, name="dashboard-summary", daemon=True
        )
        self._thread.start()

    def _stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.print_summary(active_only=False)
        self.log(
            f"run {self.progress.run_id}: elapsed {format_duration(self.progress.elapsed_s())}"
        )

    def _summaries(self) -> None:
        while not self._stopping.wait(self.summary_interval_s):
            self.print_summary(active_only=True)

    def print_summary(self, *, active_only: bool) -> None:
        """One line per device (only those still working when ``active_only``)."""
        for d in self.progress.snapshot():
            if active_only and d.state in TERMINAL_STATES | {"pending"}:
                continue
            self._print(self._device_line(d.name, summary_line(d)))

    def _on_change(self, device: str, kind: str, text: str) -> None:
        line = text if kind == "state" else f"{kind}: {text}"
        self._print(self._device_line(device, line))


def make_display(
    progress: RunProgress,
    *,
    live: bool | None = None,
    console: Console | None = None,
    summary_interval_s: float = 10.0,
    refresh_per_second: float = 4.0,
) -> Display:
    """The display for a run: a live table on a terminal, plain log lines otherwise.

    ``live=None`` decides from the console (a real, non-dumb terminal gets the live view);
    ``live=False`` (``--no-dashboard``) forces plain lines, ``live=True`` forces the table.
    Use it as a context manager around the run.
    """
    console = console or Console()
    if live is None:
        live = console.is_terminal and not console.is_dumb_terminal
    if live:
        return LiveDisplay(progress, console, refresh_per_second=refresh_per_second)
    return PlainDisplay(progress, console, summary_interval_s=summary_interval_s)
