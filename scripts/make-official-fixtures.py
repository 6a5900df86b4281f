#!/usr/bin/env python
"""Golden values computed BY the official Prompt-Transferability code (thunlp/Prompt-Transferability,
commit 2d15de5, folder Prompt-Transferability-1.0, MIT License), imported and run at run time from
a checkout given on the command line. Nothing of it is copied here: this script only builds tiny
seeded checkpoints and tokenizers, stages them where the official modules look for "roberta-base",
"t5-base" and "T5ForMaskedLM/t5-base", calls the official classes and functions, and records what
they return. Output: ml/tests/data/official/ (see its README.md).

Environment (its own venv, not promptgrid's main one):

    python3 -m venv ~/.cache/promptgrid/official-venv
    ~/.cache/promptgrid/official-venv/bin/pip install --no-deps -r scripts/official-requirements.txt
    ~/.cache/promptgrid/official-venv/bin/python scripts/make-official-fixtures.py \\
        /path/to/Prompt-Transferability-1.0

(`git --git-dir=<mirror> archive 2d15de5 Prompt-Transferability-1.0 | tar -x` gives the folder.)

Shims, all at run time, none in the official files:
* transformers.dependency_versions_check is replaced by a no-op: transformers 4.10.0 (the official
  version) requires tokenizers<0.11, which has no Python 3.11 wheel; tokenizers 0.13.3 runs here.
* `datasets` (imported and unused by model/PromptRoberta.py:8) is an empty stub module.
* CUDA: torch.Tensor.to("cuda"/int/cuda device) -> CPU, Tensor.cuda() -> self,
  torch.cuda.current_device() -> "cpu" (modelling_roberta.py:198, 212; PromptRoberta.py:126).
* The packages model/, formatter/, tools/ are made importable without running their __init__.py
  (which imports every model and loads every hub tokenizer); their modules are imported as is.
* The working directory is a temp folder holding roberta-base/, t5-base/, T5ForMaskedLM/t5-base/,
  RobertaForMaskedLM/ (PromptRoberta's init_model_path parent); TRANSFORMERS_OFFLINE=1.

What the version change (official: Python 3.6, torch 1.9.0, transformers 4.10.0, tokenizers
0.10.3, nltk 3.6.5) could move: transformers and nltk are the official versions. torch 1.13.1 vs
1.9.0: kernels (matmul/softmax/LayerNorm/GELU summation order) may move float32 results in the
last bits (~1e-7 relative); torch.optim is not used (AdamW is transformers'). tokenizers 0.13.3 vs
0.10.3: only the tokenizers built here go through it (byte-level BPE from vocab.json/merges.txt and
a Unigram tokenizer.json); ids were checked against the label ids the official code hard-codes.

Tiny models: RoBERTa (vocab 50265 because of the hard-coded <mask> 50264 and label ids, hidden 16,
12 layers because activate_neuron_Roberta.py hooks range(12), 514 positions, dropout 0) and T5 v1.0
(ReLU, tied, vocab 32128 because of the hard-coded label ids, d_model 16, 12+12 layers for
activate_neuron_T5.py's range(12), dropout 0). prompt_len = prompt_num = 100 (modelling_roberta.py
zeroes the positions of exactly 100 prompt tokens at :212-213; tools/projector.py reshapes to 100).

The comparisons with promptgrid's re-implementations (scripts/make-official-layout-fixtures.py,
make-projector-fixtures.py, make-activation-fixtures.py) run their logic on the same tiny models
and inputs, and print the max abs differences (also written to inputs.json's `comparisons`).
"""
import configparser
import importlib
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "ml", "tests", "data", "official")

PROMPT = 100
R_LABELS = {  # model/PromptRoberta.py:212-256 (ids of roberta-base, hard-coded there)
    "positive": 22173, "negative": 33407, "moderate": 19397, "yes": 10932, "neutral": 12516,
    "no": 2362, "true": 29225, "false": 22303,
}
R_MASK = 50264  # modelling_roberta.py:198
T5_PIECES = {  # model/PromptT5.py:150-248 (ids of t5-base's SentencePiece, hard-coded there)
    "▁": 3, "▁positive": 1465, "▁negative": 2841, "▁neutral": 7163, "▁contradiction": 27252,
    "▁false": 6136, "▁true": 1176,
}
WORDS = ("the a man woman dog cat park street is was not and sleeps runs eats in on with food "
         "service great terrible screen battery price good bad very it this that plays outside "
         "hypothesis premise sentence movie film boring fun plot music love i").split()
SST2 = [{"sent": "the food was great", "label": 1},
        {"sent": "the screen is very bad and the battery was terrible", "label": 0}]
MNLI = [{"sent1": "the man is in the park with a dog", "sent2": "a man sleeps", "label": 2},
        {"sent1": "a woman runs on the street", "sent2": "the cat eats", "label": 0},
        {"sent1": "the dog plays outside in the park and eats", "sent2": "it is not a dog",
         "label": 1}]


# ----------------------------------------------------------------------------------------------
# Environment shims
# ----------------------------------------------------------------------------------------------
def shim(official):
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    check = types.ModuleType("transformers.dependency_versions_check")
    check.dep_version_check = lambda pkg, hint=None: None
    sys.modules["transformers.dependency_versions_check"] = check
    import torch
    import transformers  # noqa: F401  (before the stub below, which it must not see)
    if importlib.util.find_spec("datasets") is None:
        sys.modules["datasets"] = types.ModuleType("datasets")

    def cpu(dev):
        if isinstance(dev, int) or (isinstance(dev, str) and dev.startswith("cuda")) or (
                isinstance(dev, torch.device) and dev.type == "cuda"):
            return "cpu"
        return dev

    orig_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args:
            args = (cpu(args[0]),) + args[1:]
        if "device" in kwargs:
            kwargs["device"] = cpu(kwargs["device"])
        return orig_to(self, *args, **kwargs)

    torch.Tensor.to = to
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.current_device = lambda: "cpu"
    for pkg in ("model", "formatter", "tools"):
        mod = types.ModuleType(pkg)
        mod.__path__ = [os.path.join(official, pkg)]
        sys.modules[pkg] = mod
    sys.path.insert(0, official)


