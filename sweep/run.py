"""`python -m sweep.run STUDY`: run a study's trials on Ray Tune, tracked in MLflow.

    python -m sweep.run robustness                      # cpu scale on a laptop, embedded MLflow store
    python -m sweep.run path/to/my-study.yaml           # a study file of your own (README: study files)
    python -m sweep.run ablation --grid tau=0.01,0.03,0.1,0.3,1   # add or replace an axis
    python -m sweep.run robustness --scale smoke --seeds 2 --set lr=3e-4
    python -m sweep.run robustness --scale paper --dataset cifar10 --data-dir /data
    python -m sweep.run robustness --scale paper --dataset imagenet --data-dir /data/imagenet   # VQ-VAE-2
    python -m sweep.run robustness --scale smoke --set model=vqvae2
    python -m sweep.run --resume results/robustness-cpu-20261124-101500   # continue a killed sweep
    python -m sweep.run --resume results/convergence-cpu-xl-20261203-090000 --add-seeds 19   # more seeds
    python -m sweep.run ablation --dry-run              # list the trials and exit
    python -m sweep.run tuned-comparison --search optuna --samples 24   # a searched study (docs/studies.md#search)

Each sweep gets a folder <results-dir>/<study>-<scale>-<time>/ with sweep.json
(the plan, so a resume runs exactly the same grid), Ray Tune's storage (ray/)
and the analysis outputs; all sweeps in a results dir share one MLflow store
(mlflow.db + mlartifacts/) unless --tracking-uri names a server.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from models.config import DATASETS, ConfigError, field_names
from plan import search_budget
from sweep.plan import Plan, check_winners, make_plan, parse_grid, parse_overrides, stored_error, validate
from sweep.scales import SCALES
from sweep.search import describe
from sweep.study import MAX_TRIALS, shipped_names

if TYPE_CHECKING:  # analysis.store imports MLflow: only when resuming (read_sweep_json)
    from analysis.store import Sweep


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sweep.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", nargs="?", help="a study file (path/to/study.yaml, see README) or a shipped study: "
                                            f"{', '.join(shipped_names())}")
    p.add_argument("--scale", help="smoke (seconds), cpu (minutes, the default without a GPU), "
                                   "paper (the paper's settings, the default with a GPU)")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1); default from the scale; of a searched "
                                             "study: its confirmation seeds (the first N other than the tuning seed)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any config field, e.g. --set lr=3e-4 (repeatable); "
                        f"fields: {', '.join(field_names())}")
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="sweep FIELD over these values: adds an axis to the study or replaces its axis "
                        "(repeatable), e.g. --grid tau=0.01,0.03,0.1,0.3,1")
    p.add_argument("--search", choices=("random", "optuna"),
                   help="a study with a search: block: its algorithm (random search or Optuna's TPE, both seeded)")
    p.add_argument("--samples", type=int, help="a study with a search: block: configurations searched per arm")
    p.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (photos: the offline default; at paper "
                                     "scale imagenet / celeba_afhq / imagefolder run the paper's VQ-VAE-2 settings)")
    p.add_argument("--data-dir", help="folder holding the data set (CIFAR is downloaded there if absent)")
    p.add_argument("--results-dir", default="results", help="where sweeps and the MLflow store go (default results/)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://127.0.0.1:5000 "
                                          "(default: sqlite store inside the results dir)")
    p.add_argument("--storage", help="Ray Tune storage all nodes can reach (e.g. s3://bucket/sweeps) for "
                                     "multi-node clusters; default: the sweep folder")
    p.add_argument("--address", help="Ray cluster address, host:port (it must answer within 5 s), 'auto' or 'local'; "
                                      "default RAY_ADDRESS, else a running cluster of yours on this node, else local")
    p.add_argument("--cpus-per-trial", type=float, help="default from the scale")
    p.add_argument("--gpus-per-trial", type=float,
                   help="default from the scale; a fraction (e.g. 0.25) packs several trials on one GPU")
    p.add_argument("--workers-per-trial", type=int,
                   help="processes per trial, each training on its share of every batch (Ray Train, "
                        "DistributedDataParallel, codebook statistics summed); the trial's CPUs and GPUs are "
                        "shared evenly among them; default from the scale (1)")
    p.add_argument("--fuse", metavar="S|auto|off",
                   help="train trials that differ only in values as packs of up to S, one fused model each "
                        "(models/fused.py); auto: where docs/results/benchmarks/gpu.txt measured a gain on this "
                        "GPU; default: the study's fuse:, else off")
    p.add_argument("--max-trials", type=int, default=MAX_TRIALS,
                   help=f"refuse a grid of more trials than this (default {MAX_TRIALS:,}): a guard against typos")
    p.add_argument("--max-concurrent", type=int, default=0, help="cap on trials at once (default: as resources allow)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a trial after an infrastructure fault")
    p.add_argument("--resume", metavar="SWEEP_DIR", help="continue a killed sweep from its folder")
    p.add_argument("--add-seeds", metavar="N", help="with --resume of a finished sweep: train every configuration (of "
                                                   "a searched study: every confirmed winner) on N more seeds, the "
                                                   "next after its highest (the tuning seed skipped); no trial runs "
                                                   "again, and the tables are made anew")
    p.add_argument("--dry-run", action="store_true", help="print the trials and exit")
    return p


def plan_from_args(args) -> Plan:
    overrides = parse_overrides(args.set)
    if args.dataset:
        overrides["dataset"] = args.dataset
    if args.data_dir:
        overrides["data_dir"] = str(Path(args.data_dir).expanduser().resolve())
    return make_plan(args.study, args.scale, args.seeds, overrides, args.cpus_per_trial, args.gpus_per_trial,
                     grid=parse_grid(args.grid), workers=args.workers_per_trial, max_trials=args.max_trials,
                     search=args.search, samples=args.samples, fuse=args.fuse)


def read_sweep_json(sweep_dir: Path, tracking_uri: str | None = None, check: bool = True) -> tuple[Plan, Sweep]:
    """(plan, sweep.json) of a sweep folder; anything but a complete sweep.json is a ConfigError naming it:
    analysis.store.read_sweep reads the file and its plan (plan.Plan.from_dict), sweep.plan.validate checks the
    plan as make_plan checks a study's, and the winners of a searched study are checked against its spaces.
    Without `check` its MLflow store need not be there (sweep.retable reads only the folder's summary)."""
    from analysis.store import BadSweep, StoreMissing, read_sweep  # imports MLflow: only when resuming

    meta_file = sweep_dir / "sweep.json"
    if not meta_file.is_file():
        raise ConfigError(f"--resume {sweep_dir}: no sweep.json there; give the folder a sweep printed at its start")
    try:
        meta = read_sweep(sweep_dir, check, tracking_uri, plan_type=Plan)  # paths resolved where it is now
    except BadSweep as e:
        raise ConfigError(str(e)) from None
    except StoreMissing as e:
        raise ConfigError(f"--resume {sweep_dir}: {e}") from None
    error = stored_error(meta_file)
    validate(meta.plan, error)
    check_winners(meta.plan, meta.winners, error)
    return meta.plan, meta


def resume_plan(args) -> tuple[Plan, Sweep]:
    """The stored plan of the sweep in args.resume; a different grid on the command line is refused."""
    stored, meta = read_sweep_json(Path(args.resume).expanduser().resolve(), args.tracking_uri)
    grid_options = (args.study, args.scale, args.seeds, args.set, args.grid, args.dataset, args.data_dir,
                    args.cpus_per_trial, args.gpus_per_trial, args.workers_per_trial, args.search, args.samples,
                    args.fuse)
    if any(option for option in grid_options):
        own_file = stored.study not in shipped_names() and stored.source
        args.study, args.scale = args.study or (stored.source if own_file else stored.study), args.scale or stored.scale
        args.fuse = str(stored.pack_size) if args.fuse is None else args.fuse  # the study file's fuse: may have changed
        asked = plan_from_args(args)
        if _grid(asked) != _grid(stored):
            diff = {k: (getattr(stored, k), getattr(asked, k))
                    for k in ("scale", "base", "arms", "seeds", "cpus", "gpus", "workers", "search", "pack_size")
                    if getattr(stored, k) != getattr(asked, k)}
            raise ConfigError(f"--resume {args.resume} ran a different grid; stored vs asked: {diff}. "
                              "Resume with the same options, or with --resume alone")
    return stored, meta


def added_seeds(text: str | None) -> int | None:
    """The N of --add-seeds (None without it); a ConfigError unless it is a whole number >= 1."""
    if text is None:
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"--add-seeds {text!r}: allowed: a whole number of seeds >= 1")
    return int(text)


