"""The report's PNG figures (matplotlib, Agg backend: files only, never a display; the
effect maps with Pillow).

* ``summary.png`` (top of the report): one panel per key metric, one bar per design with
  its pooled mean and CI; metrics that are zero everywhere are left out (named in the text);
* ``claim_<id>.png`` (next to each claim): the claim's paired effect per tested cell, with
  its CI, coloured by whether the cell holds the claim, goes against it, or neither;
* ``effect_<metric>.png``: the metric's paired effect per cell (down) for each pair of
  designs (across), cells in reading order (block, mix, high, limit, order, nodes) in panel
  columns of 32 - only for metrics with a significant cell, so no plot is blank.  Drawn
  with Pillow in a fixed pixel layout (``EffectMapLayout``), not matplotlib: a map's
  hundreds of labels took ~2 CPU s of matplotlib text drawing and savefig (17 maps on a
  default sweep, on the critical path after the last workload), ~0.13 s in Pillow;
* ``failure_rate_vs_limit.png``: share of workloads with a user-visible ENOMEM against
  memory.max, per design with Wilson bands, one panel per mix - only when some workload
  saw an ENOMEM.

Sign convention as in the report: candidate - baseline, negative (green) = the candidate
is better.  Figures are drawn at 130 dpi with 7-9 pt labels, legible at 100 % zoom.
Statistics are not computed here (``sweep.stats``: a claim's per-cell paired differences
too); each figure is an independent job, drawn in parallel on a large sweep (``sweep.pool``).
"""
from __future__ import annotations

import functools
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt       # noqa: E402
import numpy as np                    # noqa: E402
import pandas as pd                   # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from sweep import fmt, pool, stats    # noqa: E402
from sweep.config import OPTIONAL_AXES  # noqa: E402

