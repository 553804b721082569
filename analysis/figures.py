"""Figures of a sweep: validation loss vs step (paper Figure 3), codebook perplexity and codes
used vs step per quantiser level (Figure 6), and the loss ratio vs the offset added to every
code's grid position (Sec. 4.3).

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

from analysis.summary import COLLAPSE_FRACTION  # noqa: E402
from analysis.tables import LABELS, layout_for, paper_order  # noqa: E402
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
    return out.str.strip()


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


def title(trials: pd.DataFrame, study, what: str) -> str:
    """'<study>: <what> (scale <s>, <steps> steps, <n> seeds)'."""
    layout = layout_for(study, trials)
    scale = str(trials["scale"].iloc[0]) if "scale" in trials and len(trials) else "?"
    steps = int(trials["steps"].max()) if "steps" in trials and len(trials) else 0
    seeds = trials["seed"].nunique() if "seed" in trials else 0
    return f"{layout.name or study}: {what}\n(scale {scale}, {steps:,} steps, {seeds} seed{'s' * (seeds != 1)})"


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


def _draw(ax, data: pd.DataFrame, look: pd.DataFrame, x: str = "step", marker: str | None = None) -> None:
    for row in look.itertuples():
        c = data[data.config == row.config].sort_values(x)
        if c.empty:
            continue
        ax.plot(c[x], c["mean"], color=row.colour, linestyle=row.style, marker=marker, ms=3, label=row.config, lw=1.4)
        ax.fill_between(c[x], c["low"], c["high"], color=row.colour, alpha=0.15, lw=0)


def _legend(fig, axes) -> None:
    """One legend, in the paper's row order (the order of drawing), right of the axes."""
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.93), fontsize=7, frameon=False)


def save(fig, folder: Path, name: str, dpi: int = 150) -> list[Path]:
    """Write fig as folder/name.png and .pdf and close it; returns the two paths."""
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight", dpi=dpi)
    plt.close(fig)
    return paths


def write_figures(trials: pd.DataFrame, metrics: pd.DataFrame, study, folder: str | Path) -> list[Path]:
    """Write loss, perplexity, codes_used and topography (where measured) as .png and .pdf into
    folder; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plt.rcParams.update({"axes.grid": True, "grid.alpha": 0.3, "font.size": 8})
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
    written += _topography(trials, metrics, study, look, folder)
    return written


def _topography(trials, metrics, study, look, folder: Path) -> list[Path]:
    """Loss with every code shifted by o on the grid over the same model's unshifted loss, per trial
    (offset 0 = 1), geometric mean x/ std over seeds."""
    shifted = metrics[metrics.metric.str.startswith(M.offset_loss(""))]
    if shifted.empty:
        return []
    wide = shifted.pivot_table(index="run_id", columns="metric", values="value", aggfunc="last")
    base = wide.get(M.offset_loss(0))
    if base is None:
        base = metrics[metrics.metric == M.VAL_LOSS].groupby("run_id").value.min()
    ratios = wide.div(base, axis=0).reset_index().melt(id_vars="run_id", var_name="metric", value_name="value")
    ratios = ratios.assign(step=ratios.metric.str.removeprefix(M.offset_loss("")).astype(int), metric="ratio")
    data = curves(trials, ratios, study, "ratio").rename(columns={"step": "offset"})
    if 0 not in set(data.offset):  # offset 0 is the model itself: ratio 1
        data = pd.concat([data, pd.DataFrame({"config": data.config.unique(), "offset": 0, "mean": 1.0,
                                              "low": 1.0, "high": 1.0})])
    fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
    _draw(ax, data, look, x="offset", marker="o")
    ax.set(yscale="log", xticks=sorted(data.offset.unique()), xlabel="offset added to every code's grid coordinates",
           ylabel="loss / unshifted loss", title=title(trials, study, "topography (loss growth under code shifts)"))
    _legend(fig, [ax])
    return save(fig, folder, "topography")
