"""Run (or resume) a planned sweep on Ray Tune with MLflow tracking.

A sweep that does not end with every trial finished (or diverged) raises SweepEnded, whose message is
the one line to print and whose `code` is the exit status: 1 when trials failed (after the report of
what exists), 130 / 143 when SIGINT / SIGTERM stopped it, 3 when the tracking store, the disk, the Ray
cluster under it (noticed within seconds: sweep/cluster.py) or the driver failed. Every case leaves a state that `python -m sweep.run --resume DIR` completes.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient
from ray import tune

import metrics as M
from analysis.report import report_sweep
from analysis.store import Sweep, embedded_database, embedded_uri, trust_notice, write_sweep
from sweep import cluster
from sweep.parent import finish_parent_run, start_parent_run
from sweep.lock import exclusive, hold_sweep, release_sweep
from sweep.plan import Plan
from sweep.progress import Progress, library_log, plan_line
from sweep.report import TrialReport
from sweep.tracking import MlflowCallback, experiment_id, mark_unfinished, trial_run_name
from sweep.trainable import run_trial, run_workers_trial, trial_config
from sweep.ui import browse_hint

EXIT_FAILED, EXIT_OUTAGE = 1, 3  # exit statuses besides 0, 2 (refused) and 128 + signal (stopped)
LIBRARY_LOG = "sweep.log"  # in the sweep folder: what Ray and MLflow print (sweep/progress.py)


class SweepEnded(Exception):
    """The sweep stopped short of a full result; str(self) is the line to print, `code` the exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class _StopSignals:
    """While Tune runs: the first SIGINT or SIGTERM asks Tune to stop cleanly (through the handler Tune
    installs for SIGUSR1: it saves the experiment state and returns), a second one aborts at once."""

    def __enter__(self):
        self.received = None
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours instead, for SIGTERM too
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        self.previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # until Tune sets its own
        # Tune's own lines on a stop point to Tuner.restore; the sweep prints its own resume command instead.
        logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)
        return self

    def _handle(self, signum, frame):
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if self.received is None:
            self.received = signum
            if callable(tune_handler):
                tune_handler(signum, frame)
                return
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def run_sweep(plan: Plan, results_dir: Path, tracking_uri: str | None = None, storage: str | None = None,
              address: str | None = None, resume: Sweep | None = None, max_concurrent: int = 0,
              max_failures: int = 2) -> Path:
    """Run every trial of `plan` (or continue the sweep described by `resume`); returns the sweep folder.
    What libraries print meanwhile goes to the sweep folder's LIBRARY_LOG."""
    session_start = time.time()
    sweep_dir = resume.dir if resume else _new_folder(plan, Path(results_dir).resolve())
    with library_log(sweep_dir / LIBRARY_LOG):
        if resume is None:
            try:
                meta = _new_sweep(plan, sweep_dir, tracking_uri, storage)
            except Exception as e:  # the tracking store failed between the checks and the start: nothing ran
                raise SweepEnded(f"error: {_what_failed(e, tracking_uri or 'store')}; nothing ran, start the sweep "
                                 "again", EXIT_OUTAGE) from None
        else:
            meta = resume
            hold_sweep(sweep_dir)  # taken already by `python -m sweep.run --resume`: refused there
            print(trust_notice("resuming", "resume", meta.dir, "sweep.json and checkpoints"), flush=True)
        try:
            return _run(plan, meta, resume is not None, address, max_concurrent, max_failures, session_start)
        finally:
            release_sweep(sweep_dir)