def next_seeds(seeds: list[int], n: int, skip: int | None = None) -> list[int]:
    """The n seeds after the highest of `seeds`, without `skip` (a searched study's tuning seed)."""
    start = max(seeds) + 1
    return [s for s in range(start, start + n + 1) if s != skip][:n]


def add_seeds(plan: Plan, meta: Sweep, n: int) -> Plan:
    """The plan of the finished sweep `meta` with n seeds added (the next after its highest seed, the tuning seed
    skipped), checked; a ConfigError when the sweep has not finished (its parent run is not FINISHED)."""
    from mlflow.tracking import MlflowClient

    status = MlflowClient(meta.tracking_uri).get_run(meta.parent_run_id).info.status
    if status != "FINISHED":
        raise ConfigError(f"--add-seeds: the sweep in {meta.dir} has not finished (its parent run is {status}); "
                          f"allowed: a finished sweep (complete it first: python -m sweep.run --resume {meta.dir})")
    new = next_seeds(plan.seeds + plan.added_seeds, n, plan.search.tuning_seed if plan.search else None)
    grown = dataclasses.replace(plan, added_seeds=plan.added_seeds + new)
    validate(grown, stored_error(meta.dir / "sweep.json"))
    return grown


def _grid(plan: Plan) -> tuple:
    """What a resume must keep: every trial's config, the search, the resources and processes per trial, the packs."""
    return ([cfg.to_params() for cfg in plan.trials()], plan.search, plan.cpus, plan.gpus, plan.workers,
            plan.pack_size)