def make_config(official, name, overrides=()):
    c = configparser.RawConfigParser()
    c.read(os.path.join(official, "config", name))
    for sec, key, val in overrides:
        c.set(sec, key, str(val))
    return c


# ----------------------------------------------------------------------------------------------
# Tiny checkpoints and tokenizers
# ----------------------------------------------------------------------------------------------
def roberta_tokenizer(dst):
    """Byte-level BPE trained on a few words, remapped to roberta-base's id layout: <s> <pad> </s>
    <unk> = 0..3, <mask> = 50264, the label words at the ids PromptRoberta.py hard-codes, filler
    tokens elsewhere. Written as vocab.json + merges.txt (what roberta-base ships for the slow
    tokenizer); transformers converts it to the fast one that AutoTokenizer returns."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    words = WORDS + list(R_LABELS)
    corpus = words * 20 + [" " + w for w in words] * 20 + [" ".join(words)] * 4
    tok.train_from_iterator(corpus, trainer)
    tmp = tempfile.mkdtemp()
    tok.model.save(tmp)
    with open(os.path.join(tmp, "merges.txt"), encoding="utf-8") as f:
        merges = [l for l in f.read().split("\n") if l and not l.startswith("#version")]
    trained = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for w, i in R_LABELS.items():
        assert w in tok.get_vocab(), w
        vocab[w] = i
    used = set(vocab.values()) | {R_MASK}
    nxt = 4
    for t, _ in trained:
        if t in vocab:
            continue
        while nxt in used:
            nxt += 1
        vocab[t] = nxt
        used.add(nxt)
    for i in range(R_MASK):
        if i not in used:
            vocab[f"<unused{i}>"] = i
    vocab["<mask>"] = R_MASK
    assert sorted(vocab.values()) == list(range(R_MASK + 1))
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(dst, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    shutil.rmtree(tmp)


def t5_tokenizer(path):
    """A SentencePiece-style Unigram tokenizer.json in t5-base's id layout: <pad> </s> <unk> = 0..2,
    "▁" = 3, the label pieces at the ids PromptT5.py hard-codes, whole-word pieces, two sub-word
    pieces ("entail", "ment": "entailment" encodes as "▁" "entail" "ment", first id 3 as in t5-base),
    single characters, fillers up to 32000, then <extra_id_99..0> at 32000..32099."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    words = sorted(set(WORDS + ["positive", "negative", "neutral", "contradiction", "false",
                                "true", "yes"]))
    pieces = {p: -5.0 for p in T5_PIECES}
    pieces["▁"] = -8.0
    for w in words:
        pieces.setdefault("▁" + w, -5.0)
    pieces.update({"entail": -6.0, "ment": -6.0, "SEP": -6.0, "▁[": -7.0})
    for ch in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,:;!?'[]-":
        pieces.setdefault(ch, -10.0)
    vocab = [None] * 32000
    vocab[0], vocab[1], vocab[2] = ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)
    for p, i in T5_PIECES.items():
        vocab[i] = (p, pieces[p])
    free = (i for i in range(4, 32000) if vocab[i] is None)
    for p, s in pieces.items():
        if p not in T5_PIECES:
            vocab[next(free)] = (p, s)
    for i in range(32000):
        if vocab[i] is None:
            vocab[i] = (f"<unused{i}>", -100.0)
    extra = [(f"<extra_id_{99 - k}>", 0.0) for k in range(100)]
    vocab += extra
    tok = Tokenizer(models.Unigram(vocab, 2))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", add_prefix_space=True)])
    tok.decoder = decoders.Metaspace(replacement="▁", add_prefix_space=True)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"] + [e for e, _ in reversed(extra)])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tok.save(path)


def perturb(model, scale=0.1):
    """Norm weights and biases start at 1 / 0: move them so that the fixtures see every tensor."""
    import torch
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "LayerNorm" in n or "layer_norm" in n or n.endswith("bias"):
                p.add_(torch.randn_like(p) * scale)


def tiny_roberta(dst):
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM
    cfg = RobertaConfig(vocab_size=R_MASK + 1, hidden_size=16, num_hidden_layers=12,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=514,
                        type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        layer_norm_eps=1e-5)
    torch.manual_seed(11)
    model = RobertaForMaskedLM(cfg)
    perturb(model)
    with torch.no_grad():
        model.roberta.embeddings.position_embeddings.weight.mul_(10.0)
    model.save_pretrained(dst)
    return model


def tiny_t5(dst):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration
    cfg = T5Config(vocab_size=32128, d_model=16, d_kv=4, d_ff=32, num_layers=12,
                   num_decoder_layers=12, num_heads=4, relative_attention_num_buckets=32,
                   dropout_rate=0.0, layer_norm_epsilon=1e-6, feed_forward_proj="relu",
                   initializer_factor=1.0, pad_token_id=0, eos_token_id=1,
                   decoder_start_token_id=0)
    torch.manual_seed(12)
    model = T5ForConditionalGeneration(cfg)
    perturb(model)
    model.save_pretrained(dst)
    return model


