"""scripts/profile-sweep: worker time per job kind and model, and inside tuning jobs.

A tuning job's metrics stamp each step's loss and each dev score with the seconds since the job
started (`wall_s`). A step's time is the gap between consecutive loss stamps; the gap that ends at
a dev score is that evaluation; the time before the first loss is setup (the first step's own
time is estimated by the median step); what follows the last stamp is the test evaluation and
the job's bookkeeping.
"""
import sys

import pyarrow.dataset as ds


def table(root, name):
    return ds.dataset(f"{root}/{name}", format="parquet").to_table().to_pandas()


def main(root):
    jobs = table(root, "jobs")
    jobs = jobs[jobs.status == "done"].drop_duplicates("job_id", keep="last")
    wall = (jobs.finished_at.max() - jobs.started_at.min()).total_seconds()
    workers = jobs.worker.nunique()
    print(f"{root}: {len(jobs)} done jobs, {wall:.0f} s from first start to last finish, "
          f"{workers} workers, {jobs.duration_s.sum():.0f} s of worker time "
          f"({jobs.duration_s.sum() / max(wall * workers, 1e-9):.0%} busy)\n")
    print("| kind | model | jobs | worker s | share | mean s |\n|---|---|---|---|---|---|")
    total = jobs.duration_s.sum()
    for (kind, model), g in jobs.groupby(["kind", "model"]):
        s = g.duration_s.sum()
        print(f"| {kind} | {model} | {len(g)} | {s:.0f} | {s / total:.0%} | {g.duration_s.mean():.1f} |")

    metrics = table(root, "metrics")
    tuning = jobs[jobs.kind.isin(["train", "tpt"])]
    rows = []
    for (kind, model), g in tuning.groupby(["kind", "model"]):
        parts = dict(setup=0.0, steps=0.0, dev=0.0, test=0.0, n_steps=0, n_dev=0)
        for job in g.itertuples():
            m = metrics[(metrics.job_id == job.job_id) & metrics.name.isin(["loss", "dev_score"])]
            m = m.sort_values(["wall_s"])
            if m.empty:
                continue
            stamps = list(zip(m.name, m.wall_s))
            losses = [w for n, w in stamps if n == "loss"]
            gaps = sorted(b - a for a, b in zip(losses, losses[1:]))
            step = gaps[len(gaps) // 2] if gaps else 0.0
            parts["setup"] += max(stamps[0][1] - step, 0.0)
            parts["steps"] += step
            for (_, a), (name, b) in zip(stamps, stamps[1:]):
                parts["dev" if name == "dev_score" else "steps"] += b - a
            parts["test"] += job.duration_s - stamps[-1][1]
            parts["n_steps"] += len(losses)
            parts["n_dev"] += sum(1 for n, _ in stamps if n == "dev_score")
        busy = g.duration_s.sum()
        rows.append((kind, model, busy, parts))
    print("\nInside tuning jobs (seconds summed over the jobs, share of their time):\n")
    print("| kind | model | setup | steps | s/step | dev evals | s/eval | test eval + rest |\n"
          "|---|---|---|---|---|---|---|---|")
    for kind, model, busy, p in rows:
        pct = lambda v: f"{v:.0f} ({v / busy:.0%})"
        print(f"| {kind} | {model} | {pct(p['setup'])} | {pct(p['steps'])} | "
              f"{p['steps'] / max(p['n_steps'], 1):.3f} | {pct(p['dev'])} | "
              f"{p['dev'] / max(p['n_dev'], 1):.2f} | {pct(p['test'])} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/profile-sweep RESULTS_DIR/SWEEP")
    main(sys.argv[1])
