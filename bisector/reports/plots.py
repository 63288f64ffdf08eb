"""Memory curves as PNG charts (matplotlib, Agg): one panel per metric against the step.

Each panel shows the model's curve and the control's, both as the change from their first
reading (the control runs in its own process, so absolute levels differ; slopes are what compare),
the phases shaded, a fitted line over the repeat phase, and the detection floor as a cone from
the start of the repeat phase: a curve leaving the cone upwards is growth the verdict counts.
matplotlib is imported inside the functions so `bisector --help` never pays for it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bisector.model.kinds import Kind

PHASE_COLORS = {"warmup": "#eeeeee", "repeat": "#fde2e2", "novel": "#e2ecfd", "within": "#e6f6e2"}
PHASE_LABELS = {"warmup": "warm-up", "repeat": "repeat", "novel": "novel", "within": "within"}
# Metrics drawn, in this order, when the samples carry them: exact counts first.
PANELS = (
    ("objects", "live objects", False),
    ("tensors", "tensor storage", True),
    ("heap", "native heap", True),
    ("rss", "RSS", True),
    ("gpu", "GPU (NVML)", True),
    ("cuda_allocated", "CUDA allocated", True),
)
BAD = {Kind.LEAK: "#c62828", Kind.SHAPE_GROWTH: "#ef6c00", Kind.TOOLCHAIN_LEAK: "#8d6e00"}


def metrics_in(samples: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, bool]]:
    return [p for p in PANELS if any(s.get(p[0]) is not None for s in samples)]


def _series(samples: Sequence[Mapping[str, Any]], metric: str) -> tuple[list[int], list[float]]:
    """(step, change) with the change counted from the first reading after warm-up: first-call
    costs (imports, lazy caches) would otherwise set the scale and flatten a per-call leak."""
    xs, ys, origin = [], [], None
    for i, s in enumerate(samples):
        v = s.get(metric)
        if v is not None:
            xs.append(i)
            ys.append(float(v))
            if origin is None and s.get("phase") != "warmup":
                origin = float(v)
    if ys:
        first = ys[0] if origin is None else origin
        ys = [y - first for y in ys]
    return xs, ys


def _limits(xs: Sequence[int], ys: Sequence[float], phases: Sequence[str]) -> tuple[float, float] | None:
    """The y range of the readings after warm-up, spikes left out: warm-up readings (first-call
    costs) and a single reading far from its neighbours would otherwise set the scale and flatten
    the growth the verdict is about. What falls outside is drawn at the edge (off_scale)."""
    keep = [i for i, x in enumerate(xs) if not phases or x >= len(phases) or phases[x] != "warmup"]
    spikes = set(spike_indices([ys[i] for i in keep]))
    vals = [ys[i] for n, i in enumerate(keep) if n not in spikes]
    if not vals:
        return None
    return min(vals), max(vals)


def spike_indices(ys: Sequence[float], window: int = 2, z: float = 4.0) -> list[int]:
    """Readings far from the median of their neighbours (a Hampel filter): more than z robust
    deviations of that window and more than a tenth of the whole range off. A steady slope has
    none: each reading sits at its neighbours' median."""
    import statistics

    if len(ys) < 2 * window + 1:
        return []
    span = max(ys) - min(ys)
    out = []
    for i, y in enumerate(ys):
        around = [ys[j] for j in range(max(0, i - window), min(len(ys), i + window + 1)) if j != i]
        mid = statistics.median(around)
        mad = 1.4826 * statistics.median(abs(a - mid) for a in around)
        if abs(y - mid) > max(z * mad, 0.1 * span) and abs(y - mid) > 0.5 * span:
            out.append(i)
    return out


def off_scale(ax: Any, xs: Sequence[int], ys: Sequence[float], lo: float, hi: float, color: str) -> bool:
    """Readings outside [lo, hi] drawn on the edge they pass (a triangle pointing off the chart),
    so no point is silently clipped. True when there were any."""
    low = [x for x, y in zip(xs, ys) if y < lo]
    high = [x for x, y in zip(xs, ys) if y > hi]
    if low:
        ax.plot(low, [lo] * len(low), ls="none", marker="v", ms=5, color=color, clip_on=False, zorder=5)
    if high:
        ax.plot(high, [hi] * len(high), ls="none", marker="^", ms=5, color=color, clip_on=False, zorder=5)
    return bool(low or high)


