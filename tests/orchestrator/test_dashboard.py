"""The run dashboard: number formatting, sparklines, the live table and plain log lines."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from agent.protocol import make_event
from orchestrator.dashboard import (
    STATE_STYLES,
    LiveDisplay,
    PlainDisplay,
    make_display,
    render_dashboard,
)
from orchestrator.formatting import (
    SPARK_LEVELS,
    format_energy,
    format_latency,
    format_power,
    sparkline,
)
from orchestrator.progress import RunProgress
from tasks.numbers import MISSING

LONG_ERROR = (
    "ConnectError: pi5 (192.0.2.15:22) did not answer within 10 s; check that the "
    "board is powered and on the network, then run tslm-fleet doctor --devices pi5"
)
TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d ")


def _event(seq: int, event_type: str, **data: object):
    return make_event(seq, event_type, float(seq), **data)


def _query(
    seq: int, latency_s: float, *, temp_c: float | None = None, throttled: bool | None = None
):
    return _event(
        seq,
        "query",
        task="generate",
        rep=0,
        index=seq,
        t_start=0.0,
        t_end=latency_s,
        latency_s=latency_s,
        ttft_s=None,
        prompt_tokens=8,
        output_tokens=16,
        tokens_per_s=None,
        output_sha256=None,
        energy_j=None,
        net_energy_j=None,
        samples=0,
        fresh_samples=0,
        under_resolved=True,
        throttled=throttled,
        temp_c=temp_c,
    )


def _window(
    seq: int,
    energy_j_per_query: float,
    *,
    temp_c_after: float | None = None,
    throttled: bool | None = None,
):
    return _event(
        seq,
        "window",
        kind="queries",
        task="generate",
        rep=0,
        index=0,
        t_start=0.0,
        t_end=10.0,
        duration_s=10.0,
        queries=5,
        energy_j=None,
        net_energy_j=None,
        energy_j_per_query=energy_j_per_query,
        net_energy_j_per_query=None,
        mean_power_w=None,
        median_power_w=None,
        samples=20,
        fresh_samples=20,
        under_resolved=False,
        throttled=throttled,
        temp_c_before=None,
        temp_c_after=temp_c_after,
        freq_mhz_before=None,
        freq_mhz_after=None,
        throttled_flags_before=None,
        throttled_flags_after=None,
    )


def fleet_progress() -> RunProgress:
    """Five devices: running, failed, throttled in idle baseline, pending, done."""
    progress = RunProgress("run-20250101-ab12", ["pi4", "pi5", "local", "pi3", "orin"])
    progress.plan("pi4", trials_total=4, queries_total=40)
    progress.set_state("pi4", "running", trial="tt-2x/generate")
    for seq, watts in enumerate([3.1, 3.3, 3.9, 4.2, 4.25, 4.1, 3.2], start=1):
        progress.apply_event(
            "pi4", _event(seq, "power", watts=watts, samples=seq, fresh_samples=seq)
        )
    for seq in range(8, 20):
        progress.apply_event("pi4", _query(seq, 0.41234, temp_c=55.04))
    progress.apply_event("pi4", _window(20, 0.0123456))

    progress.set_state("pi5", "connecting")
    progress.set_state("pi5", "failed", message=LONG_ERROR)

    progress.plan("local", trials_total=2, queries_total=10)
    progress.set_state("local", "running", trial="dense/perplexity")
    for seq in range(1, 4):
        progress.apply_event("local", _query(seq, 1.23456))
    progress.apply_event("local", _window(4, 12.3456, temp_c_after=81.23, throttled=True))
    progress.apply_event(
        "local", _event(5, "warning", message="window under-resolved", code="under_resolved")
    )
    progress.apply_event("local", _event(6, "phase", phase="idle"))

    progress.plan("orin", trials_total=1, queries_total=5)
    progress.set_state("orin", "running", trial="dense/generate")
    progress.trial_finished("orin")
    progress.set_state("orin", "done")
    return progress


def render_text(progress: RunProgress, width: int = 140) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(render_dashboard(progress))
    return console.export_text()


# --------------------------------------------------------------------------- formatting


def test_units_and_missing_values() -> None:
    assert format_power(3.2149) == "3.21 W"
    assert format_power(12.345) == "12.3 W"
    assert format_latency(0.41234) == "412 ms"
    assert format_latency(0.0123456) == "12.3 ms"
    assert format_latency(1.23456) == "1.23 s"
    assert format_energy(12.3456) == "12.3 J"
    assert format_energy(0.0123456) == "0.0123 J"
    assert format_power(None) == format_latency(None) == format_energy(None) == MISSING


# --------------------------------------------------------------------------- sparkline


def test_sparkline_spans_lowest_to_highest_level() -> None:
    assert sparkline(range(8)) == SPARK_LEVELS
    assert sparkline([7, 0]) == "█▁"
    assert sparkline([0.0, 5.0, 10.0]) == "▁" + SPARK_LEVELS[4] + "█"
    assert sparkline([2.0, 4.0, 3.0]) == "▁█" + SPARK_LEVELS[4]


def test_sparkline_width_keeps_the_latest_values() -> None:
    assert sparkline([100.0, 0.0, 1.0, 2.0], width=3) == "▁" + SPARK_LEVELS[4] + "█"
    assert sparkline([1.0, 2.0], width=0) == ""


def test_sparkline_flat_noise_and_gaps() -> None:
    assert sparkline([]) == ""
    assert sparkline([4.0, 4.0, 4.0]) == "▁▁▁"
    # 10 mW of noise on a 0.1 W scale stays in the middle levels
    noisy = sparkline([3.20, 3.21, 3.20], min_span=0.1)
    assert set(noisy) <= set(SPARK_LEVELS[3:5]) and len(noisy) == 3
    assert sparkline([1.0, float("nan"), 2.0]) == "▁█"


# --------------------------------------------------------------------------- live table


def test_dashboard_renders_every_device_and_its_cells() -> None:
    text = render_text(fleet_progress())
    assert all(len(line) <= 140 for line in text.splitlines())
    header = text.splitlines()[0]
    assert "run-20250101-ab12" in header and "elapsed" in header and "ETA" in header
    rows = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()}
    assert {"pi4", "pi5", "local", "pi3", "orin"} <= rows.keys()

    pi4 = rows["pi4"]
    assert "running" in pi4 and "1/4 tt-2x/generate" in pi4 and "12/40" in pi4
    assert "3.20 W" in pi4 and sparkline([3.1, 3.3, 3.9, 4.2, 4.25, 4.1, 3.2], min_span=0.1) in pi4
    assert "412 ms" in pi4 and "0.0123 J" in pi4 and "55.0°C" in pi4 and "⚠" not in pi4

    pi5 = rows["pi5"]
    assert "failed" in pi5 and "ConnectError: pi5" in pi5 and pi5.rstrip().endswith("…")

    local = rows["local"]
    assert "idle baseline" in local and "3/10" in local and "1.23 s" in local
    assert "12.3 J" in local and "81.2°C⚠" in local and "window under-resolved" in local

    assert "pending" in rows["pi3"]
    assert "done" in rows["orin"] and "1/1 dense/generate" in rows["orin"]


def test_dashboard_header_counts_states_and_estimates_eta() -> None:
    progress = RunProgress("r", ["a", "b"])
    progress.plan("a", trials_total=1, queries_total=4)
    assert f"ETA {MISSING}" in render_text(progress).splitlines()[0]
    progress.set_state("a", "running", trial="dense/generate")
    progress.apply_event("a", _query(1, 0.5))
    header = render_text(progress).splitlines()[0]
    assert re.search(r"ETA \d+:\d\d", header)
    assert "2 devices: 1 running, 1 pending" in header


def test_dashboard_drops_minor_columns_on_a_narrow_terminal() -> None:
    text = render_text(fleet_progress(), width=60)
    assert all(len(line) <= 60 for line in text.splitlines())
    rows = {line.split()[0]: line for line in text.splitlines()[2:] if line.strip()}
    assert "running" in rows["pi4"] and "12/40" in rows["pi4"]
    assert "ConnectError" in rows["pi5"]
    assert "412 ms" not in text and "°C" not in text
    wider = render_text(fleet_progress(), width=100)
    assert "3.20 W" in wider and "1/4 tt-2x/generate" in wider and "▁" not in wider


def test_live_display_draws_and_logs_above_the_table() -> None:
    progress = fleet_progress()
    out = io.StringIO()
    console = Console(file=out, width=140, force_terminal=True, color_system=None)
    display = make_display(progress, console=console, refresh_per_second=20)
    assert isinstance(display, LiveDisplay)
    with display:
        display.log("compressed tt-2x in 3.2 s")
        progress.set_state("pi3", "failed", message="disk full")
        time.sleep(0.15)
    text = out.getvalue()
    assert "compressed tt-2x in 3.2 s" in text
    assert re.search(r"\d\d:\d\d:\d\d pi3\s+failed: disk full", text)
    assert "run-20250101-ab12" in text and "0.0123 J" in text


def test_display_is_plain_without_a_terminal() -> None:
    progress = RunProgress("r", ["a"])
    piped = Console(file=io.StringIO())
    assert isinstance(make_display(progress, console=piped), PlainDisplay)
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(make_display(progress, console=terminal, live=False), PlainDisplay)


# --------------------------------------------------------------------------- plain lines


def plain_run(summary_interval_s: float = 60.0) -> tuple[RunProgress, PlainDisplay, io.StringIO]:
    progress = RunProgress("run-7", ["pi4", "local"])
    out = io.StringIO()
    display = make_display(
        progress, console=Console(file=out, width=80), summary_interval_s=summary_interval_s
    )
    assert isinstance(display, PlainDisplay)
    return progress, display, out


def test_plain_mode_prints_a_line_per_state_change_warning_and_error() -> None:
    progress, display, out = plain_run()
    with display:
        progress.plan("pi4", trials_total=1, queries_total=10)
        progress.set_state("pi4", "connecting")
        progress.set_state("pi4", "connecting")  # no change, no line
        progress.set_state("pi4", "deploying")
        progress.set_state("pi4", "loading", trial="tt-2x/generate")
        progress.apply_event("pi4", _event(1, "phase", phase="idle"))
        progress.apply_event("pi4", _event(2, "phase", phase="idle"))  # no change
        progress.apply_event("pi4", _event(3, "warning", message="meter slow", code="slow"))
        progress.apply_event("pi4", _event(4, "error", message="oom", error_type="TaskError"))
        progress.set_state("local", "failed", message="ssh refused")
        display.log("all trials scheduled")
    progress.set_state("pi4", "done")  # after close: nothing printed

    lines = out.getvalue().splitlines()
    assert all(TIMESTAMP.match(line) for line in lines)
    bodies = [TIMESTAMP.sub("", line) for line in lines]
    events = [b for b in bodies if b.startswith(("pi4 ", "local "))]
    assert events[:7] == [
        "pi4    connecting",
        "pi4    deploying",
        "pi4    loading tt-2x/generate",
        "pi4    idle baseline tt-2x/generate",
        "pi4    warning: meter slow",
        "pi4    error: oom",
        "local  failed: ssh refused",
    ]
    assert "all trials scheduled" in bodies
    # the closing summary has one line per device, and nothing follows the close
    assert any(b.startswith("pi4    idle baseline") and "0/10 queries" in b for b in bodies[-4:])
    assert any(b.startswith("local  failed") and "error: ssh refused" in b for b in bodies[-4:])
    assert not any("done" in b for b in bodies)


def test_plain_mode_summarises_active_devices_periodically() -> None:
    progress, display, out = plain_run(summary_interval_s=0.05)
    progress.plan("pi4", trials_total=2, queries_total=10)
    progress.set_state("pi4", "running", trial="dense/generate")
    progress.apply_event("pi4", _event(1, "power", watts=3.456, samples=3, fresh_samples=3))
    progress.apply_event("pi4", _query(2, 0.5, temp_c=60.0, throttled=True))
    with display:
        time.sleep(0.3)
    bodies = [TIMESTAMP.sub("", line) for line in out.getvalue().splitlines()]
    summaries = [
        b for b in bodies if b.startswith("pi4    running  1/2 dense/generate  1/10 queries")
    ]
    assert len(summaries) >= 3  # periodic ones plus the closing one
    assert "3.46 W" in summaries[0] and "latency 500 ms" in summaries[0]
    assert "60.0°C" in summaries[0] and "THROTTLED" in summaries[0]
    # the pending device appears only in the closing summary
    assert sum(b.startswith("local  pending") for b in bodies) == 1


def test_a_large_fleet_is_redrawn_within_the_cpu_budget() -> None:
    import io

    from rich.console import Console

    from orchestrator.dashboard import DashboardView, ThrottledView

    names = [f"dev{i:02d}" for i in range(24)]
    progress = RunProgress("run-big", names)
    for name in names:
        progress.set_state(name, "running")
    view = ThrottledView(DashboardView(progress), cpu_budget=0.0001)
    console = Console(file=io.StringIO(), width=140)
    console.print(view)
    first = console.file.getvalue()
    progress.set_state(names[0], "failed", message="gone")
    console.print(view)  # within the budget's interval: the last drawing again
    assert view.renders == 1 and console.file.getvalue() == first * 2
    view.invalidate()  # the final state is always drawn
    console.print(view)
    assert view.renders == 2 and "failed" in console.file.getvalue()[len(first) * 2 :]


def test_a_device_that_falls_behind_is_reported_by_name_once() -> None:
    from orchestrator.runs import BehindReporter

    progress = RunProgress("run-lag", ["a", "b", "c"])
    lines: list[str] = []
    reporter = BehindReporter(progress, lines.append, after_s=0.0)
    reporter.check()
    assert lines == []  # nobody measures yet: nobody is behind
    progress.set_state("a", "running")
    progress.set_state("b", "deploying")
    progress.set_state("c", "failed", message="unreachable")  # failed is reported elsewhere
    reporter.check()
    reporter.check()
    assert len(lines) == 1 and lines[0].startswith("b is falling behind: still deploying")
    assert reporter.reported == ["b"]
    assert RunProgress("r", ["x"]).behind(0.0) == []


def test_dashboard_shows_a_device_waiting_for_its_place_and_a_skipped_one() -> None:
    progress = RunProgress("run-lab", ["pi4", "pi5"])
    progress.set_state("pi4", "waiting", message="place pi4-03 held by ws7/alice")
    progress.set_state("pi5", "skipped", message="place pi5-01 is held by ws7/bob")
    lines = render_text(progress).splitlines()
    rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
    assert "waiting" in rows["pi4"] and "place pi4-03 held by" in rows["pi4"]
    assert "skipped" in rows["pi5"] and "place pi5-01 is held" in rows["pi5"]
    assert "1 waiting, 1 skipped" in render_text(progress).splitlines()[0]


def test_the_stable_start_wait_is_shown() -> None:
    progress = RunProgress("r", ["pi5"])
    progress.set_state("pi5", "warmup", trial="dense/generate")
    progress.apply_event("pi5", _event(1, "phase", phase="settling", max_wait_s=60.0))
    (d,) = progress.snapshot()
    assert d.state == "settling" and d.last_message == (
        "waiting up to 60 s for stable idle power and temperature"
    )
    assert "settling" in STATE_STYLES
    progress.apply_event("pi5", _event(2, "phase", phase="settled", stable=False, waited_s=60.0))
    (d,) = progress.snapshot()
    assert d.last_message == "NOT stable after 60 s"
    progress.apply_event("pi5", _event(3, "phase", phase="idle"))
    assert progress.snapshot()[0].state == "idle baseline"
