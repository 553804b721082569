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
import re
import secrets
import signal
import time
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune import PlacementGroupFactory
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

import metrics as M
from analysis.report import report_sweep
from analysis.store import Sweep, embedded_database, embedded_uri, trust_notice, write_sweep
from sweep import cluster
from sweep.parent import finish_parent_run, start_parent_run
from sweep.lock import exclusive, hold_sweep, release_sweep
from sweep.plan import Plan
from sweep.progress import Progress, library_log, plan_line
from sweep.report import TrialReport
from sweep.scales import overhead_steps
from sweep.tracking import MlflowCallback, experiment_id, mark_unfinished, trial_run_name
from sweep.trainable import run_pack, run_trial, run_workers_trial
from sweep.trial import ARM, PACK, SEED, Trial, confirm_space, grid_space, search_space, trial_config
from sweep.ui import browse_hint

EXIT_FAILED, EXIT_OUTAGE = 1, 3  # exit statuses besides 0, 2 (refused) and 128 + signal (stopped)
ADDED = "seed-"  # the Tuner of a seed added to a finished sweep (--add-seeds): seed-<seed>
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
              target: cluster.Target | None = None, resume: Sweep | None = None, max_concurrent: int = 0,
              max_failures: int = 2) -> Path:
    """Run every trial of `plan` (or continue the sweep described by `resume`); returns the sweep folder.
    What libraries print meanwhile goes to the sweep folder's LIBRARY_LOG."""
    session_start = time.time()
    sweep_dir = resume.dir if resume else _new_folder(plan, Path(results_dir).resolve())
    with library_log(sweep_dir / LIBRARY_LOG) as terminal:
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
            return _run(plan, meta, resume is not None, target, max_concurrent, max_failures, session_start,
                        terminal)
        finally:
            release_sweep(sweep_dir)


def _run(plan: Plan, meta: Sweep, resumed: bool, target: cluster.Target | None, max_concurrent: int,
         max_failures: int, session_start: float, terminal) -> Path:
    """run_sweep once the sweep folder exists and this driver holds its lock (`terminal`: the user's stderr):
    connect, search and confirm (or run the grid), report, mark the parent run."""
    print(f"sweep folder: {meta.dir}\n  resume with: python -m sweep.run --resume {meta.dir}\n"
          f"  library messages (Ray, MLflow): {meta.dir / LIBRARY_LOG}\n"
          f"{browse_hint(meta.tracking_uri, meta.experiment_id)}", flush=True)
    tuners = _Tuners(plan, meta, resumed, _connect(target), max_concurrent, max_failures, terminal)
    client = MlflowClient(meta.tracking_uri)
    try:
        client.set_terminated(meta.parent_run_id, "RUNNING")
    except Exception as e:  # noqa: BLE001 - the tracking store failed before any trial started
        raise SweepEnded(f"error: {_what_failed(e, meta.tracking_uri)}; nothing ran; {tuners.resume_hint}",
                         EXIT_OUTAGE) from None
    print(plan_line(plan, tuners.at_once), flush=True)
    start = time.time()
    results = _search_and_confirm(tuners, plan, meta) if plan.search else tuners.run("", grid_space(plan), {})
    results += _added_seeds(tuners, plan, meta)
    failed = [r for r in results if r.error is not None or _data_error(r)]
    print(f"sweep done in {time.time() - start:.0f} s: {len(results)} trials, {len(failed)} failed\n", flush=True)
    print(report_sweep(meta.dir), flush=True)
    finish_parent_run(client, meta, plan, time.time() - session_start)
    print(f"\n{browse_hint(meta.tracking_uri, meta.experiment_id)}\n"
          f"results: {meta.dir} (tables/, figures/, *.parquet)", flush=True)
    _end(client, plan, meta, failed, tuners.resume_hint)
    return meta.dir


def _connect(target: cluster.Target | None) -> str:
    """The Ray cluster's GCS address, after joining it (or starting a local one). `target`: the cluster
    (sweep.preflight.check chose it); None: the one this process is connected to, or a local one."""
    # One checkpoint per validation is the point (resume loses nothing); Tune warns about the
    # experiment snapshots that follow. Trials print nothing of their own, so their logs stay on the nodes.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables of Ray's own; Progress prints
    # The experiment state (trials, their latest checkpoints, the searcher) is saved on every step of Tune's
    # loop, not every 10 s or more: a searcher adds trials one at a time, and a trial must not start (and get
    # its MLflow run) before a restore would know it. Its copy to the storage runs in the background, so it
    # may lag by one checkpoint: each trial keeps two (CHECKPOINTS_KEPT), so the one a restore names is there.
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "0"
    if not ray.is_initialized():
        ray.init(address=target.address if target else cluster.LOCAL, include_dashboard=False,
                 logging_level="WARNING", log_to_driver=False)
    gcs = cluster.gcs_address()
    why = target.why if target else 'started by this sweep, it ends with it' if cluster.started_here() else 'joined'
    print(f"cluster: {gcs} ({why})", flush=True)
    return gcs