DPI = 130
COMPRESS_LEVEL = 3                    # zlib level of the PNGs: level 9 took 3x longer for 5 % less
# palette of an effect map: ~600 KB -> ~170 KB, and report.html embeds every figure (its
# colour bar shows the steps, the labels carry the numbers): HEATMAP_STEPS of the colour
# map, the grey of a missing pair, the rest greys from black to white for the text
HEATMAP_COLOURS, HEATMAP_STEPS = 96, 64
FONT = 8
DESIGN_COLOURS = ("#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
CLAIM_ROWS_MAX = 48                   # a forest plot beyond that is unreadable: largest effects
# how a cell label shows the optional axes (config blocks may vary them), where they vary
EXTRA_AXES = dict(zip(OPTIONAL_AXES, (str, lambda v: f"{int(v)}cpu", lambda v: f"frag{v:g}")))


def varying_extra_axes(axes: pd.DataFrame) -> list[str]:
    return [a for a in EXTRA_AXES if a in axes and axes[a].dropna().nunique() > 1]


def cell_labels(df: pd.DataFrame) -> dict[str, str]:
    """cell_id -> '64M o3 n2 kernel' (+ high, allocator, cpus, fragment where they vary;
    + the block when two cells of different blocks would still read the same)."""
    axes = stats.cell_axes(df)
    with_high = axes["high"].nunique() > 1
    usual = {a: axes[a].mode().iloc[0] for a in varying_extra_axes(axes)}   # shown only when not this
    labels = {}
    for cell_id, row in axes.iterrows():
        parts = [fmt.cell_label(row, with_high)]
        parts += [EXTRA_AXES[a](row[a]) for a, value in usual.items() if pd.notna(row[a]) and row[a] != value]
        labels[cell_id] = " ".join(parts)
    seen = pd.Series(labels).value_counts()
    if (seen > 1).any() and "block" in axes:
        labels = {c: f"{text} [{axes.loc[c, 'block']}]" if seen[text] > 1 else text for c, text in labels.items()}
    return labels


@dataclass
class Figure:
    file: str
    caption: str


@dataclass
class Figures:
    summary: Figure | None = None
    failure_rate: Figure | None = None
    claims: dict[str, Figure] = field(default_factory=dict)
    heatmaps: dict[str, Figure] = field(default_factory=dict)        # metric -> its effect map


def draw_plots(df: pd.DataFrame, table: pd.DataFrame, pooled: pd.DataFrame, verdicts: list, out: Path,
               alpha: float, workers: int | None = None) -> Figures:
    """Write every PNG; returns what was drawn, with captions.  The figures are independent
    jobs (the data each needs is picked here): on a large sweep they are drawn in parallel
    (``sweep.pool``; ``workers`` None: ``pool.workers_for`` the sweep's size)."""
    for stale in out.glob("*.png"):
        stale.unlink()                  # plots of metrics or designs no longer in the sweep
    labels = cell_labels(df)
    jobs, keys = [], []
    if len(table):
        significant = table[table[table["correction"].iloc[0]] < alpha]
        order = cell_order(df, labels)
        for metric, rows in table.groupby("metric", sort=False):
            if (significant["metric"] == metric).any():     # else nothing differs: one line in the text
                jobs.append((plot_effect_heatmap, (rows, out / f"effect_{_file_part(metric)}.png", alpha, order)))
                keys.append(("heatmap", metric))
    values = stats.workload_values(df)
    for verdict in verdicts:
        if verdict.cells_tested:
            claim = verdict.claim
            rows = stats.paired_differences(values, claim.metric, *claim.compare, verdict.cells_tested, alpha)
            jobs.append((plot_claim, (verdict, rows, {c: labels[c] for c in rows.index}, out, alpha)))
            keys.append(("claim", claim.id))
    jobs.append((plot_summary, (pooled, out / "summary.png", alpha)))
    keys.append(("summary", None))
    if values["enomem"].any():
        jobs.append((plot_failure_rate, (values[["mix", "design", "limit", "enomem"]], out / "failure_rate_vs_limit.png",
                                         alpha)))
        keys.append(("failure_rate", None))
    figures = Figures()
    drawn = pool.run(jobs, pool.workers_for(len(df)) if workers is None else workers)
    for (kind, key), figure in zip(keys, drawn):
        if kind == "heatmap":
            figures.heatmaps[key] = Figure(
                figure, f"{_label(key)}: the paired effect per cell for each pair of designs "
                        f"(candidate - baseline; green = the candidate is lower, i.e. better; * significant)")
        elif kind == "claim" and figure:
            figures.claims[key] = figure
        elif kind == "summary":
            figures.summary = figure
        elif kind == "failure_rate":
            figures.failure_rate = figure
    return figures


def _style() -> None:
    """The rc settings of every figure, from matplotlib's defaults: a figure drawn by a pool
    worker looks like one drawn in the driver, whatever the driver set before."""
    matplotlib.rcdefaults()
    plt.rcParams.update({"font.size": FONT})


def _save(fig, path: Path) -> None:
    """Render once and write the PNG."""
    fig.set_dpi(DPI)
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
    plt.close(fig)
    image.save(path, dpi=(DPI, DPI), compress_level=COMPRESS_LEVEL)


def _label(metric: str) -> str:
    m = stats.METRICS_BY_NAME.get(metric)
    return m.label if m else metric


def _colours(designs) -> dict[str, str]:
    return {d: DESIGN_COLOURS[i % len(DESIGN_COLOURS)] for i, d in enumerate(designs)}


# ---------------------------------------------------------------- summary: designs x key metrics

def plot_summary(pooled: pd.DataFrame, path: Path, alpha: float) -> Figure | None:
    shown = [m for m in stats.KEY_METRICS
             if ((pooled["metric"] == m.name) & ~pooled["all_zero"]).any()]
    if not shown:
        return None
    _style()
    designs = list(dict.fromkeys(pooled["design"]))
    colours = _colours(designs)
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, shown):
        part = pooled[pooled["metric"] == metric.name].set_index("design").reindex(designs)
        scale = 100.0 if metric.binary else 1.0
        means = part["mean"].to_numpy(dtype=float) * scale
        err = np.abs(np.vstack([means - part["ci_lo"].to_numpy(dtype=float) * scale,
                                part["ci_hi"].to_numpy(dtype=float) * scale - means]))
        best = int(np.nanargmin(means)) if np.sum(np.isclose(means, np.nanmin(means), rtol=5e-3)) == 1 else -1
        bars = ax.bar(range(len(designs)), means, yerr=err, capsize=3,
                      color=[colours[d] for d in designs], edgecolor=["black" if i == best else "none"
                                                                       for i in range(len(designs))])
        ax.bar_label(bars, [fmt.short(v) for v in means], fontsize=FONT - 1, padding=2)
        ax.set_xticks(range(len(designs)), designs)
        ax.set_title("\n".join(textwrap.wrap(metric.label + (" (%)" if metric.binary else ""), 34)),
                     fontsize=FONT)
        ax.margins(y=0.18)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    fig.suptitle(f"Pooled mean per design with {1 - alpha:.0%} CI (lower is better; outlined: lowest)",
                 fontsize=FONT + 1)
    fig.tight_layout()
    _save(fig, path)
    return Figure(path.name, f"Every key metric per design: the mean over all workloads of the sweep with "
                             f"its {1 - alpha:.0%} CI; lower is better, the lowest is outlined")


