#!/usr/bin/env python3
"""Writes results/tests/data/seeded_correlations.json: a synthetic cross-task study with three
seeds (5 tasks and the random prompt, 20 off-diagonal pairs), two indicators, and what the
report must compute from it, worked out here with NumPy and SciPy:

* per cell: the mean and sample sd (ddof=1) over seeds of the raw score, the own-prompt score and
  relative transfer normalised per seed; the margin over the random prompt paired by seed, and
  whether its mean exceeds 2 sd (beats random beyond the seed spread);
* per indicator and row (each target, `mean`, `global`): Spearman's rho (scipy.stats.spearmanr),
  the 95% percentile bootstrap interval (numpy.quantile, linear) and the permutation p-value.

The bootstrap and the permutations draw the SAME indices as the Rust side: SplitMix64 and the
procedure documented in results/src/resample.rs and results/src/rho_uncertainty.rs are
re-implemented below from that text, so the Rust test compares to within float rounding instead
of a Monte-Carlo tolerance. What this checks independently: the ranks and rho (SciPy's), the
percentile definition (NumPy's), the per-seed normalisation, the seed and pair resampling
scheme, and p = (k + 1) / (N + 1).

Run from the repository root with the setup's venv python:
    . scripts/env.sh && python scripts/make-correlation-fixtures.py
"""
import json
import pathlib

import numpy as np
from scipy import stats

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "tests" / "data" / "seeded_correlations.json"

TASKS = ["a", "b", "c", "d", "e"]
SEEDS = [1, 2, 3]
RANDOM = "random"
# results/src/rho_uncertainty.rs, Resampling::default().
N_BOOT, N_PERM = 2000, 2000
BOOT_SEED, PERM_SEED = 20_220_710, 20_220_711
TIE = 1e-9
MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return (self.next() * n) >> 64

    def shuffle(self, v):
        for i in range(len(v) - 1, 0, -1):
            j = self.below(i + 1)
            v[i], v[j] = v[j], v[i]


def seq_mean(values):
    """The mean summed left to right, as the Rust side does."""
    total = 0.0
    for v in values:
        total += v
    return total / len(values)


def spread(values):
    values = list(values)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": seq_mean(values), "sd": sd, "n": len(values)}