class _Tuners:
    """The Tuners of one sweep (a grid's one, or a searched study's search per arm and confirmation): each run
    (or continued from its saved state, searcher included) under the stop signals and the cluster's watch."""

    def __init__(self, plan: Plan, meta: Sweep, resumed: bool, gcs: str, max_concurrent: int, max_failures: int,
                 terminal):
        self.plan, self.meta, self.resumed, self.gcs, self.terminal = plan, meta, resumed, gcs, terminal
        self.max_concurrent, self.max_failures = max_concurrent, max_failures
        self.trainable = _trainable(plan, meta)
        self.n_trials = plan.n_trials()
        self.at_once = _at_once(plan, self.n_trials, max_concurrent)
        self.resume_hint = f"resume with: python -m sweep.run --resume {meta.dir}"

    def cluster_lost(self, stop: _StopSignals) -> SweepEnded:
        """The line for a cluster gone under the sweep; after a stop signal, an interruption: a signal to the
        sweep's whole process group (`timeout`, service managers) also ends the local cluster it started."""
        if stop.received is not None:
            ended, marked = _mark(self.meta, "KILLED")
            return SweepEnded(f"interrupted: {ended if ended is not None else '?'} of {self.n_trials} trials "
                              f"finished; {marked}{self.resume_hint}", 128 + stop.received)
        ended, marked = _mark(self.meta, "FAILED")
        return SweepEnded(f"error: the Ray cluster at {self.gcs} went away; {ended if ended is not None else '?'} of "
                          f"{self.n_trials} trials finished; {marked}{self.resume_hint} (on a running cluster: "
                          "--address, or none for a local one)", EXIT_OUTAGE)

    def _end_now(self, stop: _StopSignals):  # from the watch's thread: Ray's own calls would wait a minute on the
        ended = self.cluster_lost(stop)         # lost cluster, then abort
        print(ended, file=self.terminal, flush=True)
        release_sweep(self.meta.dir)
        os._exit(ended.code)

    def _tuner(self, name: str, param_space: dict, tune_config: dict) -> tune.Tuner:
        meta, plan = self.meta, self.plan
        ray_name = f"{meta.ray_name}-{name}" if name else meta.ray_name
        path = f"{meta.ray_storage.rstrip('/')}/{ray_name}"
        if self.resumed and tune.Tuner.can_restore(path):  # a stage a killed sweep had not begun starts afresh
            return tune.Tuner.restore(path, self.trainable, resume_errored=True)
        size = plan.search.samples if name.startswith(M.SEARCH) else len(param_space[PACK]["grid_search"]) \
            if PACK in param_space else len(param_space[ARM]["grid_search"]) * len(param_space[SEED]["grid_search"])
        callbacks = [MlflowCallback(meta.tracking_uri, meta.experiment_id, meta.parent_run_id, plan,
                                    meta.dir / "pictures"),
                     Progress(size, functools.partial(trial_run_name, plan), trial_config, self.at_once,
                              upper_bound="scheduler" in tune_config, overhead=overhead_steps(plan.scale))]
        return tune.Tuner(
            self.trainable, param_space=param_space,
            tune_config=tune.TuneConfig(max_concurrent_trials=self.max_concurrent or None, reuse_actors=True,
                                        **tune_config),
            run_config=tune.RunConfig(
                name=ray_name, storage_path=meta.ray_storage, callbacks=callbacks, verbose=0,
                failure_config=tune.FailureConfig(max_failures=self.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT)))

    def run(self, name: str, param_space: dict, tune_config: dict) -> list:
        """Run (or continue) Tuner `name` of the sweep ("" for a grid's only one); its results. A stop signal,
        a lost cluster or a failed store or disk ends the sweep (SweepEnded)."""
        tuner = self._tuner(name, param_space, tune_config)
        with _StopSignals() as stop, cluster.Watch(self.gcs, functools.partial(self._end_now, stop)):
            try:
                results = tuner.fit()
            except KeyboardInterrupt:
                results = None
            except Exception as e:  # the tracking store, the disk, the cluster or the driver itself failed mid-sweep
                if not cluster.reachable(self.gcs):
                    raise self.cluster_lost(stop) from None
                raise SweepEnded(f"error: {_what_failed(e, self.meta.tracking_uri)}; "
                                 f"{_mark(self.meta, 'FAILED', skip=_store_down(e))[1]}{self.resume_hint}",
                                 EXIT_OUTAGE) from None
        if results is not None and any(r.error is not None for r in results) and not cluster.reachable(self.gcs):
            raise self.cluster_lost(stop)  # its trials failed because their nodes went
        if stop.received is not None or results is None:
            ended, marked = _mark(self.meta, "KILLED")  # the store knows which trials ended (Tune also counts
            if ended is None:                           # those it stopped)
                ended = results.num_terminated if results is not None else 0
            code = 128 + (stop.received or signal.SIGINT)
            raise SweepEnded(f"interrupted: {ended} of {self.n_trials} trials finished; {marked}{self.resume_hint}",
                             code)
        return list(results)