def control_series(control: Sequence[Mapping[str, Any]], metric: str, last: int) -> tuple[list[int], list[float]]:
    """The control's series up to the model's last step: the control runs its own schedule, which
    may be longer than a region probed alone, and both lines should end at the same step."""
    cx, cy = _series(control, metric)
    kept = [(x, y) for x, y in zip(cx, cy) if x <= last]
    return [x for x, _ in kept], [y for _, y in kept]


def repeat_line(
    repeat: Sequence[tuple[int, float]], said: float | None, is_bytes: bool, per: str
) -> tuple[float, float, str] | None:
    """(slope, intercept, label) of the line over the repeat phase. said: the growth per step the
    report's text gives (the model's less the control's): the line is drawn with that slope through
    the readings' mean and labelled with that number, so chart and text agree. Otherwise the
    least-squares fit of the readings."""
    fit = fit_slope([x for x, _ in repeat], [y for _, y in repeat])
    if fit is None:
        return None
    slope, icpt = fit
    if said is None:
        return slope, icpt, f"fit over repeat: {_fmt_bytes(slope) if is_bytes else f'{slope:+.2f}'}/{per}"
    mx = sum(x for x, _ in repeat) / len(repeat)
    text = _fmt_bytes(said) if is_bytes else f"{said:+.2f}"
    return said, icpt + slope * mx - said * mx, f"growth {text}/{per} (the report's figure, less the control)"


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Least squares (slope, intercept); None with fewer than two points."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def _fmt_bytes(v: float) -> str:
    from bisector.common.units import format_bytes

    return format_bytes(v, signed=True)


@dataclass(frozen=True)
class ChartStyle:
    """What every panel of one chart shares: the model's colour, what one step is, the floor and
    the noise band drawn around the repeat line, the metric that decided the verdict, and the
    growth the report's text states per metric."""

    color: str
    per: str
    floor_per_call: float | None
    noise_band: float | None
    decided_by: str | None
    stated: Mapping[str, float]


def stage_chart(
    samples: Sequence[Mapping[str, Any]],
    control: Sequence[Mapping[str, Any]] = (),
    *,
    title: str = "",
    verdict: str = "",
    floor_per_call: float | None = None,
    noise_band: float | None = None,
    decided_by: str | None = None,
    width: float = 9.0,
    per: str = "call",
    stated: Mapping[str, float] | None = None,
) -> bytes:
    """A PNG of every metric in the samples, one panel each, sharing the step axis. per: what one
    step is ("call", "export", "run"). stated: per metric, the growth per step the report's text
    gives (the verdict's figure, after the control): that panel's line is drawn with it and labelled
    with it, so the chart and the text say the same number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = metrics_in(samples) or [("rss", "RSS", True)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 1.9 * len(panels) + 0.8), sharex=True, squeeze=False)
    style = ChartStyle(BAD.get(verdict, "#1565c0"), per, floor_per_call, noise_band, decided_by, stated or {})
    for panel, ax in zip(panels, axes[:, 0]):
        _shade_phases(ax, [s.get("phase", "") for s in samples], labelled=ax is axes[0, 0])
        _panel(ax, panel, samples, control, style)
    axes[-1, 0].set_xlabel(f"step (one {per} per step)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11, color=style.color, fontweight="bold", x=0.01, ha="left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _shade_phases(ax: Any, phases: Sequence[str], labelled: bool) -> None:
    """The phases shaded, and labelled (once, on the top panel)."""
    start = 0
    for i in range(1, len(phases) + 1):
        if i == len(phases) or phases[i] != phases[start]:
            ax.axvspan(start - 0.5, i - 0.5, color=PHASE_COLORS.get(phases[start], "#ffffff"), zorder=0)
            if labelled:
                ax.text(
                    (start + i - 1) / 2,
                    0.97,
                    PHASE_LABELS.get(phases[start], phases[start]),
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="top",
                    fontsize=8,
                    color="#555555",
                )
            start = i


def _panel(
    ax: Any,
    panel: tuple[str, str, bool],
    samples: Sequence[Mapping[str, Any]],
    control: Sequence[Mapping[str, Any]],
    style: ChartStyle,
) -> None:
    """One metric: the control's curve and the model's, the repeat line with the band it had to
    clear, the scale (spikes left out, drawn on its edge), and the panel's labels."""
    metric, label, is_bytes = panel
    phases = [s.get("phase", "") for s in samples]
    xs, ys = _series(samples, metric)
    cx, cy = control_series(control, metric, xs[-1] if xs else -1)
    if cy:
        ax.plot(cx, cy, color="#9e9e9e", lw=1.2, ls="--", label="control (trivial module)")
    lims = [lim for lim in (_limits(xs, ys, phases), _limits(cx, cy, [c.get("phase", "") for c in control])) if lim]
    ax.plot(xs, ys, color=style.color, lw=2.0, marker="o", ms=2.5, label="model")
    repeat = [(x, y) for x, y in zip(xs, ys) if phases[x] == "repeat"]
    lims += _repeat_line(ax, repeat, metric, is_bytes, style)
    if lims:
        lo, hi = min(a for a, _ in lims), max(b for _, b in lims)
        pad = max((hi - lo) * 0.08, 1.0 if not is_bytes else 1024.0)
        lo, hi = lo - pad, hi + pad
        ax.set_ylim(lo, hi)
        off = off_scale(ax, xs, ys, lo, hi, style.color)
        off = off_scale(ax, cx, cy, lo, hi, "#9e9e9e") or off
        if off:
            ax.plot([], [], ls="none", marker="v", color="#555555", label="off scale (warm-up, spike)")
    _label_panel(ax, metric, label, is_bytes, style)


