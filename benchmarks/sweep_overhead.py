"""Sweep-overhead benchmark: what do Ray Tune, MLflow and the analysis cost on top of training?

Run from the repository root:

    python -m benchmarks.sweep_overhead                    # robustness at cpu scale, 3 seeds (~10 min)
    python -m benchmarks.sweep_overhead --scale smoke      # seconds-long trials: overhead dominates

It runs one study end to end with the platform's own code path (`sweep.execute.run_sweep`,
local Ray, embedded MLflow store, analysis at the end) and prints:

  wall time             the whole run: Ray start, MLflow store, every trial, the report;
  ideal time            sum of the trials' own training time (the trainer's `time/train_s`:
                        steps only, no validation) / trials run at once;
  overhead ratio        wall / ideal (target <= 1.05 at cpu scale);
  platform ratio        wall / ((training + validation time) / concurrency): the cost of Ray Tune,
                        checkpoints, MLflow and the analysis alone, beside the trials' own validation;
  MLflow logging time   per trial: the same batched calls the sweep makes (one log_batch per
                        validation, params once, tags), replayed into a fresh run of the store.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from analysis.load import load_sweep
from analysis.store import Sweep, read_sweep
import metrics as M
from sweep.execute import run_sweep
from sweep.plan import make_plan


def logging_seconds_per_trial(meta: Sweep, trials, metrics) -> float:
    """Replay one trial's logging (params, one log_batch per validation) and time it."""
    client = MlflowClient(meta.tracking_uri)
    run_id = trials.run_id.iloc[0]
    params = {k: str(v) for k, v in trials.iloc[0].items() if k not in ("run_id", "run_name", "parent_run_id")}
    points = metrics[metrics.run_id == run_id]
    start = time.perf_counter()
    run = client.create_run(meta.experiment_id, run_name="logging-benchmark", tags={"benchmark": "1"})
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    for step, batch in points.groupby("step"):
        client.log_batch(run.info.run_id, metrics=[Metric(m, float(v), 0, int(step))
                                                   for m, v in zip(batch.metric, batch.value)])
    client.set_terminated(run.info.run_id)
    seconds = time.perf_counter() - start
    client.delete_run(run.info.run_id)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="robustness")
    p.add_argument("--scale", default="cpu")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=2, help="trials at once (1 CPU each)")
    args = p.parse_args()

    import ray

    plan = make_plan(args.study, args.scale, seeds=args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ray.init(address="local", num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False)
        sweep_dir = run_sweep(plan, results_dir=Path(tmp))
        ray.shutdown()
        wall = time.perf_counter() - start
        meta = read_sweep(sweep_dir)
        trials, metrics = load_sweep(sweep_dir)
        total = lambda name: metrics[metrics.metric == name].groupby("run_id").value.sum()  # noqa: E731
        train_time, eval_time = total(M.TIME_TRAIN), total(M.TIME_VAL)  # per-validation seconds, summed
        logging = logging_seconds_per_trial(meta, trials, metrics)

    ideal = train_time.sum() / args.concurrency
    trainer = (train_time.sum() + eval_time.sum()) / args.concurrency
    print(f"\n{args.study} at {args.scale} scale: {len(trials)} trials, {args.concurrency} at once")
    print(f"  wall time            {wall:8.1f} s")
    print(f"  training time        {train_time.sum():8.1f} s summed over trials "
          f"(median {train_time.median():.1f} s per trial)")
    print(f"  ideal time           {ideal:8.1f} s  (training / concurrency)")
    print(f"  overhead ratio       {wall / ideal:8.3f}   (target <= 1.05 at cpu scale)")
    print(f"  validation time      {eval_time.sum():8.1f} s summed over trials (every {trials.eval_every.iloc[0]} "
          "steps, and the topography at the end: the trials' own work)")
    print(f"  platform ratio       {wall / trainer:8.3f}   wall / ((training + validation) / concurrency): "
          "what Ray Tune, checkpoints, MLflow and the report add")
    print(f"  MLflow logging       {logging * 1000:8.1f} ms per trial "
          f"({metrics[metrics.run_id == trials.run_id.iloc[0]].step.nunique()} batched validations)")


if __name__ == "__main__":
    main()
