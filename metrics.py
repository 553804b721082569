"""The name of every metric a trial records: the trainer (models/) reports these names, the sweep
logs them to MLflow, and the analysis reads them. No other module spells a metric name. It is a
module of its own, importing nothing of the project, so that the analysis shares the names
without depending on the models.

Names are grouped by a prefix that MLflow's UI folds into one section per group:

| name | when | what |
|---|---|---|
| `train/loss` | every validation | reconstruction MSE, mean over the steps since the last validation |
| `train/commitment` | every validation | commitment loss (Eq. 15, summed over levels), same mean |
| `train/perplexity_<level>` | every validation | batch perplexity of the codes (App. B.1), same mean |
| `train/codes_used_<level>` | every validation | codes used in a batch, same mean |
| `val/loss` | every validation | reconstruction MSE over the whole validation set (eval mode) |
| `val/perplexity_<level>` | every validation | perplexity of the codes over the whole validation set |
| `val/codes_used_<level>` | every validation | codes used over the whole validation set |
| `test/loss` | each validation that lowered `val/loss` | reconstruction MSE over the whole test set (eval mode) |
| `time/train_s` | every validation | seconds of training steps since the last validation |
| `time/val_s` | every validation | seconds of this validation (with its test loss, and the topography at the end) |
| `val/best_loss` | summary | lowest `val/loss` of the trial: what selects (the step, a search's winner) |
| `test/final_loss` | summary | `test/loss` at the step of `val/best_loss`: the trial's final loss |
| `topography/loss_offset_<o>` | summary | MSE with every code shifted by (o, o) on the grid (Sec. 4.3) |
| `topography/smoothness_<level>` | summary | neighbour / all-pairs distance of decoded codes (Sec. 4.3) |
| `time/train_total_s`, `time/val_total_s` | summary | the trial's summed training / validation seconds |

A summary is reported once, at the end of a finished trial, and logged to MLflow once at step
`SUMMARY_STEP` = 0: MLflow's UI draws a metric as a line only when it has a point at a step >= 1,
so summaries become one bar per run (compared across runs) instead of a lone point on the step axis.
Validation selects and test reports: the best step of a trial, a search's winner and a scheduler's
early stops read `val/` metrics only; the test split is measured only where validation improved (the
step it would choose so far), so the last `test/loss` of a trial is always its `test/final_loss`.
How a trial ended is not a metric but its status (`STATUS_TAG`): finished, diverged (a NaN/inf loss),
stopped (early, by a search's scheduler) or failed (an error).

In the analysis a metric's column (summary.parquet) is its name without the group, e.g.
`val/perplexity_vq` -> `perplexity_vq`, `topography/loss_offset_1` -> `loss_offset_1`.

The per-trial summary columns the analysis derives from these (analysis.summary computes them, a
study file's `metrics:` and the tables name them) are named here too (paper Sec. 4.1):

| column | what |
|---|---|
| `result` | the trial is a result: it finished or diverged (other statuses are counted, not averaged) |
| `final_loss` | test loss at the step of the best validation loss (no test loss logged: that best) |
| `selection_loss` | best validation loss (the released code's final loss): selection data; absent without test |
| `steps_<p>` | first validated step whose validation loss is within +p % of the selection loss (`steps_to(p)`) |
| `diverged` | the trial stopped on a NaN/inf loss (the column is named as that status, `DIVERGED`) |
| `collapsed` | fewer than 5 % of the codes used on validation at some level |
| `late_improvement` | what the best validation loss still fell over the last 20 % of the steps |
"""
from __future__ import annotations

import re
from typing import Callable, Iterable

TRAIN_LOSS = "train/loss"
TRAIN_COMMITMENT = "train/commitment"
VAL_LOSS = "val/loss"
TIME_TRAIN = "time/train_s"
TIME_VAL = "time/val_s"
# Summaries: once per finished trial.
VAL_BEST_LOSS = "val/best_loss"
TEST_LOSS = "test/loss"  # at each validation that lowered val/loss only
TEST_FINAL_LOSS = "test/final_loss"
TIME_TRAIN_TOTAL = "time/train_total_s"
TIME_VAL_TOTAL = "time/val_total_s"
TOPOGRAPHY = "topography/"
SUMMARY_STEP = 0

# What a sweep's parent run logs of its own: the sweep's wall time, summed over resumes.
SWEEP_WALL = "time/sweep_wall_s"

# MLflow tags of a trial's run, which the analysis reads back as columns of its trials (analysis/load.py).
STATUS_TAG = "status"
STUDY_TAG, SCALE_TAG, SEED_TAG, RULE_TAG, ARM_TAG = "study", "scale", "seed", "rule", "arm"
TOPOGRAPHY_TAG = "topography"  # "measured", or why the trial's topography is not
RAY_TRIAL_TAG, NODE_TAG = "ray_trial_id", "node_id"  # where the run's trial ran (Ray's trial id finds it on resume)
STAGE_TAG, SEARCH_TAG, SEARCHED_TAG = "stage", "search", "searched"  # a searched study's: stage, algorithm, fields
DRAW_TAG = "draw"  # a random-search trial's: which of the search's shared draws it ran (sweep/search.py)
ERROR_TAG = "error"  # the one line of a trial that ended on a data error
KIND_TAG = "kind"  # the parent run's: "sweep"
TRIAL_TAGS = (STATUS_TAG, STUDY_TAG, SCALE_TAG, RULE_TAG, ARM_TAG, TOPOGRAPHY_TAG, RAY_TRIAL_TAG, NODE_TAG, STAGE_TAG,
              SEARCH_TAG, SEARCHED_TAG, DRAW_TAG)