def dry_run(plan: Plan, max_concurrent: int = 0) -> str:
    """The run names, the number of trials and the expected wall time on this machine."""
    from sweep.progress import WIDTH, duration, plural  # Ray Tune: imported only when a dry run asks
    names = [plan.run_name(arm, seed) for arm in plan.arms for seed in plan.seeds]
    concurrent = max_concurrent or max(1, int((os.cpu_count() or 1) // plan.cpus))
    seconds = plan.expected_seconds(concurrent)
    scale = SCALES.get(plan.scale)
    per_step = scale.step_seconds if scale else 0.0
    wall = (textwrap.fill(f"expected wall time about {duration(seconds)}, {concurrent} at a time ({per_step:g} s per "
                          f"step at {plan.scale} scale, {scale.step_source})", WIDTH, subsequent_indent="  ")
            if seconds else f"no wall-time estimate: scale {plan.scale!r} has no measured step time")
    each = f"{plan.cpus:g} CPU / {plan.gpus:g} GPU each" + (f" shared by {plan.workers} workers"
                                                            if plan.workers > 1 else "")
    if plan.search:
        lines = ([f"{plan.study} at {plan.scale} scale: {plan.n_trials()} trials: {search_budget(plan)}; {each}",
                  wall] + [f"  {plan.arm_name(arm)}: {describe(space)}"
                           for arm, space in zip(plan.arms, plan.search.spaces)] + pack_lines(plan))
    else:
        lines = [f"{plan.study} at {plan.scale} scale: {len(names)} trials ({len(plan.arms)} arms x "
                 f"{plural(len(plan.seeds), 'seed')}), {each}", wall]
        lines += pack_lines(plan) if plan.pack_size > 1 else [f"  {name}" for name in names] + pack_lines(plan)
    return "\n".join(_wrapped(line, WIDTH) for line in lines + seeds_outlook(plan))


def _wrapped(line: str, width: int) -> str:
    """A line of at most `width` characters, or several: the next ones indented two more than the first."""
    indent = " " * (len(line) - len(line.lstrip(" ")))
    return textwrap.fill(line, width, initial_indent="", subsequent_indent=indent + "  ",
                         break_on_hyphens=False) if len(line) > width else line


def pack_lines(plan: Plan) -> list[str]:
    """The dry-run's word on fusion: the rule that chose the pack size and, with packs, each pack's trials."""
    rule = plan.fuse_rule or f"pack size {plan.pack_size}"
    if plan.pack_size == 1:
        return [f"fusion: {rule}"]
    packs = plan.packs()
    lines = [f"fusion: {rule}; {len(packs)} Ray trials (one fused model each) for {sum(map(len, packs))} trials"]
    return lines + [f"  pack {i + 1} ({len(pack)}): " + " | ".join(plan.run_name(arm, seed) for arm, seed in pack)
                    for i, pack in enumerate(packs)]


COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "results"  # the committed runs of a source checkout


def seeds_outlook(plan: Plan, committed: Path = COMMITTED) -> list[str]:
    """Of a study with an equivalence margin: what its seeds per arm can show, from the spreads of its committed
    run (committed/<study>/summary.parquet) where one exists (analysis/power.py)."""
    if plan.analysis.equivalence is None and plan.analysis.equivalence_margin is None:
        return []
    earlier = committed / plan.study / "summary.parquet"
    if not earlier.is_file():
        return [f"no committed run of {plan.study} ({earlier.parent}) to tell what {len(plan.seeds)} seeds per arm "
                "can show"]
    import pandas as pd  # the analysis only where there is something to analyse

    from analysis.power import outlook
    from analysis.tables import Layout
    return outlook(pd.read_parquet(earlier), Layout.from_plan(plan), len(plan.seeds), earlier.parent)


def refuse(message: str):
    """Bad input: one line on stderr, exit status 2 (nothing was created)."""
    print(f"python -m sweep.run: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0 done, 1 trials failed, 2 refused, 3 outage,
    130 / 143 stopped by SIGINT / SIGTERM)."""
    p = parser()
    args = p.parse_args(argv)
    try:
        more = added_seeds(args.add_seeds)
        if more is not None and not args.resume:
            raise ConfigError("--add-seeds: allowed only with --resume SWEEP_DIR, a finished sweep's folder")
        if args.resume:
            plan, meta = resume_plan(args)
            if more is not None:
                plan = meta.plan = add_seeds(plan, meta, more)
                print(f"adding seeds {', '.join(map(str, plan.added_seeds[-more:]))} to {meta.dir}", flush=True)
            if not args.dry_run:
                from sweep.lock import hold_sweep
                from sweep.tune_state import complete_sweep
                hold_sweep(meta.dir)  # one driver per sweep folder, held until this process ends
                for name in complete_sweep(meta.ray_storage, meta.ray_name):
                    print(f"completed {name}: the stopped driver's copy of it was cut short", flush=True)
        elif not args.study:
            p.error("give a STUDY (or --resume SWEEP_DIR)")
        else:
            plan, meta = plan_from_args(args), None
        if args.max_concurrent < 0 or args.max_failures < 0:
            raise ConfigError("--max-concurrent and --max-failures must be >= 0")
        if not args.dry_run:
            from sweep.preflight import check
            results_dir = None if meta else Path(args.results_dir)
            target = check(plan, results_dir, meta.tracking_uri if meta else args.tracking_uri, args.address)
    except ConfigError as e:
        refuse(str(e))
    if args.dry_run:
        print(dry_run(plan, args.max_concurrent))
        return 0
    from sweep.execute import SweepEnded, run_sweep  # imports Ray and MLflow: only once the plan is known to be good
    if more is not None:
        from analysis.store import write_sweep
        write_sweep(meta)  # the added seeds in sweep.json's plan: a resume of a stopped addition runs them too
    try:
        run_sweep(plan, results_dir=Path(args.results_dir), tracking_uri=args.tracking_uri, storage=args.storage,
                  target=target, resume=meta, max_concurrent=args.max_concurrent,
                  max_failures=args.max_failures)
    except SweepEnded as e:
        print(e, file=sys.stderr, flush=True)
        return e.code
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:  # on the way out the interpreter's collector would walk every object torch, Ray and MLflow
        gc.freeze()  # made (1.5 s of a sweep's exit on 2 cores); none needs collecting now: out of its reach
