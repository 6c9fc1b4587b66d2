"""Pictures for the feedback pages and the class report, as PNG data URIs.

Everything is drawn off-screen with matplotlib's Agg canvas (no pyplot, no
global state), and returned as `data:image/png;base64,...` so that a page
embeds its pictures and needs no other file. Inputs are plain lists and
numbers: this module runs in the trusted process, on results already judged.
"""
from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

DPI = 80
NAN_COLOR = "#e040fb"
"""NaN cells are drawn in magenta, a colour that no colormap here uses."""
GOT_COLOR, EXPECTED_COLOR = "#d2461e", "#9aa0a6"

AXIS_NAMES = {
    "weights": ("key position", "query position"),
    "mask": ("key position", "query position"),
    "encoding": ("dimension", "position"),
    "pe": ("dimension", "position"),
}
"""(x label, y label) of a 2-D output by its name, where the name says what its axes are."""
LINE_NAMES = {"lr": ("step", "learning rate"), "lrs": ("step", "learning rate"), "norms": ("time step", "norm")}
"""(x label, y label) of a 1-D output by its name."""


def data_uri(fig: Figure, dpi: int = DPI) -> str:
    """The figure as a PNG data URI, in 256 colours (a third of the size, no visible loss for plots)."""
    from PIL import Image

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    fig.patch.set_facecolor("white")
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
    buf = io.BytesIO()
    image.quantize(256, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _is_binary(*arrays: np.ndarray) -> bool:
    values = np.concatenate([a[~np.isnan(a)].ravel() for a in arrays])
    return values.size > 0 and bool(np.isin(values, (0.0, 1.0)).all())


def sample_picture(name: str, got, expected) -> tuple[str, str] | None:
    """A picture of one output of a failing public case: (data URI, caption), or None when it cannot be drawn.

    A 2-D sample gives heat maps (yours | expected | where they differ); a 1-D
    sample gives your values drawn over the expected ones.
    """
    try:
        g, e = np.array(got, dtype=float), np.array(expected, dtype=float)
    except (TypeError, ValueError):
        return None
    if g.shape != e.shape or e.size == 0 or e.ndim not in (1, 2):
        return None
    if e.ndim == 1:
        return _lines(name, g, e)
    return _heatmaps(name, g, e)


def _panels(widths: list[float], gaps: list[float], height: float) -> tuple[Figure, list]:
    """A figure with side-by-side axes of the given widths and gaps, in inches (no layout engine: fast)."""
    left, right, bottom, top = 0.6, 0.75, 0.5, 0.35
    total_w = left + sum(widths) + sum(gaps) + right
    total_h = bottom + height + top
    fig = Figure(figsize=(total_w, total_h))
    FigureCanvasAgg(fig)
    axes, x = [], left
    for i, w in enumerate(widths):
        axes.append(fig.add_axes((x / total_w, bottom / total_h, w / total_w, height / total_h)))
        x += w + (gaps[i] if i < len(gaps) else 0)
    return fig, axes


def _colorbar(fig: Figure, ax, image, **kwargs):
    """A thin colour bar just right of `ax`."""
    return fig.colorbar(image, cax=ax.inset_axes((1.03, 0.0, 0.05, 1.0)), **kwargs)


def _heatmaps(name: str, g: np.ndarray, e: np.ndarray) -> tuple[str, str]:
    rows, cols = e.shape
    binary = _is_binary(g, e)
    xlabel, ylabel = AXIS_NAMES.get(name, ("column", "row"))
    height = min(3.0, max(0.5, 0.3 * rows))
    width = min(3.0, max(1.8, 0.36 * cols))
    fig, axes = _panels([width] * 3, [0.3, 0.95], height)
    nan_got, nan_exp = int(np.isnan(g).sum()), int(np.isnan(e).sum())
    annotate = rows * cols <= 48 and not binary
    if binary:
        cmap = ListedColormap(["#eef1f5", "#1f5fa8"]).with_extremes(bad=NAN_COLOR)
        kwargs = {"cmap": cmap, "norm": BoundaryNorm([-0.5, 0.5, 1.5], cmap.N)}
    else:
        finite_e = e[np.isfinite(e)]
        finite_g = g[np.isfinite(g)]
        lo, hi = (finite_e.min(), finite_e.max()) if finite_e.size else (0.0, 1.0)
        span = max(hi - lo, 1e-12)
        clipped = ""
        if finite_g.size and finite_g.min() >= lo - 10 * span and finite_g.max() <= hi + 10 * span:
            lo, hi = min(lo, finite_g.min()), max(hi, finite_g.max())
        elif finite_g.size:
            clipped = (f"; your values reach {finite_g.min():.3g} to {finite_g.max():.3g}, "
                       "beyond the colour scale (drawn at its ends)")
        kwargs = {"cmap": colormaps["viridis"].with_extremes(bad=NAN_COLOR), "vmin": lo, "vmax": hi}
    images = []
    for ax, values, title in ((axes[0], g, "yours"), (axes[1], e, "expected")):
        image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", interpolation="nearest", **kwargs)
        images.append(image)
        ax.set_title(f"{name}: {title}", fontsize=10)
        if annotate:
            _annotate(ax, values, image)
    if binary:
        diff = np.where(np.isnan(g) | np.isnan(e), np.nan, g - e)
        dcmap = ListedColormap(["#f0a030", "#ffffff", "#b3261e"]).with_extremes(bad=NAN_COLOR)
        axes[2].imshow(np.ma.masked_invalid(diff), aspect="auto", interpolation="nearest", cmap=dcmap,
                       norm=BoundaryNorm([-1.5, -0.5, 0.5, 1.5], dcmap.N))
        wrong = int(np.count_nonzero(np.nan_to_num(diff, nan=1.0)))
        axes[2].set_title(f"{wrong} cell{'s' if wrong != 1 else ''} differ{'s' if wrong == 1 else ''}", fontsize=10)
        bar = _colorbar(fig, axes[1], images[1], ticks=[0, 1])
        bar.ax.set_yticklabels(["False", "True"], fontsize=7)
        caption = ("blue = True, light = False; on the right, red = True where False was expected, "
                   "orange = False where True was expected")
    else:
        diff = g - e
        finite = diff[np.isfinite(diff)]
        top = float(np.abs(finite).max()) if finite.size else 0.0
        d_image = axes[2].imshow(np.ma.masked_invalid(diff), aspect="auto", interpolation="nearest",
                                 cmap=colormaps["RdBu_r"].with_extremes(bad=NAN_COLOR), vmin=-top or -1, vmax=top or 1)
        axes[2].set_title(f"yours − expected (max {top:.3g})", fontsize=10)
        _colorbar(fig, axes[1], images[1]).ax.tick_params(labelsize=7)
        _colorbar(fig, axes[2], d_image).ax.tick_params(labelsize=7)
        caption = ("same colour scale for yours and expected; on the right, red = yours too high, blue = too low"
                   + clipped)
    for ax in axes:
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        _integer_ticks(ax, rows, cols)
    axes[0].set_ylabel(ylabel, fontsize=8)
    if nan_got or nan_exp:
        caption += f"; magenta = NaN ({nan_got} in yours, {nan_exp} expected)"
    return data_uri(fig), caption


def _integer_ticks(ax, rows: int, cols: int) -> None:
    step_x, step_y = max(1, cols // 8), max(1, rows // 8)
    ax.set_xticks(range(0, cols, step_x))
    ax.set_yticks(range(0, rows, step_y))


def _annotate(ax, values: np.ndarray, image) -> None:
    for (r, c), v in np.ndenumerate(values):
        if np.isnan(v):
            ax.text(c, r, "NaN", ha="center", va="center", fontsize=6, color="black")
            continue
        shade = image.cmap(image.norm(v))
        dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
        ax.text(c, r, f"{v:.2f}" if abs(v) < 100 else f"{v:.0e}", ha="center", va="center", fontsize=6,
                color="white" if dark else "black")


def _lines(name: str, g: np.ndarray, e: np.ndarray) -> tuple[str, str]:
    xlabel, ylabel = LINE_NAMES.get(name, ("index", name))
    x = np.arange(e.size)
    fig = Figure(figsize=(6.4, 2.8), layout="constrained")
    ax = fig.subplots()
    markers = e.size <= 60
    ax.plot(x, e, color=EXPECTED_COLOR, linewidth=4, alpha=0.8, label="expected", marker="o" if markers else None,
            markersize=6)
    ax.plot(x, g, color=GOT_COLOR, linewidth=1.5, label="yours", marker="." if markers else None)
    caption = f"your {name} (orange) drawn over the expected one (grey)"
    finite_e, finite_g = e[np.isfinite(e)], g[np.isfinite(g)]
    both = np.concatenate([finite_e, finite_g])
    if both.size and both.min() > 0 and both.max() / both.min() > 1e3:
        ax.set_yscale("log")
        caption += "; logarithmic scale"
    elif finite_e.size and finite_g.size:
        lo, hi = finite_e.min(), finite_e.max()
        span = max(hi - lo, abs(hi) * 0.1, 1e-12)
        if finite_g.min() < lo - 5 * span or finite_g.max() > hi + 5 * span:
            ax.set_ylim(lo - span, hi + span)
            caption += (f"; your values reach {finite_g.min():.3g} to {finite_g.max():.3g}, "
                        "beyond the plotted range")
    nan = np.isnan(g) & ~np.isnan(e)
    if nan.any():
        bottom = ax.get_ylim()[0]
        ax.plot(x[nan], np.full(int(nan.sum()), bottom), linestyle="none", marker="|", markersize=14,
                color=NAN_COLOR, label="NaN in yours")
        caption += f"; {int(nan.sum())} NaN in yours (magenta ticks)"
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(f"{name}: yours over the expected", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return data_uri(fig), caption


# --- the class report ---------------------------------------------------------------------------

REPORT_DPI = 100
BINS = ("0", "<25%", "25-49%", "50-74%", "75-99%", "100%")
BIN_COLORS = ("#b3261e", "#e8710a", "#f0a030", "#c0ca33", "#7cb342", "#17702b")


def score_bin(score: float, max_score: float) -> int:
    """Which of BINS a score falls in."""
    if max_score <= 0:
        return 5 if score >= 0 else 0
    frac = score / max_score
    if frac >= 1 - 1e-9:
        return 5
    if frac <= 0:
        return 0
    return 1 + min(3, int(frac * 4))


def score_distributions(title: str, items: list[tuple[str, list[float], float]]) -> str:
    """Small multiples, one per item: how many students scored 0, <25%, ... 100% of its points."""
    n = len(items)
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(2.6 * ncols + 0.4, 2.1 * nrows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (label, scores, max_score) in zip(axes, items):
        counts = [0] * len(BINS)
        for s in scores:
            counts[score_bin(s, max_score)] += 1
        ax.bar(range(len(BINS)), counts, color=BIN_COLORS)
        ax.set_xticks(range(len(BINS)), BINS, fontsize=6.5, rotation=30)
        ax.set_title(f"{label} ({max_score:g} pt)", fontsize=8.5)
        ax.tick_params(axis="y", labelsize=7)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(0, max(1, max(counts)) * 1.15)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.supylabel("students", fontsize=8)
    return data_uri(fig, REPORT_DPI)


def totals_strip(rows: list[tuple[str, list[float]]]) -> str:
    """One row per notebook: every student's total as a dot, in percent of the notebook's points."""
    fig = Figure(figsize=(8.5, 0.55 * len(rows) + 1.0), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    for y, (_, percents) in enumerate(rows):
        p = np.asarray(percents, dtype=float)
        jitter = rng.uniform(-0.18, 0.18, p.size)
        ax.scatter(p, np.full(p.size, y) + jitter, s=22, alpha=0.75, color="#1f5fa8", edgecolors="none")
        if p.size:
            ax.plot([np.median(p)] * 2, [y - 0.32, y + 0.32], color=GOT_COLOR, linewidth=2)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(-3, 103)
    ax.set_xlabel("score, % of the notebook's points (vertical bar: median)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return data_uri(fig, REPORT_DPI)


def horizontal_bars(title: str, labels: list[str], values: list[float], xlabel: str, color: str = "#1f5fa8",
                    percent: bool = False) -> str:
    """A ranked bar chart, largest on top."""
    fig = Figure(figsize=(8.5, 0.32 * len(labels) + 1.0), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(labels))
    ax.barh(y, values, color=color)
    ax.set_yticks(y, [lbl if len(lbl) <= 70 else lbl[:67] + "..." for lbl in labels], fontsize=7.5)
    ax.invert_yaxis()
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {v:.0%}" if percent else f" {v:g}", va="center", fontsize=7)
    top = max(values, default=1) or 1
    ax.set_xlim(0, top * 1.15)
    if not percent:
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title, fontsize=10)
    return data_uri(fig, REPORT_DPI)