# ---------------------------------------------------------------- a claim's evidence

def plot_claim(verdict, rows: pd.DataFrame, names: dict[str, str], out: Path, alpha: float) -> Figure | None:
    """Forest plot of the claim's metric, b - a per tested cell (as the claim reads): ``rows``
    are ``stats.paired_differences`` of its cells, ``names`` their labels."""
    claim = verdict.claim
    if rows.empty:
        return None
    _style()
    a, b = claim.compare
    binary = claim.metric in stats.METRICS_BY_NAME and stats.METRICS_BY_NAME[claim.metric].binary
    scale = 100.0 if binary else 1.0
    rows = rows.assign(effect=rows["diff"] * scale, lo=rows["lo"] * scale, hi=rows["hi"] * scale)
    dropped = 0
    if len(rows) > CLAIM_ROWS_MAX:
        dropped = len(rows) - CLAIM_ROWS_MAX
        rows = rows.reindex(rows["effect"].abs().sort_values(ascending=False).index[:CLAIM_ROWS_MAX])
    rows = rows.sort_values("effect")
    holding, against = set(verdict.cells_holding), set(verdict.cells_against)
    colour = ["#2ca02c" if c in holding else "#d62728" if c in against else "#7f7f7f" for c in rows.index]
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.2 * len(rows)))
    y = np.arange(len(rows))
    ax.errorbar(rows["effect"], y, xerr=[rows["effect"] - rows["lo"], rows["hi"] - rows["effect"]], fmt="none",
                ecolor="#999999", elinewidth=1, capsize=2)
    ax.scatter(rows["effect"], y, c=colour, zorder=3, s=18)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [names[c] for c in rows.index], fontsize=FONT - 1)
    ax.set_ylim(-0.8, len(rows) - 0.2)
    unit = "percentage points" if binary else (verdict.unit or "metric unit")
    ax.set_xlabel(f"{b} - {a}, mean paired difference ({unit}), paired t {1 - alpha:.0%} CI")
    expect = f"{a} {'<' if claim.expect == 'a<b' else '>'} {b}"
    ax.set_title(f"{claim.id}: {verdict.verdict} (expected {expect})\n"
                 f"green: cell holds the claim, red: against, grey: no significant difference",
                 fontsize=FONT)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    name = f"claim_{_file_part(claim.id)}.png"
    _save(fig, out / name)
    more = f"; the {dropped} cells with the smallest effects are left out" if dropped else ""
    return Figure(name, f"{claim.id}: {_label(claim.metric)} [{claim.metric}], {b} - {a} per tested cell{more}")


def _file_part(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))


# ---------------------------------------------------------------- ENOMEM against the limit

