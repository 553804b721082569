"""What a searched study's search says: tuning curves, the winners, and the loss over each search space.

A searched study (sweep/search.py) runs each arm's search on the tuning seed (runs tagged
stage=search) and each arm's winner again on fresh seeds (stage=confirm); the main tables
(analysis/tables/) show only the confirmation. This module reads the rest from the runs' tags
(`arm`, `stage`, `search`: the algorithm, `searched`: the fields drawn):

tuning curve   per arm, the expected best validation loss after n = 1..N sampled configurations
               (Dodge et al. 2019, "Show Your Work"): the expected minimum of n draws, with
               replacement, from the arm's N observed best validation losses (selection losses: the
               search selects on validation; the test split reports only the confirmed winners), which is opda's
               `average_tuning_curve(minimize=True)` of the empirical distribution. Its band is the
               80 % simultaneous confidence band of the *median* tuning curve (Lourie et al. 2023,
               "Show Your Work with Confidence", opda's `confidence_bands`, ld_equal_tailed):
               distribution-free and exact, where a band on the expectation would need a finite
               bound on the worst loss (a diverged configuration has none: opda then returns an
               infinite band) and a bootstrap would not cover the best configurations not yet seen.
               A diverged sample counts as an infinite loss: the expectation is then infinite
               (shown as such), the median curve and its band still finite. Only for random search
               without early stopping: the estimators assume independent, identically drawn
               configurations, which TPE (each draw depends on the earlier ones) and ASHA (stopped
               trials have no final loss) break; for those, best-so-far against the training steps
               the search spent, labelled as one run of the search and not an expectation.
order          for each pair of arms a, b and each n, the bootstrap probability that a's expected best is
               lower than b's (BOOTSTRAP resamples of each arm's N search losses, with replacement, seeded).
               The text states an order only where that probability is at least ORDER_PROBABILITY (or at
               most 1 - ORDER_PROBABILITY: b lower), and a crossing only where each arm is lower in that
               sense at some n: with 16 samples per arm the point estimates of two close curves cross by
               chance (the with- and without-replacement estimators even put such crossings at different n).
paired draws   where the arms searched shared draws (sweep/search.py: every field two arms search drawn from
               one stream per field), per draw the loss of each arm and their difference: robustness to
               the hyperparameters measured draw by draw.
winners        per arm, the confirmed value of every searched field.
search loss    the best validation loss of every configuration of each arm's search (box and points), and
               against each searched field per arm (robustness to hyperparameters).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.figures import figure_text, save  # noqa: E402
from analysis.tables import Layout  # noqa: E402
from analysis.tables.formats import Grid, as_latex, as_markdown, escape, markdown_text  # noqa: E402
from analysis.tables.layout import header  # noqa: E402
from analysis.summary import RESULT_STATUSES, selection_loss  # noqa: E402
import metrics as M  # noqa: E402

CONFIDENCE = 0.8
BOOTSTRAP = 2000  # resamples per arm for the order of the tuning curves
ORDER_PROBABILITY = 0.9  # an order (or a crossing) is stated only where the bootstrap gives it this often


def is_searched(trials: pd.DataFrame) -> bool:
    """Whether the trials are a searched study's (their runs carry a stage tag)."""
    return "stage" in trials and trials["stage"].isin([M.SEARCH, M.CONFIRM]).any()


def expected_best(losses, ns) -> np.ndarray:
    """Dodge et al.'s expected best (minimum) loss after n draws with replacement from `losses`, for each n."""
    from opda.nonparametric import EmpiricalDistribution

    return np.asarray(EmpiricalDistribution(np.asarray(losses, dtype=float)).average_tuning_curve(
        np.asarray(ns), minimize=True), dtype=float)


