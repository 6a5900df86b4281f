#!/usr/bin/env python
"""The official layout re-implemented in a few cited lines, for the formatter cases that the
fixtures computed by the official code itself (scripts/make-official-fixtures.py,
ml/tests/official_code.rs) do not cover: truncated pairs, singles and aspects
(ml/tests/encoder/official.rs). Those official-code fixtures check this re-implementation's
forward, gradient and step on the same inputs (their `comparisons`: all 0).

Source: github.com/thunlp/Prompt-Transferability, commit 2d15de5, folder
Prompt-Transferability-1.0 (MIT License). Its code is not copied here: the few lines below
re-implement what it does, each with the file and line it follows.

Builds, offline and seeded, a tiny randomly initialised RobertaForMaskedLM with a byte-level BPE
tokenizer whose vocabulary holds the label words both at a word start (`positive`, the id the
official code scores) and after a space (`Ġpositive`), saves it under
ml/tests/data/tiny-roberta-official/, and records:

* the input ids the official formatters build, for pairs (MNLI-style), single sentences
  (SST-2-style) and sentence + aspect (laptop-style), with and without truncation;
* the label ids as the official code reads them (no leading space) and the `Ġ` ids it does not;
* for a prompt of 100 tokens (the official prompt_len), the label scores at position 0, the
  full logits there, the cross-entropy loss, and its gradient with respect to the prompt
  embedding table (row 0 included: the official forward trains it without using it).

Run: . scripts/env.sh && python scripts/make-official-layout-fixtures.py
"""
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import RobertaConfig, RobertaForMaskedLM

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ml", "tests", "data",
                   "tiny-roberta-official")

PROMPT_LEN = 100  # modelling_roberta.py:212-213 zeroes the positions of the first 100 tokens
LABEL_WORDS = ["no", "neutral", "yes"]
SENTIMENT_WORDS = ["negative", "positive"]
WORDS = (
    "the a man woman dog cat park street is was not and sleeps runs eats in on with food "
    "service great terrible screen battery price good bad very it this that plays outside"
).split()
PAIRS = [  # (hypothesis, premise, label): MNLI order, hypothesis first
    ("a man sleeps", "the man is in the park with a dog", 2),
    ("the cat eats", "a woman runs on the street", 0),
    ("it is not a dog", "the dog plays outside in the park and eats", 1),
]
SINGLES = ["the food was great", "the screen is very bad and the battery was terrible"]
ASPECTS = [("the price is good", "price"),
           ("the service was not great and the food was very bad", "service")]
MAX_LEN_CUT = 8  # a small max_len, so that truncation shows


def bpe_tokenizer():
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    words = WORDS + LABEL_WORDS + SENTIMENT_WORDS
    # Each word both at a line start (`positive`) and after a space (`Ġpositive`).
    corpus = words * 20 + [" " + w for w in words] * 20 + [" ".join(words)] * 4
    tok.train_from_iterator(corpus, trainer)
    # roberta-base's tokenizer.json: <mask> is special and strips the spaces on its left.
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tok


def enc(tok, text):
    """tokenizer.encode(text, add_special_tokens=False), as every official formatter calls it."""
    return tok.encode(text, add_special_tokens=False).ids


def pair_ids(tok, s1, s2, max_len):
    """formatter/MNLIPromptRobertaFormatter.py:37-44, without the prompt ids and the padding."""
    prefix = [-(i + 1) for i in range(PROMPT_LEN)]  # :30
    tokens = prefix + [0] + enc(tok, s1) + [2] + enc(tok, s2) + [2]  # :41, <s> = 0, </s> = 2
    limit = max_len + 3 + PROMPT_LEN  # :37
    if len(tokens) > limit:  # :42-44
        tokens = tokens[:limit - 1] + [2]
    return tokens


def single_ids(tok, sent, max_len):
    """formatter/SST2PromptRobertaFormatter.py:39-42 (laptop: the same, :39-44)."""
    s = enc(tok, sent)
    if len(s) > max_len:
        s = s[:max_len]
    return [-(i + 1) for i in range(PROMPT_LEN)] + [0] + s + [2]


def position_ids(input_ids, padding_idx):
    """modelling_roberta.py:1539-1557: prompt ids (< 0) and padding get padding_idx, text
    tokens count from padding_idx + 1."""
    mask = input_ids.ne(padding_idx).int() * (input_ids >= 0).int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


