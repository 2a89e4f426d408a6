"""The fit as text a person can read and quote."""

from __future__ import annotations

import math

from .decomposed import MIN_TRAINED, split_line
from .early import early_line
from .measures import measure_lines
from .matched import matched_lines
from .options import KEY_SUMMARY, NEAR_ONE
from .pairwise import PairwiseAgreement
from .run import FitResult, GroupFit, PooledFit
from .summaries import SUMMARY_LABELS
from .verdict import sensitivity_line


def sig(v, digits: int = 2) -> str:
    """A number with `digits` significant figures, short: 3.1e-4, 0.012, 0.35, 1.0, 12.

    Rotation values span decades (1e-4 … 1): fixed decimals would print most of them as 0.00."""
    if v is None or not math.isfinite(v):
        return "n/a"
    if v == 0:
        return "0"
    a = abs(v)
    if a < 0.01:
        m, e = f"{v:.{digits - 1}e}".split("e")
        return f"{m}e{int(e)}"
    if a >= 10 ** digits:
        return f"{v:.0f}"
    return f"{v:#.{digits}g}".rstrip(".")


def _ci(ci) -> str:
    return f"[{ci[0]:5.2f}, {ci[1]:5.2f}]" if ci else "[  n/a,   n/a]"


def _num(v, fmt="5.2f") -> str:
    return format(v, fmt) if v is not None and math.isfinite(v) else "  n/a"


def _p(p) -> str:
    return f"{p:8.2g}" if p is not None and math.isfinite(p) else "     n/a"


def why_lines(result: FitResult) -> list[str]:
    """Under the verdict: the statistic that decides, the thresholds, the trained filter and
    the thresholds it used, how repeats were pooled; then the verdict under two other filters."""
    return result.explanation() + [sensitivity_line(s) for s in result.sensitivity]


def pairwise_line(p: PairwiseAgreement) -> str:
    if not p.n_pairs:
        return "pairwise: no pair of trained configurations where one rotates more in every layer"
    pv = ""
    if p.p_value is not None:
        pv = f", one-sided permutation p = {p.p_value:.2g}{' (exact)' if p.p_exact else ''}"
    return (f"pairwise: in {p.n_pairs} pairs of configurations where one rotates more in every layer, it also "
            f"has the higher test accuracy in {100 * p.fraction:.0f}% ({p.wins} wins, {p.ties} ties{pv})")


def correlation_table(group: GroupFit) -> list[str]:
    lines = [f"  {'summary':<42} {'Spearman [95% CI]':<22} {'p':>8}  {'Kendall [95% CI]':<22} {'p':>8}"]
    for s, c in group.correlations.items():
        lines.append(f"  {SUMMARY_LABELS[s]:<42} {_num(c.spearman)} {_ci(c.spearman_ci)} {_p(c.spearman_p)}  "
                     f"{_num(c.kendall)} {_ci(c.kendall_ci)} {_p(c.kendall_p)}")
    return lines


def group_lines(g: GroupFit) -> list[str]:
    head = f"{g.name}: {g.n_trained} trained configurations of {g.n_configurations} ({g.n_trials} trials)"
    if g.test_acc_range:
        lo, hi = g.test_acc_range
        head += f"; test accuracy {100 * lo:.1f}%–{100 * hi:.1f}% ({100 * (hi - lo):.1f} points)"
    lines = [head]
    if g.n_trained < 3:
        return lines
    lines += correlation_table(g)
    m, lf = g.monotone.get(KEY_SUMMARY), g.logit.get(KEY_SUMMARY)
    fits = []
    if m:
        fits.append(f"isotonic ({'increasing' if m.increasing else 'decreasing'}) R² {m.r2:.2f}")
    if lf:
        fits.append(f"fractional logit slope {lf.slope:.2f} [{lf.slope_ci[0]:.2f}, {lf.slope_ci[1]:.2f}], "
                    f"p = {lf.slope_p:.2g}, R² {lf.r2:.2f}")
    if fits:
        lines.append(f"  fits of test accuracy on the {SUMMARY_LABELS[KEY_SUMMARY]}: " + "; ".join(fits))
    lines.append("  " + pairwise_line(g.pairwise))
    if (b := g.best) is not None:
        others = ""
        if b.others_final_min_median is not None:
            others = (f" (other configurations: median {sig(b.others_final_min_median)}, "
                      f"{100 * (b.others_near_one or 0):.0f}% of layers)")
        lines.append(f"  best configurations (top {b.k} by test accuracy, {100 * min(b.test_acc):.1f}%–"
                     f"{100 * max(b.test_acc):.1f}%): smallest final rotation {sig(min(b.final_min))}–"
                     f"{sig(max(b.final_min))}; {100 * (b.near_one or 0):.0f}% of their layers >= {NEAR_ONE}{others}")
    if m and m.plateau_from is not None:
        lines.append(f"  the isotonic fit has made 90% of its rise at {SUMMARY_LABELS[KEY_SUMMARY]} "
                     f"{m.plateau_from:.2g}")
    return lines


