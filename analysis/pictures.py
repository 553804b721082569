"""The topography pictures of a sweep, configurations side by side (paper Figures 4, 5, 7).

Every finished trial logged its own pictures as MLflow artifacts (`pictures/`):
`codebook_{level}.png` (code k's decoded image at its grid position G(k)) and
`perturbation.png` (rows: validation images; columns: the original, then the
reconstruction with every code shifted by 0, 1, 2, 3 on the grid). Here the first
seed of every configuration is put side by side, in the paper's row order, so
that KSOM and EMA-VQ can be compared at a glance; each panel names its configuration and seed,
and the figure stays under 1 MB (PNG at 100 dpi).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from analysis.figures import config_label, title  # noqa: E402
from analysis.tables import Layout, paper_order  # noqa: E402

@contextlib.contextmanager
def _quiet_downloads():
    """No MLflow progress bar per download (two small files a run: in a notebook, a bar per configuration),
    unless the user asked for them (MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR set)."""
    name = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    if name in os.environ:
        yield
        return
    os.environ[name] = "false"
    try:
        yield
    finally:
        os.environ.pop(name, None)


TITLES = {"perturbation": "original, then codes shifted by +0, +1, +2, +3 on the grid",
          "codebook": "code k decoded at its grid position G(k)"}


def first_seeds(trials: pd.DataFrame, study: str) -> pd.DataFrame:
    """One finished trial per configuration (the lowest seed), in the paper's order, with its label."""
    done = trials[trials.status == "finished"]
    labelled = paper_order(done.sort_values("seed", kind="stable"), study)
    labelled = labelled.assign(config=config_label(labelled, study))
    return labelled.drop_duplicates("config")


MAX_BYTES = 1_000_000


def _save_small(fig, folder: Path, name: str) -> list[Path]:
    """Save as .png and .pdf at the highest of 100, 80, 60, 45 dpi that keeps both under 1 MB."""
    for dpi in (100, 80, 60, 45):
        paths = [folder / f"{name}.{ext}" for ext in ("png", "pdf")]
        for p in paths:
            fig.savefig(p, bbox_inches="tight", dpi=dpi)
        if all(p.stat().st_size < MAX_BYTES for p in paths):
            break
    plt.close(fig)
    return paths


def write_pictures(trials: pd.DataFrame, study: "str | Layout", tracking_uri: str, folder: str | Path) -> list[Path]:
    """figures/{perturbation,codebook_<level>}.{png,pdf}: one panel per configuration (its first
    finished seed, named in the panel's title), each file under 1 MB."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri)
    panels: dict[str, list[tuple[str, object]]] = {}  # picture name -> [(config, image array)]
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        for row in first_seeds(trials, study).itertuples():
            if not client.list_artifacts(row.run_id, "pictures"):
                continue
            local = Path(client.download_artifacts(row.run_id, "pictures", f"{tmp}/{row.run_id}"))
            for png in sorted(local.glob("*.png")):
                panels.setdefault(png.stem, []).append((f"{row.config}, seed {row.seed}", matplotlib.image.imread(png)))
    written = []
    for name, images in panels.items():
        columns = min(len(images), 4 if name == "perturbation" else 2)
        rows = -(-len(images) // columns)
        height, width = images[0][1].shape[:2]
        panel_width = 3.2 if name == "perturbation" else 5.0
        fig, axes = plt.subplots(rows, columns, squeeze=False, layout="constrained",
                                 figsize=(panel_width * columns, panel_width * height / width * rows + 0.4 * rows))
        for ax in axes.flat:
            ax.axis("off")
        for ax, (config, image) in zip(axes.flat, images):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(config, fontsize=8)
        fig.suptitle(title(trials, study, TITLES.get(name.split("_")[0], name)), fontsize=9)
        written += _save_small(fig, folder, name)
    return written
