"""Helper of scripts/bench-t5 (and scripts/gpu-check).

* `make DIR [--size small|base] [--batch B --text T --prompt P --target S]`: a random-weight T5
  checkpoint (t5-v1_1-small's shape, or t5-base's for sizing; built offline from a config, no hub
  access) and `bench_inputs.safetensors`: `input_ids` / `attention_mask` [B, T] (rows
  right-padded to different lengths), `target_ids` [B, S] and a soft `prompt` [P, d_model].
* `time MODE DIR [--new-tokens N --repeats R --threads K --device D]`, MODE `generate` or
  `train`: times transformers on that folder with the prompt in front of the input as
  `inputs_embeds`; prints one JSON line like the Rust driver's (ml/examples/bench_t5.rs).
  `generate` is greedy `generate`; `train` is one prompt-tuning step's forward and backward: the
  teacher-forced loss with `labels=` in eval mode, the gradient reaching the prompt alone.
* `table RUST_JSONS HF_JSONS` (comma-separated, one per round and mode): prints the comparison
  (best and median run per mode) and checks that both decoded the same tokens.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from safetensors.torch import load_file, save_file
from transformers import T5Config, T5ForConditionalGeneration

SHAPES = {
    # google/t5-v1_1-small's shape.
    "small": dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6, feed_forward_proj="gated-gelu"),
    # t5-base's (the sizing table of docs/cluster.md), with an untied head like the small one.
    "base": dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12, feed_forward_proj="relu"),
}
COMMON = dict(relative_attention_num_buckets=32, relative_attention_max_distance=128, tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def config_of(out):
    with open(os.path.join(out, "config.json")) as f:
        return T5Config(**json.load(f))


def make(out, size, batch, text, prompt_len, target):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    config = T5Config(**SHAPES[size], **COMMON)
    model = T5ForConditionalGeneration(config).eval()
    # transformers 5 ties lm_head to shared at construction even for v1.1 (and a tied random
    # model only repeats its start token); give it its own weights, as real v1.1 checkpoints.
    lm_head = torch.randn(config.vocab_size, config.d_model)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()
          if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
    sd["lm_head.weight"] = lm_head
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    saved = model.config.to_dict()
    saved["tie_word_embeddings"] = False
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(saved, f, indent=2)
    vocab = config.vocab_size
    ids = 2 + (torch.arange(batch).unsqueeze(1) * 7919 + torch.arange(text).unsqueeze(0) * 104729) % (vocab - 2)
    lengths = torch.tensor([max(text - 5 * i, 1) for i in range(batch)])
    mask = (torch.arange(text).unsqueeze(0) < lengths.unsqueeze(1)).long()
    ids = ids.masked_fill(mask == 0, config.pad_token_id).long()
    targets = 2 + (torch.arange(batch).unsqueeze(1) * 31 + torch.arange(target).unsqueeze(0) * 7) % (vocab - 2)
    prompt = torch.randn(prompt_len, config.d_model) * 0.5
    save_file({"input_ids": ids, "attention_mask": mask, "target_ids": targets.long(), "prompt": prompt.contiguous()},
              os.path.join(out, "bench_inputs.safetensors"))


def load(out):
    """The checkpoint `make` wrote, with its own lm_head (see there)."""
    model = T5ForConditionalGeneration(config_of(out)).eval()
    sd = load_file(os.path.join(out, "model.safetensors"))
    model.lm_head.weight = torch.nn.Parameter(sd.pop("lm_head.weight"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("embed_tokens" in k or k == "lm_head.weight" for k in missing), (missing, unexpected)
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    return model


def sync(device):
    """Waits for the device's queued work, so that the clock read after it counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(mode, out, max_new_tokens, repeats, threads, device):
    torch.set_num_threads(threads)
    device = torch.device(device)
    model = load(out).to(device).requires_grad_(False)
    inputs = {k: v.to(device) for k, v in load_file(os.path.join(out, "bench_inputs.safetensors")).items()}
    ids, mask, prompt, targets = inputs["input_ids"], inputs["attention_mask"], inputs["prompt"], inputs["target_ids"]
    b = ids.shape[0]
    att = torch.cat([torch.ones(b, prompt.shape[0], dtype=mask.dtype, device=device), mask], 1)
    prompt.requires_grad_(mode == "train")

    def embeds():
        # As a prompt-tuned model runs: [P ; E(ids)] as inputs_embeds, the prompt attended.
        return torch.cat([prompt.unsqueeze(0).expand(b, -1, -1), model.shared(ids)], 1)

    seconds, cpu, sequences = [], [], None
    for i in range(repeats + 1):
        sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        if mode == "generate":
            with torch.inference_mode():
                sequences = model.generate(inputs_embeds=embeds(), attention_mask=att, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        else:
            loss = model(inputs_embeds=embeds(), attention_mask=att, labels=targets).loss
            prompt.grad = None
            loss.backward()
            # promptgrid reads every step's loss (to stop on NaN): the same host sync.
            loss.item()
        sync(device)
        elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
        if i > 0:
            seconds.append(elapsed)
            cpu.append(cpu_elapsed)
    line = {"impl": "transformers", "mode": mode, "threads": torch.get_num_threads(), "batch": b, "seconds": seconds, "cpu_seconds": cpu}
    if mode == "generate":
        line.update(steps=sequences.shape[1] - 1, sequences=sequences.tolist())
    else:
        line.update(input_tokens=att.shape[1], target_tokens=targets.shape[1])
    if device.type == "cuda":
        line["peak_gpu_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20)
    print(json.dumps(line))


def merge(paths):
    """Each mode's runs from several rounds (comma-separated JSON files, one run a file)."""
    merged = {}
    for r in (json.load(open(p)) for p in paths.split(",")):
        m = merged.setdefault(r["mode"], dict(r, seconds=[], cpu_seconds=[]))
        m["seconds"] += r["seconds"]
        m["cpu_seconds"] += r["cpu_seconds"]
        assert r.get("sequences") == m.get("sequences"), "rounds disagree"
    return merged


def table(rust_paths, hf_paths):
    rust, hf = merge(rust_paths), merge(hf_paths)
    print(f"{'workload':<18}{'implementation':<18}{'threads':>8}{'batch':>6}{'runs':>5}{'best s':>9}"
          f"{'median s':>10}{'cpu-s best':>11}{'throughput (median)':>24}")
    ratios = []
    for mode in ("generate", "train"):
        if mode not in rust or mode not in hf:
            continue
        medians = []
        for r in (rust[mode], hf[mode]):
            best, median, cpu = min(r["seconds"]), statistics.median(r["seconds"]), min(r["cpu_seconds"])
            if mode == "generate":
                what, rate = f"{r['steps']} new tokens", f"{r['batch'] * r['steps'] / median:.1f} tok/s"
            else:
                what, rate = f"{r['target_tokens']} target tokens", f"{r['batch'] / median:.1f} examples/s"
            print(f"{('greedy decoding' if mode == 'generate' else 'training step'):<18}{r['impl']:<18}{r['threads']:>8}"
                  f"{r['batch']:>6}{len(r['seconds']):>5}{best:>9.3f}{median:>10.3f}{cpu:>11.3f}{rate:>24}")
            medians.append((best, median, cpu, what))
        (pb, pm, pc, what), (hb, hm, hc, _) = medians
        ratios.append(f"{'greedy decoding' if mode == 'generate' else 'training step'} ({what}): promptgrid / transformers "
                      f"time, best {pb / hb:.2f}x, median {pm / hm:.2f}x, CPU-seconds {pc / hc:.2f}x")
    print("\n".join(ratios))
    if "generate" not in rust or "generate" not in hf:
        return 0
    same = rust["generate"]["sequences"] == hf["generate"]["sequences"]
    print(f"same greedy tokens: {'yes' if same else 'NO'}")
    return 0 if same else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--size", choices=SHAPES, default="small")
    m.add_argument("--batch", type=int, default=8)
    m.add_argument("--text", type=int, default=64)
    m.add_argument("--prompt", type=int, default=20)
    m.add_argument("--target", type=int, default=2)
    t = sub.add_parser("time")
    t.add_argument("mode", choices=["generate", "train"])
    t.add_argument("dir")
    t.add_argument("--new-tokens", type=int, default=32)
    t.add_argument("--repeats", type=int, default=5)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--device", default="cpu")
    tb = sub.add_parser("table")
    tb.add_argument("rust")
    tb.add_argument("hf")
    a = p.parse_args()
    if a.cmd == "make":
        make(a.dir, a.size, a.batch, a.text, a.prompt, a.target)
    elif a.cmd == "time":
        time_mode(a.mode, a.dir, a.new_tokens, a.repeats, a.threads, a.device)
    else:
        sys.exit(table(a.rust, a.hf))


if __name__ == "__main__":
    main()
