#!/usr/bin/env python
"""Parity fixture for the cross-model projector's task objective (ml/src/projector.rs),
re-implementing the official training step of Prompt-Transferability-1.0 (commit 2d15de5) in a
few lines, on the tiny RoBERTa of ml/tests/data:

* projector: AE_1_layer_mutiple_100_paper (tools/projector.py:170-205): flatten the [L, d_src]
  prompt, Linear(L*d_src -> h), tanh, Linear(h -> L*d_tgt), reshape, LayerNorm(d_tgt, eps 1e-5).
* optimizer: transformers.AdamW(eps=1e-06, lr=0.005, weight_decay=0.0, correct_bias=True)
  (tools/train_tool_cross.py:176). transformers 5 no longer ships it, so its update is written
  out below (transformers 4.x optimization.py: eps added to sqrt(v) before the bias correction,
  which is folded into the step size).
* loss: cross-entropy over the union verbalizer, every task's scores taken at the same list of
  label tokens, with each task's labels remapped into that list (model/crossPrompt.py:321-332,
  dataset/crossDataset.py:534, 577, 609, 657, 698).

The target model runs in eval mode with the prefix layout, inputs_embeds = concat(P, E[ids])
(as scripts/make-parity-fixtures.py; the official layout has its own fixtures). Tasks are
visited round robin, one full task per step, as promptgrid's `train_task` does (the official
sampler mixes tasks within a batch: dataset/crossDataset.py:53-63).

Writes ml/tests/data/projector/: init.safetensors (the projector before training, in
promptgrid's projector file format), expected.safetensors (the source prompts, the loss of
every step, the weights after training) and inputs.json (texts, label ids, labels).

Run: `. scripts/env.sh && python scripts/make-projector-fixtures.py` (deterministic: CPU).
"""

import json
import math
import os

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import RobertaForMaskedLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "ml", "tests", "data")
OUT = os.path.join(DATA, "projector")

PROMPT_LEN = 4
D_SRC = 12
HIDDEN = 16
STEPS = 6
LR = 0.005  # tools/train_tool_cross.py:176
EPS = 1e-6  # tools/train_tool_cross.py:176
SUFFIX = " it was "
# Two tasks sharing one label word ("great"), so the union has three.
TASKS = [
    {"texts": ["the movie was great and the music was fun .", "this film is boring , the plot is awful",
               "i love it"], "words": ["terrible", "great"], "labels": [1, 0, 1]},
    {"texts": ["the plot is fun", "boring music", "i love the film"],
     "words": ["great", "boring"], "labels": [0, 1, 0]},
]


def hf_adamw_step(params, grads, state, t):
    """transformers.AdamW.step with betas (0.9, 0.999), weight_decay 0, correct_bias True."""
    b1, b2 = 0.9, 0.999
    step_size = LR * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    for p, g, (m, v) in zip(params, grads, state):
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.data.addcdiv_(m, v.sqrt().add_(EPS), value=-step_size)