def plot_failure_rate(values: pd.DataFrame, path: Path, alpha: float) -> Figure | None:
    """``values``: ``stats.workload_values`` (mix, design, limit, enomem at least)."""
    if not values["enomem"].any():
        return None                      # flat zero lines say nothing: the text says it
    _style()
    mixes = sorted(values["mix"].unique())
    cols = min(4, len(mixes))
    rows = math.ceil(len(mixes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False, sharey=True)
    designs = sorted(values["design"].unique())
    colours = _colours([stats.BASELINE] + [d for d in designs if d != stats.BASELINE])
    for ax, mix in zip(axes.flat, mixes):
        part = values[values["mix"] == mix]
        for i, (design, by_design) in enumerate(part.groupby("design", sort=True)):
            counts = by_design.groupby("limit")["enomem"].agg(["sum", "count"])
            bounds = np.array([stats.wilson(k, n, alpha) for k, n in zip(counts["sum"], counts["count"])])
            # nudge the designs apart so equal rates do not hide each other
            x = _limit_positions(counts.index) + (i - (len(designs) - 1) / 2) * 0.05
            ax.plot(x, counts["sum"] / counts["count"] * 100, marker="o", label=design, color=colours[design])
            ax.fill_between(x, bounds[:, 0] * 100, bounds[:, 1] * 100, alpha=0.2, color=colours[design])
        limits = sorted(part["limit"].unique())
        ax.set_xticks(_limit_positions(limits), [fmt.format_size(v) for v in limits])
        ax.set_title(mix, fontsize=FONT + 1)
        ax.set_xlabel("memory.max")
        ax.set_ylim(-2, 102)
    for ax in axes.flat[len(mixes):]:
        ax.set_visible(False)
    for r in range(rows):
        axes[r, 0].set_ylabel("workloads with ENOMEM (%)")
    axes[0, 0].legend(fontsize=FONT)
    fig.tight_layout()
    _save(fig, path)
    return Figure(path.name, f"Share of workloads with a user-visible ENOMEM against memory.max, per design "
                             f"(pooled over orders and node counts), with Wilson {1 - alpha:.0%} bands")


def _limit_positions(limits) -> np.ndarray:
    """log2 of the limit; 'max' (inf) one step right of the largest finite limit."""
    limits = np.asarray(list(limits), dtype=float)
    finite = limits[np.isfinite(limits)]
    top = np.log2(finite.max()) + 1 if finite.size else 0.0
    return np.where(np.isfinite(limits), np.log2(np.where(np.isfinite(limits), limits, 1)), top)


# ---------------------------------------------------------------- paired effect per cell

def effect_values(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(colour value, absolute?) per row: ENOMEM in percentage points; the rest in % of the
    baseline mean, or - where the baseline mean is 0 - the absolute difference (coloured at
    full strength by its sign, never +inf%)."""
    diff = rows["diff_mean"].to_numpy(dtype=float)
    if stats.METRICS_BY_NAME.get(rows["metric"].iloc[0], stats.ENOMEM).binary:
        return diff * 100.0, np.zeros(len(rows), dtype=bool)
    base = rows["base_mean"].to_numpy(dtype=float)
    absolute = (base == 0) & (diff != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(base != 0, diff / np.abs(base) * 100.0, 0.0)
    return np.where(absolute, np.sign(diff) * 100.0, pct), absolute


def cell_order(df: pd.DataFrame, labels: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(cell_id, label) in reading order: by block (config order of appearance), then by
    mix, high, limit, order, nodes and the extra axes."""
    axes = stats.cell_axes(df)
    labels = labels or cell_labels(df)
    keys = [c for c in ("block", "mix", "high", "limit", "order", "nodes", *EXTRA_AXES) if c in axes]
    if "block" in axes:
        first_seen = {b: i for i, b in enumerate(dict.fromkeys(df["block"]))}
        axes = axes.assign(block=axes["block"].map(first_seen))
    ordered = axes.sort_values(keys, kind="stable", na_position="first").index
    return [(c, labels[c]) for c in ordered]


# An effect map is drawn with Pillow (see the module docstring): its geometry in pixels at
# DPI - squares of 0.24 x 0.8 in, text of 7-8 pt in DejaVu Sans, as on the other figures.
PANEL_ROWS = 32                       # cells per panel column of an effect map
ROW_PX, COL_PX = 31, 104              # one square: a cell (down) x a pair (across)
MARGIN_PX = 16                        # around the map
TEXT_GAP_PX = 6                       # between a label and the grid (3.5 pt)
HEADER_PX = 40                        # the pair headers above the grid (two lines)
PANEL_GAP_PX = 32                     # between two panel columns
BAR_GAP_PX, BAR_PX, BAR_TICK_PX = 24, 20, 5     # colour bar: gap left of it, width, tick length
BAR_TEXT_PX = 80                      # right of the bar: tick labels and the rotated bar label
BAR_MIN_PX = 300                      # the bar's least height: its label fits along it
BAR_TICKS = (-100, -50, 0, 50, 100)
MISSING = "#f4f4f4"                   # a pair without this cell


@functools.lru_cache(maxsize=None)
def _font(points: float) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib, as on the other figures) at ``points`` and DPI."""
    return ImageFont.truetype(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf", points * DPI / 72)


@functools.lru_cache(maxsize=None)
def _heatmap_palette() -> Image.Image:
    """The fixed palette an effect map is mapped to (an adaptive one merged the missing grey
    into the white background, and gave the colour bar a pink step)."""
    steps = matplotlib.colormaps["RdYlGn_r"](np.linspace(0, 1, HEATMAP_STEPS), bytes=True)[:, :3]
    greys = np.linspace(0, 255, HEATMAP_COLOURS - HEATMAP_STEPS - 1).round()[:, None].repeat(3, axis=1)
    missing = np.array([matplotlib.colors.to_rgb(MISSING)]) * 255
    palette = Image.new("P", (1, 1))
    palette.putpalette(np.concatenate([steps, missing, greys]).round().astype(np.uint8).tobytes())
    return palette


@dataclass(frozen=True)
class EffectMapLayout:
    """Where an effect map puts things, in pixels: a label column of ``label_px`` then the
    pairs' squares, per panel column of PANEL_ROWS cells; the colour bar right of the panels."""
    cells: int
    pairs: int
    label_px: int

    @property
    def panel_px(self) -> int:
        return self.label_px + TEXT_GAP_PX + COL_PX * self.pairs + PANEL_GAP_PX

    @property
    def grid_px(self) -> int:                       # height of the tallest (first) panel
        return ROW_PX * min(PANEL_ROWS, self.cells)

    @property
    def top(self) -> int:
        return MARGIN_PX + HEADER_PX

    def square(self, cell: int, pair: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the ``cell``-th cell's square (reading order) for a pair."""
        panel, row = divmod(cell, PANEL_ROWS)
        x = MARGIN_PX + panel * self.panel_px + self.label_px + TEXT_GAP_PX + COL_PX * pair
        y = self.top + ROW_PX * row
        return x, y, x + COL_PX, y + ROW_PX

    def bar(self) -> tuple[int, int, int, int]:
        x = MARGIN_PX + math.ceil(self.cells / PANEL_ROWS) * self.panel_px - PANEL_GAP_PX + BAR_GAP_PX
        return x, self.top, x + BAR_PX, self.top + max(self.grid_px, BAR_MIN_PX)

    @property
    def width(self) -> int:
        return self.bar()[2] + BAR_TEXT_PX + MARGIN_PX


def effect_map_layout(labels: list[str], pairs: int) -> EffectMapLayout:
    """The layout of an effect map with these cell labels (reading order) and pairs."""
    return EffectMapLayout(len(labels), pairs, math.ceil(max(_font(FONT - 0.5).getlength(t) for t in labels)))


def plot_effect_heatmap(rows: pd.DataFrame, path: Path, alpha: float, order: list[tuple[str, str]]) -> str:
    """One metric's paired effect, cells down x pairs across, in panel columns of
    PANEL_ROWS cells.  Colour: % of the baseline mean (ENOMEM: percentage points); where
    the baseline mean is 0 the label is the absolute difference ('d+3') and the colour full
    strength by its sign.  Drawn with Pillow (``EffectMapLayout``: fixed pixel geometry),
    as a palette PNG.  Returns the file name."""
    pairs = list(dict.fromkeys(zip(rows["baseline"], rows["candidate"])))
    colour_values, absolute = effect_values(rows)
    label_values = np.where(absolute, rows["diff_mean"], colour_values)
    significant = (rows[rows["correction"].iloc[0]] < alpha).to_numpy()
    unit = _unit(rows)
    # (cell, pair) -> (colour value, its label): one pass, no index look-up per cell
    shown = {(cell, (base, cand)): (value, _effect_text(float(label), unit, bool(flat)) + ("*" if star else ""))
             for cell, base, cand, value, label, flat, star in zip(
                 rows["cell_id"], rows["baseline"], rows["candidate"], colour_values, label_values, absolute, significant)}
    present = set(rows["cell_id"])
    cells = [(c, label) for c, label in order if c in present]
    layout = effect_map_layout([label for _, label in cells], len(pairs))
    cmap = matplotlib.colormaps["RdYlGn_r"].with_extremes(bad=MISSING)
    value_font, label_font, header_font = _font(FONT - 1), _font(FONT - 0.5), _font(FONT)
    caption = textwrap.fill(
        f"{fmt.metric_label(rows['metric'].iloc[0])}: paired effect per cell. Green = the candidate is lower "
        f"(better), red = higher; * significant; d = absolute difference where the baseline mean is 0.",
        int((layout.width - 2 * MARGIN_PX) / header_font.getlength("n")))
    caption_y = layout.bar()[3] + 2 * MARGIN_PX
    caption_box = ImageDraw.Draw(Image.new("1", (1, 1))).multiline_textbbox((0, 0), caption, font=header_font)
    image = Image.new("RGB", (layout.width, caption_y + caption_box[3] + MARGIN_PX), "white")
    draw = ImageDraw.Draw(image)

    grid = np.array([[shown.get((c, pair), (np.nan, ""))[0] for pair in pairs] for c, _ in cells], dtype=float)
    colours = cmap(np.clip(grid, -100, 100) / 200 + 0.5, bytes=True)
    for i, (cell_id, label) in enumerate(cells):
        x, y, _, y1 = layout.square(i, 0)
        draw.text((x - TEXT_GAP_PX, (y + y1) / 2), label, fill="black", font=label_font, anchor="rm")
        for j, pair in enumerate(pairs):
            box = layout.square(i, j)
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=tuple(colours[i, j, :3]))
            text = shown.get((cell_id, pair), (0, ""))[1]
            if text:                                    # white on the deep ends of the scale
                draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), text, font=value_font, anchor="mm",
                          fill="white" if abs(grid[i, j]) > 60 else "black")
    for first in range(0, len(cells), PANEL_ROWS):
        for j, (b, c) in enumerate(pairs):
            x0, y0, x1, _ = layout.square(first, j)
            draw.multiline_text(((x0 + x1) / 2, y0 - TEXT_GAP_PX), f"{c} vs\n{b}", font=header_font, anchor="md",
                                align="center", fill="black")
    _draw_colour_bar(image, draw, layout.bar(), cmap,
                     "candidate - baseline (pp)" if unit == "pp" else "candidate - baseline, % of baseline")
    draw.multiline_text((MARGIN_PX, caption_y), caption, font=header_font, fill="black")
    image = image.quantize(palette=_heatmap_palette(), dither=Image.Dither.NONE)
    image.save(path, dpi=(DPI, DPI), compress_level=COMPRESS_LEVEL)
    return path.name