def save_checkpoint(model, dst, drop=()):
    """config.json + model.safetensors (tied copies left out, as the hub's safetensors do)."""
    from safetensors.torch import save_file
    os.makedirs(dst, exist_ok=True)
    seen, tensors = set(), {}
    for k, v in model.state_dict().items():
        if k in drop or v.data_ptr() in seen:
            continue
        seen.add(v.data_ptr())
        tensors[k] = v.detach().clone().contiguous()
    save_file(tensors, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    model.config.to_json_file(os.path.join(dst, "config.json"))
    return sorted(tensors)


def save(name, tensors, meta=None):
    from safetensors.torch import save_file
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, os.path.join(OUT, name),
              metadata={"source": "Prompt-Transferability-1.0@2d15de5", **(meta or {})})


CMP = {}


def cmp(key, a, b):
    import torch
    d = (torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max().item()
    CMP[key] = d
    print(f"  compare {key}: max abs diff {d:.3g}")
    return d


def old_module(relpath):
    """Load one of promptgrid's re-implementing fixture scripts as a module, without running
    main()."""
    with open(os.path.join(ROOT, relpath)) as f:
        src = f.read()
    mod = types.ModuleType("old_" + os.path.basename(relpath).replace("-", "_")[:-3])
    mod.__file__ = os.path.join(ROOT, relpath)
    exec(compile(src, relpath, "exec"), mod.__dict__)
    return mod


def hf_adamw(p, g, lr, eps, wd=0.0):
    """One step of transformers 4.x AdamW as promptgrid's old projector script writes it out
    (scripts/make-projector-fixtures.py hf_adamw_step), for the comparison only."""
    b1, b2 = 0.9, 0.999
    m = (1 - b1) * g
    v = (1 - b2) * g * g
    step = lr * math.sqrt(1 - b2) / (1 - b1)
    return p - step * m / (v.sqrt() + eps) - lr * wd * p


# ----------------------------------------------------------------------------------------------
# (a) RoBERTa
# ----------------------------------------------------------------------------------------------
def roberta(official, stage, stock):
    import torch
    import torch.nn.functional as F
    PR = importlib.import_module("model.PromptRoberta")
    opt = importlib.import_module("model.optimizer")
    tok = PR.tokenizer  # AutoTokenizer.from_pretrained("roberta-base"), PromptRoberta.py:14
    for w, i in R_LABELS.items():
        assert tok.encode(w, add_special_tokens=False) == [i], (w, tok.encode(w, add_special_tokens=False))
    assert tok.mask_token_id == R_MASK
    shutil.copy(os.path.join(stage, "roberta-base", "vocab.json"), os.path.join(OUT, "roberta", "vocab.json"))
    shutil.copy(os.path.join(stage, "roberta-base", "merges.txt"), os.path.join(OUT, "roberta", "merges.txt"))
    tok.backend_tokenizer.save(os.path.join(OUT, "roberta", "tokenizer.json"))

    tensors, meta = {}, {}
    old = old_module("scripts/make-official-layout-fixtures.py")
    for task, cfgname, fmt_mod, fmt_cls, data in [
            ("sst2", "SST2PromptRoberta.config", "formatter.SST2PromptRobertaFormatter",
             "SST2PromptRobertaFormatter", SST2),
            ("mnli", "MNLIPromptRoberta.config", "formatter.MNLIPromptRobertaFormatter",
             "MNLIPromptRobertaFormatter", MNLI)]:
        print(f"(a) RoBERTa {task}")
        config = make_config(official, cfgname)
        torch.manual_seed(21)
        model = PR.PromptRoberta(config, [])
        emb = model.encoder.roberta.embeddings.prompt_embeddings
        if task == "sst2":
            w = emb.weight.detach()
            meta["roberta_initial_prompt"] = {"mean": w.mean().item(), "sd": w.std().item(),
                                              "shape": list(w.shape)}
            # The official forward with an N(0, 0.02) prompt is dominated by the <mask> slot;
            # give the prompt a visible size (as a trained or vocabulary-initialised prompt has).
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            emb.weight.data = torch.randn(PROMPT, 16, generator=g) * 0.5
        prompt0 = emb.weight.detach().clone()
        fmt = getattr(importlib.import_module(fmt_mod), fmt_cls)(config, "train")
        batch = fmt.process(data, config, "train")
        optimizer = opt.init_optimizer(model, config)
        captured = {}
        crit_hook = model.criterion.register_forward_hook(  # the score PromptRoberta.py:267 sees
            lambda m, i, o: captured.__setitem__("score", i[0].detach().clone()))
        logits_hook = model.encoder.register_forward_hook(
            lambda m, i, o: captured.__setitem__("mask_logits", o["logits"][:, 0].detach().clone()))
        model.train()  # dropout probabilities are 0 in the tiny config
        model.zero_grad()  # tools/train_tool.py:197
        out = model(batch, config, [], None, "train")
        out["loss"].backward()  # :215
        grad = emb.weight.grad.detach().clone()
        optimizer.step()  # :216
        logits_hook.remove()
        crit_hook.remove()
        assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["params"][0] is emb.weight
        tensors.update({
            f"{task}.input_ids": batch["inputx"], f"{task}.attention_mask": batch["mask"],
            f"{task}.labels": batch["label"], f"{task}.prompt": prompt0,
            f"{task}.scores": captured["score"], f"{task}.loss": out["loss"].detach().reshape(1),
            f"{task}.prompt_grad": grad, f"{task}.prompt_after_step": emb.weight.detach().clone(),
        })
        if task == "sst2":
            tensors["sst2.mask_logits"] = captured["mask_logits"]
        pg = optimizer.param_groups[0]
        meta[f"roberta_{task}"] = {"config": cfgname, "lr": pg["lr"], "eps": pg["eps"],
                                   "weight_decay": pg["weight_decay"], "betas": list(pg["betas"]),
                                   "correct_bias": pg["correct_bias"],
                                   "acc_result": out["acc_result"], "examples": data,
                                   "max_len": config.getint("train", "max_len")}
        # The official model's weights are the staged ones.
        sd = model.encoder.state_dict()
        for k, v in stock.state_dict().items():
            assert torch.equal(sd[k], v), k
        # The re-implementation (make-official-layout-fixtures.py) on the same model and inputs.
        p = prompt0.clone().requires_grad_(True)
        stock.eval()
        lg = old.official_logits(stock, batch["inputx"], batch["mask"].long(), p, R_MASK)
        ids = {"sst2": [33407, 22173], "mnli": [2362, 12516, 10932]}[task]
        sc = lg[:, 0][:, ids]
        loss = F.cross_entropy(sc, batch["label"])
        loss.backward()
        cmp(f"roberta.{task}.scores", sc.detach(), captured["score"])
        cmp(f"roberta.{task}.loss", loss.detach(), out["loss"].detach())
        cmp(f"roberta.{task}.prompt_grad", p.grad, grad)
        cmp(f"roberta.{task}.prompt_after_step",
            hf_adamw(prompt0, p.grad, pg["lr"], 1e-6), emb.weight.detach())
        if task == "sst2":
            cmp("roberta.sst2.mask_logits", lg[:, 0].detach(), captured["mask_logits"])
    save("roberta.safetensors", tensors)
    return meta


# ----------------------------------------------------------------------------------------------
# (b) T5 and (c) BLEU
# ----------------------------------------------------------------------------------------------
def t5(official, stage, stock):
    import torch
    PT = importlib.import_module("model.PromptT5")
    opt = importlib.import_module("model.optimizer")
    tok = PT.tokenizer  # T5TokenizerFast.from_pretrained("T5ForMaskedLM/t5-base"), PromptT5.py:16
    for p, i in T5_PIECES.items():
        assert tok.convert_tokens_to_ids(p) == i, p
    assert tok.encode("positive", add_special_tokens=False) == [1465]
    assert tok.encode("entailment", add_special_tokens=False)[0] == 3
    assert tok.encode("<extra_id_0>", add_special_tokens=False) == [32099]
    tensors, meta = {}, {}
    for task, cfgname, fmt_mod, fmt_cls, data, label_ids in [
            ("sst2", "SST2PromptT5.config", "formatter.SST2PromptT5Formatter",
             "SST2PromptT5Formatter", SST2, [2841, 1465]),
            ("mnli", "MNLIPromptT5.config", "formatter.MNLIPromptT5Formatter",
             "MNLIPromptT5Formatter", MNLI, [27252, 7163, 3])]:
        print(f"(b) T5 {task}")
        config = make_config(official, cfgname)
        torch.manual_seed(31)
        model = PT.PromptT5(config, [])
        emb = model.encoder.prompt_embeddings
        assert model.encoder.encoder.prompt_tokens is emb and model.encoder.decoder.prompt_tokens is emb
        if task == "sst2":
            w = emb.weight.detach()
            meta["t5_initial_prompt"] = {"mean": w.mean().item(), "sd": w.std().item(),
                                         "shape": list(w.shape)}
            # And at t5-base's size, straight from the official class (no checkpoint needed).
            mt5 = importlib.import_module("model.modeling_t5")
            from transformers import T5Config
            big = T5Config(vocab_size=64, d_model=768, d_kv=64, d_ff=8, num_layers=1,
                           num_decoder_layers=1, num_heads=12)
            big.prompt_num, big.prompt_len = 100, 100
            torch.manual_seed(0)
            wb = mt5.T5ForConditionalGeneration(big).prompt_embeddings.weight.detach()
            meta["t5_initial_prompt_d768"] = {"mean": wb.mean().item(), "sd": wb.std().item(),
                                              "shape": list(wb.shape)}
        g = torch.Generator().manual_seed(6)
        with torch.no_grad():
            emb.weight.data = torch.randn(PROMPT, 16, generator=g)
        prompt0 = emb.weight.detach().clone()
        fmt = getattr(importlib.import_module(fmt_mod), fmt_cls)(config, "train")
        batch = fmt.process(data, config, "train")
        # valid path first (PromptT5.py:110-121): generate's scores[0], on the initial prompt.
        captured = {}
        gen = model.encoder.generate

        def record_generate(*a, **k):
            out = gen(*a, **k)
            captured["gen"] = out
            captured["gen_kwargs"] = {kk: vv for kk, vv in k.items() if kk != "input_ids"}
            return out

        model.encoder.generate = record_generate
        model.eval()
        # A copy of the labels: PromptT5.py's acc() remaps them in place through a view
        # (label[label == 2841] = 0, :151-153), which the train path below must not see.
        with torch.no_grad():
            vout = model({**batch, "label": batch["label"].clone()}, config, [], None, "valid")
        model.encoder.generate = gen
        scores0 = captured["gen"]["scores"][0]
        # train path (PromptT5.py:79-107), step not a multiple of 500, so no generate there.
        optimizer = opt.init_optimizer(model, config)
        assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["params"][0] is emb.weight
        model.train()
        model.zero_grad()
        out = model(batch, config, [], None, "train", performance=0, step=1)
        out["loss"].backward()
        grad = emb.weight.grad.detach().clone()
        optimizer.step()
        tensors.update({
            f"{task}.input_ids": batch["inputx"], f"{task}.attention_mask": batch["mask"],
            f"{task}.labels": batch["label"], f"{task}.prompt": prompt0,
            f"{task}.loss": out["loss"].detach().reshape(1), f"{task}.prompt_grad": grad,
            f"{task}.prompt_after_step": emb.weight.detach().clone(),
            f"{task}.valid_scores0": scores0[:, label_ids],
            f"{task}.valid_sequences": captured["gen"]["sequences"],
        })
        if task == "sst2":
            tensors["sst2.valid_scores0_full"] = scores0
        pg = optimizer.param_groups[0]
        meta[f"t5_{task}"] = {"config": cfgname, "lr": pg["lr"], "eps": pg["eps"],
                              "weight_decay": pg["weight_decay"], "betas": list(pg["betas"]),
                              "label_ids": label_ids, "acc_result": vout["acc_result"],
                              "generate_kwargs": {k: v for k, v in captured["gen_kwargs"].items()},
                              "examples": data, "max_len": config.getint("train", "max_len"),
                              "target_len": config.getint("train", "target_len")}
        sd = model.encoder.state_dict()
        for k, v in stock.state_dict().items():
            assert torch.equal(sd[k], v), k
        # The layout promptgrid's T5 fixtures assumed (scripts/make-t5-fixtures.py:
        # inputs_embeds = concat(P, E[ids])), on transformers' own T5, with every position
        # attended (the official call passes no attention_mask, PromptT5.py:91, 112).
        stock.eval()
        p = prompt0.clone().requires_grad_(True)
        text = batch["inputx"][:, PROMPT:]
        assert (batch["inputx"][:, :PROMPT] < 0).all() and (text >= 0).all()
        embeds = torch.cat([p.unsqueeze(0).expand(text.shape[0], -1, -1), stock.shared(text)], 1)
        o = stock(inputs_embeds=embeds, labels=batch["label"])
        o.loss.backward()
        cmp(f"t5.{task}.loss", o.loss.detach(), out["loss"].detach())
        cmp(f"t5.{task}.prompt_grad", p.grad, grad)
        cmp(f"t5.{task}.prompt_after_step", hf_adamw(prompt0, p.grad, pg["lr"], 1e-6),
            emb.weight.detach())
        # generate() (transformers 4.10 generation_utils.py, _prepare_attention_mask_for_generation)
        # builds attention_mask = input_ids != pad_token_id when a pad is in the inputs: the
        # valid path masks the pads that the train path attends to.
        gmask = (batch["inputx"] != stock.config.pad_token_id).long()
        with torch.no_grad():
            start = torch.full((text.shape[0], 1), stock.config.decoder_start_token_id)
            raw_nomask = stock(inputs_embeds=embeds.detach(), decoder_input_ids=start).logits[:, 0]
            raw = stock(inputs_embeds=embeds.detach(), attention_mask=gmask,
                        decoder_input_ids=start).logits[:, 0]
        keep = torch.ones(raw.shape[1], dtype=torch.bool)
        keep[1] = False  # MinLengthLogitsProcessor (min_length 3) sets </s> to -inf at step 0
        cmp(f"t5.{task}.valid_scores0_except_eos", raw[:, keep], scores0[:, keep])
        cmp(f"t5.{task}.valid_scores0_if_pads_attended", raw_nomask[:, keep], scores0[:, keep])
        # As strings: -inf, which JSON has no number for (MinLengthLogitsProcessor).
        meta[f"t5_{task}"]["scores0_eos"] = [repr(v) for v in scores0[:, 1].tolist()]
        meta[f"t5_{task}"]["raw_eos_logit"] = raw[:, 1].tolist()
        if task == "sst2":
            # With an attention mask over the pads, as promptgrid's old T5 fixtures pass one.
            att = torch.cat([torch.ones(text.shape[0], PROMPT, dtype=torch.long),
                             (text != 0).long()], 1)
            with torch.no_grad():
                masked = stock(inputs_embeds=embeds.detach(), attention_mask=att,
                               labels=batch["label"]).loss
            cmp("t5.sst2.loss_if_pads_were_masked", masked, out["loss"].detach())
    save("t5.safetensors", tensors)
    meta["bleu"] = bleu(PT, tok)
    return meta


def bleu(PT, tok):
    """(c) PromptT5.bleu() and train_bleu() (PromptT5.py:265-312) on hand-made pairs."""
    import torch
    print("(c) BLEU")
    target_len = 8
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    pairs = [  # (name, hypothesis ids as generate returns them, reference ids before the cut)
        ("exact", [0] + enc("the man is in the park") + [1], enc("the man is in the park")),
        ("empty_hypothesis", [0, 1], enc("a dog plays outside")),
        ("partial", [0] + enc("the dog is in the street") + [1], enc("the man is in the park")),
        ("no_overlap", [0] + enc("food service") + [1], enc("the man sleeps")),
        ("one_piece_hypothesis", [0] + enc("park") + [1], enc("the park is good")),
        ("one_piece_both_equal", [0] + enc("positive") + [1], enc("positive")),
        ("reference_cut", [0] + enc("the dog plays outside in the park and eats") + [1],
         enc("the dog plays outside in the park and eats with a cat")),
        ("repeated_words", [0] + enc("the the the the") + [1], enc("the cat eats the food")),
        ("empty_reference", [0] + enc("the cat") + [1], []),
        ("specials_inside", [0] + enc("the <extra_id_0> cat") + [1, 0, 0], enc("the cat")),
        ("subword_pieces", [0] + enc("entailment") + [1], enc("entailment neutral")),
    ]
    width = max(len(h) for _, h, _ in pairs)
    hyp = torch.zeros(len(pairs), width, dtype=torch.long)  # generate pads with <pad> = 0
    ref = torch.full((len(pairs), target_len), -100, dtype=torch.long)
    for i, (_, h, r) in enumerate(pairs):
        hyp[i, :len(h)] = torch.tensor(h)
        r = r[:target_len]  # the formatters cut targets to target_len and pad with -100
        if r:
            ref[i, :len(r)] = torch.tensor(r)
    values = []
    real = PT.sentence_bleu

    def record(*a, **k):
        v = real(*a, **k)
        values.append(float(v))
        return v

    PT.sentence_bleu = record
    try:
        per_pair = []
        for i in range(len(pairs)):
            values.clear()
            acc = PT.bleu(hyp[i:i + 1], ref[i:i + 1].clone(), None, "squad")
            tb = PT.train_bleu(hyp[i:i + 1], ref[i:i + 1].clone(), "squad")
            per_pair.append({"value": values[0] if values else 0.0,
                             "sentence_bleu_called": bool(values),
                             "bleu_right": acc["right"], "train_bleu": tb})
        values.clear()
        batch_acc = PT.bleu(hyp, ref.clone(), None, "squad")
        batch_values = list(values)
        batch_train = PT.train_bleu(hyp, ref.clone(), "squad")
    finally:
        PT.sentence_bleu = real
    # promptgrid's textmetrics.json BLEU (scripts/make-textmetrics-fixtures.py, nltk of the main
    # venv) on its piece pairs, against the function and smoother PromptT5.py imported (nltk 3.6.5)
    # with the official empty-hypothesis rule (PromptT5.py:301-305).
    with open(os.path.join(ROOT, "ml", "tests", "data", "textmetrics.json")) as f:
        tm = json.load(f)["bleu"]
    mine = [0.0 if not e["hypothesis"] else PT.sentence_bleu(
        [e["reference"]], e["hypothesis"], weights=(0.7, 0.3, 0.0, 0.0),
        smoothing_function=PT.smoother.method1) for e in tm]
    cmp("bleu.textmetrics_pairs", torch.tensor([float(e["bleu"]) for e in tm], dtype=torch.float64),
        torch.tensor(mine, dtype=torch.float64))
    out = []
    for (name, h, r), pp, row_h, row_r in zip(pairs, per_pair, hyp, ref):
        out.append({
            "name": name, "hypothesis_ids": row_h.tolist(), "reference_ids": row_r.tolist(),
            "hypothesis_pieces": tok.convert_ids_to_tokens(row_h[row_h != -100].tolist(),
                                                           skip_special_tokens=True),
            "reference_pieces": tok.convert_ids_to_tokens(row_r[row_r != -100].tolist(),
                                                          skip_special_tokens=True),
            **pp})
    return {"target_len": target_len, "weights": [0.7, 0.3, 0.0, 0.0],
            "smoothing": "SmoothingFunction().method1", "pairs": out,
            "batch": {"total": batch_acc["total"], "right_int_total_bleu": batch_acc["right"],
                      "sum_of_values": sum(batch_values), "train_bleu": batch_train}}


# ----------------------------------------------------------------------------------------------
# (d) projector
# ----------------------------------------------------------------------------------------------
def projector():
    import torch
    print("(d) projector")
    P = importlib.import_module("tools.projector")
    d_src, hidden, d_tgt = 16, 8, 12
    torch.manual_seed(41)
    paper = P.AE_1_layer_mutiple_100_paper(dim_0=PROMPT * d_src, dim_1=hidden, dim_2=PROMPT * d_tgt)
    leaky = P.AE_1_layer_mutiple_100(dim_0=PROMPT * d_src, dim_1=hidden, dim_2=PROMPT * d_tgt)
    g = torch.Generator().manual_seed(42)
    init = {
        "encoder.weight": torch.randn(hidden, PROMPT * d_src, generator=g) * 0.05,
        "encoder.bias": torch.randn(hidden, generator=g) * 0.5,
        "decoder.weight": torch.randn(PROMPT * d_tgt, hidden, generator=g) * 0.5,
        "decoder.bias": torch.randn(PROMPT * d_tgt, generator=g) * 0.1,
        "layer_norm.weight": 1 + torch.randn(d_tgt, generator=g) * 0.1,
        "layer_norm.bias": torch.randn(d_tgt, generator=g) * 0.1,
    }
    paper.load_state_dict(init)
    leaky.load_state_dict(init)
    src = torch.randn(1, PROMPT * d_src, generator=g)  # model/crossPrompt.py flattens [1, 100*d]
    target = torch.randn(1, PROMPT * d_tgt, generator=g)
    with torch.no_grad():
        out_tanh, out_leaky = paper(src), leaky(src)
    import transformers
    optimizer = transformers.AdamW(paper.parameters(), eps=1e-06, lr=0.005, weight_decay=0.0,
                                   correct_bias=True)  # tools/train_tool_cross.py:176
    paper.train()
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(paper(src), target)
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in paper.named_parameters()}
    optimizer.step()
    after = {k: v.detach().clone() for k, v in paper.state_dict().items()}
    tensors = {"source": src, "target": target, "out_tanh": out_tanh, "out_leaky_relu": out_leaky,
               "loss": loss.detach().reshape(1)}
    tensors.update({f"init.{k}": v for k, v in init.items()})
    tensors.update({f"grad.{k}": v for k, v in grads.items()})
    tensors.update({f"after_step.{k}": v for k, v in after.items()})
    save("projector.safetensors", tensors)
    # Old logic: scripts/make-projector-fixtures.py:135 (tanh, reshape [1, L, d], LayerNorm) and
    # its hf_adamw_step; with L = 100 here.
    enc = torch.nn.Linear(PROMPT * d_src, hidden)
    dec = torch.nn.Linear(hidden, PROMPT * d_tgt)
    norm = torch.nn.LayerNorm(d_tgt, eps=1e-5)
    with torch.no_grad():
        for m, k in ((enc, "encoder"), (dec, "decoder"), (norm, "layer_norm")):
            m.weight.copy_(init[k + ".weight"])
            m.bias.copy_(init[k + ".bias"])
    old = old_module("scripts/make-projector-fixtures.py")
    mine = norm(dec(torch.tanh(enc(src))).reshape(1, PROMPT, d_tgt)).reshape(1, -1)
    cmp("projector.out_tanh", mine.detach(), out_tanh)
    params = [enc.weight, enc.bias, dec.weight, dec.bias, norm.weight, norm.bias]
    names = ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias",
             "layer_norm.weight", "layer_norm.bias"]
    l2 = torch.nn.functional.mse_loss(mine, target)
    l2.backward()
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    with torch.no_grad():
        old.hf_adamw_step(params, [p.grad for p in params], state, 1)
    cmp("projector.after_step", torch.cat([p.detach().reshape(-1) for p in params]),
        torch.cat([after[n].reshape(-1) for n in names]))
    return {"projector": {"d_src": d_src, "hidden": hidden, "d_tgt": d_tgt, "prompt_len": PROMPT,
                          "lr": 0.005, "eps": 1e-6, "loss": "mse_loss(out, target), mean",
                          "loss_value": loss.item()}}