def _search_and_confirm(tuners: _Tuners, plan: Plan, meta: Sweep) -> list:
    """Each arm searched on its own (same budget, same seeds), then every winner confirmed; the results of both."""
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"  # a diverged trial's last report has no val loss
    results = []
    for i in range(len(plan.arms)):
        found = tuners.run(f"{M.SEARCH}-{i}", search_space(plan, i), _search_config(plan, i))
        results += found
        if str(i) not in meta.winners and not any(r.error is not None for r in found):
            meta.winners[str(i)] = winner(found)  # chosen once, when all its samples ended: a resume keeps it
            write_sweep(meta)
    chosen = [meta.winners.get(str(i)) for i in range(len(plan.arms))]
    arms = [arm for arm, values in zip(plan.arms, chosen) if values is not None]
    if arms and len(meta.winners) == len(plan.arms):  # failed search trials: a resume retries them first
        results += tuners.run(M.CONFIRM, confirm_space(plan, arms, chosen), {})
    return results


def _added_seeds(tuners: _Tuners, plan: Plan, meta: Sweep) -> list:
    """The seeds added to the finished sweep (python -m sweep.run --resume DIR --add-seeds N): one Tuner per seed
    (named by it, so a later --add-seeds never restores one that ran), every arm, or of a searched study every
    confirmed winner; the Tuners that ran before are restored as they ended, so no trial runs twice."""
    chosen = [meta.winners.get(str(i)) for i in range(len(plan.arms))]
    arms = [arm for arm, values in zip(plan.arms, chosen) if values is not None]
    return [r for seed in plan.added_seeds for r in tuners.run(
        f"{ADDED}{seed}", confirm_space(plan, arms, chosen, [seed]) if plan.search else grid_space(plan, [seed]), {})]


def _end(client: MlflowClient, plan: Plan, meta: Sweep, failed: list, resume_hint: str) -> None:
    """The parent run FINISHED, or FAILED with SweepEnded naming the failed trials and what to do about them."""
    no_winner = [plan.arm_name(arm) for i, arm in enumerate(plan.arms) if meta.winners.get(str(i), 0) is None]
    if not (failed or no_winner):
        client.set_terminated(meta.parent_run_id, "FINISHED")
        return
    client.set_terminated(meta.parent_run_id, "FAILED")
    # a trial that failed before its first report has no config in its result: its folder names it
    names = "; ".join(f"{trial_run_name(plan, r.config) if r.config else Path(r.path).name} "
                      f"({_data_error(r) or f'{r.path}/error.txt'})" for r in failed)
    crashed = [r for r in failed if r.error is not None]
    same = [r for r in crashed if _same_every_time(r)]
    retry = retry_hint(len(crashed) - len(same), len(failed) - len(crashed), len(same), resume_hint)
    unconfirmed = f"; no search trial finished, so not confirmed: {', '.join(no_winner)}" if no_winner else ""
    raise SweepEnded(f"failed: {len(failed)} of {plan.n_trials()} trials: {names or 'none'}{unconfirmed}; {retry}",
                     EXIT_FAILED)


CHECKPOINTS_KEPT = 2  # per trial: the newest, and the one an experiment state saved a moment earlier names


def _search_config(plan: Plan, i: int) -> dict:
    """TuneConfig settings of arm i's search: the seeded searcher, N samples, ASHA on the validation loss."""
    seed, metric = plan.search.tuning_seed, f"metrics/{M.VAL_LOSS}"
    if plan.search.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch
        searcher = OptunaSearch(metric=metric, mode="min", seed=seed)
    else:
        searcher = BasicVariantGenerator(random_state=seed)
    # a random search's shared draws are a grid (one sample of it: sweep.trial.search_space); TPE draws itself
    out = {"search_alg": searcher, "num_samples": plan.search.samples if plan.search.algorithm == "optuna" else 1}
    if plan.search.asha:
        cfg = Trial(plan.base, plan.arms[i], seed).config()
        out["scheduler"] = ASHAScheduler(time_attr="step", metric=metric, mode="min", max_t=cfg.steps,
                                         grace_period=plan.search.asha.grace or cfg.eval_every,
                                         reduction_factor=plan.search.asha.reduction_factor)
    return out


