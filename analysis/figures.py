"""Seaborn figures of a sweep: validation loss vs step (paper Figure 3), codebook
perplexity vs step per quantiser level (Figure 6) and validation loss vs the offset
added to every code's grid position (SPEC 6); mean line and std band per configuration."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.tables import LABELS, layout_for  # noqa: E402


def config_label(trials: pd.DataFrame, study: str) -> pd.Series:
    """A short label per trial from the fields its study sweeps, e.g. 'N0=0 Update-0=No KSOM hard'."""
    fields = layout_for(study, trials).rows
    parts = [trials[f].map(lambda v, f=f: str(LABELS.get(f, {}).get(v, v))).astype(str) for f in fields]  # str if empty
    names = {"n0": "N0=", "update_empty": "Update-0=", "tau": "tau=", "grid_dim": ""}
    out = pd.Series("", index=trials.index)
    for f, p in zip(fields, parts):
        out = out + " " + names.get(f, "") + p
    return out.str.strip()


def curves(trials: pd.DataFrame, metrics: pd.DataFrame, study: str, metric: str | None,
           prefix: str | None = None) -> pd.DataFrame:
    """The points of `metric` (or of every metric starting with `prefix`), with each trial's config label."""
    labels = trials.assign(config=config_label(trials, study))[["run_id", "config"]]
    chosen = metrics.metric.str.startswith(prefix) if prefix else metrics.metric == metric
    return metrics[chosen].merge(labels, on="run_id")


def save(fig, folder: Path, name: str) -> list[Path]:
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight", dpi=150)
    plt.close(fig)
    return paths


def write_figures(trials: pd.DataFrame, metrics: pd.DataFrame, study: str, folder: str | Path) -> list[Path]:
    """Write loss, topography (loss vs code shift, where measured) and perplexity as .png and .pdf
    into folder; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    written = []
    data = curves(trials, metrics, study, "val_loss")
    if not data.empty:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        sns.lineplot(data=data, x="step", y="value", hue="config", errorbar="sd", ax=ax)
        ax.set(yscale="log", xlabel="training step", ylabel="validation reconstruction loss", title=study)
        ax.legend(fontsize=7, title=None)
        written += save(fig, folder, "loss")
    shifted = curves(trials, metrics, study, None, prefix="val_loss_offset_")
    if not shifted.empty:
        shifted = shifted.assign(offset=shifted.metric.str.removeprefix("val_loss_offset_").astype(int))
        fig, ax = plt.subplots(figsize=(6.5, 4))
        sns.lineplot(data=shifted, x="offset", y="value", hue="config", errorbar="sd", marker="o", ax=ax)
        ax.set(yscale="log", xticks=sorted(shifted.offset.unique()), ylabel="validation reconstruction loss",
               xlabel="offset added to every code's grid coordinates", title=f"{study}: topography")
        ax.legend(fontsize=7, title=None)
        written += save(fig, folder, "topography")
    levels = sorted(m.removeprefix("train_perplexity_") for m in metrics.metric.unique()
                    if m.startswith("train_perplexity_"))
    if levels:
        fig, axes = plt.subplots(1, len(levels), figsize=(6.5 * len(levels), 4), squeeze=False)
        for ax, level in zip(axes[0], levels):
            sns.lineplot(data=curves(trials, metrics, study, f"train_perplexity_{level}"), x="step", y="value",
                         hue="config", errorbar="sd", ax=ax)
            ax.set(xlabel="training step", ylabel="perplexity (codebook use)", title=f"{study}: level {level}")
            ax.legend(fontsize=7, title=None)
        written += save(fig, folder, "perplexity")
    return written
