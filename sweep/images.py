"""Preflight of an image folder: every file a trial will read is opened and its header checked, once.

`check_files(paths)` opens each file with Pillow without decoding its pixels (Image.open reads the header
only): it must be a known format, in a mode that converts to 8-bit RGB without losing its range (not 16-bit
or float), of a size Pillow accepts. The verdicts are kept in a manifest keyed by path, size and
modification time (a parquet file in the user's cache, one per data folder), so that a second sweep on the
same folder, or a resume, checks only what changed. A file whose header is fine but whose data is broken
(a truncated JPEG) passes here; the trainer's loader names it when it decodes it (models/data/files.py).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image

FORMATS = ("JPEG", "MPO", "PNG", "BMP", "WEBP")  # what the extensions of models.data.IMAGE_EXTENSIONS hold
# Modes of at most 8 bits per channel: Image.convert("RGB") keeps their every value.
EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LA", "La", "PA", "LAB", "HSV")
THREADS = 8  # header reads wait on the file system (a network one above all), so threads overlap
SHOWN = 3  # bad files named in the refusal


def cache_dir() -> Path:
    """Where the manifests live: $XDG_CACHE_HOME/kohonen-vq/image-manifests (default ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kohonen-vq" / "image-manifests"


def header_problem(path: str) -> str:
    """What makes an image file unusable, from its header alone ("" when nothing does)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                form, mode, (width, height) = image.format, image.mode, image.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        return f"too large: {e}"
    except Exception as e:  # noqa: BLE001 - Pillow's parsers raise many kinds on a hostile file
        return f"cannot be opened as an image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if form not in FORMATS:
        return f"format {form}; allowed: {', '.join(FORMATS)}"
    if mode not in EIGHT_BIT_MODES:
        return f"mode {mode} does not convert to 8-bit RGB without losing its range; allowed: 8-bit modes"
    if width < 1 or height < 1:
        return f"size {width} x {height}"
    return ""


def _manifest(folder: str) -> Path:
    return cache_dir() / f"{hashlib.sha1(os.path.realpath(folder).encode()).hexdigest()}.parquet"


def _stat(path: str) -> tuple[int, int]:
    try:
        info = os.stat(path)
        return info.st_size, info.st_mtime_ns
    except OSError:
        return -1, -1


def check_files(paths: list[str], folder: str) -> list[tuple[str, str]]:
    """(path, problem) of each unusable file of `paths` (files under `folder`), reusing the folder's manifest
    for files whose size and modification time are unchanged, and updating it."""
    manifest = _manifest(folder)
    known: dict[str, tuple[int, int, str]] = {}
    if manifest.is_file():
        try:
            table = pd.read_parquet(manifest)
            known = dict(zip(table.path.tolist(), zip(table["size"].tolist(), table.mtime_ns.tolist(),
                                                      table.problem.tolist())))
        except (OSError, ValueError, KeyError, AttributeError):  # unreadable: checked again
            known = {}
    stats = [_stat(p) for p in paths]
    todo = [i for i, (p, st) in enumerate(zip(paths, stats)) if known.get(p, (None, None, ""))[:2] != st]
    with ThreadPoolExecutor(THREADS) as pool:
        found = dict(zip(todo, pool.map(lambda i: header_problem(paths[i]) if stats[i][0] >= 0
                                        else "cannot be read", todo)))
    problems = [found[i] if i in found else known[p][2] for i, p in enumerate(paths)]
    if todo:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame({"path": paths, "size": [s for s, _ in stats], "mtime_ns": [m for _, m in stats],
                              "problem": problems})
        partial = manifest.with_name(f"{manifest.name}.{os.getpid()}")
        table.to_parquet(partial, index=False)
        os.replace(partial, manifest)  # whole or not at all: two sweeps may write it at once
    return [(p, problem) for p, problem in zip(paths, problems) if problem]


def refusal(bad: list[tuple[str, str]], total: int) -> str:
    """The part of the one-line refusal that names the bad files: the first SHOWN and how many."""
    named = "; ".join(f"{path} ({problem})" for path, problem in bad[:SHOWN])
    more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    return f"{len(bad)} of {total} image files cannot be used: {named}{more}"
