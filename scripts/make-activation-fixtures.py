#!/usr/bin/env python
"""Golden FFN activations for the ON indicator (ml/src/activations.rs), from Hugging Face
`transformers` forward hooks on the existing tiny checkpoints (it only reads them):

* tiny-bert, tiny-roberta (BertForMaskedLM / RobertaForMaskedLM): the input is the prompt plus
  the start token, read at the mask (docs/design.md, "Transferability indicators"). The hook is on each
  `encoder.layer[i].intermediate` (its output is after the activation function), and records the
  row at the readout position:
  - prefix:   inputs_embeds = [P ; E[start] ; E[mask]], positions as transformers makes them for
              inputs_embeds, read at the mask (row L + 1);
  - official: as promptgrid's official layout (model.rs `assemble`): the mask token's embedding
              replaces prompt slot 0, the text is E[start] alone, prompt positions are 0 and
              their position embeddings are multiplied by 0 (a forward hook on
              `embeddings.position_embeddings`), the text's positions start at the model's
              first position id; read at row 0.
* t5-v1_1 (T5ForConditionalGeneration): encoder inputs_embeds = [P ; E[<extra_id_0>]], nothing
  after it, as the official probe (Prompt-Transferability-1.0 formatter/
  activate_neuronPromptT5Formatter.py:40-46); <extra_id_0> is id 95 (T5_EXTRA_ID_0), the id the
  tests' word-level tokenizer gives it (ml/tests/t5util). Decoder input =
  decoder_start_token_id (the official target [0], activate_neuronPromptT5Formatter.py:60); the
  hook is on each decoder block's `DenseReluDense.act` (as in make-t5-fixtures.py), row of
  decoding step 0 (activate_neuron_T5.py:187, 258).

Each goes to ml/tests/data/<name>/activations.safetensors:

  prompt [L, d]                 the soft prompt (torch.manual_seed, fixed per model)
  probe_ids [2]                 (encoders) [start, mask] token ids
  act.prefix.{i}, act.official.{i} [intermediate_size]   (encoders) layer i's activation
  act.decoder.{i} [d_ff]        (T5) decoder layer i's FFN activation at step 0

Run: . scripts/env.sh && python scripts/make-activation-fixtures.py (deterministic, CPU).
"""
import os
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import BertForMaskedLM, RobertaForMaskedLM, T5ForConditionalGeneration

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ml", "tests", "data")
PROMPT_LEN = 5


def intermediate_hooks(layers, row, out):
    """Forward hooks that store each layer's intermediate output at `row` into out[i]."""
    return [
        layer.intermediate.register_forward_hook(
            lambda _m, _i, o, i=i: out.__setitem__(i, o[0, row].detach().clone())
        )
        for i, layer in enumerate(layers)
    ]


def encoder(name, cls, start_token, mask_token, seed):
    d = os.path.join(DATA, name)
    model = cls.from_pretrained(d).eval()
    base = model.base_model
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    start, mask = tok.token_to_id(start_token), tok.token_to_id(mask_token)
    cfg = model.config
    torch.manual_seed(seed)
    prompt = torch.randn(PROMPT_LEN, cfg.hidden_size) * 0.5
    emb = model.get_input_embeddings().weight.detach()
    n_layers = len(base.encoder.layer)
    out = {"prompt": prompt, "probe_ids": torch.tensor([start, mask])}

    # Prefix: [P ; E[start] ; E[mask]], read at the mask.
    acts = {}
    hooks = intermediate_hooks(base.encoder.layer, PROMPT_LEN + 1, acts)
    embeds = torch.cat([prompt, emb[[start, mask]]]).unsqueeze(0)
    with torch.no_grad():
        model(inputs_embeds=embeds, attention_mask=torch.ones(1, embeds.shape[1], dtype=torch.long))
    for h in hooks:
        h.remove()
    assert len(acts) == n_layers
    out.update({f"act.prefix.{i}": a for i, a in acts.items()})

    # Official: [E[mask], P[1:], E[start]], prompt positions 0 with their embeddings zeroed.
    offset = cfg.pad_token_id + 1 if cfg.model_type == "roberta" else 0
    embeds = torch.cat([emb[[mask]], prompt[1:], emb[[start]]]).unsqueeze(0)
    positions = torch.tensor([[0] * PROMPT_LEN + [offset]])
    keep = torch.tensor([0.0] * PROMPT_LEN + [1.0])
    called = []

    def zero_prompt_positions(_m, _i, o):
        called.append(True)
        return o * keep.unsqueeze(-1)

    acts = {}
    hooks = intermediate_hooks(base.encoder.layer, 0, acts)
    hooks.append(base.embeddings.position_embeddings.register_forward_hook(zero_prompt_positions))
    with torch.no_grad():
        model(
            inputs_embeds=embeds,
            position_ids=positions,
            attention_mask=torch.ones(1, embeds.shape[1], dtype=torch.long),
        )
    for h in hooks:
        h.remove()
    assert called and len(acts) == n_layers
    out.update({f"act.official.{i}": a for i, a in acts.items()})
    save(name, out)


T5_EXTRA_ID_0 = 95


def t5(name, seed):
    d = os.path.join(DATA, name)
    model = T5ForConditionalGeneration.from_pretrained(d).eval()
    cfg = model.config
    torch.manual_seed(seed)
    prompt = torch.randn(PROMPT_LEN, cfg.d_model)
    acts = {}
    hooks = [
        blk.layer[-1].DenseReluDense.act.register_forward_hook(
            lambda _m, _i, o, i=i: acts.__setitem__(i, o[0, 0].detach().clone())
        )
        for i, blk in enumerate(model.decoder.block)
    ]
    embeds = torch.cat([prompt, model.shared.weight.detach()[[T5_EXTRA_ID_0]]]).unsqueeze(0)
    with torch.no_grad():
        model(
            inputs_embeds=embeds,
            attention_mask=torch.ones(1, embeds.shape[1], dtype=torch.long),
            decoder_input_ids=torch.tensor([[cfg.decoder_start_token_id]]),
        )
    for h in hooks:
        h.remove()
    assert len(acts) == len(model.decoder.block)
    out = {"prompt": prompt, "probe_ids": torch.tensor([T5_EXTRA_ID_0])}
    out.update({f"act.decoder.{i}": a for i, a in acts.items()})
    save(name, out)


def save(name, tensors):
    path = os.path.join(DATA, name, "activations.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path,
              metadata={"transformers": __import__("transformers").__version__})
    acts = [v for k, v in tensors.items() if k.startswith("act.")]
    nearest = min(a.abs().min().item() for a in acts)
    active = sum((a > 0).sum().item() for a in acts) / sum(a.numel() for a in acts)
    # A value within float noise of 0 would make the mask's bit a coin toss; the tests skip
    # bits closer than 1e-4, and this says how many there are.
    close = sum((a.abs() < 1e-4).sum().item() for a in acts)
    print(f"{name}: {len(acts)} vectors, {active:.1%} active, min |act| {nearest:.2e}, "
          f"{close} within 1e-4 of 0")


def main():
    torch.set_num_threads(1)
    # `t5` as the only argument regenerates the T5 fixture alone.
    if sys.argv[1:] != ["t5"]:
        encoder("tiny-bert", BertForMaskedLM, "[CLS]", "[MASK]", seed=24)
        encoder("tiny-roberta", RobertaForMaskedLM, "<s>", "<mask>", seed=22)
    t5("t5-v1_1", seed=23)


if __name__ == "__main__":
    main()