def main():
    torch.set_num_threads(1)
    model = RobertaForMaskedLM.from_pretrained(os.path.join(DATA, "tiny-roberta")).eval()
    for w in model.parameters():
        w.requires_grad_(False)
    tok = Tokenizer.from_file(os.path.join(DATA, "tiny-roberta", "tokenizer.json"))
    d_tgt = model.config.hidden_size
    emb = model.get_input_embeddings()

    # The union verbalizer: label tokens in order of first appearance, labels remapped into it.
    union, tasks = [], []
    for t in TASKS:
        ids = []
        for w in t["words"]:
            # Leading-space words are single tokens of this BPE (as in make-parity-fixtures.py).
            piece = tok.encode(" " + w, add_special_tokens=False).ids
            assert len(piece) == 1, (w, piece)
            ids.append(piece[0])
        for i in ids:
            if i not in union:
                union.append(i)
        encs = [tok.encode(x + SUFFIX + "<mask>") for x in t["texts"]]
        width = max(len(e.ids) for e in encs)
        input_ids = torch.full((len(encs), width), model.config.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(encs), width), dtype=torch.long)
        for r, e in enumerate(encs):
            input_ids[r, : len(e.ids)] = torch.tensor(e.ids)
            att[r, : len(e.ids)] = 1
        mask_pos = [e.ids.index(tok.token_to_id("<mask>")) for e in encs]
        tasks.append({"label_ids": ids, "ids": input_ids, "att": att, "mask_pos": mask_pos,
                      "labels": t["labels"]})
    for t in tasks:
        t["union_labels"] = torch.tensor([union.index(t["label_ids"][l]) for l in t["labels"]])

    g = torch.Generator().manual_seed(11)
    sources = [torch.randn(PROMPT_LEN, D_SRC, generator=g) for _ in TASKS]
    enc = torch.nn.Linear(PROMPT_LEN * D_SRC, HIDDEN)
    dec = torch.nn.Linear(HIDDEN, PROMPT_LEN * d_tgt)
    norm = torch.nn.LayerNorm(d_tgt, eps=1e-5)
    torch.manual_seed(5)
    for lin in (enc, dec):
        torch.nn.init.normal_(lin.weight, std=0.3)
        torch.nn.init.normal_(lin.bias, std=0.1)
    torch.nn.init.normal_(norm.weight, mean=1.0, std=0.1)
    torch.nn.init.normal_(norm.bias, std=0.1)
    params = [enc.weight, enc.bias, dec.weight, dec.bias, norm.weight, norm.bias]
    names = ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias",
             "layer_norm.weight", "layer_norm.bias"]
    os.makedirs(OUT, exist_ok=True)
    meta = {"format": "promptgrid-projector/1", "prompt_len": str(PROMPT_LEN), "d_src": str(D_SRC),
            "d_tgt": str(d_tgt), "hidden": str(HIDDEN), "src_model": "src", "tgt_model": "tiny-roberta",
            "objective": "task", "train_tasks": "a,b"}
    save_file({n: p.detach().clone().contiguous() for n, p in zip(names, params)},
              os.path.join(OUT, "init.safetensors"), metadata=meta)

    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    union_t = torch.tensor(union)
    losses = []
    for step in range(STEPS):
        k = step % len(tasks)
        t = tasks[k]
        # model/crossPrompt.py:289-294: flatten, AE, reshape; then the LayerNorm inside the AE.
        flat = sources[k].reshape(1, PROMPT_LEN * D_SRC)
        prompt = norm(dec(torch.tanh(enc(flat))).reshape(1, PROMPT_LEN, d_tgt))
        n = t["ids"].shape[0]
        embeds = torch.cat([prompt.expand(n, -1, -1), emb(t["ids"])], dim=1)
        att = torch.cat([torch.ones(n, PROMPT_LEN, dtype=torch.long), t["att"]], dim=1)
        logits = model(inputs_embeds=embeds, attention_mask=att).logits
        rows = torch.arange(n)
        at_mask = logits[rows, torch.tensor(t["mask_pos"]) + PROMPT_LEN]
        # model/crossPrompt.py:321 (scores at the union's tokens), :332 (cross-entropy).
        loss = torch.nn.functional.cross_entropy(at_mask[:, union_t], t["union_labels"])
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            hf_adamw_step(params, [p.grad for p in params], state, step + 1)
        losses.append(loss.item())

    expected = {"losses": torch.tensor(losses, dtype=torch.float64)}
    for i, s in enumerate(sources):
        expected[f"source.{i}"] = s
    for n, p in zip(names, params):
        expected[f"final.{n}"] = p.detach().clone()
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(OUT, "expected.safetensors"),
              metadata={"transformers": __import__("transformers").__version__})
    inputs = {"suffix": SUFFIX, "union": union,
              "tasks": [{"texts": T["texts"], "label_ids": t["label_ids"], "labels": T["labels"]}
                        for T, t in zip(TASKS, tasks)],
              "steps": STEPS, "learning_rate": LR}
    with open(os.path.join(OUT, "inputs.json"), "w") as f:
        json.dump(inputs, f, indent=1)
    print("losses", [f"{l:.5f}" for l in losses], "union", union)


if __name__ == "__main__":
    main()
