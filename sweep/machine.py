"""The CPU a run used, as docs/results/*/run.txt records it.

A study's digits repeat exactly on the same CPU capability with the same lock: torch picks its CPU kernels
by the vector extensions it finds (torch.backends.cpu.get_cpu_capability: DEFAULT, AVX2, AVX512, ...), and
kernels of different widths sum in different orders. On virtual machines the model name is often generic,
so "the same machine" means the same capability and lock, not the same name.
"""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

VECTOR_FLAG = re.compile(r"^(sse4_2|fma|f16c|avx\w*|amx\w*|sve\w*|asimd\w*)$")  # x86 and Arm SIMD flags


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """'<model name>; vector extensions: avx avx2 ...; torch CPU capability: AVX512' of this machine."""
    import torch

    try:
        info = cpuinfo.read_text()
    except OSError:
        info = ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", info, re.M)
    vector = [f for f in (flags.group(1).split() if flags else []) if VECTOR_FLAG.match(f)]
    return (f"{model.group(1).strip() if model else platform.processor() or 'unknown CPU'} ({os.cpu_count()} cores); "
            f"vector extensions: {' '.join(vector) or 'none listed'}; "
            f"torch CPU capability: {torch.backends.cpu.get_cpu_capability()}")


if __name__ == "__main__":
    print(cpu())
