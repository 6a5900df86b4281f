"""Helper of scripts/bench-train: `make SIZE DIR` writes a random-weight checkpoint with a
synthetic tokenizer; `time SIZE DIR STEPS` times transformers + peft prompt-tuning steps on it."""
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
}


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


def time_steps(size, out, steps):
    from peft import PromptTuningConfig, get_peft_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    base = AutoModelForMaskedLM.from_pretrained(out, attn_implementation="sdpa")
    model = get_peft_model(base, PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=100))
    model.train()
    vocab = base.config.vocab_size
    b, t, l = 16, 128, 100
    ids = 5 + (torch.arange(b).unsqueeze(1) * 7919 + torch.arange(t).unsqueeze(0) * 104729) % (vocab - 5)
    mask_id = 3 if SIZES[size][0] == "bert" else 4
    ids[:, t // 2] = mask_id
    att = torch.ones_like(ids)
    labels = torch.arange(b) % 2
    label_ids = torch.tensor([100, 200])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.3, weight_decay=0.0)
    times = []
    torch.manual_seed(0)
    for _ in range(steps + 1):
        start = time.perf_counter()
        logits = model(input_ids=ids, attention_mask=att).logits
        scores = logits[:, l + t // 2][:, label_ids]
        loss = torch.nn.functional.cross_entropy(scores, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    times = times[1:]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "transformers+peft", "step_s_median": round(statistics.median(times), 4), "step_s_min": round(min(times), 4), "peak_rss_mib": round(peak), "steps": [round(x, 4) for x in times], "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    else:
        time_steps(sys.argv[2], sys.argv[3], int(sys.argv[4]))