def retry_hint(crashed: int, bad_data: int, same: int, resume_hint: str) -> str:
    """What to do about failed trials: a resume retries those that crashed, never a data error (the same
    data would fail the same way) nor a trial that failed with the same error on every try (the study or its
    settings make it fail)."""
    parts = []
    if crashed:
        parts.append(f"{resume_hint} (retries the {crashed} that crashed)" if bad_data or same else
                     f"{resume_hint} (retries them)")
    if same:
        parts.append(f"for the {same} that failed the same way on every try: fix the study (a resume would "
                     "fail them again)")
    if bad_data:
        parts.append(f"{'for the ' + str(bad_data) + ' with a data error: ' if crashed or same else ''}fix the data "
                     "and start the sweep again (a resume does not retry a data error)")
    return "; ".join(parts)


def _same_every_time(result) -> bool:
    """Whether a crashed trial failed the same way on each of its tries (Ray appends each try's error to its
    error.txt after 'Failure # N'): more than one try, each a traceback of the trial's own code (not Ray's word
    that its process died, which a resume can get past) ending in the same line."""
    try:
        text = (Path(result.path) / "error.txt").read_text(errors="replace")
    except OSError:
        return False
    tries = [part.strip() for part in re.split(r"^Failure # \d+.*$", text, flags=re.M) if part.strip()]
    last = {t.splitlines()[-1] for t in tries}
    return len(tries) > 1 and len(last) == 1 and all('\n  File "' in t for t in tries)


def winner(results: list) -> dict | None:
    """The searched values of the search trial with the lowest best validation loss among those whose last
    report was their last validation (stopped, diverged and failed trials never win); None if none did."""
    reports = [(i, r, TrialReport.from_result(r.metrics)) for i, r in enumerate(results)
               if r.error is None and r.metrics]
    done = [(report.metrics[M.VAL_BEST_LOSS], i, Trial.of(r.config).search) for i, r, report in reports
            if report.status == M.FINISHED and M.VAL_BEST_LOSS in report.metrics]
    return {k: _plain(v) for k, v in min(done)[2].items()} if done else None


def _plain(value):
    """A value drawn by Ray (numpy number) as plain Python, for sweep.json."""
    return value.item() if hasattr(value, "item") else value


def _data_error(result) -> str:
    """The data error a trial ended on ("" for none): its last report's, as sweep.report.data_error (a trial
    whose process never ran has only Ray's own keys in its result)."""
    report = TrialReport.from_result(result.metrics) if result.metrics and "step" in result.metrics else None
    return report.error if report is not None and report.status == M.FAILED else ""


def _trainable(plan: Plan, meta: Sweep):
    """One process per trial (or per pack of trials, sweep/packs.py) in Tune's own trial actor, or a Ray Train
    run of plan.workers processes whose workers hold the trial's CPUs and GPUs (the Tune trial that drives them
    holds only a token 1 MiB of Ray's memory resource: Tune refuses an empty request, and any CPU share would
    break whole-CPU packing)."""
    if plan.pack_size > 1:
        return tune.with_resources(run_pack, functools.partial(_pack_resources, plan.cpus, plan.gpus))
    if plan.workers == 1:
        return tune.with_resources(run_trial, {"cpu": plan.cpus, "gpu": plan.gpus})
    storage = meta.tune_path
    driver = tune.with_parameters(run_workers_trial, storage=storage, workers=plan.workers, cpus=plan.cpus,
                                  gpus=plan.gpus)
    return tune.with_resources(driver, {"memory": 2**20})


def _pack_resources(cpus: float, gpus: float, config: dict) -> PlacementGroupFactory:
    """What a pack's Ray trial reserves: its members' shares of a GPU summed (at most one GPU: a pack is one
    process on one device), and one trial's CPUs (one process feeding one fused model)."""
    return PlacementGroupFactory([{"CPU": cpus, **({"GPU": min(1.0, gpus * len(config[PACK]))} if gpus else {})}])


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
        meta = Sweep(name=name, dir=sweep_dir, plan=plan,
                     tracking_uri=tracking_uri, experiment_id=exp_id, ray_storage=storage or str(sweep_dir),
                     ray_name=name if storage else "ray", parent_run_id=start_parent_run(client, exp_id, plan, name))
    except Exception:
        (sweep_dir / LIBRARY_LOG).unlink(missing_ok=True)  # nothing else is in it: no half-made sweep folder
        sweep_dir.rmdir()
        raise
    hold_sweep(sweep_dir)  # before sweep.json: no resume can name the folder until then
    write_sweep(meta)  # paths relative to the results folder, so that it can move
    return meta
