"""PNG figures of a run's results, for ``tslm-fleet plot``.

:func:`write_plots` takes the rows of the results query (one per run x device x variant
x task, as returned by ``db.results.results``: objects with attributes or dicts with
keys) and writes one figure per entry of :data:`FIGURES`:

* energy per query against the embedding compression ratio, one line per device;
* energy per prefill token and per decode token of generation against the ratio;
* latency per device and variant, grouped bars;
* perplexity against the compression ratio (log scale).

Matplotlib is used through its object API on the Agg canvas (no pyplot, no GUI
backend, no global figure state), and imported only when plotting.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from db.errors import DatabaseError
from tasks.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120
NOTE_FONT_SIZE = 8
#: the dense baseline keeps every parameter
DENSE_METHOD = "dense"
NET_SUFFIX = " (net of idle)"


@dataclass(frozen=True)
class ResultRow:
    """One aggregated trial result, the part of a results row the figures use.

    ``*_low``/``*_high`` are the ends of the spread (95% confidence interval of the
    median, else the interquartile range), ``None`` where the results query has none.
    """

    run_id: str
    device: str
    model: str
    variant: str
    method: str
    compression_ratio: float | None
    task: str
    n_queries: int
    latency_s_median: float | None
    latency_s_p90: float | None
    energy_j_per_query_median: float | None
    net_energy_j_per_query_median: float | None
    perplexity: float | None
    latency_s_low: float | None = None
    latency_s_high: float | None = None
    energy_j_per_query_low: float | None = None
    energy_j_per_query_high: float | None = None
    energy_j_per_prefill_token_median: float | None = None
    energy_j_per_decode_token_median: float | None = None

    @property
    def ratio(self) -> float | None:
        """Compression ratio, with the dense baseline at 1.0 when the row leaves it empty."""
        if self.compression_ratio is not None:
            return self.compression_ratio
        return 1.0 if DENSE_METHOD in (self.method, self.variant) else None


_REQUIRED = ("run_id", "device", "variant", "task")
_OPTIONAL_NUMBERS = (
    "compression_ratio",
    "latency_s_median",
    "latency_s_p90",
    "energy_j_per_query_median",
    "net_energy_j_per_query_median",
    "perplexity",
    "energy_j_per_prefill_token_median",
    "energy_j_per_decode_token_median",
)
#: quantity -> (low, high) field names a results row may give its spread in, preferred first
_SPREAD_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "latency_s": (("latency_s_ci_low", "latency_s_ci_high"), ("latency_s_p25", "latency_s_p75")),
    "energy_j_per_query": (
        ("energy_j_per_query_ci_low", "energy_j_per_query_ci_high"),
        ("energy_j_per_query_p25", "energy_j_per_query_p75"),
    ),
}


def _field(row: Any, name: str) -> Any:
    if isinstance(row, Mapping):
        return row.get(name)
    return getattr(row, name, None)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _spread(row: Any, quantity: str, centre: float | None) -> tuple[float | None, float | None]:
    for low_name, high_name in _SPREAD_FIELDS[quantity]:
        low, high = _number(_field(row, low_name)), _number(_field(row, high_name))
        if low is not None and high is not None:
            return low, high
    iqr = _number(_field(row, f"{quantity}_iqr"))
    if iqr is not None and centre is not None:
        return centre - iqr / 2.0, centre + iqr / 2.0
    return None, None


def as_result_row(row: Any) -> ResultRow:
    """Adapt one results row (``db.results.ResultRow``, any object with the same
    attributes, or a mapping with the same keys) to a :class:`ResultRow`."""
    if isinstance(row, ResultRow):
        return row
    missing = [name for name in _REQUIRED if _field(row, name) is None]
    if missing:
        raise DatabaseError(
            f"a results row lacks {', '.join(missing)} (got {type(row).__name__})",
            hint="the database schema is older than this tslm-fleet; upgrade it with "
            "`tslm-fleet db upgrade`",
        )
    values: dict[str, Any] = {name: str(_field(row, name)) for name in _REQUIRED}
    values["model"] = str(_field(row, "model") or "unknown model")
    values["method"] = str(_field(row, "method") or "")
    values.update({name: _number(_field(row, name)) for name in _OPTIONAL_NUMBERS})
    values["n_queries"] = int(_number(_field(row, "n_queries")) or 0)
    values["latency_s_low"], values["latency_s_high"] = _spread(
        row, "latency_s", values["latency_s_median"]
    )
    values["energy_j_per_query_low"], values["energy_j_per_query_high"] = _spread(
        row, "energy_j_per_query", values["energy_j_per_query_median"]
    )
    return ResultRow(**values)


# --------------------------------------------------------------------------- helpers


def _runs_label(rows: list[ResultRow]) -> str:
    runs = sorted({r.run_id for r in rows})
    return f"run {runs[0]}" if len(runs) == 1 else f"runs {', '.join(runs)}"


def _tasks(rows: Iterable[ResultRow]) -> list[str]:
    return sorted({r.task for r in rows})


def _label(device: str, model: str, many_models: bool) -> str:
    return f"{device} · {model}" if many_models else device


def _new_figure(n_panels: int, title: str) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(1, n_panels)
    fig = Figure(figsize=(6.4 * n, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    fig.suptitle(title)
    return fig, list(axes)


def _error_bars(
    points: list[tuple[float | None, float | None, float | None]], scale: float = 1.0
) -> list[list[float]] | None:
    """matplotlib's asymmetric ``yerr`` from (centre, low, high) triples; None if no spread.

    A point without a spread gets zero-length bars; an interval that does not contain
    its centre (possible for a CI from few samples) is clipped at the centre.
    """
    below, above = [], []
    for centre, low, high in points:
        known = centre is not None and low is not None and high is not None
        below.append(max(0.0, centre - low) * scale if known else 0.0)
        above.append(max(0.0, high - centre) * scale if known else 0.0)
    return [below, above] if any(below) or any(above) else None


def _empty_panel(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _add_notes(fig: Figure, notes: list[str]) -> None:
    if notes:
        shown = notes[:6] + ([f"... and {len(notes) - 6} more"] if len(notes) > 6 else [])
        fig.text(
            0.01,
            0.005,
            "not shown: " + "; ".join(shown),
            fontsize=NOTE_FONT_SIZE,
            ha="left",
            va="bottom",
            wrap=True,
            color="dimgray",
        )
        fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))


def _save(fig: Figure, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write {path}: {exc.strerror or exc}", hint="choose a writable --out directory"
        ) from exc
    return path


# --------------------------------------------------------------------------- figures


def plot_energy(rows: list[ResultRow]) -> Figure:
    """Energy per query against compression ratio, one panel per task, a line per device."""
    tasks = _tasks(rows)
    fig, axes = _new_figure(
        len(tasks),
        f"Energy per query vs compression ratio — "
        f"{_runs_label(rows)}\n(error bars: confidence "
        f"interval of the median or IQR, where measured)",
    )
    many_models = len({r.model for r in rows}) > 1
    notes: list[str] = []
    no_energy: dict[str, list[str]] = {}
    for ax, task in zip(axes, tasks, strict=True):
        series: dict[tuple[str, str], list[ResultRow]] = {}
        for r in rows:
            if r.task != task:
                continue
            if r.energy_j_per_query_median is None:
                no_energy.setdefault(r.device, []).append(f"{r.variant}/{task}")
            elif r.ratio is None:
                notes.append(f"{r.device} {r.variant}/{task} (no compression ratio)")
            else:
                series.setdefault((r.device, r.model), []).append(r)
        ax.set_title(task)
        if not series:
            _empty_panel(ax, "no energy measurements\n(no power meter on these devices?)")
            continue
        for (device, model), points in sorted(series.items()):
            points.sort(key=lambda r: r.ratio)
            xs = [r.ratio for r in points]
            ys = [r.energy_j_per_query_median for r in points]
            yerr = _error_bars(
                [
                    (
                        r.energy_j_per_query_median,
                        r.energy_j_per_query_low,
                        r.energy_j_per_query_high,
                    )
                    for r in points
                ]
            )
            line = ax.errorbar(
                xs, ys, yerr=yerr, marker="o", capsize=3, label=_label(device, model, many_models)
            )
            nets = [
                (r.ratio, r.net_energy_j_per_query_median)
                for r in points
                if r.net_energy_j_per_query_median is not None
            ]
            if nets:
                ax.plot(
                    *zip(*nets, strict=True),
                    linestyle="--",
                    marker="o",
                    fillstyle="none",
                    color=line.lines[0].get_color(),
                    label=_label(device, model, many_models) + NET_SUFFIX,
                )
        ax.set_xlabel("embedding compression ratio (×)")
        ax.set_ylabel("energy per query (J), median")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: (labels[i].endswith(NET_SUFFIX), i))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize="small")
    for device, trials in sorted(no_energy.items()):
        all_rows = sum(1 for r in rows if r.device == device)
        what = "any trial" if len(trials) == all_rows else ", ".join(trials)
        notes.insert(0, f"{device}: no energy measured for {what} (no power meter?)")
    _add_notes(fig, notes)
    return fig


#: phase -> (panel title, what its tokens are)
_PHASE_PANELS = {
    "prefill": ("prefill (start to first token)", "per prompt token"),
    "decode": ("decode (after the first token)", "per output token"),
}


def plot_phase_energy(rows: list[ResultRow]) -> Figure:
    """Energy per prefill token and per decode token against the compression ratio,
    one panel per phase, a line per device and task."""
    fig, axes = _new_figure(
        len(_PHASE_PANELS),
        f"Energy per token by phase vs compression ratio — {_runs_label(rows)}\n"
        "(medians over the windows that resolve the phase)",
    )
    many_models = len({r.model for r in rows}) > 1
    notes: list[str] = []
    for ax, (phase, (title, per)) in zip(axes, _PHASE_PANELS.items(), strict=True):
        series: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        for r in rows:
            value = getattr(r, f"energy_j_per_{phase}_token_median")
            if value is not None and r.ratio is not None:
                series.setdefault((r.device, r.model, r.task), []).append((r.ratio, value))
            elif r.task == "generate" and r.energy_j_per_query_median is not None:
                notes.append(f"{r.device} {r.variant} {phase} (under-resolved)")
        ax.set_title(title)
        if not series:
            _empty_panel(ax, f"no resolved {phase} energy\n(generate runs with a power meter)")
            continue
        for (device, model, task), points in sorted(series.items()):
            points.sort()
            label = _label(device, model, many_models)
            if len({k[2] for k in series}) > 1:
                label += f" · {task}"
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
        ax.set_xlabel("embedding compression ratio (×)")
        ax.set_ylabel(f"energy {per} (J), median")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    _add_notes(fig, notes)
    return fig


def plot_latency(rows: list[ResultRow]) -> Figure:
    """Latency per query, grouped bars: one group per device, one bar per variant.

    Error bars are the spread of the median where known; a black tick marks the p90.
    """
    tasks = _tasks(rows)
    fig, axes = _new_figure(
        len(tasks),
        f"Latency per query by device and variant — "
        f"{_runs_label(rows)}\n(bars: median; error bars: "
        f"CI of the median or IQR; black tick: p90)",
    )
    many_models = len({r.model for r in rows}) > 1
    notes: list[str] = []
    for ax, task in zip(axes, tasks, strict=True):
        ax.set_title(task)
        measured = [r for r in rows if r.task == task and r.latency_s_median is not None]
        notes += [
            f"{r.device} {r.variant}/{task} (no latency)"
            for r in rows
            if r.task == task and r.latency_s_median is None
        ]
        if not measured:
            _empty_panel(ax, "no latency measurements")
            continue
        devices = sorted({r.device for r in measured})
        variants = sorted({(r.ratio or 0.0, r.model, r.variant) for r in measured})
        slowest = max(r.latency_s_p90 or r.latency_s_median for r in measured)
        scale, unit = (1000.0, "ms") if slowest < 1.0 else (1.0, "s")
        width = 0.8 / len(variants)
        for i, (_, model, variant) in enumerate(variants):
            by_device = {r.device: r for r in measured if r.model == model and r.variant == variant}
            placed = [
                (j - 0.4 + width * (i + 0.5), by_device[device])
                for j, device in enumerate(devices)
                if device in by_device
            ]
            xs = [x for x, _ in placed]
            ys = [r.latency_s_median * scale for _, r in placed]
            yerr = _error_bars(
                [(r.latency_s_median, r.latency_s_low, r.latency_s_high) for _, r in placed], scale
            )
            ax.bar(
                xs,
                ys,
                width=width * 0.95,
                yerr=yerr,
                capsize=3,
                label=f"{model}:{variant}" if many_models else variant,
            )
            p90 = [(x, r.latency_s_p90 * scale) for x, r in placed if r.latency_s_p90 is not None]
            if p90:
                ax.plot(
                    *zip(*p90, strict=True),
                    linestyle="none",
                    marker="_",
                    markersize=max(6.0, 60.0 * width),
                    color="black",
                )
        ax.set_xticks(range(len(devices)), devices)
        ax.set_xlabel("device")
        ax.set_ylabel(f"latency per query ({unit})")
        ax.set_ylim(bottom=0)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize="small", title="variant")
    _add_notes(fig, notes)
    return fig


def plot_perplexity(rows: list[ResultRow]) -> Figure:
    """Perplexity against compression ratio (log y): a line per model and method, the dense
    model as a dotted reference line.

    Perplexity does not depend on the device; where several devices report one, the
    median is shown.
    """
    from matplotlib.ticker import FuncFormatter

    fig, axes = _new_figure(1, f"Perplexity vs compression ratio — {_runs_label(rows)}")
    ax = axes[0]
    notes: list[str] = []
    values: dict[tuple[str, str, str], list[float]] = {}
    ratios: dict[tuple[str, str, str], float] = {}
    for r in rows:
        if r.perplexity is None:
            continue
        if r.ratio is None:
            notes.append(f"{r.model} {r.variant} (no compression ratio)")
            continue
        key = (r.model, r.method, r.variant)
        values.setdefault(key, []).append(r.perplexity)
        ratios[key] = r.ratio
    if not values:
        _empty_panel(ax, "no perplexity results\n(run the perplexity task)")
        _add_notes(fig, sorted(set(notes)))
        return fig
    many_models = len({m for m, _, _ in values}) > 1
    for model, method in sorted({(m, meth) for m, meth, _ in values}):
        points = sorted(
            (ratios[key], median(v), key[2])
            for key, v in values.items()
            if key[:2] == (model, method)
        )
        label = f"{model} · {method}" if many_models else method
        if method == DENSE_METHOD:
            for _, y, variant in points:
                ax.axhline(y, linestyle=":", color="gray")
                text = f"{model} {variant}" if many_models else variant
                ax.annotate(
                    f"{text}: {y:.3g}",
                    (0.01, y),
                    xycoords=("axes fraction", "data"),
                    xytext=(0, 3),
                    textcoords="offset points",
                    fontsize=NOTE_FONT_SIZE,
                    color="gray",
                )
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="*",
                markersize=10,
                linestyle="none",
                color="gray",
                label=label,
            )
            continue
        line = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)[0]
        for x, y, variant in points:
            ax.annotate(
                variant,
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=NOTE_FONT_SIZE,
                color=line.get_color(),
            )
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _pos: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("embedding compression ratio (×)")
    ax.set_ylabel("perplexity (log scale, lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", title="method")
    _add_notes(fig, sorted(set(notes)))
    return fig


#: file stem -> function drawing that figure from the rows
FIGURES: dict[str, Callable[[list[ResultRow]], Figure]] = {
    "energy_vs_compression": plot_energy,
    "energy_per_token_vs_compression": plot_phase_energy,
    "latency_by_device": plot_latency,
    "perplexity_vs_compression": plot_perplexity,
}


def write_plots(rows: Iterable[Any], out_dir: Path, *, run_id: str | None = None) -> list[Path]:
    """Write every figure of :data:`FIGURES` as ``out_dir/<name>.png``; return the paths.

    ``rows`` are results rows (attributes or mapping keys, see :class:`ResultRow`).
    Raises :class:`ConfigError` when there are no rows or ``out_dir`` is not writable.
    """
    results = [as_result_row(r) for r in rows]
    if not results:
        raise ConfigError(
            f"no results for run {run_id or '(none selected)'}",
            hint="check the run id and the --db URL; results are stored by `tslm-fleet run`",
        )
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the output directory {out_dir}: {exc.strerror or exc}",
            hint="choose another --out",
        ) from exc
    return [_save(draw(results), out_dir / f"{name}.png") for name, draw in FIGURES.items()]
