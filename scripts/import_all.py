"""Import every module of the checkout: the check that the code runs on a Python other than the lock's.

    PYTHONPATH=. python scripts/import_all.py      # prints "imported N modules on Python X.Y.Z, torch V"

The lock is made for Python 3.11; the GPU machines people rent often have 3.12 with a newer torch.
Importing every module (nothing trained) finds syntax, standard-library and API removals there.
Exit 1 with the module and its error on the first that fails.
"""
from __future__ import annotations

import importlib
import platform
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "sweep", "analysis", "benchmarks")
TOP = ("plan", "metrics")


def modules() -> list[str]:
    names = list(TOP)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def main() -> int:
    names = modules()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # any failure to import is the finding
            print(f"{name}: does not import on Python {platform.python_version()}:\n{traceback.format_exc()}",
                  file=sys.stderr)
            return 1
    import torch
    print(f"imported {len(names)} modules on Python {platform.python_version()}, torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
