#!/usr/bin/env python3
"""Writes results/tests/data/reference_indicators.json: the prompt indicators of docs/design.md ("Transferability indicators"),
computed independently with NumPy (explicit pairwise differences, no Gram-matrix shortcut), and
their Spearman correlations with relative transfer (pandas average ranks), on the reference
RoBERTa-base prompts. The Rust test compares promptgrid's values with these within 1e-5.

Run from the repository root with the setup's venv python:
    . scripts/env.sh && python scripts/make-indicator-fixtures.py
"""
import json
import pathlib

import numpy as np
import pandas as pd
from safetensors.numpy import load_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
REF = ROOT.parent / "shared" / "reference" / "prompt-transferability" / "roberta-base"
OUT = ROOT / "results" / "tests" / "data" / "reference_indicators.json"


def indicators(p1, p2):
    p1, p2 = p1.astype(np.float64), p2.astype(np.float64)
    v1, v2 = p1.ravel(), p2.ravel()
    diffs = p1[:, None, :] - p2[None, :, :]  # [L, L, d]
    n1 = np.linalg.norm(p1, axis=1)
    n2 = np.linalg.norm(p2, axis=1)
    cos_tok = (p1 @ p2.T) / np.outer(n1, n2)
    m1, m2 = p1.mean(axis=0), p2.mean(axis=0)
    return {
        "E_concat": 1.0 / (1.0 + np.linalg.norm(v1 - v2)),
        "E_average": 1.0 / (1.0 + np.linalg.norm(diffs, axis=2).mean()),
        "C_concat": v1 @ v2 / (np.linalg.norm(v1) * np.linalg.norm(v2)),
        "C_average": cos_tok.mean(),
        "C_mean": m1 @ m2 / (np.linalg.norm(m1) * np.linalg.norm(m2)),
    }


def spearman(x, y):
    if len(x) < 3:
        return None
    rx = pd.Series(x).rank(method="average").to_numpy()
    ry = pd.Series(y).rank(method="average").to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


def main():
    prompts = {p.stem: load_file(str(p))["prompt"] for p in sorted((REF / "prompts").glob("*.safetensors"))}
    tasks = sorted(prompts)
    rows = []
    # Every indicator is symmetric; computing (b, a) as a mirror of (a, b) keeps tied values
    # exactly tied, which Spearman's average ranks depend on.
    cache = {}
    for a in tasks:
        for b in tasks:
            key = (min(a, b), max(a, b))
            if key not in cache:
                cache[key] = indicators(prompts[key[0]], prompts[key[1]])
            for name, value in cache[key].items():
                rows.append({"task_a": a, "task_b": b, "indicator": name, "value": float(value)})

    csv = pd.read_csv(REF / "zero_shot_transfer.csv")
    own = csv[csv.target_task == csv.source_prompt].set_index("target_task")["value"]
    csv["relative"] = 100.0 * csv["value"] / csv["target_task"].map(own)
    ind = pd.DataFrame(rows)
    correlations = []
    for name in ["E_concat", "E_average", "C_concat", "C_average", "C_mean"]:
        vals = ind[ind.indicator == name].set_index(["task_a", "task_b"])["value"]
        off = csv[(csv.source_prompt != csv.target_task) & (csv.source_prompt != "random")]
        pairs = [(vals[(s, t)], r, t) for s, t, r in zip(off.source_prompt, off.target_task, off.relative)]
        per_target = []
        for t in sorted(off.target_task.unique()):
            sel = [(x, y) for x, y, tt in pairs if tt == t]
            rho = spearman([x for x, _ in sel], [y for _, y in sel])
            if rho is not None and not np.isnan(rho):
                per_target.append(rho)
        correlations.append({
            "indicator": name,
            "mean": float(np.mean(per_target)),
            "global": spearman([p[0] for p in pairs], [p[1] for p in pairs]),
            "pairs": len(pairs),
        })
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"model": "roberta-base", "tasks": tasks, "indicators": rows,
                               "correlations": correlations}, indent=1) + "\n")
    print(f"wrote {len(rows)} indicator values to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