# ----------------------------------------------------------------------------------------------
# (e) activated neurons
# ----------------------------------------------------------------------------------------------
def activations(official, stage):
    import torch
    print("(e) activated neurons")
    PR = importlib.import_module("model.PromptRoberta")
    PT = importlib.import_module("model.PromptT5")
    tensors, meta = {}, {}

    def hook(outputs, n):  # activate_neuron_Roberta.py / activate_neuron_T5.py save_ppt_outputs1_hook
        def fn(_, __, output):
            outputs[n].append(output.detach().to("cpu"))
        return fn

    # RoBERTa: activate_neuron_Roberta.py:139-150 hooks, :205 outputs[:, :, :1, :].
    config = make_config(official, "activate_neuronPromptRoberta.config")
    torch.manual_seed(22)
    prompt_r = torch.randn(PROMPT, 16) * 0.5  # as make-activation-fixtures.py draws it (seed 22)
    model = PR.PromptRoberta(config, [])
    model.encoder.roberta.embeddings.prompt_embeddings.weight.data = prompt_r.clone()  # init_tool.py:385
    outputs = [[] for _ in range(12)]
    for n in range(12):
        model.encoder.roberta.encoder.layer[n].intermediate.register_forward_hook(hook(outputs, n))
    fmt = importlib.import_module("formatter.activate_neuronPromptRobertaFormatter") \
        .activate_neuronPromptRobertaFormatter(config, "valid")
    batch = fmt.process([{"label": 0}], config, "valid")
    model.eval()
    with torch.no_grad():
        model(batch, config, [], None, "valid")
    for k in range(12):
        outputs[k] = torch.cat(outputs[k])
    outputs = torch.stack(outputs)[:, :, :1, :]  # [12, N, 1, 64]
    act_r = outputs[:, 0, 0, :]
    tensors.update({"roberta.prompt": prompt_r, "roberta.input_ids": batch["inputx"],
                    "roberta.attention_mask": batch["mask"], "roberta.act": act_r,
                    "roberta.mask": (act_r > 0).to(torch.uint8)})
    # T5: activate_neuron_T5.py:187 hooks DenseReluDense.wi, :258 outputs[:, :1, :1, :].
    config = make_config(official, "activate_neuronPromptT5.config")
    torch.manual_seed(23)
    prompt_t = torch.randn(PROMPT, 16)  # as make-activation-fixtures.py draws it (seed 23)
    model = PT.PromptT5(config, [])
    for m in (model.encoder.prompt_embeddings, model.encoder.encoder.prompt_tokens,
              model.encoder.decoder.prompt_tokens):  # init_tool.py:390-392
        m.weight.data = prompt_t.clone()
    outputs = [[] for _ in range(12)]
    for n in range(12):
        model.encoder.decoder.block[n].layer[2].DenseReluDense.wi.register_forward_hook(hook(outputs, n))
    fmt = importlib.import_module("formatter.activate_neuronPromptT5Formatter") \
        .activate_neuronPromptT5Formatter(config, "valid")
    batch = fmt.process([{"label": 0}], config, "valid")
    model.eval()
    with torch.no_grad():
        model(batch, config, [], None, "valid")
    calls = len(outputs[0])
    for k in range(12):
        outputs[k] = torch.cat(outputs[k])
    outputs = torch.stack(outputs)[:, :1, :1, :]  # [12, 1, 1, 32]
    act_t = outputs[:, 0, 0, :]
    tensors.update({"t5.prompt": prompt_t, "t5.input_ids": batch["inputx"],
                    "t5.labels": batch["label"], "t5.wi": act_t,
                    "t5.mask": (act_t > 0).to(torch.uint8)})
    meta["activations"] = {"t5_decoder_calls": calls,
                           "roberta_min_abs": act_r.abs().min().item(),
                           "t5_min_abs": act_t.abs().min().item()}
    save("activations.safetensors", tensors)

    # Old logic (scripts/make-activation-fixtures.py) on the same checkpoints and prompts.
    old = old_module("scripts/make-activation-fixtures.py")
    data = tempfile.mkdtemp()
    shutil.copytree(os.path.join(stage, "roberta-base"), os.path.join(data, "r"))
    shutil.copy(os.path.join(OUT, "roberta", "tokenizer.json"), os.path.join(data, "r"))
    shutil.copytree(os.path.join(stage, "t5-base"), os.path.join(data, "t"))
    got = {}
    old.DATA, old.PROMPT_LEN, old.T5_EXTRA_ID_0 = data, PROMPT, 32099
    old.save = lambda name, t: got.__setitem__(name, t)
    from transformers import RobertaForMaskedLM, T5ForConditionalGeneration
    old.encoder("r", RobertaForMaskedLM, "<s>", "<mask>", seed=22)
    # The old script hooks DenseReluDense.act (transformers 5); 4.10 calls F.relu inline. Give
    # it an `act` module computing the same wo(dropout(relu(wi(x)))), for this comparison only.
    from transformers.models.t5 import modeling_t5 as hf_t5
    cls = hf_t5.T5DenseReluDense
    orig_init, orig_fwd = cls.__init__, cls.forward

    def init(self, config):
        orig_init(self, config)
        self.act = torch.nn.ReLU()

    cls.__init__ = init
    cls.forward = lambda self, h: self.wo(self.dropout(self.act(self.wi(h))))
    try:
        old.t5("t", seed=23)
    finally:
        cls.__init__, cls.forward = orig_init, orig_fwd
    assert torch.equal(got["r"]["prompt"], prompt_r) and torch.equal(got["t"]["prompt"], prompt_t)
    o_r = torch.stack([got["r"][f"act.official.{i}"] for i in range(12)])
    o_t = torch.stack([got["t"][f"act.decoder.{i}"] for i in range(12)])
    cmp("activations.roberta.act", o_r, act_r)
    cmp("activations.roberta.mask", (o_r > 0).int(), (act_r > 0).int())
    cmp("activations.t5.act_vs_relu_wi", o_t, torch.relu(act_t))
    cmp("activations.t5.mask", (o_t > 0).int(), (act_t > 0).int())
    meta["activations"]["t5_mask_bits_differing_from_old_layout"] = \
        int(((o_t > 0) != (act_t > 0)).sum())
    # The old T5 probe has no pads after <extra_id_0>; the official batch has 130 pads, which
    # generate() masks. Rerun the prefix layout with the pads, masked and attended.
    m = T5ForConditionalGeneration.from_pretrained(os.path.join(data, "t")).eval()
    acts = {}
    hs = [blk.layer[-1].DenseReluDense.wi.register_forward_hook(
        lambda _m, _i, o, i=i: acts.__setitem__(i, o[0, 0].detach().clone()))
        for i, blk in enumerate(m.decoder.block)]
    ids = batch["inputx"][:, PROMPT:]
    embeds = torch.cat([prompt_t.unsqueeze(0), m.shared(ids)], 1)
    with torch.no_grad():  # generate masks the pads (input_ids != 0): the old layout's result
        m(inputs_embeds=embeds, attention_mask=(batch["inputx"] != 0).long(),
          decoder_input_ids=torch.tensor([[0]]))
    cmp("activations.t5.wi_prefix_layout_pads_masked", torch.stack([acts[i] for i in range(12)]), act_t)
    with torch.no_grad():  # and with the pads attended, as the train path would
        m(inputs_embeds=embeds, decoder_input_ids=torch.tensor([[0]]))
    cmp("activations.t5.wi_if_pads_attended", torch.stack([acts[i] for i in range(12)]), act_t)
    for h in hs:
        h.remove()
    shutil.rmtree(data)
    return meta


