"""run.txt: how a committed result was made (docs/results/make.sh writes it: the command, commit, lock,
machine and wall time, then the report's output). It is data: its command is parsed by sweep.run's own
parser (shlex, no shell), its study must be a shipped study's name, and nothing in it is run or opened.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import metrics as M
from sweep.run import parser
from sweep.study import shipped_names

COMMAND = ("python", "-m", "sweep.run")


class BadRunFile(ValueError):
    """A run.txt whose command is not a shipped study's `python -m sweep.run` command: one line naming it."""

    def __str__(self) -> str:
        return self.args[0]


def run_command(run_txt: str | Path) -> argparse.Namespace:
    """The arguments of run_txt's `command:` line as sweep.run's parser reads them; BadRunFile (naming the file
    and what is wrong) when it has none, the line is not `python -m sweep.run STUDY ...`, the parser refuses
    it or STUDY is not a shipped study's name."""
    allowed = f"allowed: the run.txt docs/results/make.sh wrote (command:  {' '.join(COMMAND)} STUDY ...)"
    try:
        text = Path(run_txt).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadRunFile(f"{run_txt}: cannot be read as UTF-8 text ({type(e).__name__}); {allowed}") from None
    line = next((line for line in text.splitlines() if line.startswith("command:")), None)
    if line is None:
        raise BadRunFile(f"{run_txt}: no 'command:' line; {allowed}")
    shown = M.printable(line.removeprefix("command:").strip())[:200]
    try:
        words = shlex.split(line.removeprefix("command:"))
    except ValueError as e:
        raise BadRunFile(f"{run_txt}: command {shown!r} does not split into words ({e}); {allowed}") from None
    if tuple(words[:3]) != COMMAND:
        raise BadRunFile(f"{run_txt}: command {shown!r} is not {' '.join(COMMAND)}; {allowed}")

    def refuse(message: str):
        raise BadRunFile(f"{run_txt}: command {shown!r}: {M.printable(message)}; {allowed}")

    read = parser()
    read.error = refuse  # argparse would print its usage and exit
    args = read.parse_args(words[3:])
    if args.study not in shipped_names():
        refuse(f"study {args.study!r} is not a shipped study ({', '.join(shipped_names())})")
    return args
