"""Helper of scripts/bench-train (read its header for what each row measures).

* `make SIZE DIR`: a random-weight checkpoint of SIZE (minilm, roberta-base, roberta-large) with a synthetic
  tokenizer.
* `time IMPL SIZE DIR STEPS [--precision fp32|bf16] [--device D]`: times prompt-tuning steps of
  IMPL on it and prints one JSON line. IMPL `peft` is transformers + peft as PEFT users run it:
  `model.train()` (dropout 0.1), full-vocabulary MLM logits at all positions. IMPL `same-work`
  does what promptgrid's step does (ml/src/train.rs, ml/src/bert.rs) in PyTorch eager on the
  same transformers modules: eval mode, frozen weights, SDPA, the prompt's embeddings
  concatenated before the text's, the last layer and the MLM head at the mask row only, the head's
  decoder for the label words only, float32 cross-entropy, AdamW on the prompt alone.
* `peak [--device D] [--size N]`: the measured fp32 and bf16 matmul peak (an N³ matmul).
* `table SIZE RESULTS.jsonl`: the comparison of one size (rows promptgrid fp32 / bf16, PEFT,
  same-work fp32 / bf16), with each row's share of the matmul peak for the step's FLOPs.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
from tokenizers import Tokenizer, models
from transformers import AutoModelForMaskedLM, BertConfig, RobertaConfig

SIZES = {
    "minilm": ("bert", dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512)),
    "roberta-base": ("roberta", dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)),
    # For scripts/gpu-check's memory row.
    "roberta-large": ("roberta", dict(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)),
}
# The benchmark's shapes; the Rust driver gets the same numbers from scripts/bench-train.
BATCH, TEXT, PROMPT = 16, 128, 100
# Two label words, as a binary task (promptgrid's driver uses the same ids).
LABEL_IDS = [100, 200]


def make(size, out):
    kind, kw = SIZES[size]
    config = BertConfig(**kw) if kind == "bert" else RobertaConfig(**kw)
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(config)
    model.save_pretrained(out, safe_serialization=True)
    specials = ["[PAD]", "<pad>", "[UNK]", "[MASK]", "<mask>"] if kind == "bert" else ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials + [f"t{i}" for i in range(kw["vocab_size"] - len(specials))])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=specials[2] if kind == "bert" else "<unk>"))
    tok.save(os.path.join(out, "tokenizer.json"))


def sync(device):
    """Waits for the device's queued work, so that the clock read after it counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inputs(size, vocab, device):
    """The synthetic batch: the Rust driver's first 16 inputs (ids, the mask in the middle)."""
    ids = 5 + (torch.arange(BATCH).unsqueeze(1) * 7919 + torch.arange(TEXT).unsqueeze(0) * 104729) % (vocab - 5)
    ids[:, TEXT // 2] = 3 if SIZES[size][0] == "bert" else 4
    return ids.to(device), torch.ones_like(ids), (torch.arange(BATCH) % 2).to(device)


class SameWork:
    """promptgrid's prompt-tuning step in PyTorch eager, on the transformers modules of a
    frozen masked LM (see the module docstring and scripts/bench-train for what differs)."""

    def __init__(self, model, device):
        self.model = model
        self.encoder = model.base_model
        self.layers = self.encoder.encoder.layer
        self.heads = model.config.num_attention_heads
        offset = model.config.pad_token_id + 1 if model.config.model_type == "roberta" else 0
        self.positions = torch.arange(offset, offset + PROMPT + TEXT, device=device).unsqueeze(0)
        if model.config.model_type == "roberta":
            head = model.lm_head
            self.transform = lambda h: head.layer_norm(torch.nn.functional.gelu(head.dense(h)))
        else:
            head = model.cls.predictions
            self.transform = head.transform
        self.decoder = head.decoder

    def truncate(self):
        """From now on layers 0..L-2 run whole through transformers' own forward, and the last
        at the mask row only (`scores`), as promptgrid's last layer does."""
        self.encoder.encoder.layer = self.layers[:-1]

    def scores(self, prompt, ids, att, mask_pos, label_ids):
        n, d = ids.shape[0], prompt.shape[1]
        words = self.encoder.embeddings.word_embeddings(ids)
        embeds = torch.cat([prompt.unsqueeze(0).expand(n, -1, -1), words], 1)
        att = torch.cat([torch.ones(n, prompt.shape[0], dtype=att.dtype, device=att.device), att], 1)
        hidden = self.encoder(inputs_embeds=embeds, attention_mask=att, position_ids=self.positions).last_hidden_state
        # The last layer: keys and values over all rows, everything else at the mask row.
        last = self.layers[-1]
        sa = last.attention.self
        row = hidden[torch.arange(n, device=hidden.device), mask_pos].unsqueeze(1)
        split = lambda x: x.view(n, x.shape[1], self.heads, d // self.heads).transpose(1, 2)
        mask = att.bool()[:, None, None, :]
        ctx = torch.nn.functional.scaled_dot_product_attention(split(sa.query(row)), split(sa.key(hidden)), split(sa.value(hidden)), attn_mask=mask)
        a = last.attention.output(ctx.transpose(1, 2).reshape(n, 1, d), row)
        h = last.output(last.intermediate(a), a).squeeze(1)
        # The head's decoder for the label words' rows only.
        t = self.transform(h)
        return torch.nn.functional.linear(t, self.decoder.weight[label_ids], self.decoder.bias[label_ids])


def mask_scores(model, prompt, ids, att, position, label_ids, positions):
    """The full model's label-word logits at the mask, untimed, for checking the same-work
    forward (the head at the mask rows only, so no [N, S, V] logits raise the peak memory)."""
    with torch.no_grad():
        embeds = torch.cat([prompt.unsqueeze(0).expand(ids.shape[0], -1, -1), model.get_input_embeddings()(ids)], 1)
        att = torch.cat([torch.ones(ids.shape[0], prompt.shape[0], dtype=att.dtype, device=att.device), att], 1)
        hidden = model.base_model(inputs_embeds=embeds, attention_mask=att, position_ids=positions).last_hidden_state
        head = model.lm_head if model.config.model_type == "roberta" else model.cls
        return head(hidden[:, position])[:, label_ids]


def time_steps(impl, size, out, steps, precision, device):
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    device = torch.device(device)
    base = AutoModelForMaskedLM.from_pretrained(out, attn_implementation="sdpa").to(device)
    vocab = base.config.vocab_size
    ids, att, labels = inputs(size, vocab, device)
    label_ids = torch.tensor(LABEL_IDS, device=device)
    torch.manual_seed(0)
    if impl == "peft":
        from peft import PromptTuningConfig, get_peft_model

        model = get_peft_model(base, PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=PROMPT))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]

        def loss_fn():
            logits = model(input_ids=ids, attention_mask=att).logits
            return torch.nn.functional.cross_entropy(logits[:, PROMPT + TEXT // 2][:, label_ids], labels)
    else:
        base.eval().requires_grad_(False)
        # Normal(0, 0.02), as promptgrid's random init.
        prompt = (torch.randn(PROMPT, base.config.hidden_size) * 0.02).to(device).requires_grad_(True)
        params = [prompt]
        mask_pos = torch.full((BATCH,), PROMPT + TEXT // 2, device=device)
        work = SameWork(base, device)
        want = mask_scores(base, prompt, ids, att, PROMPT + TEXT // 2, label_ids, work.positions)
        work.truncate()
        with torch.no_grad():
            err = (work.scores(prompt, ids, att, mask_pos, label_ids) - want).abs().max().item()
        assert err < 1e-4, f"the same-work scores differ from the model's by {err}"

        def loss_fn():
            scores = work.scores(prompt, ids, att, mask_pos, label_ids)
            return torch.nn.functional.cross_entropy(scores.float(), labels)
    # promptgrid's AdamW settings (lr 0.3, no weight decay, eps 1e-8; its eps sits before the
    # bias correction, as transformers.AdamW's: the same work).
    opt = torch.optim.AdamW(params, lr=0.3, weight_decay=0.0, eps=1e-8)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    if precision == "bf16" and impl == "peft":
        sys.exit("bench_train.py: the PEFT baseline runs in float32 only")
    times = []
    for _ in range(steps + 1):
        sync(device)
        start = time.perf_counter()
        with autocast:
            loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if impl == "same-work":
            # promptgrid reads every step's loss (to stop on NaN): the same host sync.
            loss.item()
        sync(device)
        times.append(time.perf_counter() - start)
    emit(impl, precision, device, times[1:])


def emit(impl, precision, device, times):
    """One JSON line: the step times after the warm-up one, peak RSS and GPU memory."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = {"impl": impl, "precision": precision, "step_s_median": statistics.median(times), "step_s_min": min(times), "peak_rss_mib": round(peak), "steps": times, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        line["peak_gpu_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20)
    print(json.dumps(line))


def matmul_peak(device, n):
    """FLOP/s of an n³ matmul in float32 and bf16 (the best of a few runs after a warm-up)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    device = torch.device(device)
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        best = float("inf")
        for _ in range(4):
            sync(device)
            start = time.perf_counter()
            a @ b
            sync(device)
            best = min(best, time.perf_counter() - start)
        peaks[name] = 2 * n**3 / best
    print(json.dumps({"impl": "matmul peak", "n": n, **peaks}))


def step_flops(size):
    """Matmul FLOPs of one promptgrid step (see scripts/bench-train's header for the formula)."""
    kw = SIZES[size][1]
    n, s, d, i, layers = BATCH, PROMPT + TEXT, kw["hidden_size"], kw["intermediate_size"], kw["num_hidden_layers"]
    k = len(LABEL_IDS)
    # Forward: linear layers (QKV, output, two FFN) and attention products (QKᵀ, PV).
    linear = (layers - 1) * 2 * n * s * (4 * d * d + 2 * d * i)
    attention = (layers - 1) * 4 * n * s * s * d
    # The last layer: K and V over all rows, the rest at the mask row; then the head.
    linear += 2 * n * (2 * s * d * d + 2 * d * d + 2 * d * i) + 2 * n * (d * d + d * k)
    attention += 4 * n * s * d
    # Backward for input gradients only: one product per linear layer (the weights are frozen),
    # two per attention product (both operands depend on the prompt).
    return 2 * linear + 3 * attention


def table(size, path):
    rows = {}
    peak = None
    for line in open(path):
        r = json.loads(line)
        if r["impl"] == "matmul peak":
            peak = r
        elif r["steps"]:
            # One median for every row (the drivers' own differ for an even count).
            r["step_s_median"], r["step_s_min"] = statistics.median(r["steps"]), min(r["steps"])
            rows[(r["impl"], r["precision"])] = r
    flops = step_flops(size)
    order = [("promptgrid", "fp32", "promptgrid fp32"), ("promptgrid", "bf16", "promptgrid bf16"),
             ("peft", "fp32", "PEFT baseline fp32"), ("same-work", "fp32", "same-work fp32"),
             ("same-work", "bf16", "same-work bf16 (autocast)")]
    print(f"step: {flops / 1e9:.1f} GFLOP (matmuls, forward + input-gradient backward); "
          f"matmul peak ({peak['n']}³): fp32 {peak['fp32'] / 1e9:.0f}, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s")
    gpu = any("peak_gpu_mib" in r for r in rows.values())
    print(f"{'row':<27}{'median s':>9}{'min s':>8}{'peak RSS MiB':>13}" + (f"{'peak GPU MiB':>13}" if gpu else "")
          + f"{'promptgrid/row':>15}{'% of peak':>10}")
    for impl, prec, name in order:
        r = rows.get((impl, prec))
        if r is None:
            print(f"{name:<27}{'(not run)':>9}")
            continue
        ours = rows.get(("promptgrid", prec))
        ratio = f"{ours['step_s_median'] / r['step_s_median']:.2f}x" if ours else "-"
        share = flops / r["step_s_median"] / peak[prec]
        gpu_col = f"{r.get('peak_gpu_mib', '-'):>13}" if gpu else ""
        print(f"{name:<27}{r['step_s_median']:>9.3f}{r['step_s_min']:>8.3f}{r['peak_rss_mib']:>13}{gpu_col}{ratio:>15}{share:>10.0%}")
    pg32, pg16 = rows.get(("promptgrid", "fp32")), rows.get(("promptgrid", "bf16"))
    if pg32 and pg16:
        print(f"promptgrid bf16 / fp32: {pg16['step_s_median'] / pg32['step_s_median']:.2f}x")
    if pg32 and "eval14_batched_s" in pg32:
        print(f"scoring 14 prompts on {pg32['eval_examples']} examples (fp32, one model load on each side, "
              f"load {pg32['load_s']:.2f} s): batched {pg32['eval14_batched_s']:.2f} s, "
              f"one pass per prompt {pg32['eval14_separate_s']:.2f} s "
              f"({pg32['eval14_separate_s'] / pg32['eval14_batched_s']:.2f}x)")


def pairs(path):
    """promptgrid's bf16/fp32 ratio from steps timed alternately, a float32 run then a bf16 one
    per pair: a host whose speed drifts during the table moves both sides of a pair alike."""
    runs = [json.loads(line) for line in open(path)]
    by_prec = {p: [statistics.median(r["steps"]) for r in runs if r["precision"] == p] for p in ("fp32", "bf16")}
    ratios = [b / f for f, b in zip(by_prec["fp32"], by_prec["bf16"])]
    if ratios:
        listed = ", ".join(f"{r:.3f}x" for r in ratios)
        print(f"promptgrid bf16 / fp32, {len(ratios)} alternating pairs: {listed} "
              f"(median {statistics.median(ratios):.3f}x)")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("size", choices=SIZES)
    m.add_argument("dir")
    t = sub.add_parser("time")
    t.add_argument("impl", choices=["peft", "same-work"])
    t.add_argument("size", choices=SIZES)
    t.add_argument("dir")
    t.add_argument("steps", type=int)
    t.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    t.add_argument("--device", default="cpu")
    ap = sub.add_parser("pairs")
    ap.add_argument("jsonl")
    k = sub.add_parser("peak")
    k.add_argument("--device", default="cpu")
    k.add_argument("--size", type=int, default=2048)
    tb = sub.add_parser("table")
    tb.add_argument("size", choices=SIZES)
    tb.add_argument("results")
    a = p.parse_args()
    if a.cmd == "make":
        make(a.size, a.dir)
    elif a.cmd == "time":
        time_steps(a.impl, a.size, a.dir, a.steps, a.precision, a.device)
    elif a.cmd == "peak":
        matmul_peak(a.device, a.size)
    elif a.cmd == "pairs":
        pairs(a.jsonl)
    else:
        table(a.size, a.results)


if __name__ == "__main__":
    main()
