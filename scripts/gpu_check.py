"""Helper of scripts/gpu-check (read its header for what each row checks).

* `prompt MODEL_DIR OUT`: a prompt file of 20 vocabulary rows of the model's word embeddings.
* `peak-mem OUT DEVICE -- CMD...`: runs CMD (its stdout passes through) and writes its peak
  memory to OUT as JSON: on a GPU, the device's memory in use (nvidia-smi, sampled every 50 ms)
  above what was in use before, so the CUDA context is included; on the CPU, the peak RSS.
* `table DIR DEVICE`: the one table, from the files gpu-check wrote to DIR; exits 1 when a row
  with a bound fails.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

# The "Sizing" table of docs/cluster.md, GB: weights plus activations at batch 16 with 128 text and 100 prompt
# tokens, in fp32; the CUDA context adds about 0.5 GB a process, which the measurement includes.
SIZING = {
    "roberta-base training": (4, 5),
    "roberta-base scoring": (1, 2),
    "t5-base training": (5, 8),
    "roberta-large training": (10, 12),
}
CONTEXT_GB = 0.5
# docs/commands.md, "Precision": bf16 stays within 1% of the float32 scores.
BF16_BAND = 0.01
FP32_TOLERANCE = 1e-4


def make_prompt(model_dir, out):
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    table = next(v for k, v in weights.items() if k.endswith("word_embeddings.weight"))
    ids = torch.randint(1000, table.shape[0], (20,), generator=torch.Generator().manual_seed(0))
    # float32 whatever the checkpoint stores (a carried copy may be bf16), as a tuned prompt is.
    save_file({"prompt": table[ids].float().contiguous()}, out)


def gpu_used_mib(index):
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", str(index)],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[0])


def peak_mem(out, device, cmd):
    gpu = device.startswith("cuda")
    index = int(device.split(":")[1]) if ":" in device else 0
    base = gpu_used_mib(index) if gpu else 0.0
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], gpu_used_mib(index))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    if gpu:
        sampler.start()
    rc = subprocess.run(cmd).returncode
    done.set()
    if gpu:
        sampler.join()
        mib = peak[0] - base
    else:
        mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with open(out, "w") as f:
        json.dump({"mib": mib, "what": "GPU memory in use (nvidia-smi)" if gpu else "peak RSS"}, f)
    sys.exit(rc)


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def table(d, device):
    rows, failed = [], False

    def row(check, ours, ref, measure, bound, ok):
        nonlocal failed
        failed |= ok is False
        rows.append((check, ours, ref, measure, bound, "-" if ok is None else ("ok" if ok else "FAIL")))

    # 1. Scores: the same CLI commands on the device and on the CPU.
    cpu = json.load(open(f"{d}/inspect-cpu.json"))["full_logits"]
    for prec in ("fp32", "bf16"):
        dev = json.load(open(f"{d}/inspect-{prec}.json"))["full_logits"]
        diff = max(abs(a - b) for a, b in zip(dev, cpu))
        top = max(abs(b) for b in cpu)
        if prec == "fp32":
            row("MiniLM-L6 logits, fp32", f"{device}", "cpu fp32", f"max |Δ| {diff:.2e}", f"≤ {FP32_TOLERANCE:g}", diff <= FP32_TOLERANCE)
        else:
            row("MiniLM-L6 logits, bf16", f"{device} bf16", "cpu fp32", f"max |Δ|/max|x| {diff / top:.2%}", f"≤ {BF16_BAND:.0%}", diff / top <= BF16_BAND)
    acc_cpu = json.load(open(f"{d}/eval-cpu.json"))[0]["accuracy"]
    for prec in ("fp32", "bf16"):
        acc = json.load(open(f"{d}/eval-{prec}.json"))[0]["accuracy"]
        if prec == "fp32":
            row("demo-movies accuracy, fp32", f"{acc:.4f}", f"{acc_cpu:.4f} (cpu)", f"|Δ| {abs(acc - acc_cpu):.4f}", f"≤ {FP32_TOLERANCE:g}", abs(acc - acc_cpu) <= FP32_TOLERANCE)
        else:
            rel = abs(acc - acc_cpu) / acc_cpu
            row("demo-movies accuracy, bf16", f"{acc:.4f}", f"{acc_cpu:.4f} (cpu fp32)", f"|Δ|/x {rel:.2%}", f"≤ {BF16_BAND:.0%}", rel <= BF16_BAND)
    # 2. The training step against same-work PyTorch on the same device.
    train = {(r["impl"], r["precision"]): r for r in lines(f"{d}/train.jsonl")}
    size = open(f"{d}/train-size").read().strip()
    for prec in ("fp32", "bf16"):
        ours, ref = train[("promptgrid", prec)], train[("same-work", prec)]
        ours["step_s_median"], ref["step_s_median"] = statistics.median(ours["steps"]), statistics.median(ref["steps"])
        ratio = ours["step_s_median"] / ref["step_s_median"]
        torch_name = "same-work torch" + (" autocast" if prec == "bf16" else "")
        row(f"{size} training step, {prec}", f"{ours['step_s_median'] * 1e3:.1f} ms", f"{ref['step_s_median'] * 1e3:.1f} ms ({torch_name})",
            f"promptgrid/torch {ratio:.2f}x", "", None)
    # 3. Greedy decoding against transformers.
    rust, hf = json.load(open(f"{d}/generate-rust.json")), json.load(open(f"{d}/generate-hf.json"))
    rate = lambda r: r["batch"] * r["steps"] / sorted(r["seconds"])[len(r["seconds"]) // 2]
    same = rust["sequences"] == hf["sequences"]
    row("T5 greedy decoding", f"{rate(rust):.0f} tok/s", f"{rate(hf):.0f} tok/s (transformers)",
        f"{rate(rust) / rate(hf):.2f}x, same tokens: {'yes' if same else 'NO'}", "same tokens", same)
    # 4. Peak memory against the sizing table of docs/cluster.md.
    for key in SIZING:
        path = f"{d}/mem-{key.replace(' ', '-')}.json"
        if not os.path.exists(path):
            continue
        m = json.load(open(path))
        used = open(path.replace(".json", ".size")).read().strip()
        gib = m["mib"] / 1024
        lo, hi = SIZING[key]
        label = f"peak memory, {key}" + ("" if key.startswith(used + " ") else f" (ran {used})")
        if device.startswith("cuda"):
            ok = gib <= hi + CONTEXT_GB
            note = " (below)" if gib < lo else ""
            row(label, f"{gib:.2f} GiB{note}", f"sizing {lo}-{hi} GB", m["what"], f"≤ {hi + CONTEXT_GB:g} (with context)", ok)
        else:
            row(label, f"{gib:.2f} GiB", f"sizing {lo}-{hi} GB (GPU)", m["what"], "dry run: not compared", None)
    widths = [max(len(str(r[i])) for r in rows + [HEADER]) for i in range(len(HEADER))]
    for r in [HEADER] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return 1 if failed else 0


HEADER = ("check", "promptgrid", "reference", "measured", "bound", "result")


def main():
    cmd = sys.argv[1]
    if cmd == "prompt":
        make_prompt(sys.argv[2], sys.argv[3])
    elif cmd == "peak-mem":
        assert sys.argv[4] == "--", "usage: peak-mem OUT DEVICE -- CMD..."
        peak_mem(sys.argv[2], sys.argv[3], sys.argv[5:])
    elif cmd == "table":
        sys.exit(table(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