def _repeat_line(
    ax: Any, repeat: Sequence[tuple[int, float]], metric: str, is_bytes: bool, style: ChartStyle
) -> list[tuple[float, float]]:
    """The line over the repeat phase and, around it, the floor (heap) or the noise band (RSS,
    GPU): what growth had to clear to count. Returns the y ranges they need on the scale."""
    line = repeat_line(repeat, style.stated.get(metric), is_bytes, style.per)
    if line is None:
        return []
    slope, icpt, fit_label = line
    x0, x1 = repeat[0][0], repeat[-1][0]
    ax.plot([x0, x1], [icpt + slope * x0, icpt + slope * x1], color="black", lw=1.0, ls=":", label=fit_label)
    y0 = icpt + slope * x0
    floor, band = style.floor_per_call, style.noise_band
    if metric == "heap" and floor:
        ax.fill_between(
            [x0, x1],
            [y0, y0 - floor * (x1 - x0)],
            [y0, y0 + floor * (x1 - x0)],
            color="#555555",
            alpha=0.15,
            lw=0,
            label=f"detection floor ±{_fmt_bytes(floor).lstrip('+')}/{style.per}",
        )
        return [(y0 - floor * (x1 - x0), y0 + floor * (x1 - x0))]
    if metric in ("rss", "gpu") and band:
        ax.fill_between(
            [x0, x1],
            y0 - band / 2,
            y0 + band / 2,
            color="#555555",
            alpha=0.12,
            lw=0,
            label=f"noise band {_fmt_bytes(band).lstrip('+')}",
        )
        return [(y0 - band / 2, y0 + band / 2)]
    return []


def _label_panel(ax: Any, metric: str, label: str, is_bytes: bool, style: ChartStyle) -> None:
    from matplotlib.ticker import FuncFormatter

    mark = "  ◆ decided the verdict" if metric == style.decided_by else ""
    ax.set_ylabel(f"{label}\nchange", fontsize=8)
    ax.set_title(f"{label}{mark}", fontsize=9, loc="left", fontweight="bold" if mark else "normal")
    if is_bytes:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_bytes(v)))
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", color="#dddddd", lw=0.5)
    ax.legend(fontsize=7, loc="lower right", frameon=True, framealpha=0.8)
