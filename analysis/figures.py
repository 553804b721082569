"""Figures of a sweep: validation loss vs step (paper Figure 3), codebook perplexity and codes
used vs step per quantiser level (Figure 6), and the loss ratio and the loss increase vs the
offset added to every code's grid position (Sec. 4.3; from the per-trial summary alone).

Conventions (every figure): colour = quantiser (EMA-VQ blue, KSOM hard orange, KSOM Gaussian
green), line style = the study's other swept fields (e.g. N0 x update-0), legend in the
paper's row order outside the axes, title = study, scale, steps and seeds. Every y axis is
logarithmic, so the line is the geometric mean over seeds and the band spans geometric mean
x/ geometric std (the band in log space: a std larger than the mean cannot fall below zero).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.summary import COLLAPSE_FRACTION, selection_loss  # noqa: E402
from analysis.tables import LABELS, layout_for, paper_order  # noqa: E402
from analysis.tables.numbers import OFFSET  # noqa: E402
import metrics as M  # noqa: E402

COLOURS = {"none": "#1f77b4", "hard": "#ff7f0e", "gaussian": "#2ca02c"}
STYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2))]
FIELD_NAMES = {"n0": "N0=", "update_empty": "Update-0=", "tau": "tau=", "grid_dim": ""}


def config_label(trials: pd.DataFrame, study) -> pd.Series:
    """A short label per trial from the fields its study sweeps, e.g. 'KSOM hard N0=0 Update-0=No'."""
    layout = layout_for(study, trials)
    out = pd.Series("", index=trials.index)
    for f in layout.columns:
        out = out + " " + FIELD_NAMES.get(f, f"{f}=" if f != "neighbours" else "") + trials[f].map(
            lambda v, f=f: str(LABELS.get(f, {}).get(v, v))).astype(str)  # str also when there is no trial
    return out.str.strip().map(figure_text)


def styles(trials: pd.DataFrame, study) -> pd.DataFrame:
    """One row per configuration in the paper's row order: config label, colour (by quantiser) and
    line style (by the combination of the other swept fields)."""
    layout = layout_for(study, trials)
    ordered = paper_order(trials, study)
    configs = ordered.assign(config=config_label(ordered, study)).drop_duplicates("config")
    others = [f for f in layout.rows if f != "neighbours"]
    combos = list(dict.fromkeys(map(tuple, configs[others].astype(str).to_numpy()))) if others else [()]
    return pd.DataFrame({
        "config": configs.config.to_numpy(),
        "colour": [COLOURS.get(v, "#555555") for v in configs.get("neighbours", pd.Series(["none"] * len(configs)))],
        "style": [STYLES[combos.index(tuple(row)) % len(STYLES)] if others else "-"
                  for row in configs[others].astype(str).to_numpy()]})


def figure_text(text) -> str:
    """Text from data (a label, a name) as matplotlib shows it as written: a '$' a dollar, never the start of
    mathtext (an odd one would stop the figure), control characters escaped (metrics.printable)."""
    return M.printable(str(text)).replace("$", "\\$")


def title(trials: pd.DataFrame, study, what: str) -> str:
    """'<study>: <what> (scale <s>, <steps> steps, <n> seeds)'."""
    layout = layout_for(study, trials)
    scale = str(trials[M.SCALE_TAG].iloc[0]) if M.SCALE_TAG in trials and len(trials) else "?"
    steps = int(trials["steps"].max()) if "steps" in trials and len(trials) else 0
    seeds = trials["seed"].nunique() if "seed" in trials else 0
    return (f"{figure_text(layout.name or study)}: {what}\n(scale {figure_text(scale)}, {steps:,} steps, {seeds} "
            f"seed{'s' * (seeds != 1)})")


def geometric_band(values: pd.Series) -> tuple[float, float, float]:
    """(geometric mean, mean / gsd, mean x gsd) of the positive finite values; no band for one value."""
    v = values.to_numpy(dtype=float)
    logs = np.log(v[np.isfinite(v) & (v > 0)])
    if len(logs) == 0:
        return np.nan, np.nan, np.nan
    mean = logs.mean()
    sd = logs.std(ddof=1) if len(logs) > 1 else 0.0
    return float(np.exp(mean)), float(np.exp(mean - sd)), float(np.exp(mean + sd))


def curves(trials: pd.DataFrame, metrics: pd.DataFrame, study, metric: str) -> pd.DataFrame:
    """Per configuration and step of `metric`: geometric mean and band over seeds (the columns
    config, step, mean, low, high)."""
    labels = trials.assign(config=config_label(trials, study))[["run_id", "config"]]
    data = metrics[metrics.metric == metric].merge(labels, on="run_id")
    rows = [(config, step, *geometric_band(g.value)) for (config, step), g in data.groupby(["config", "step"])]
    return pd.DataFrame(rows, columns=["config", "step", "mean", "low", "high"])


def _draw(ax, data: pd.DataFrame, look: pd.DataFrame, x: str = "step", marker: str | None = None,
          faint: set = frozenset()) -> None:
    """One line (the column mean) and band (low to high) per configuration; those in `faint` drawn faint."""
    for row in look.itertuples():
        c = data[data.config == row.config].sort_values(x)
        if c.empty:
            continue
        alpha = 0.35 if row.config in faint else 1.0
        ax.plot(c[x], c["mean"], color=row.colour, linestyle=row.style, marker=marker, ms=3, label=row.config, lw=1.4,
                alpha=alpha)
        ax.fill_between(c[x], c["low"], c["high"], color=row.colour, alpha=0.15 * alpha, lw=0)


def _legend(fig, axes) -> None:
    """One legend, in the paper's row order (the order of drawing), right of the axes."""
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.93), fontsize=7, frameon=False)


