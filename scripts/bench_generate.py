"""Helper of scripts/bench-generate.

* `make DIR`: a random-weight T5 v1.1 checkpoint of t5-small's size (built offline from a config,
  no hub access) and `bench_inputs.safetensors`: `input_ids` / `attention_mask` [8, 64] (rows
  right-padded to different lengths) and a soft `prompt` [20, d_model].
* `time DIR [max_new_tokens repeats threads]`: times transformers' greedy `generate` with the
  prompt in front of the input as `inputs_embeds`; prints one JSON line like the Rust driver's.
* `table RUST_JSONS HF_JSONS` (comma-separated, one per round): prints the comparison (best and
  median run) and checks that both produced the same tokens.
"""
import json
import os
import statistics
import sys
import time

import torch
from safetensors.torch import load_file, save_file
from transformers import T5Config, T5ForConditionalGeneration

BATCH, INPUT_LEN, PROMPT_LEN = 8, 64, 20

# google/t5-v1_1-small's shape.
CONFIG = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=8,
              num_decoder_layers=8, num_heads=6, relative_attention_num_buckets=32,
              relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
              tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def make(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**CONFIG)).eval()
    # transformers 5 ties lm_head to shared at construction even for v1.1 (and a tied random
    # model only repeats its start token); give it its own weights, as real v1.1 checkpoints.
    lm_head = torch.randn(CONFIG["vocab_size"], CONFIG["d_model"])
    sd = {k: v.contiguous() for k, v in model.state_dict().items()
          if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
    sd["lm_head.weight"] = lm_head
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["tie_word_embeddings"] = False
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    vocab = CONFIG["vocab_size"]
    ids = 2 + (torch.arange(BATCH).unsqueeze(1) * 7919 + torch.arange(INPUT_LEN).unsqueeze(0) * 104729) % (vocab - 2)
    lengths = torch.tensor([INPUT_LEN - 5 * i for i in range(BATCH)])
    mask = (torch.arange(INPUT_LEN).unsqueeze(0) < lengths.unsqueeze(1)).long()
    ids = ids.masked_fill(mask == 0, CONFIG["pad_token_id"]).long()
    prompt = torch.randn(PROMPT_LEN, CONFIG["d_model"]) * 0.5
    save_file({"input_ids": ids, "attention_mask": mask, "prompt": prompt.contiguous()},
              os.path.join(out, "bench_inputs.safetensors"))


def load(out):
    """The checkpoint `make` wrote, with its own lm_head (see there)."""
    model = T5ForConditionalGeneration(T5Config(**CONFIG)).eval()
    sd = load_file(os.path.join(out, "model.safetensors"))
    model.lm_head.weight = torch.nn.Parameter(sd.pop("lm_head.weight"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("embed_tokens" in k or k == "lm_head.weight" for k in missing), (missing, unexpected)
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    return model


def time_generate(out, max_new_tokens, repeats, threads):
    torch.set_num_threads(threads)
    model = load(out)
    inputs = load_file(os.path.join(out, "bench_inputs.safetensors"))
    ids, mask, prompt = inputs["input_ids"], inputs["attention_mask"], inputs["prompt"]
    b = ids.shape[0]
    seconds, cpu, sequences = [], [], None
    with torch.inference_mode():
        for i in range(repeats + 1):
            start, cpu_start = time.perf_counter(), time.process_time()
            # As a prompt-tuned model runs: [P ; E(ids)] as inputs_embeds, the prompt attended.
            embeds = torch.cat([prompt.unsqueeze(0).expand(b, -1, -1), model.shared(ids)], 1)
            att = torch.cat([torch.ones(b, prompt.shape[0], dtype=mask.dtype), mask], 1)
            sequences = model.generate(inputs_embeds=embeds, attention_mask=att,
                                       max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
            elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
            if i > 0:
                seconds.append(elapsed)
                cpu.append(cpu_elapsed)
    steps = sequences.shape[1] - 1
    median = statistics.median_low(seconds)
    print(json.dumps({
        "impl": "transformers generate",
        "threads": torch.get_num_threads(),
        "batch": b,
        "steps": steps,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "median_s": median,
        "tokens_per_s": b * steps / median,
        "sequences": sequences.tolist(),
    }))


def merge(paths):
    """One implementation's runs from several rounds (comma-separated JSON files)."""
    runs = [json.load(open(p)) for p in paths.split(",")]
    merged = dict(runs[0])
    for key in ("seconds", "cpu_seconds"):
        merged[key] = [t for r in runs for t in r[key]]
    assert all(r["sequences"] == runs[0]["sequences"] for r in runs), "rounds disagree"
    return merged


def table(rust_paths, hf_paths):
    rust, hf = merge(rust_paths), merge(hf_paths)
    rows = []
    for r in (rust, hf):
        tokens = r["batch"] * r["steps"]
        best, median = min(r["seconds"]), statistics.median(r["seconds"])
        cpu = min(r["cpu_seconds"])
        rows.append((r, len(r["seconds"]), best, median, cpu, tokens / best, tokens / median, tokens / cpu))
    print(f"{'implementation':<24}{'threads':>8}{'batch':>6}{'steps':>6}{'runs':>5}{'best s':>9}"
          f"{'median s':>10}{'tok/s best':>12}{'tok/s median':>14}{'tok/cpu-s best':>16}")
    for r, n, best, median, cpu, tps_best, tps_median, tps_cpu in rows:
        print(f"{r['impl']:<24}{r['threads']:>8}{r['batch']:>6}{r['steps']:>6}{n:>5}{best:>9.3f}"
              f"{median:>10.3f}{tps_best:>12.1f}{tps_median:>14.1f}{tps_cpu:>16.1f}")
    print(f"promptgrid / transformers tokens per second: best {rows[0][5] / rows[1][5]:.2f}x, "
          f"median {rows[0][6] / rows[1][6]:.2f}x, per CPU-second {rows[0][7] / rows[1][7]:.2f}x")
    same = rust["sequences"] == hf["sequences"]
    print(f"same greedy tokens: {'yes' if same else 'NO'}")
    return 0 if same else 1


def main():
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2])
    elif cmd == "time":
        nums = [int(a) for a in sys.argv[3:6]] + [32, 5, 2][len(sys.argv[3:6]):]
        time_generate(sys.argv[2], *nums)
    elif cmd == "table":
        sys.exit(table(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