def rho(x, y):
    """Spearman's rho; None with fewer than 3 points or a constant side."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    return float(stats.spearmanr(x, y).statistic)


def study():
    rng = np.random.default_rng(15)
    own = {(k, t): round(0.6 + 0.3 * rng.random(), 4) for k in SEEDS for t in TASKS}
    base = {(s, t): 0.25 + 0.7 * rng.random() for s in TASKS for t in TASKS if s != t}
    scores = {}
    for t in TASKS:
        for s in TASKS + [RANDOM]:
            for k in SEEDS:
                if s == t:
                    v = own[(k, t)]
                else:
                    level = 0.3 + rng.normal(0, 0.05) if s == RANDOM else base[(s, t)] + rng.normal(0, 0.06)
                    v = round(own[(k, t)] * float(np.clip(level, 0.05, 1.0)), 4)
                scores[(s, t, k)] = v
    # X follows the planted transfer level with noise; Y is unrelated to it.
    indicators = {}
    for (s, t), b in sorted(base.items()):
        indicators[("X", s, t)] = float(b + rng.normal(0, 0.15))
        indicators[("Y", s, t)] = float(rng.random())
    return scores, indicators


def cells(scores):
    rel = {(s, t, k): 100.0 * scores[(s, t, k)] / scores[(t, t, k)] for (s, t, k) in scores}
    out = []
    for t in TASKS:
        for s in TASKS + [RANDOM]:
            cell = {
                "source": s,
                "target": t,
                "raw": spread(scores[(s, t, k)] for k in SEEDS),
                "own": spread(scores[(t, t, k)] for k in SEEDS),
                "relative": spread(rel[(s, t, k)] for k in SEEDS),
                "margin": None,
                "beats_random": None,
            }
            if s != RANDOM:
                m = spread(rel[(s, t, k)] - rel[(RANDOM, t, k)] for k in SEEDS)
                cell["margin"] = m
                cell["beats_random"] = bool(m["mean"] > 2.0 * m["sd"])
            out.append(cell)
    return out, rel


def statistics(per_target, glob):
    defined = [r for r in per_target if r is not None]
    mean = seq_mean(defined) if defined else None
    return per_target + [mean, glob]


def correlations(name, indicators, rel):
    pairs = sorted((s, t) for (n, s, t) in indicators if n == name)
    x = [indicators[(name, s, t)] for (s, t) in pairs]
    y_by_seed = [[rel[(s, t, k)] for k in SEEDS] for (s, t) in pairs]
    y = [seq_mean(v) for v in y_by_seed]
    per_target = [[i for i, (_, t) in enumerate(pairs) if t == tgt] for tgt in TASKS]
    everything = list(range(len(pairs)))
    observed = statistics(
        [rho([x[i] for i in idx], [y[i] for i in idx]) for idx in per_target],
        rho(x, y),
    )
    rows = len(observed)

    boot = [[] for _ in range(rows)]
    g = SplitMix64(BOOT_SEED)
    for _ in range(N_BOOT):
        drawn = [g.below(len(SEEDS)) for _ in SEEDS]
        yb = [seq_mean([v[k] for k in drawn]) for v in y_by_seed]

        def draw(idx):
            picked = [idx[g.below(len(idx))] for _ in idx]
            return rho([x[i] for i in picked], [yb[i] for i in picked])

        stat = statistics([draw(idx) for idx in per_target], draw(everything))
        for r, v in enumerate(stat):
            if v is not None:
                boot[r].append(v)

    extreme = [0] * rows
    g = SplitMix64(PERM_SEED)
    for _ in range(N_PERM):

        def shuffled(idx):
            ys = [y[i] for i in idx]
            g.shuffle(ys)
            return rho([x[i] for i in idx], ys)

        stat = statistics([shuffled(idx) for idx in per_target], shuffled(everything))
        for r, v in enumerate(stat):
            if v is not None and observed[r] is not None and abs(v) >= abs(observed[r]) - TIE:
                extreme[r] += 1

    targets = TASKS + ["mean", "global"]
    ns = [len(idx) for idx in per_target]
    ns += [sum(r is not None for r in observed[: len(TASKS)]), len(pairs)]
    out = []
    for r, target in enumerate(targets):
        lo, hi = np.quantile(boot[r], [0.025, 0.975])
        out.append({
            "indicator": name,
            "target": target,
            "spearman": observed[r],
            "n": ns[r],
            "rho_lo": float(lo),
            "rho_hi": float(hi),
            "n_boot": len(boot[r]),
            "p_value": (extreme[r] + 1) / (N_PERM + 1),
        })
    return out


def main():
    scores, indicators = study()
    expected_cells, rel = cells(scores)
    corr = correlations("X", indicators, rel) + correlations("Y", indicators, rel)
    g = SplitMix64(BOOT_SEED)
    generator = {"seed": BOOT_SEED, "next": [str(g.next()) for _ in range(3)],
                 "below_7": [g.below(7) for _ in range(5)]}
    perm = list(range(10))
    g.shuffle(perm)
    generator["shuffled_after"] = perm
    fixture = {
        "resampling": {"n_boot": N_BOOT, "n_perm": N_PERM, "boot_seed": BOOT_SEED, "perm_seed": PERM_SEED},
        "seeds": SEEDS,
        "scores": [{"source": s, "target": t, "seed": k, "value": v} for (s, t, k), v in sorted(scores.items())],
        "indicators": [{"indicator": n, "source": s, "target": t, "value": v}
                       for (n, s, t), v in sorted(indicators.items())],
        "cells": expected_cells,
        "correlations": corr,
        "generator": generator,
    }
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT}")
    for c in corr:
        if c["target"] in ("mean", "global"):
            print(c)


if __name__ == "__main__":
    main()
