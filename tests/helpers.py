"""Helpers that several test files share: fake data sets written in their real formats, a pickle
payload that would run a command (to show it never runs), and the check that LaTeX tables fit a column."""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def random_rows(n: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, size=(n, 3072), dtype=np.uint8)


def write_fake_cifar(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Write a tiny CIFAR in the official layout (10 images per CIFAR-10 batch, 50 + 10 for CIFAR-100).

    Returns (train rows (50, 3072) in file order, test rows (10, 3072))."""
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        train = []
        for i in range(1, 6):
            rows = random_rows(10, i)
            train.append(rows)
            with open(folder / f"data_batch_{i}", "wb") as f:
                pickle.dump({b"batch_label": b"training batch", b"labels": list(range(10)), b"data": rows,
                             b"filenames": [b"x.png"] * 10}, f)
        test = random_rows(10, 99)
        with open(folder / "test_batch", "wb") as f:
            pickle.dump({b"labels": list(range(10)), b"data": test}, f)
        return np.concatenate(train), test
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train, test = random_rows(50, 7), random_rows(10, 8)
    for fname, rows in (("train", train), ("test", test)):
        with open(folder / fname, "wb") as f:
            pickle.dump({b"fine_labels": [0] * len(rows), b"coarse_labels": [0] * len(rows), b"data": rows}, f)
    return train, test


class RunsCommand:
    """A pickle payload that would create `marker` when unpickled (os.system through __reduce__)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_image(path: Path, width: int, height: int, seed: int = 0, mode: str = "RGB") -> Path:
    """A random image of the given size and mode, saved in the format the suffix names."""
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.RandomState(seed).randint(0, 256, size=(height, width, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(path)
    return path


def write_folder(root: Path, n: int, size: int = 12) -> list[str]:
    """n random PNG/JPEG/BMP/WebP images of mixed sizes, modes and nesting under root; their sorted paths."""
    paths = []
    for i in range(n):
        suffix = (".png", ".JPG", ".jpeg", ".bmp", ".webp")[i % 5]
        mode = ("RGB", "L", "RGBA")[i % 3] if suffix in (".png", ".webp") else ("RGB", "L")[i % 2]
        w, h = size + i % 7, size + 2 * (i % 3)  # non-square, both orientations, never below `size`
        paths.append(write_image(root / f"group{i % 3}" / ("deep" if i % 2 else "") / f"img{i:03d}{suffix}",
                                 w, h, seed=i, mode=mode))
    return sorted(str(p) for p in paths)


def assert_fits_a_column(tables: list[str], tmp_path: Path) -> None:
    """The tables compile in \\documentclass[twocolumn]{article} with booktabs alone, no overfull box."""
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is missing in CI: scripts/test.sh installs it")
        pytest.skip("pdflatex is not installed (scripts/test.sh installs it when run as root)")
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                   + "\n".join(tables) + "\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log, log[log.find("Overfull"):][:500]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