def median_band(losses, ns, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median best, lower, upper) after n draws: the median tuning curve and its simultaneous confidence band
    (Lourie et al. 2023; losses are >= 0, so the support starts at 0)."""
    from opda.nonparametric import EmpiricalDistribution

    ys, ns = np.asarray(losses, dtype=float), np.asarray(ns)
    lower_cdf, point, upper_cdf = EmpiricalDistribution.confidence_bands(
        ys, confidence, a=0.0, b=np.inf, method="ld_equal_tailed", n_jobs=1, generator=np.random.default_rng(0))
    # the upper CDF band gives the lower tuning-curve band and vice versa
    return tuple(np.asarray(d.quantile_tuning_curve(ns, minimize=True), dtype=float)
                 for d in (point, upper_cdf, lower_cdf))


def search_losses(summary: pd.DataFrame) -> pd.DataFrame:
    """The search trials that are results, with the loss that selects among them as `loss` (analysis.summary.
    selection_loss; +inf when diverged)."""
    search = summary[(summary["stage"] == M.SEARCH) & summary.status.isin(RESULT_STATUSES)]
    return search.assign(loss=selection_loss(search).where(search.status != M.DIVERGED, np.inf))


def tuning_curves(summary: pd.DataFrame) -> pd.DataFrame:
    """Per arm and n = 1..N: expected_best (Dodge et al.), median_best, lower and upper (the median's band)."""
    rows = []
    for arm, g in search_losses(summary).groupby("arm", sort=False):
        losses = g.loss.to_numpy()
        ns = np.arange(1, len(losses) + 1)
        median, low, high = median_band(losses, ns)
        rows += [{"arm": arm, "n": int(n), "expected_best": e, "median_best": m, "lower": lo, "upper": hi}
                 for n, e, m, lo, hi in zip(ns, expected_best(losses, ns), median, low, high)]
    return pd.DataFrame(rows, columns=["arm", "n", "expected_best", "median_best", "lower", "upper"])


def expected_best_rows(losses: np.ndarray, ns) -> np.ndarray:
    """expected_best for each row of `losses` (resamples x N) at once: for sorted y_(1) <= ... <= y_(N),
    E[min of n draws] = sum_i y_(i) (((N - i + 1) / N)^n - ((N - i) / N)^n); shape (resamples, len(ns))."""
    y = np.sort(np.asarray(losses, dtype=float), axis=1)
    count = y.shape[1]
    above = (count - np.arange(count)) / count  # P(one draw >= y_(i)), i = 1..N
    ns = np.asarray(ns)[:, None]
    weights = above[None, :] ** ns - np.append(above[1:], 0.0)[None, :] ** ns  # (len(ns), N)
    terms = np.where(weights[None, :, :] > 0, y[:, None, :] * weights[None, :, :], 0.0)  # inf x 0 left out
    return terms.sum(axis=2)


def order_probabilities(summary: pd.DataFrame, resamples: int = BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """For each pair of arms (a before b, in the arms' order) and n = 1..min(N_a, N_b): p_a_lower, the share of
    bootstrap resamples (of each arm's search losses, with replacement) in which a's expected best after n
    configurations is below b's."""
    rng = np.random.default_rng(seed)
    curves = {}
    for arm, g in search_losses(summary).groupby("arm", sort=False):
        losses = g.final_loss.to_numpy(dtype=float)
        draws = losses[rng.integers(0, len(losses), size=(resamples, len(losses)))]
        curves[arm] = expected_best_rows(draws, np.arange(1, len(losses) + 1))
    rows, arms = [], list(curves)
    for i, a in enumerate(arms):
        for b in arms[i + 1:]:
            for n in range(1, min(curves[a].shape[1], curves[b].shape[1]) + 1):
                lower = float(np.mean(curves[a][:, n - 1] < curves[b][:, n - 1]))
                rows.append({"a": a, "b": b, "n": n, "p_a_lower": lower})
    return pd.DataFrame(rows, columns=["a", "b", "n", "p_a_lower"])


def order_text(order: pd.DataFrame, threshold: float = ORDER_PROBABILITY) -> list[str]:
    """Per pair of arms, what the bootstrap shows: 'a below b at n = 1-16', a crossing where each is below the
    other (each at probability >= threshold) at some n, or 'no order shown' where neither is at any n."""
    lines = []
    for (a, b), g in order.groupby(["a", "b"], sort=False):
        a_low, b_low = g.n[g.p_a_lower >= threshold].tolist(), g.n[g.p_a_lower <= 1 - threshold].tolist()
        shown = [f"{x} below {y} at n = {_ranges(ns)}" for x, y, ns in ((a, b, a_low), (b, a, b_low)) if ns]
        if a_low and b_low:
            lines.append(f"{a} and {b} cross: " + "; ".join(shown))
        elif shown:
            lines.append(shown[0])
        else:
            lines.append(f"{a} and {b}: no order shown (P({a} lower) {g.p_a_lower.min():.2f}-{g.p_a_lower.max():.2f})")
    return lines


def _ranges(ns: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    parts, start = [], None
    for i, n in enumerate(ns):
        start = n if start is None else start
        if i + 1 == len(ns) or ns[i + 1] != n + 1:
            parts.append(f"{start}-{n}" if n > start else str(n))
            start = None
    return ", ".join(parts)


PAIRED_CAPTION = ("Paired draws: on each draw of the random search (one stream per searched field, shared by every "
                  "arm that searches it), the final validation loss of arm a and arm b on that draw and their "
                  "difference a - b (fields only one arm searches, such as tau, are drawn from their own stream).")


def paired_draws(summary: pd.DataFrame) -> pd.DataFrame:
    """Per pair of arms that searched a field in common and per shared draw (the runs' `draw` tag): both arms'
    final losses (inf when diverged) and a - b. Empty when the search trials carry no draw (an older sweep, TPE)."""
    search = search_losses(summary)
    if "draw" not in search or not search["draw"].astype(str).str.isdigit().any():
        return pd.DataFrame()
    search = search[search["draw"].astype(str).str.isdigit()].assign(draw=lambda f: f["draw"].astype(int))
    fields = {arm: set(str(g.searched.iloc[0]).split(",")) - {""} for arm, g in search.groupby("arm", sort=False)}
    losses = search.pivot_table(index="draw", columns="arm", values="final_loss", aggfunc="first")
    rows, arms = [], list(fields)
    for i, a in enumerate(arms):
        for b in arms[i + 1:]:
            shared = sorted(fields[a] & fields[b])
            if not shared:
                continue
            both = losses[[a, b]].dropna()
            rows += [{"a": a, "b": b, "shared": ",".join(shared), "draw": int(d), "loss_a": la, "loss_b": lb,
                      "diff": la - lb} for d, la, lb in zip(both.index, both[a], both[b])]
    return pd.DataFrame(rows)


def paired_text(paired: pd.DataFrame) -> str:
    """Per pair: the median difference over the shared draws and on how many a was lower."""
    lines = ["paired draws (a - b on each shared draw):"]
    for (a, b), g in paired.groupby(["a", "b"], sort=False):
        finite = g["diff"][np.isfinite(g["diff"])]
        lines.append(f"  {a} - {b}: median {finite.median():.4g} over {len(g)} draws ({g.shared.iloc[0]}); "
                     f"{a} lower on {int((g.loss_a < g.loss_b).sum())} of {len(g)}")
    return "\n".join(lines)


def best_so_far(summary: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Per arm, in the order its search trials started: the training steps spent so far (stopped trials count
    their steps) and the lowest selection loss among the finished ones so far (stopped trials never win)."""
    search = summary[summary["stage"] == M.SEARCH].sort_values(["arm", "start_time"], kind="stable")
    search = search.assign(loss=selection_loss(search))
    last = metrics[metrics.metric == M.TRAIN_LOSS].groupby("run_id").step.max()
    rows = []
    for arm, g in search.groupby("arm", sort=False):
        spent, best = 0, math.inf
        for trial in g.itertuples():
            spent += int(last.get(trial.run_id, 0))
            if trial.status == M.FINISHED and math.isfinite(trial.loss):
                best = min(best, trial.loss)
            rows.append({"arm": arm, "trial": len(rows), "steps": spent, "best_so_far": best})
    return pd.DataFrame(rows, columns=["arm", "trial", "steps", "best_so_far"])


def winners(summary: pd.DataFrame) -> pd.DataFrame:
    """Per arm, the confirmed value of each field it searched (one row per arm, its fields as columns)."""
    confirm = summary[summary["stage"] == M.CONFIRM]
    rows = []
    for arm, g in confirm.groupby("arm", sort=False):
        fields = [f for f in str(g.searched.iloc[0]).split(",") if f]
        rows.append({"arm": arm, **{f: g[f].iloc[0] for f in fields}})
    return pd.DataFrame(rows)


def _independent(summary: pd.DataFrame) -> bool:
    """Random search without early stopping: the samples are independent draws (the curve estimators hold)."""
    return set(summary.loc[summary["stage"] == M.SEARCH, "search"]) == {"random"}


def write_tuning_tables(summary: pd.DataFrame, name: str, tables: Path) -> str:
    """What the search trials' summaries give (sweep.retable re-sets it): of a random search without early
    stopping the tuning curves, their bootstrap order (tables/<name>_tuning{,_order}.{parquet,md}) and, where
    arms shared draws, the paired draws (tables/<name>_paired.{parquet,md}); returns it as text."""
    if search_losses(summary).empty:
        return "no finished search trial: no tuning curve"
    if not _independent(summary):
        return "best-so-far curves (TPE or ASHA: no expected tuning curve; TPE draws adapt to each arm's " \
               "results, so arms share no draws)"
    tables.mkdir(parents=True, exist_ok=True)
    curves, order = tuning_curves(summary), order_probabilities(summary)
    said = "; ".join(order_text(order))
    caption = (f"Expected best validation loss after n random-search configurations (Dodge et al. 2019); median "
               f"and its {CONFIDENCE:.0%} simultaneous confidence band (Lourie et al. 2023). Order (bootstrap, "
               f"{BOOTSTRAP} resamples per arm; stated where P >= {ORDER_PROBABILITY}): {said}.")
    curves.to_parquet(tables / f"{name}_tuning.parquet", index=False)
    (tables / f"{name}_tuning.md").write_text(_markdown(curves, caption) + "\n")
    order.to_parquet(tables / f"{name}_tuning_order.parquet", index=False)
    (tables / f"{name}_tuning_order.md").write_text(_markdown(order, (
        f"p_a_lower: share of {BOOTSTRAP} bootstrap resamples (each arm's search losses, with replacement) in "
        f"which arm a's expected best after n configurations is below arm b's. An order is stated where it is "
        f">= {ORDER_PROBABILITY} (a lower) or <= {1 - ORDER_PROBABILITY:.1f} (b lower), a crossing only where "
        f"both happen: {said}.")) + "\n")
    texts = ["tuning curves (bootstrap order, stated where P >= " f"{ORDER_PROBABILITY}):\n  " + "\n  ".join(
        order_text(order))]
    paired = paired_draws(summary)
    if len(paired):
        paired.to_parquet(tables / f"{name}_paired.parquet", index=False)
        (tables / f"{name}_paired.md").write_text(_markdown(paired, PAIRED_CAPTION) + "\n")
        texts.append(paired_text(paired))
    return "\n".join(texts)


def write_tuning(summary: pd.DataFrame, metrics: pd.DataFrame, name: str, out: str | Path) -> str:
    """The tuning-curve (or best-so-far: it needs the search trials' metrics) figure and the search-loss figures of
    a searched study into out/figures, the best-so-far table into out/tables; returns what it wrote as text."""
    out = Path(out)
    for folder in ("tables", "figures"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    if search_losses(summary).empty:
        return ""
    if _independent(summary):
        _curve_figure(tuning_curves(summary), out / "figures")
        text = ""
    else:
        progress = best_so_far(summary, metrics)
        progress.to_parquet(out / "tables" / f"{name}_best_so_far.parquet", index=False)
        (out / "tables" / f"{name}_best_so_far.md").write_text(_markdown(progress, (
            "Best-so-far validation loss against the training steps each arm's search spent (one run of a TPE or "
            "early-stopped search, not an expectation; stopped trials spend steps but never win).")) + "\n")
        _progress_figure(progress, out / "figures")
        text = "best-so-far curves written"
    _search_figures(summary, out / "figures")
    return text


WINNERS_CAPTION = "Winning values of each arm's search, confirmed on fresh seeds (--: a field the arm did not search)."


def write_winners(win: pd.DataFrame, name: str, tables: Path) -> str:
    """tables/<name>_winners.{parquet,md,tex}: one row per arm, the value of each field it searched; returns
    them as text."""
    win.to_parquet(tables / f"{name}_winners.parquet", index=False)
    (tables / f"{name}_winners.md").write_text(as_markdown(_winners_grid(win, "md"), WINNERS_CAPTION) + "\n")
    (tables / f"{name}_winners.tex").write_text(as_latex(_winners_grid(win, "latex"), WINNERS_CAPTION,
                                                         f"tab:{name}-winners"))
    return ("winning values (each arm's best search configuration, confirmed on fresh seeds):\n"
            + win.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def _winners_grid(win: pd.DataFrame, fmt: str) -> Grid:
    fields = [c for c in win.columns if c != "arm"]
    heads = [(header(Layout(()), f, fmt), "") for f in fields]  # no study's own headers: the shared ones
    cell = lambda v: "--" if isinstance(v, float) and math.isnan(v) else f"{v:.4g}" if isinstance(v, float) \
        else escape(v, fmt)  # noqa: E731
    cells = [[(cell(row[f]), "", False, "") for f in fields] for _, row in win.iterrows()]
    return Grid(["Arm"], heads, [[escape(a, fmt)] for a in win["arm"]], cells, [],
                [False] * len(fields))


def _markdown(frame: pd.DataFrame, caption: str) -> str:
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else markdown_text(v)  # noqa: E731
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n\n" + caption


def _curve_figure(curves: pd.DataFrame, folder: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    shown = curves[["expected_best", "median_best"]].to_numpy()
    top = 1.1 * shown[np.isfinite(shown)].max()  # an unbounded band (too few samples) runs off the top
    for i, (arm, g) in enumerate(curves.groupby("arm", sort=False)):
        colour = f"C{i}"
        ax.plot(g.n, g.expected_best, color=colour, marker="o", markersize=3,
                label=f"{figure_text(arm)}: expected best")
        ax.plot(g.n, g.median_best, color=colour, linestyle=":", linewidth=1)
        ax.fill_between(g.n, g.lower, np.minimum(g.upper, top), color=colour, alpha=0.15, linewidth=0)
    ax.set_ylim(0, top)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("configurations sampled (n)")
    ax.set_ylabel("best validation loss")  # linear: the band's lower edge may reach 0
    ax.set_title(f"Tuning curves: expected best (solid), median (dotted) with its {CONFIDENCE:.0%} band", fontsize=9)
    ax.legend(fontsize=7)
    save(fig, folder, "tuning_curve")


def _progress_figure(progress: pd.DataFrame, folder: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (arm, g) in enumerate(progress.groupby("arm", sort=False)):
        ax.step(g.steps, g.best_so_far, where="post", color=f"C{i}", label=figure_text(arm))
    ax.set_xlabel("training steps spent by the search")
    ax.set_ylabel("best-so-far validation loss")
    ax.set_title("Best so far against training steps (one search run, not an expectation)", fontsize=9)
    ax.legend(fontsize=7)
    save(fig, folder, "best_so_far")


def _search_figures(summary: pd.DataFrame, folder: Path) -> None:
    """figures/search_loss: best validation loss of every search configuration per arm (box and points);
    figures/search_fields: that loss against each searched field, one row of panels per arm."""
    search = summary[(summary["stage"] == M.SEARCH) & (summary.status == M.FINISHED)]
    search = search.assign(loss=selection_loss(search))
    arms = list(dict.fromkeys(search.arm))
    fig, ax = plt.subplots(figsize=(1.6 * len(arms) + 2, 4))
    data = [search.loc[search.arm == arm, "loss"].to_numpy() for arm in arms]
    ax.boxplot(data, tick_labels=[figure_text(arm) for arm in arms], showfliers=False)
    for i, values in enumerate(data, 1):
        ax.scatter(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, s=10, color=f"C{i - 1}")
    ax.set_ylabel("best validation loss (selection)")
    ax.set_title("Best validation loss over each arm's search space (finished configurations)", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    save(fig, folder, "search_loss")
    fields = list(dict.fromkeys(f for s in search.searched.astype(str) for f in s.split(",") if f))
    if not fields:
        return
    fig, axes = plt.subplots(len(arms), len(fields), figsize=(2.6 * len(fields), 2.2 * len(arms)), squeeze=False)
    for r, arm in enumerate(arms):
        g = search[search.arm == arm]
        for c, f in enumerate(fields):
            ax = axes[r][c]
            if f in str(g.searched.iloc[0]).split(","):
                values = pd.to_numeric(g[f], errors="coerce")
                ax.scatter(values, g.loss, s=10, color=f"C{r}")
                if values.gt(0).all() and values.max() > 10 * values.min():
                    ax.set_xscale("log")
                    ax.xaxis.set_minor_formatter(NullFormatter())
            else:
                ax.set_axis_off()
            if r == len(arms) - 1 or not ax.axison:
                ax.set_xlabel(figure_text(f), fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{figure_text(arm)}\nvalidation loss", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle("Best validation loss (selection) against each searched field", fontsize=9)
    save(fig, folder, "search_fields")