def _draw_colour_bar(image: Image.Image, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], cmap,
                     label: str) -> None:
    """The colour scale -100 (bottom) .. +100 (top) in ``box``, ticks and their values right of
    it, and ``label`` rotated along it."""
    x0, y0, x1, y1 = box
    steps = cmap(np.linspace(1, 0, y1 - y0), bytes=True)[:, :3]
    image.paste(Image.fromarray(np.repeat(steps[:, None, :], x1 - x0, axis=1)), (x0, y0))
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline="black")
    font = _font(FONT)
    for tick in BAR_TICKS:
        y = round(y1 - 1 - (tick + 100) / 200 * (y1 - y0 - 1))
        draw.line((x1, y, x1 + BAR_TICK_PX, y), fill="black")
        draw.text((x1 + BAR_TICK_PX + 3, y), f"{tick}".replace("-", "\u2212"), font=font, anchor="lm", fill="black")
    length = math.ceil(font.getlength(label))
    text = Image.new("L", (length, round(font.size * 1.5)), 0)
    ImageDraw.Draw(text).text((0, 0), label, font=font, fill=255)
    text = text.rotate(90, expand=True)
    x = x1 + BAR_TEXT_PX - text.width
    image.paste((0, 0, 0), (x, (y0 + y1 - text.height) // 2), text)


def _unit(rows: pd.DataFrame) -> str:
    """'pp' for the ENOMEM share (percentage points), else '%' (of the baseline mean)."""
    return "pp" if stats.METRICS_BY_NAME.get(rows["metric"].iloc[0], stats.ENOMEM).binary else "%"


def _effect_text(value: float, unit: str, absolute: bool = False) -> str:
    if math.isnan(value):
        return ""
    if value == 0:
        return "0"
    if absolute:
        return "d" + fmt.short(value) if value < 0 else "d+" + fmt.short(value)
    return f"{round(value):+d}{unit}" if round(value) else f"0{unit}"