def _prepare(folder: str | Path) -> Path:
    """The figures' folder, made if needed, and the figures' look (grid, 8 pt font)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plt.rcParams.update({"axes.grid": True, "grid.alpha": 0.3, "font.size": 8})
    return folder


def save(fig, folder: Path, name: str, dpi: int = 150, formats=("png", "pdf")) -> list[Path]:
    """Write fig as folder/name.png and .pdf (`formats`) and close it; returns the paths."""
    paths = [folder / f"{name}.{f}" for f in formats]
    for p in paths:
        fig.savefig(p, bbox_inches="tight", dpi=dpi)
    plt.close(fig)
    return paths


def write_figures(trials: pd.DataFrame, metrics: pd.DataFrame, study, folder: str | Path) -> list[Path]:
    """Write loss, perplexity, codes_used and topography (where measured) as .png and .pdf into
    folder; returns the paths."""
    folder = _prepare(folder)
    look = styles(trials, study)
    written = []
    loss = curves(trials, metrics, study, M.VAL_LOSS)
    if not loss.empty:
        fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
        _draw(ax, loss, look)
        ax.set(yscale="log", xlabel="training step", ylabel="validation MSE (standardised images)",
               title=title(trials, study, "validation loss"))
        _legend(fig, [ax])
        written += save(fig, folder, "loss")
    for name, prefix, ylabel, what in (
            ("perplexity", M.train_perplexity, "perplexity of the batch's codes", "codebook perplexity"),
            ("codes_used", M.val_codes_used, "codes used on the validation set", "codes used")):
        levels = M.suffixes(metrics.metric.unique(), prefix)
        if not levels:
            continue
        fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels) + 0.8, 3.2), squeeze=False,
                                 layout="constrained")
        for ax, level in zip(axes[0], levels):
            _draw(ax, curves(trials, metrics, study, prefix(level)), look)
            ax.set(yscale="log", xlabel="training step", ylabel=ylabel,
                   title=f"level {level}" if len(levels) > 1 else None)
            if name == "codes_used" and "codebook_size" in trials:
                k = float(trials.codebook_size.max())
                ax.axhline(COLLAPSE_FRACTION * k, color="black", lw=0.8, ls=(0, (2, 2)))
                ax.annotate(f"collapsed below {COLLAPSE_FRACTION:.0%} of K = {k:.0f}", (0.01, COLLAPSE_FRACTION * k),
                            xycoords=("axes fraction", "data"), va="bottom", fontsize=6)
        fig.suptitle(title(trials, study, what), fontsize=8)
        _legend(fig, list(axes[0]))
        written += save(fig, folder, name)
    return written


def write_topography(summary: pd.DataFrame, study, folder: str | Path, formats=("png", "pdf")) -> list[Path]:
    """topography.{png,pdf} from the per-trial summary (its loss_offset_o columns), where measured: left,
    the loss with every code shifted by o on the grid over the same model's unshifted loss (geometric
    mean x/ std over seeds; offset 0 = 1); right, the shifted minus the unshifted loss (median over seeds,
    band from the lowest to the highest seed; symmetric-log axis: an increase can be negative). A
    configuration with collapsed seeds is drawn faint and named so in the legend: its ratio is small
    because its unshifted loss is high, not because its codes are ordered."""
    offsets = sorted(int(c.removeprefix(OFFSET)) for c in summary.columns if c.startswith(OFFSET))
    if not offsets or summary[[f"{OFFSET}{o}" for o in offsets]].isna().all().all():
        return []
    folder = _prepare(folder)
    trials = summary.assign(config=config_label(summary, study),
                            unshifted=summary[f"{OFFSET}0"] if 0 in offsets else selection_loss(summary))
    ratios, increases = [], []
    for config, g in trials.groupby("config", sort=False):
        for o in sorted({0, *offsets}):
            shifted = g[f"{OFFSET}{o}"] if o else g.unshifted
            increase = (shifted - g.unshifted).dropna()
            if len(increase):
                ratios.append((config, o, *geometric_band(shifted / g.unshifted)))
                increases.append((config, o, increase.median(), increase.min(), increase.max()))
    columns = ["config", "offset", "mean", "low", "high"]
    ratios, increases = pd.DataFrame(ratios, columns=columns), pd.DataFrame(increases, columns=columns)
    if increases.empty:  # no trial has both an unshifted and a shifted loss (a summary is data: it may say so)
        return []
    look = styles(summary, study)
    counts = trials.groupby("config", sort=False)[M.COLLAPSED].agg(["sum", "size"]) if M.COLLAPSED in trials else None
    named = {} if counts is None else {c: f"{c} (collapsed {int(n)}/{int(size)})"
                                       for c, (n, size) in counts.iterrows() if n > 0}
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2), layout="constrained")
    ticks = sorted(ratios.offset.unique())
    for ax, data, ylabel in ((axes[0], ratios, "loss / unshifted loss (geometric mean)"),
                             (axes[1], increases, "loss - unshifted loss (median, seeds' range)")):
        _draw(ax, data, look, x="offset", marker="o", faint=set(named))
        ax.set(xticks=ticks, xlabel="offset added to every code's grid coordinates", ylabel=ylabel)
    axes[0].set_yscale("log")
    axes[1].set_yscale("symlog", linthresh=1e-3)  # linear within +-0.001, where a decrease would show
    axes[1].set_ylim(bottom=min(float(increases.low.min()), -1e-3))
    fig.suptitle(title(summary, study, "topography (loss growth under code shifts)"), fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, [named.get(label, label) for label in labels], loc="upper left", bbox_to_anchor=(1.0, 0.93),
               fontsize=7, frameon=False)
    return save(fig, folder, "topography", formats=formats)
