#!/usr/bin/env python
"""Golden values for the worker's encoder parity tests (ml/tests/encoder/parity.rs).

Builds tiny, randomly initialised BertForMaskedLM and RobertaForMaskedLM with `transformers`
and a tiny WordPiece / byte-level BPE tokenizer with `tokenizers`, all offline, saves each as a
Hugging Face directory under ml/tests/data/<name>/ and records, for fixed inputs with a soft
prompt passed as inputs_embeds = concat(P, E[ids]) (PEFT's prefix layout):
the label-word logits at the mask, the full-vocabulary logits there, the cross-entropy loss and
its gradient with respect to P, for both readouts (mlm: the pretrained LM head; tied: mask state
dotted with the label words' input embeddings).

Run: . scripts/env.sh && python scripts/make-parity-fixtures.py
"""
import json
import os

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ml", "tests", "data")

WORDS = (
    "the a an it was is this that movie film story plot great terrible good bad awful fine "
    "yes no maybe true false and or but not very really quite so too acting actors music "
    "boring fun funny sad happy love hate of to in on for with as at by i you we they he she "
    "one two three long short best worst ever never always . , ! ? '"
).split()
LABEL_WORDS = ["terrible", "great"]
TEXTS = [
    "the movie was great and the music was fun .",
    "this film is boring , the plot is awful",
    "i love it",
]
PROMPT_LEN = 5
LABELS = [1, 0, 1]


def wordpiece_tokenizer():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = ["##s", "##ing", "##ed", "##ly"]
    vocab = {w: i for i, w in enumerate(specials + WORDS + pieces)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(specials)
    return tok


def bpe_tokenizer():
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(WORDS)] * 4 + TEXTS + [" " + w for w in WORDS] * 8
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tok


def record(name, model, tok, mask_token, word_prefix):
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    for f in os.listdir(out):
        if f not in ("config.json", "model.safetensors", "tokenizer.json", "expected.safetensors", "inputs.json"):
            os.remove(os.path.join(out, f))

    label_ids = []
    for w in LABEL_WORDS:
        ids = tok.encode(word_prefix + w, add_special_tokens=False).ids
        assert len(ids) == 1, (w, ids)
        label_ids.append(ids[0])
    encs = [tok.encode(t + " it was " + mask_token) for t in TEXTS]
    mask_id = tok.token_to_id(mask_token)
    pad_id = model.config.pad_token_id
    width = max(len(e.ids) for e in encs)
    ids = torch.full((len(encs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(encs), width), dtype=torch.long)
    mask_pos = []
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        att[i, : len(e.ids)] = 1
        mask_pos.append(e.ids.index(mask_id))

    g = torch.Generator().manual_seed(7)
    d = model.config.hidden_size
    prompt0 = torch.randn(PROMPT_LEN, d, generator=g) * 0.5
    tensors = {"prompt": prompt0.clone(), "input_ids": ids, "attention_mask": att}
    labels = torch.tensor(LABELS)
    emb = model.get_input_embeddings()
    rows = torch.arange(len(encs))
    mpos = torch.tensor(mask_pos) + PROMPT_LEN
    for head in ("mlm", "tied"):
        prompt = prompt0.clone().requires_grad_(True)
        with torch.no_grad():
            words = emb(ids)
        embeds = torch.cat([prompt.unsqueeze(0).expand(len(encs), -1, -1), words], dim=1)
        mask = torch.cat([torch.ones(len(encs), PROMPT_LEN, dtype=torch.long), att], dim=1)
        outputs = model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
        if head == "mlm":
            full = outputs.logits[rows, mpos]
        else:
            full = outputs.hidden_states[-1][rows, mpos] @ emb.weight.T
        scores = full[:, label_ids]
        loss = torch.nn.functional.cross_entropy(scores, labels)
        loss.backward()
        tensors[f"{head}.scores"] = scores.detach()
        tensors[f"{head}.full_logits"] = full.detach()
        tensors[f"{head}.loss"] = loss.detach().reshape(1)
        tensors[f"{head}.prompt_grad"] = prompt.grad.detach()
    tensors["hidden"] = outputs.hidden_states[-1].detach()
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "expected.safetensors"))
    meta = {
        "texts": TEXTS,
        "template_suffix": " it was ",
        "label_words": LABEL_WORDS,
        "label_ids": label_ids,
        "labels": LABELS,
        "mask_positions": mask_pos,
        "prompt_len": PROMPT_LEN,
    }
    with open(os.path.join(out, "inputs.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(name, "loss mlm", tensors["mlm.loss"].item(), "tied", tensors["tied.loss"].item())


def main():
    torch.manual_seed(0)
    wp = wordpiece_tokenizer()
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=wp.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
            type_vocab_size=2, pad_token_id=0, attn_implementation="eager",
        )
    )
    # Random init leaves LayerNorm at identity and biases at zero; perturb them so parity
    # covers every tensor.
    with torch.no_grad():
        for n, p in bert.named_parameters():
            if "LayerNorm" in n or n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    record("tiny-bert", bert, wp, "[MASK]", "")

    # The training test's model: same vocabulary, weights drawn wider (std 0.2) so that a tuned
    # prompt can steer attention within a few dozen steps. Weights only, no golden values.
    torch.manual_seed(2)
    train = BertForMaskedLM(
        BertConfig(
            vocab_size=wp.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
            initializer_range=0.2, pad_token_id=0, attn_implementation="eager",
        )
    ).eval()
    out = os.path.join(ROOT, "tiny-bert-train")
    os.makedirs(out, exist_ok=True)
    train.save_pretrained(out, safe_serialization=True)
    wp.save(os.path.join(out, "tokenizer.json"))
    for f in os.listdir(out):
        if f not in ("config.json", "model.safetensors", "tokenizer.json"):
            os.remove(os.path.join(out, f))

    torch.manual_seed(1)
    bpe = bpe_tokenizer()
    roberta = RobertaForMaskedLM(
        RobertaConfig(
            vocab_size=bpe.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, max_position_embeddings=66,
            type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            attn_implementation="eager",
        )
    )
    with torch.no_grad():
        for n, p in roberta.named_parameters():
            if "LayerNorm" in n or "layer_norm" in n or n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    record("tiny-roberta", roberta, bpe, "<mask>", " ")


if __name__ == "__main__":
    main()