def _run(plan: Plan, meta: Sweep, resumed: bool, address: str | None, max_concurrent: int, max_failures: int,
         session_start: float) -> Path:
    """run_sweep once the sweep folder exists and this driver holds its lock."""
    sweep_dir = meta.dir
    print(f"sweep folder: {sweep_dir}\n  resume with: python -m sweep.run --resume {sweep_dir}\n"
          f"  library messages (Ray, MLflow): {sweep_dir / LIBRARY_LOG}\n"
          f"{browse_hint(meta.tracking_uri, meta.experiment_id)}", flush=True)

    # One checkpoint per validation is the point (resume loses nothing); Tune warns about the
    # experiment snapshots that follow. Trials print nothing of their own, so their logs stay on the nodes.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables of Ray's own; Progress prints
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    gcs = cluster.gcs_address()
    print(f"cluster: {gcs} ({'started by this sweep, it ends with it' if cluster.started_here() else 'found running'})",
          flush=True)
    client = MlflowClient(meta.tracking_uri)
    try:
        client.set_terminated(meta.parent_run_id, "RUNNING")
    except Exception as e:  # noqa: BLE001 - the tracking store failed before any trial started
        raise SweepEnded(f"error: {_what_failed(e, meta.tracking_uri)}; nothing ran; resume with: "
                         f"python -m sweep.run --resume {sweep_dir}", EXIT_OUTAGE) from None
    trainable = _trainable(plan, meta)
    n_trials = len(plan.arms) * len(plan.seeds)
    at_once = _at_once(plan, n_trials, max_concurrent)
    print(plan_line(plan, at_once), flush=True)
    if not resumed:
        callbacks = [MlflowCallback(meta.tracking_uri, meta.experiment_id, meta.parent_run_id,
                                    plan, trial_config, sweep_dir / "pictures"),
                     Progress(n_trials, functools.partial(trial_run_name, plan), trial_config, at_once)]
        tuner = tune.Tuner(
            trainable,
            param_space={"base": plan.base, "arm": tune.grid_search(plan.arms), "seed": tune.grid_search(plan.seeds)},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or None, reuse_actors=True),
            run_config=tune.RunConfig(
                name=meta.ray_name, storage_path=meta.ray_storage, callbacks=callbacks, verbose=0,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    else:
        tuner = tune.Tuner.restore(meta.tune_path, trainable,
                                   resume_errored=True)
    start = time.time()
    resume_hint = f"resume with: python -m sweep.run --resume {sweep_dir}"

    def cluster_lost() -> SweepEnded:
        ended, marked = _mark(meta, "FAILED")
        return SweepEnded(f"error: the Ray cluster at {gcs} went away; {ended if ended is not None else '?'} of "
                          f"{n_trials} trials finished; {marked}{resume_hint} (on a running cluster: --address, or "
                          "none for a local one)", EXIT_OUTAGE)

    def end_now():  # from the watch's thread: Ray's own calls would wait a minute on the lost cluster, then abort
        print(cluster_lost(), file=sys.stderr, flush=True)
        release_sweep(sweep_dir)
        os._exit(EXIT_OUTAGE)

    with _StopSignals() as stop, cluster.Watch(gcs, end_now):
        try:
            results = tuner.fit()
        except KeyboardInterrupt:
            results = None
        except Exception as e:  # the tracking store, the disk, the cluster or the driver itself failed mid-sweep
            if not cluster.reachable(gcs):
                raise cluster_lost() from None
            raise SweepEnded(f"error: {_what_failed(e, meta.tracking_uri)}; "
                             f"{_mark(meta, 'FAILED', skip=_store_down(e))[1]}{resume_hint}", EXIT_OUTAGE) from None
    if results is not None and any(r.error is not None for r in results) and not cluster.reachable(gcs):
        raise cluster_lost()  # its trials failed because their nodes went
    if stop.received is not None or results is None:
        ended, marked = _mark(meta, "KILLED")  # the store knows which trials ended (Tune also counts those
        if ended is None:                      # it stopped)
            ended = results.num_terminated if results is not None else 0
        code = 128 + (stop.received or signal.SIGINT)
        raise SweepEnded(f"interrupted: {ended} of {n_trials} trials finished; {marked}{resume_hint}", code)
    failed = [r for r in results if r.error is not None or _data_error(r)]
    print(f"sweep done in {time.time() - start:.0f} s: {len(results)} trials, {len(failed)} failed\n", flush=True)
    print(report_sweep(sweep_dir), flush=True)
    finish_parent_run(client, meta, plan, time.time() - session_start)
    print(f"\n{browse_hint(meta.tracking_uri, meta.experiment_id)}\n"
          f"results: {sweep_dir} (tables/, figures/, *.parquet)", flush=True)
    if failed:
        client.set_terminated(meta.parent_run_id, "FAILED")
        names = "; ".join(f"{trial_run_name(plan, r.config)} ({_data_error(r) or f'{r.path}/error.txt'})"
                          for r in failed)
        retry = (f"{resume_hint} (retries them)" if any(r.error is not None for r in failed) else
                 "fix the data and start the sweep again (a resume does not retry a data error)")
        raise SweepEnded(f"failed: {len(failed)} of {n_trials} trials: {names}; {retry}", EXIT_FAILED)
    client.set_terminated(meta.parent_run_id, "FINISHED")
    return sweep_dir


def _data_error(result) -> str:
    """The data error a trial ended on ("" for none): its last report's, as sweep.report.data_error."""
    report = TrialReport.from_result(result.metrics) if result.metrics else None
    return report.error if report is not None and report.status == M.FAILED else ""


def _trainable(plan: Plan, meta: Sweep):
    """One process per trial in Tune's own trial actor, or a Ray Train run of plan.workers processes whose
    workers hold the trial's CPUs and GPUs (the Tune trial that drives them holds only a token 1 MiB of
    Ray's memory resource: Tune refuses an empty request, and any CPU share would break whole-CPU packing)."""
    if plan.workers == 1:
        return tune.with_resources(run_trial, {"cpu": plan.cpus, "gpu": plan.gpus})
    storage = meta.tune_path
    driver = tune.with_parameters(run_workers_trial, storage=storage, workers=plan.workers, cpus=plan.cpus,
                                  gpus=plan.gpus)
    return tune.with_resources(driver, {"memory": 2**20})


def _at_once(plan: Plan, n_trials: int, max_concurrent: int) -> int:
    """How many trials run at once: as the cluster's CPUs (and GPUs) allow, capped by --max-concurrent."""
    resources = ray.cluster_resources()
    fits = int(resources.get("CPU", 1) // plan.cpus)
    if plan.gpus:
        fits = min(fits, int(resources.get("GPU", 0) // plan.gpus))
    return max(1, min(fits, max_concurrent or n_trials, n_trials))


def _causes(e: BaseException):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def _store_down(e: Exception) -> bool:
    """Whether the tracking server stopped answering (then the runs cannot be marked either)."""
    import requests
    from mlflow.exceptions import MlflowException

    return any(isinstance(c, requests.exceptions.RequestException)
               or (isinstance(c, MlflowException) and "API request" in str(c)) for c in _causes(e))


def _what_failed(e: Exception, tracking_uri: str) -> str:
    """What went wrong, in a few words: a full disk, the tracking store, or the driver's own error."""
    causes = list(_causes(e))
    if any(isinstance(c, OSError) and c.errno == errno.ENOSPC or "disk is full" in str(c) for c in causes):
        # causes raised inside Ray carry the remote traceback: name the line that says what filled up
        said = (line.strip() for c in causes for line in str(c).splitlines() if "full" in line or "No space" in line)
        return f"disk full ({next(said, 'No space left on device')[:200]})"
    if _store_down(e):
        return f"MLflow tracking server {tracking_uri} unreachable beyond its retries"
    root = causes[-1]
    return f"the driver failed: {type(root).__name__}: {str(root).splitlines()[0][:200] if str(root) else ''}"


def _mark(meta: Sweep, parent_status: str, skip: bool = False) -> tuple[int | None, str]:
    """Mark the sweep's parent run `parent_status` and its unfinished child runs KILLED (tag status
    interrupted); (trials that ended, or None when the store could not be read; the text for the line)."""
    if skip:
        return None, "runs left RUNNING in the store; "
    try:
        ended = mark_unfinished(meta.tracking_uri, meta.experiment_id, meta.parent_run_id)
        MlflowClient(meta.tracking_uri).set_terminated(meta.parent_run_id, parent_status)
    except Exception as e:  # noqa: BLE001 - the store may be what failed; the line says so
        return None, f"runs not marked ({type(e).__name__}); "
    return ended, f"sweep run {parent_status}, unfinished trial runs KILLED; "


def _new_folder(plan: Plan, results_dir: Path) -> Path:
    """A new sweep folder in `results_dir`, named by the study, the scale and the time."""
    while True:  # a short random suffix: sweeps started in the same second get different folders
        name = f"{plan.study}-{plan.scale}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        try:
            (results_dir / name).mkdir(parents=True)
            return results_dir / name
        except FileExistsError:
            continue


def _new_sweep(plan: Plan, sweep_dir: Path, tracking_uri: str | None, storage: str | None) -> Sweep:
    """The MLflow parent run of the new sweep in `sweep_dir` (made by _new_folder), and its sweep.json."""
    name = sweep_dir.name
    tracking_uri = tracking_uri or embedded_uri(sweep_dir.parent)
    database = embedded_database(tracking_uri)
    try:
        # Opening a new sqlite store creates and migrates its tables, which two sweeps starting into one new
        # results folder must not do at once; the experiment too is found or created by one at a time.
        with exclusive(database.with_name(database.name + ".lock")) if database else contextlib.nullcontext():
            client = MlflowClient(tracking_uri)
            exp_id = experiment_id(client, plan.study, tracking_uri)
        meta = Sweep(name=name, study=plan.study, scale=plan.scale, dir=sweep_dir, base=plan.base, plan=asdict(plan),
                     tracking_uri=tracking_uri, experiment_id=exp_id, ray_storage=storage or str(sweep_dir),
                     ray_name=name if storage else "ray", parent_run_id=start_parent_run(client, exp_id, plan, name))
    except Exception:
        (sweep_dir / LIBRARY_LOG).unlink(missing_ok=True)  # nothing else is in it: no half-made sweep folder
        sweep_dir.rmdir()
        raise
    hold_sweep(sweep_dir)  # before sweep.json: no resume can name the folder until then
    write_sweep(meta)  # paths relative to the results folder, so that it can move
    return meta