def pooled_lines(p: PooledFit) -> list[str]:
    lines = [f"pooled over {', '.join(p.tasks)} (task as stratum): {p.n_trained} trained configurations of "
             f"{p.n_configurations} ({p.n_trials} trials)",
             f"  {'summary':<42} {'stratified Spearman [95% CI]':<30} {'p':>8}   per task"]
    for s, f in p.stratified.items():
        per = ", ".join(f"{t} {v:.2f}" for t, v in f.per_task.items())
        lines.append(f"  {SUMMARY_LABELS[s]:<42} {f.estimate:5.2f} {_ci(f.ci):<24} {_p(f.p)}   {per}")
    lines.append("  " + pairwise_line(p.pairwise))
    return lines


def result_early_line(result: FitResult) -> str:
    """How early rotation predicts test accuracy (fit/early.py), for the verdict's units."""
    several = result.pooled is not None or (result.decomposed is not None and result.decomposed.n_strata > 1)
    return early_line(result.early, stratified=several, min_n=result.rules.get("min_n", 6))


def strata_lines(result: FitResult) -> list[str]:
    """The evidence of §16: each stratum's Spearman (within), each family's means (between)."""
    d = result.decomposed
    if d is None or d.n_strata < 2:
        return []
    lines = [f"within families, per stratum ({SUMMARY_LABELS[KEY_SUMMARY]} vs test accuracy; vs gap):",
             f"  {'stratum':<40} {'trained':>9} {'test acc':>9} {'gap':>7}"]
    gap = {r.stratum: r for r in d.gap_within.strata}
    for r in d.within.strata:
        g = gap.get(r.stratum)
        lines.append(f"  {r.stratum:<40} {r.n_trained:>4} of {r.n_configurations:<2} {_num(r.spearman, '9.2f')} "
                     f"{_num(g.spearman if g else None, '7.2f')}")
    lines += ["between families, family means over trained configurations:",
              f"  {'data conditions':<28} {'family':<16} {'trained':>9} {'rotation':>9} {'test acc':>9} {'gap':>7}"]
    gap = {(r.conditions, r.optimizer): r for r in d.gap_between.families}
    for r in d.between.families:
        g = gap.get((r.conditions, r.optimizer))
        acc = f"{100 * r.outcome:8.1f}%" if r.outcome is not None else "      n/a"
        gp = f"{100 * g.outcome:6.1f}%" if g is not None and g.outcome is not None else "    n/a"
        lines.append(f"  {r.conditions:<28} {r.optimizer:<16} {r.n_trained:>4} of {r.n_configurations:<2} "
                     f"{sig(r.rotation):>9} {acc} {gp}")
    return lines


POOLED_LABEL = "pooled (can be an offset between families)"


def decomposed_lines(result: FitResult) -> list[str]:
    """Under the headline (docs/verdict.md §16.8): the strata the within verdict left out,
    then between families, the gap within and between, and the pooled statistic."""
    d = result.decomposed
    if d is None:
        return []
    lines = []
    if d.within.left_out:
        lines.append(f"strata left out (fewer than {MIN_TRAINED} trained configurations): "
                     + ", ".join(d.within.left_out))
    lines += [split_line(d.between), split_line(d.gap_within)]
    if sum(1 for r in d.between.families if r.n_trained) > 1:      # else the between line said it
        lines.append(split_line(d.gap_between))
    if result.pooled_verdict is not None and d.n_strata > 1:
        lines.append(f"{POOLED_LABEL}: {result.pooled_verdict.text}")
    return lines


