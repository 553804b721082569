"""Image-folder preflight benchmark: is reading every file's header cheap enough for ImageNet's 1.3 M files?

Run from the repository root:

    python -m benchmarks.image_check                  # 20,000 files, about a minute on 2 idle cores
    python -m benchmarks.image_check --files 2000     # smoke run

On a generated folder of --files JPEGs of 500 x 375 px (ImageNet's typical size; 100 class folders) it
measures, and prints, files per second of:

1. the listing (models.data.split_image_folder: every folder and file once, links followed);
2. the header check of every file with no manifest yet (sweep.images.check_files: Pillow opens each file
   without decoding its pixels; stat, header, and the manifest written);
3. the same with the manifest in place (a second sweep on the folder, or a resume: one stat per file);

and the minutes each would take for 1,281,167 files (ImageNet's training set) at that rate. The manifests
go to a temporary cache folder. The header names the command, the commit and the CPU count.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from models.data import split_image_folder
from sweep.images import check_files

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_TRAIN = 1_281_167
PHOTO, CLASSES = (500, 375), 100


def write_folder(root: Path, n: int) -> None:
    """n JPEGs of 500 x 375 px in CLASSES class folders; every file a copy of one of 16 made ones (the check
    reads headers, so their content does not matter, and writing is then fast)."""
    g = np.random.default_rng(0)
    made = []
    for i in range(16):
        small = g.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        path = root / f"made{i}.jpg"
        Image.fromarray(small).resize(PHOTO, Image.Resampling.BICUBIC).save(path, quality=90)
        made.append(path.read_bytes())
    for c in range(CLASSES):
        (root / "data" / f"n{c:08d}").mkdir(parents=True)
    for i in range(n):
        (root / "data" / f"n{i % CLASSES:08d}" / f"img{i:07d}.JPEG").write_bytes(made[i % 16])


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} files/s ({IMAGENET_TRAIN / (n / seconds) / 60:.1f} min for ImageNet's 1,281,167)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=20_000)
    args = p.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"python -m benchmarks.image_check --files {args.files}  (commit {commit}, {os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(root / "cache")
        write_folder(root, args.files)
        data = str(root / "data")
        start = time.perf_counter()
        train, val, test = split_image_folder(data)
        listed = time.perf_counter() - start
        paths = train + val + test
        assert len(paths) == args.files
        print(f"listing:                  {rate(len(paths), listed)}")
        for what in ("header check, no manifest", "header check, manifest  "):
            start = time.perf_counter()
            bad = check_files(paths, data)
            print(f"{what}: {rate(len(paths), time.perf_counter() - start)}")
            assert not bad


if __name__ == "__main__":
    sys.exit(main())