# ----------------------------------------------------------------------------------------------
def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    official = os.path.abspath(sys.argv[1])
    assert os.path.isfile(os.path.join(official, "model", "PromptT5.py")), official
    shim(official)
    import torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    import transformers
    import tokenizers
    import nltk
    os.makedirs(os.path.join(OUT, "roberta"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "t5"), exist_ok=True)

    stage = tempfile.mkdtemp(prefix="official-stage-")
    cwd = os.getcwd()
    os.chdir(stage)
    try:
        roberta_tokenizer(os.path.join(stage, "roberta-base"))
        stock_r = tiny_roberta(os.path.join(stage, "roberta-base"))
        os.makedirs(os.path.join(stage, "RobertaForMaskedLM"))
        t5_tokenizer(os.path.join(stage, "t5-base", "tokenizer.json"))
        os.makedirs(os.path.join(stage, "T5ForMaskedLM", "t5-base"))
        shutil.copy(os.path.join(stage, "t5-base", "tokenizer.json"),
                    os.path.join(stage, "T5ForMaskedLM", "t5-base"))
        shutil.copy(os.path.join(stage, "t5-base", "tokenizer.json"), os.path.join(OUT, "t5"))
        stock_t = tiny_t5(os.path.join(stage, "t5-base"))
        keys_r = save_checkpoint(stock_r, os.path.join(OUT, "roberta"))
        keys_t = save_checkpoint(stock_t, os.path.join(OUT, "t5"))

        meta = {"official": "thunlp/Prompt-Transferability@2d15de5 Prompt-Transferability-1.0",
                "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                             "transformers": transformers.__version__,
                             "tokenizers": tokenizers.__version__, "nltk": nltk.__version__},
                "checkpoint_keys": {"roberta": len(keys_r), "t5": len(keys_t)}}
        meta.update(roberta(official, stage, stock_r))
        meta.update(t5(official, stage, stock_t))
        meta.update(projector())
        meta.update(activations(official, stage))
        meta["comparisons"] = CMP
        with open(os.path.join(OUT, "inputs.json"), "w") as f:
            json.dump(meta, f, indent=1, ensure_ascii=False)
    finally:
        os.chdir(cwd)
        shutil.rmtree(stage, ignore_errors=True)
    print(json.dumps(CMP, indent=1))


if __name__ == "__main__":
    main()