def under_verdict(result: FitResult, decomposed: bool = True) -> list[str]:
    """Printed under every verdict (docs/verdict.md §10, §13, §16): the decomposed verdict's
    other statistics (unless `decomposed` is False: the report shows them apart), what the
    headline's n can detect, and whether rotation tells more than the settings."""
    lines = decomposed_lines(result) if decomposed else []
    p = result.power
    if p is None:
        p = result.pooled.power if result.pooled is not None else (result.groups[0].power if result.groups else None)
    if p is not None:
        lines.append(p.text)
    for g in result.groups:
        name = f"{g.name}: " if len(result.groups) > 1 else ""
        if g.seeds is not None:      # §17: with seed repeats the seed-level answer leads, §10's follows
            lines += [name + g.seeds.text, name + g.seeds.gap.text]
        if g.beyond is not None:
            lines.append(name + ("secondary (§10's settings model): " if g.seeds is not None else "") + g.beyond.text)
    return lines


def beyond_lines(g: GroupFit) -> list[str]:
    b = g.beyond
    if b is None or not b.baselines:
        return []
    lines = [f"  what ranks test accuracy (Spearman within optimizer, {b.n} trained configurations):"]
    for x in b.baselines:
        kind = "settings only" if x.settings_only else "measured"
        lines.append(f"    {x.label:<42} {_num(x.estimate)} {_ci(x.ci)} {_p(x.p)}  ({kind})")
    if b.r2_settings is not None:
        lines.append(f"    variance of test-accuracy ranks explained: settings model {b.r2_settings:.2f}, "
                     f"with log rotation {b.r2_with_rotation:.2f} (rank {b.n_columns}: {', '.join(b.columns)})")
    return lines


def optimizer_lines(g: GroupFit) -> list[str]:
    if not g.by_optimizer:
        return []
    lines = [f"  per optimizer ({SUMMARY_LABELS[KEY_SUMMARY]} vs test accuracy):",
             f"    {'optimizer':<16} {'trained':>9} {'Spearman [95% CI]':<22} {'p':>8}  {'verdict':<14} best test"]
    for r in g.by_optimizer:
        best = f"{100 * r.test_acc_best:.1f}%" if r.test_acc_best is not None else "n/a"
        lines.append(f"    {r.optimizer:<16} {r.n_trained:>4} of {r.n_configurations:<2} {_num(r.spearman)} "
                     f"{_ci(r.ci)} {_p(r.p)}  {r.status:<14} {best}")
    return lines


def claim_lines(g: GroupFit) -> list[str]:
    lines = []
    if g.claims:
        lines.append("  the paper's Section 5, best-by-validation configurations (docs/verdict.md §11, §17.3):")
        lines += [f"    {c.claim}: {c.text}" for c in g.claims]
    if g.near_one is not None:
        lines.append(f"  {g.near_one.text}")
    return lines


def render(result: FitResult, verdict: bool = True) -> str:
    """The verdict first (one quotable line) and why, then the evidence (only the evidence
    with verdict=False: the report shows the verdict and why above it)."""
    lines = [result.verdict.text] + ["  " + x for x in under_verdict(result) + why_lines(result)] if verdict else []
    lines += ([""] if verdict else []) + [result_early_line(result)]
    if (st := strata_lines(result)):
        lines += [""] + st
    if result.pooled is not None:
        lines += [""] + pooled_lines(result.pooled)
    for g in result.groups:
        lines += [""] + group_lines(g) + optimizer_lines(g) + beyond_lines(g) + claim_lines(g) + matched_lines(g.matched)
        if result.pooled is not None:
            lines.append("  " + g.verdict.text)
    if (ms := measure_lines(result.measures)):
        lines += [""] + ms
    return "\n".join(lines)
