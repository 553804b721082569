"""The analyses a study file asks for beyond its tables (sweep/study.py, `analysis:`):

    analysis:
      factorial: [decay, codebook_init, commitment]   # two-level axes of the study
      equivalence: 0.05                                # margin: 5 % of the reference arm's mean loss

factorial: which factor explains the loss and the collapses: a linear model with interactions on the
log final loss over two-level factors, and collapse counts per factor level with exact intervals.
equivalence: does each arm end level with the reference arm: two one-sided tests (analysis.stats.tost).

Effects. Per arm (the arms are different algorithms, so each gets its own model), ordinary least
squares of y = ln(final loss) on every factor and every interaction of them (the formula
`y ~ decay * codebook_init * commitment`). Each factor is coded -1/2 at its lower level and +1/2 at
its higher one (sorted order: 0.8 < 0.99, randn < uniform, 0.25 < 1), so in a balanced design

    main effect of A       = mean y at A's higher level - mean y at its lower level (other factors averaged),
    interaction A x B      = (effect of A at B's higher level) - (effect of A at B's lower level),
    A x B x C              = the A x B interaction at C's higher level minus that at C's lower level,

and exp(effect) is the ratio of geometric-mean losses. With every interaction in, the model has one
mean per cell, its residual variance is the pooled within-cell variance of the seeds, and the 95 %
intervals are exact t intervals on cells x (seeds - 1) degrees of freedom. Diverged trials (no loss)
are left out; collapsed ones stay in (their loss is what the model reached).

Why statsmodels: its formula interface writes the model as the question (the `*` of a formula expands
to the main effects and all interactions, by name), and its OLS gives the classical exact inference
(standard errors from the residual variance, t intervals and p-values) with no algebra of ours.

Collapse (analysis.summary: fewer than 5 % of the codes used) is counted, not modelled: per arm and
factor level, k collapsed of n trials, with the exact (Clopper-Pearson) 95 % interval of
scipy.stats.binomtest. A logistic regression would be the model-based route, but when a level has
every trial collapsed, or none (as EMA-VQ at decay 0.99 can), the likelihood keeps growing as that
coefficient runs to infinity (complete separation): there is no estimate and no interval to report.

Equivalence. "Level" is a claim, so it is tested as one: each arm's mean final loss minus the reference
arm's, within +-delta, delta = the study's margin x the reference's mean loss (the fraction is fixed in
the study file before the run). Equivalent when both one-sided Welch tests reject at 5 %, i.e. the 90 %
interval of the difference lies inside +-delta; otherwise "not shown" (which is not "different": the
95 % Welch interval of the vs-reference table says whether they differ). Beside it, how many seeds of
each side have converged by the trainer's rule (analysis.summary: late_improvement <= 2 %).
"""
from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

import metrics as M
from analysis.stats import ALPHA, describe, tost
from analysis.summary import CONVERGENCE_TOLERANCE, NO_TEST_SPLIT, has_test_split
from analysis.tables import loss_scale
from analysis.tables.formats import PCT, TIMES, Grid, as_latex, as_markdown, as_text, escape, plain
from plan import Plan

LOSS = M.FINAL_LOSS


def levels(summary: pd.DataFrame, factor: str) -> list:
    """The two levels of `factor` in the summary, lower first; a ValueError unless there are exactly two."""
    values = sorted(summary[factor].dropna().unique().tolist())
    if len(values) != 2:
        raise ValueError(f"factor {factor!r} has levels {values} in the trials; allowed: exactly two")
    return values


def terms(factors: list[str]) -> list[tuple[str, ...]]:
    """Main effects, then two-way, three-way ... interactions, each in the factors' order."""
    return [combo for k in range(1, len(factors) + 1) for combo in itertools.combinations(factors, k)]