RUNNING, FINISHED, DIVERGED, FAILED = "running", "finished", "diverged", "failed"
INTERRUPTED = "interrupted"  # stopped by a signal or an outage before it ended; a resume continues it
STOPPED = "stopped"  # a search trial its early-stopping scheduler (ASHA) ended before its last step: no result

SEARCH, CONFIRM = "search", "confirm"  # the stages of a searched study (run tag and summary column "stage")

# Per-trial summary columns (summary.parquet).
RESULT = "result"
FINAL_LOSS = "final_loss"
SELECTION_LOSS = "selection_loss"
STEPS = "steps_"  # prefix of steps_to(p)
THRESHOLDS = (10, 20)  # the percentages of steps_to the summary holds (paper Tables 1-4)
COLLAPSED = "collapsed"
SEEDS = "seeds"  # a tidy table's (analysis.tables): the seeds with a result, per arm and column
LATE_IMPROVEMENT = "late_improvement"


def steps_to(percent: int | str) -> str:
    """The summary column of the first validated step within +percent % of the selection loss."""
    return f"{STEPS}{percent}"


def threshold(column: str) -> int:
    """The percentage of a steps_to column: threshold('steps_20') == 20."""
    return int(column.removeprefix(STEPS))


# What a study's tables can show per trial (a study file's `metrics:`).
SUMMARY_METRICS = (FINAL_LOSS,) + tuple(steps_to(p) for p in THRESHOLDS)


def train_perplexity(level: str) -> str:
    """Mean batch perplexity of `level`'s codes over the steps since the last validation."""
    return f"train/perplexity_{level}"


def train_codes_used(level: str) -> str:
    """Mean number of `level`'s codes used per batch over the steps since the last validation."""
    return f"train/codes_used_{level}"


def val_perplexity(level: str) -> str:
    """Perplexity of `level`'s codes over the whole validation set."""
    return f"val/perplexity_{level}"


def val_codes_used(level: str) -> str:
    """Number of `level`'s codes used over the whole validation set."""
    return f"val/codes_used_{level}"


def offset_loss(offset: int | str) -> str:
    """Validation MSE with every code shifted by (offset, offset) on its grid (summary)."""
    return f"{TOPOGRAPHY}loss_offset_{offset}"


def smoothness(level: str) -> str:
    """Smoothness ratio of `level`'s decoded codebook on its grid (summary)."""
    return f"{TOPOGRAPHY}smoothness_{level}"


# What names a study: its MLflow experiment, its sweep folders and its table files (no path separators).
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# What no name, label or text read from a file may hold: control characters (a newline ends a progress line
# or a table row and forges the next, ESC drives the terminal, NUL ends C strings), line and paragraph
# separators, and the bidirectional overrides that make text show in another order than it is stored.
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every UNPRINTABLE character written as Python writes it escaped (a newline as \\n, ESC as
    \\x1b): what reaches a terminal or a file of text from data shows, and never acts."""
    return UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


def find_unprintable(data, path: tuple = ()) -> tuple[tuple, str] | None:
    """(key path, string) of the first string in `data` (nested mappings and lists, keys included) that holds
    an UNPRINTABLE character; None when none does."""
    if isinstance(data, str):
        return (path, data) if UNPRINTABLE.search(data) else None
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for key, value in items:
        found = find_unprintable(key, path + (key,)) or find_unprintable(value, path + (key,))
        if found:
            return found
    return None


def value_texts(values: Iterable) -> dict:
    """How the swept values of one field print in run names (sweep) and table rows (analysis) alike: floats
    with the fewest significant digits, at least the six of '%g', that tell all of `values` apart
    (0.001 and 0.0010000001 -> '0.001' and '0.0010000001'); other values as str()."""
    values = set(values)
    floats = [v for v in values if isinstance(v, float)]
    digits = next((d for d in range(6, 18) if len({f"{v:.{d}g}" for v in floats}) == len(floats)), 17)
    return {v: f"{v:.{digits}g}" if isinstance(v, float) else str(v) for v in values}


def is_summary(name: str) -> bool:
    """Whether `name` is an end-of-trial summary (logged once) rather than a per-validation series."""
    return name.startswith(TOPOGRAPHY) or name in (VAL_BEST_LOSS, TEST_FINAL_LOSS, TIME_TRAIN_TOTAL, TIME_VAL_TOTAL)


def column(name: str) -> str:
    """The analysis column of metric `name`: the name without its group ('val/perplexity_vq' -> 'perplexity_vq')."""
    return name.split("/", 1)[-1]


def suffixes(names: Iterable[str], family: Callable[[str], str]) -> list[str]:
    """The levels (or offsets) of a per-level family present in `names`, sorted:
    suffixes(['val/perplexity_top', 'val/loss'], val_perplexity) == ['top']."""
    prefix = family("")
    return sorted({n.removeprefix(prefix) for n in names if n.startswith(prefix)})


class MissingMetric(KeyError):
    """A metric the analysis needs was not logged."""

    def __str__(self) -> str:
        return self.args[0]


def require(names: Iterable[str], needed: Iterable[str], where: str) -> None:
    """Raise MissingMetric naming the first of `needed` that is not among the logged `names`."""
    names = set(names)
    for name in needed:
        if name not in names:
            logged = ", ".join(sorted(names)) or "none"
            raise MissingMetric(f"metric {name!r} is missing from {where} (logged: {logged}); "
                                "was it logged by an older version with other metric names?")