def official_logits(model, input_ids, attention, prompt_weight, mask_id):
    """The logits of RobertaForMaskedLM as PromptRoberta runs it (model/PromptRoberta.py:140,151)
    with the embeddings of modelling_roberta.py:145-227, in eval mode (no dropout)."""
    emb = model.roberta.embeddings
    keep = (input_ids >= 0).int()
    word_embeds = emb.word_embeddings(input_ids * keep) * keep.unsqueeze(2)  # :176
    prompt_ids = -(input_ids + 1)  # :177
    is_prompt = (prompt_ids >= 0).int()
    prompt_emb = F.embedding(prompt_ids * is_prompt, prompt_weight) * is_prompt.unsqueeze(2)  # :187
    # :198-202: the mask's embedding written into slot 0 through .data, unseen by autograd.
    prompt_emb.data[:, 0, :] = emb.word_embeddings.weight[mask_id].detach()
    inputs_embeds = word_embeds + prompt_emb  # :206
    positions = emb.position_embeddings(position_ids(input_ids, model.config.pad_token_id))
    positions[:, :PROMPT_LEN, :] = 0  # :212-213
    types = emb.token_type_embeddings(torch.zeros_like(input_ids))  # :173, :216
    hidden = emb.LayerNorm(inputs_embeds + positions + types)  # :219-220; :221 no dropout
    # The encoder and LM head are transformers' own; the additive mask as get_extended_attention_mask.
    ext = (1.0 - attention[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for layer in model.roberta.encoder.layer:
        out = layer(hidden, attention_mask=ext)
        hidden = out[0] if isinstance(out, tuple) else out
    return model.lm_head(hidden)


def pad(rows, pad_id):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        att[i, :len(r)] = 1
    return ids, att


def main():
    torch.manual_seed(11)
    tok = bpe_tokenizer()
    config = RobertaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=130,
        type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        attn_implementation="eager",
    )
    model = RobertaForMaskedLM(config)
    with torch.no_grad():
        # Perturb the LayerNorms and biases (identity and zero at init), and give positions and
        # token types some weight, so that the test sees every tensor.
        for n, p in model.named_parameters():
            if "LayerNorm" in n or "layer_norm" in n or n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
        model.roberta.embeddings.position_embeddings.weight.mul_(10.0)
    model.eval()
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    for f in os.listdir(OUT):
        if f not in ("config.json", "model.safetensors", "tokenizer.json", "expected.safetensors",
                     "inputs.json"):
            os.remove(os.path.join(OUT, f))

    mask_id = tok.token_to_id("<mask>")
    labels_ids = [enc(tok, w) for w in LABEL_WORDS]  # model/PromptRoberta.py:162-179
    spaced_ids = [enc(tok, " " + w) for w in LABEL_WORDS + SENTIMENT_WORDS]
    sentiment_ids = [enc(tok, w) for w in SENTIMENT_WORDS]
    for ids in labels_ids + spaced_ids + sentiment_ids:
        assert len(ids) == 1, ids
    label_ids = [i[0] for i in labels_ids]
    assert set(label_ids).isdisjoint(i[0] for i in spaced_ids)

    big = 128  # the official max_len: nothing here is cut
    pair_rows = [pair_ids(tok, h, p, big) for h, p, _ in PAIRS]
    text = lambda rows: [[t for t in r if t >= 0] for r in rows]  # noqa: E731
    cases = {
        "pairs": text(pair_rows),
        "pairs_cut": text([pair_ids(tok, h, p, MAX_LEN_CUT) for h, p, _ in PAIRS]),
        "singles": text([single_ids(tok, s, big) for s in SINGLES]),
        "singles_cut": text([single_ids(tok, s, MAX_LEN_CUT) for s in SINGLES]),
        "aspects": text([single_ids(tok, s.strip() + " " + a.strip(), big) for s, a in ASPECTS]),
        "aspects_cut": text([single_ids(tok, s.strip() + " " + a.strip(), MAX_LEN_CUT)
                             for s, a in ASPECTS]),
    }

    input_ids, attention = pad(pair_rows, config.pad_token_id)  # :45-46 pad with <pad>
    g = torch.Generator().manual_seed(5)
    prompt0 = torch.randn(PROMPT_LEN, config.hidden_size, generator=g) * 0.5
    prompt = prompt0.clone().requires_grad_(True)
    logits = official_logits(model, input_ids, attention, prompt, mask_id)
    mask_logits = logits[:, 0]  # model/PromptRoberta.py:153
    scores = mask_logits[:, label_ids]  # :224-227 (MNLI: no, neutral, yes)
    labels = torch.tensor([lab for _, _, lab in PAIRS])
    loss = F.cross_entropy(scores, labels)  # :115, :267
    loss.backward()
    assert prompt.grad[0].abs().max() > 0, "row 0 must receive a gradient"

    tensors = {
        "prompt": prompt0,
        "scores": scores.detach(),
        "full_logits": mask_logits.detach(),
        "loss": loss.detach().reshape(1),
        "prompt_grad": prompt.grad.detach(),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(OUT, "expected.safetensors"))
    meta = {
        "pairs": [{"hypothesis": h, "premise": p} for h, p, _ in PAIRS],
        "labels": labels.tolist(),
        "singles": SINGLES,
        "aspects": [{"sentence": s, "aspect": a} for s, a in ASPECTS],
        "max_len_cut": MAX_LEN_CUT,
        "label_words": LABEL_WORDS,
        "label_ids": label_ids,
        "sentiment_words": SENTIMENT_WORDS,
        "sentiment_ids": [i[0] for i in sentiment_ids],
        "spaced_ids": [i[0] for i in spaced_ids],
        "text_ids": cases,
        "prompt_len": PROMPT_LEN,
    }
    with open(os.path.join(OUT, "inputs.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("loss", loss.item(), "row-0 grad norm", prompt.grad[0].norm().item())


if __name__ == "__main__":
    main()