def effects(summary: pd.DataFrame, factors: list[str], by: list[str]) -> pd.DataFrame:
    """One row per group of `by` (e.g. the arm) and model term: the term ("decay" or "decay x commitment"),
    what it contrasts ("0.99 vs 0.8"), the estimate on the ln scale with its 95 % t interval and p-value,
    the same as a loss ratio (exp), the trials fitted and the residual degrees of freedom."""
    data = summary[np.isfinite(summary[LOSS].astype(float)) & (summary[LOSS] > 0)]
    if "diverged" in data:
        data = data[~data["diverged"].astype(bool)]
    records = []
    groups = data.groupby(by, sort=False, dropna=False) if by else [((), data)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        coded = pd.DataFrame({"y": np.log(g[LOSS].astype(float).to_numpy())}, index=g.index)
        contrast = {}
        for f in factors:
            low, high = levels(summary, f)
            coded[f] = np.where(g[f] == high, 0.5, -0.5)
            contrast[f] = f"{_show(high)} vs {_show(low)}"
        with np.errstate(divide="ignore", invalid="ignore"):  # one trial per cell: no variance (NaN below)
            fit = smf.ols("y ~ " + " * ".join(factors), data=coded).fit()
            ci = fit.conf_int(ALPHA)
        for term in terms(factors):
            name = ":".join(term)
            est, low, high = fit.params[name], ci.loc[name, 0], ci.loc[name, 1]
            p = fit.pvalues[name]
            if fit.df_resid < 1:  # one trial per cell: no residual variance, no interval
                low = high = p = math.nan
            records.append({**dict(zip(by, key)), "term": " x ".join(term),
                            "contrast": "; ".join(contrast[f] for f in term), "effect": est, "ci_low": low,
                            "ci_high": high, "p": p, "ratio": math.exp(est), "ratio_low": math.exp(low),
                            "ratio_high": math.exp(high), "n": int(fit.nobs), "df_resid": int(fit.df_resid)})
    return pd.DataFrame(records)


def collapse_counts(summary: pd.DataFrame, factors: list[str], by: list[str]) -> pd.DataFrame:
    """Per group of `by` and level of each factor: trials with a result, how many collapsed, the rate
    and its exact (Clopper-Pearson) 95 % interval; plus one row per group over all its trials."""
    data = summary[summary["result"].astype(bool)] if "result" in summary else summary
    records = []
    groups = data.groupby(by, sort=False, dropna=False) if by else [((), data)]
    for key, g in groups:
        key = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        records.append({**key, "factor": "all", "level": "all", **_rate(g)})
        for f in factors:
            for level in levels(summary, f):
                records.append({**key, "factor": f, "level": _show(level), **_rate(g[g[f] == level])})
    return pd.DataFrame(records)


def _rate(g: pd.DataFrame) -> dict:
    n, k = len(g), int(g[M.COLLAPSED].astype(bool).sum())
    if n == 0:
        return {M.COLLAPSED: 0, "n": 0, "rate": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    ci = stats.binomtest(k, n).proportion_ci(1 - ALPHA, method="exact")
    return {M.COLLAPSED: k, "n": n, "rate": k / n, "ci_low": ci.low, "ci_high": ci.high}


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _matches(frame: pd.DataFrame, values: dict) -> pd.Series:
    keep = pd.Series(True, index=frame.index)
    for f, v in values.items():
        keep &= frame[f] == v
    return keep


def equivalence(summary: pd.DataFrame, reference: dict, fraction: float, by: list[str]) -> pd.DataFrame:
    """Each configuration (a group of `by`) against the reference arm (its `reference` fields, within the
    same values of the other fields of `by`): means, std and n of both, the margin delta = fraction x the
    reference's mean, the difference with its 90 % interval, the TOST p and verdict, and the seeds of each
    side that have converged (late_improvement <= CONVERGENCE_TOLERANCE)."""
    data = summary[summary[M.RESULT].astype(bool)] if M.RESULT in summary else summary
    within = [f for f in by if f not in reference]
    records = []
    for key, g in data.groupby(by, sort=False, dropna=False):
        key = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        if all(key.get(f) == v for f, v in reference.items()):
            continue
        ref = data[_matches(data, {**{f: key[f] for f in within}, **reference})]
        if ref.empty:
            continue
        (m, s, n), (mr, sr, nr) = describe(g[LOSS]), describe(ref[LOSS])
        test = tost(g[LOSS], ref[LOSS], fraction * mr)
        records.append({**key, "mean": m, "std": s, "n": n, "ref_mean": mr, "ref_std": sr, "ref_n": nr,
                        "fraction": fraction, "margin": test.margin, "diff": test.diff, "ci90_low": test.ci_low,
                        "ci90_high": test.ci_high, "p": test.p, "equivalent": test.equivalent,
                        "converged": _converged(g), "ref_converged": _converged(ref)})
    return pd.DataFrame(records)


def _converged(g: pd.DataFrame) -> int:
    late = g.get(M.LATE_IMPROVEMENT, pd.Series(dtype=float)).astype(float)
    return int((late <= CONVERGENCE_TOLERANCE).sum())


# ----------------------------------------------------------------------------------------------
# Tables: Parquet (the numbers above), LaTeX (one column of a two-column paper), Markdown, text.


def write_analysis(summary: pd.DataFrame, name: str, plan: Plan, tables) -> list[str]:
    """The analyses of the plan's `analysis:` block into tables/<name>_{factorial,collapse,equivalence}
    .{parquet,tex,md,txt}; returns their text. Groups: the plan's swept fields other than the factors."""
    swept = [f for f in plan.swept if f in summary]
    texts = []
    if plan.analysis.factorial:
        factors = list(plan.analysis.factorial)
        by = [f for f in swept if f not in factors]
        for part, numbers in (("factorial", effects(summary, factors, by)),
                              ("collapse", collapse_counts(summary, factors, by))):
            texts.append(_write(tables, f"{name}_{part}", numbers, _grid(part, numbers, by, summary),
                                _caption(part, numbers, summary, factors, plan), label=f"tab:{name}-{part}"))
    if plan.analysis.equivalence is not None:
        numbers = equivalence(summary, dict(plan.reference), plan.analysis.equivalence, swept)
        texts.append(_write(tables, f"{name}_equivalence", numbers, _grid("equivalence", numbers, swept, summary),
                            _caption("equivalence", numbers, summary, [], plan), label=f"tab:{name}-equivalence"))
    return texts


def _write(tables, file: str, numbers: pd.DataFrame, grids: dict, captions: dict, label: str) -> str:
    numbers.to_parquet(tables / f"{file}.parquet", index=False)
    (tables / f"{file}.tex").write_text(as_latex(grids["latex"], captions["latex"], label))
    (tables / f"{file}.md").write_text(as_markdown(grids["md"], captions["md"]) + "\n")
    text = as_text(grids["text"], captions["text"])
    (tables / f"{file}.txt").write_text(text + "\n")
    return text


def _num(x: float, digits: int = 2) -> str:
    return "--" if not math.isfinite(x) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    return "--" if not math.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _section(key: dict, fmt: str) -> str:
    return escape(", ".join(str(v) if f == "arm" else f"{f} = {_show(v)}" for f, v in key.items()), fmt)


def _grid(part: str, numbers: pd.DataFrame, by: list[str], summary: pd.DataFrame) -> dict:
    """The table of `part` as a Grid per format (LaTeX, Markdown, text)."""
    out = {}
    for fmt in ("latex", "md", "text"):
        pct = PCT[fmt]
        rows, cells, sections, previous = [], [], {}, None
        for r in numbers.to_dict("records"):
            key = {f: r[f] for f in by}
            if part != "equivalence" and key != previous and by:
                sections[len(rows)] = _section(key, fmt)
                previous = key
            cell = lambda text: (text, "", False, "")  # noqa: E731
            if part == "factorial":
                rows.append([escape(r["term"].replace(" x ", " × "), fmt)])
                cells.append([cell(_num(r["ratio"])), cell(f"[{_num(r['ratio_low'])}, {_num(r['ratio_high'])}]"),
                              cell(_p(r["p"]))])
            elif part == "collapse":
                level = "all trials" if r["factor"] == "all" else f"{r['factor']} = {r['level']}"
                rows.append([escape(level, fmt)])
                cells.append([cell(f"{r['collapsed']}/{r['n']}"), cell(_num(r["rate"])),
                              cell(f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]")])
            else:
                f = 10.0 ** loss_scale(summary)
                # the configuration on a line of its own (as the vs-reference table), so the table stays narrow
                sections[len(rows)] = _section(key, fmt)
                rows.append([""])
                verdict = "yes" if r["equivalent"] else "no"
                cells.append([cell(_num(r["diff"] * f)), cell(f"[{_num(r['ci90_low'] * f)}, {_num(r['ci90_high'] * f)}]"),
                              cell(_num(r["margin"] * f)), cell(_p(r["p"])), cell(verdict),
                              cell(f"{r['converged']}/{r['ref_converged']}")])
        if part == "factorial":
            labels, heads = ["Term"], [("Ratio", ""), (f"95{pct} CI", ""), ("$p$" if fmt == "latex" else "p", "")]
        elif part == "collapse":
            labels, heads = ["Level"], [("Collapsed", ""), ("Rate", ""), (f"95{pct} CI", "")]
        else:
            delta = "$\\Delta$" if fmt == "latex" else "Δ"
            labels = [""]
            heads = [(delta, ""), (f"90{pct} CI", ""),
                     ("$\\delta$" if fmt == "latex" else "δ", ""), ("$p$" if fmt == "latex" else "p", ""),
                     ("Level", ""), ("Conv.", "")]
        out[fmt] = Grid(labels, heads, rows, cells, [], [False] * len(heads), sections)
    return out


def _caption(part: str, numbers: pd.DataFrame, summary: pd.DataFrame, factors: list[str], plan: Plan) -> dict:
    """The caption of `part` in LaTeX (Markdown and text: the same, plain). What comes from data (names,
    levels) stands in it as a slot, filled escaped for each format."""
    scale = str(summary[M.SCALE_TAG].iloc[0]) if M.SCALE_TAG in summary and len(summary) else "?"
    steps = int(summary["steps"].max()) if "steps" in summary and len(summary) else 0
    data = {"where": f"{plan.study}, scale {scale}, {steps:,} steps",
            "contrasts": "; ".join(f"{f}: {c}" for f, c in dict(zip(numbers.get("term", ()),
                                                                     numbers.get("contrast", ()))).items()
                                   if " x " not in f),
            "ref": ", ".join(str(v) for v in plan.reference.values())}
    where, contrasts, ref = (f"\0{key}\0" for key in data)
    if part == "factorial":
        df = sorted(set(numbers["df_resid"])) if len(numbers) else []
        text = (f"Factor effects on the final loss ({where}): per arm, a linear model of $\\ln$ loss with every "
                f"interaction (statsmodels OLS), each factor coded $\\pm 1/2$, so an effect is the difference of "
                f"mean $\\ln$ loss between its two levels ({contrasts}), and an interaction the difference of "
                f"that difference between the levels of the other factor(s). Ratio: $e^{{\\mathrm{{effect}}}}$, the "
                f"factor's multiplier of the geometric-mean loss (1 = no effect); 95\\% CI: exact $t$ interval on "
                f"{'/'.join(map(str, df))} residual degrees of freedom; $p$: two-sided $t$-test. Diverged trials "
                f"are left out; collapsed ones stay in.")
    elif part == "collapse":
        text = (f"Collapsed trials ({where}): fewer than 5\\% of the codes used on validation, per arm and "
                f"factor level, with the exact (Clopper-Pearson) 95\\% interval of the rate. Counts, not a "
                f"logistic fit: a level where every trial collapses (or none) separates the outcome completely, "
                f"and the logistic estimate does not exist.")
    else:
        frac = plan.analysis.equivalence
        unit = TIMES["latex"](loss_scale(summary))
        loss = ("test loss (at the step of its best validation loss)" if has_test_split(summary) else
                f"best validation loss ({NO_TEST_SPLIT})")
        text = (f"Does each arm end level with {ref} ({where})? $\\Delta$ {unit}: the arm's mean {loss} "
                f"minus the reference's (the means are in the main table), with its 90\\% Welch interval; "
                f"$\\delta$: the equivalence margin, {frac * 100:g}\\% of the reference's mean loss, fixed in the study "
                f"file before the run. Level: yes when both one-sided Welch tests reject at 5\\% (TOST, $p$ the "
                f"larger one-sided $p$), i.e. the 90\\% interval lies inside $\\pm\\delta$; no: equivalence not shown "
                f"(not the same as a difference: see the vs-reference table's 95\\% interval). "
                f"Conv.: seeds converged (best loss fell $\\le$ 2\\% over the last 20\\% of the steps), "
                f"arm/reference.")
    plain_text = _plain(text.replace(TIMES["latex"](loss_scale(summary)), TIMES["text"](loss_scale(summary))))
    fill = lambda tex, fmt: re.sub("\0(\\w+)\0", lambda m: escape(data[m.group(1)], fmt), tex)  # noqa: E731
    return {"latex": fill(text, "latex"), "md": fill(plain_text, "md"), "text": fill(plain_text, "text")}


PLAIN = (("$\\pm 1/2$", "±1/2"), ("$\\pm$", "±"), ("$\\pm\\delta$", "±δ"), ("$e^{\\mathrm{effect}}$", "exp(effect)"),
         ("$\\ln$", "ln"), ("$\\Delta$", "Δ"), ("$\\delta$", "δ"), ("$\\le$", "≤"), ("\\%", "%"), ("\\_", "_"))


def _plain(tex: str) -> str:
    """A caption written in LaTeX as plain text (Markdown and the terminal)."""
    for a, b in PLAIN:
        tex = tex.replace(a, b)
    return plain(tex)
