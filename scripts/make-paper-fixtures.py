#!/usr/bin/env python
"""Tiny stand-ins for the paper's checkpoints and datasets, for tests/paper_sweeps.rs.

The paper sweeps (sweeps/paper-roberta.toml, sweeps/paper-t5.toml) name roberta-base,
roberta-large and t5-base, and the Hugging Face exports of 17 datasets. This script writes, all
offline and seeded:

* tests/data/paper/models/{roberta-base,roberta-large}: randomly initialised RobertaForMaskedLM
  of two widths (32 and 48), sharing a byte-level BPE tokenizer whose vocabulary holds every
  encoder label word both as a word start (`positive`, the id the official code scores) and after
  a space (`Ġpositive`, a different id), with RoBERTa's 514 positions.
* tests/data/paper/models/t5-base: a randomly initialised T5 v1.0 (ReLU, tied embeddings) with a
  SentencePiece-style unigram tokenizer (`<pad>` 0, `</s>` 1, `<unk>` 2, `<extra_id_N>` last).
* tests/data/paper/data/<dir>/<split>.parquet: rows shaped like the Hugging Face exports: the
  exports' own column names, label encodings (GLUE MNLI stores entailment as 0), nested answers
  (SQuAD), lists of answers (NQ-Open), the SNLI rows without a gold label (-1), the splits each
  export has, and GLUE's hidden test labels (-1, so the catalog scores GLUE on validation).

The HF schemas below are written out from the datasets' cards, independently of
sweeps/tasks/*.toml, so that the test catches a catalog that disagrees with the real exports.

Run: . scripts/env.sh && python scripts/make-paper-fixtures.py
"""
import os
import random
import tomllib

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import RobertaConfig, RobertaForMaskedLM, T5Config, T5ForConditionalGeneration

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(REPO, "tests", "data", "paper")
CATALOG = os.path.join(REPO, "sweeps", "tasks")

WORDS = (
    "the a an it was is this that movie film story plot great terrible good bad awful fine "
    "food service screen battery keyboard price staff menu what who where when why how did does "
    "man woman dog cat park street car house people children play run eat sleep wait "
    "and or but not very really quite so too of to in on for with as at by i you we they he she "
    "one two three long short best worst ever never always said says person apple paris city "
    "question context hypothesis sentence premise summary answer . , ! ? :"
).split()

# Each export: split -> rows, columns with their kind, and how labels are stored.
#   text columns get a few random words; ("label", values) draws one of values;
#   "answers" is SQuAD's struct, "answer_list" NQ-Open's list of strings.
HF = {
    # stanfordnlp/imdb: text, label (0 neg, 1 pos); train, test (and unsupervised, -1).
    "imdb": {"splits": ["train", "test"], "columns": {"text": "text", "label": ("label", [0, 1])}},
    # glue/sst2: sentence, label, idx; the test labels are hidden (-1).
    "sst2": {"splits": ["train", "validation", "test"], "glue": True,
             "columns": {"sentence": "text", "label": ("label", [0, 1]), "idx": "idx"}},
    # SemEval-2014 task 4 aspect sentiment, as the catalog's exports: sentence, aspect, sentiment.
    "laptop": {"splits": ["train", "test"],
               "columns": {"sentence": "text", "aspect": "word",
                           "sentiment": ("label", [0, 1, 2, 3])}},
    "restaurant": {"splits": ["train", "test"],
                   "columns": {"sentence": "text", "aspect": "word",
                               "sentiment": ("label", [0, 1, 2, 3])}},
    # movie_rationales: review, label, evidences.
    "movierationales": {"splits": ["train", "validation", "test"],
                        "columns": {"review": "text", "label": ("label", [0, 1]),
                                    "evidences": "text_list"}},
    # tweet_eval/sentiment: text, label (0 negative, 1 neutral, 2 positive).
    "tweetevalsentiment": {"splits": ["train", "validation", "test"],
                           "columns": {"text": "text", "label": ("label", [0, 1, 2])}},
    # glue/mnli: premise, hypothesis, label (0 entailment, 1 neutral, 2 contradiction), idx.
    "mnli": {"splits": ["train", "validation_matched", "validation_mismatched", "test_matched"],
             "glue": True,
             "columns": {"premise": "text", "hypothesis": "text", "label": ("label", [0, 1, 2]),
                         "idx": "idx"}},
    # glue/qnli: question, sentence, label (0 entailment, 1 not_entailment), idx.
    "qnli": {"splits": ["train", "validation", "test"], "glue": True,
             "columns": {"question": "text", "sentence": "text", "label": ("label", [0, 1]),
                         "idx": "idx"}},
    # stanfordnlp/snli: premise, hypothesis, label (0 entailment, 1 neutral, 2 contradiction,
    # -1 where the annotators did not agree).
    "snli": {"splits": ["train", "validation", "test"], "no_gold": True,
             "columns": {"premise": "text", "hypothesis": "text", "label": ("label", [0, 1, 2])}},
    # hendrycks/ethics deontology and justice: label, scenario (and excuse); train, validation
    # (the official *_test.csv) and test (the hard set).
    "ethicsdeontology": {"splits": ["train", "validation", "test"],
                         "columns": {"label": ("label", [0, 1]), "scenario": "text",
                                     "excuse": "text"}},
    "ethicsjustice": {"splits": ["train", "validation", "test"],
                      "columns": {"label": ("label", [0, 1]), "scenario": "text"}},
    # glue/qqp: question1, question2, label (0 not_duplicate, 1 duplicate), idx.
    "qqp": {"splits": ["train", "validation", "test"], "glue": True,
            "columns": {"question1": "text", "question2": "text", "label": ("label", [0, 1]),
                        "idx": "idx"}},
    # glue/mrpc: sentence1, sentence2, label (0 not_equivalent, 1 equivalent), idx. Unlike the
    # other GLUE tasks its test labels are real (huggingface/datasets#2216).
    "mrpc": {"splits": ["train", "validation", "test"],
             "columns": {"sentence1": "text", "sentence2": "text", "label": ("label", [0, 1]),
                         "idx": "idx"}},
    # rajpurkar/squad: id, title, context, question, answers {text: [..], answer_start: [..]}.
    "squad": {"splits": ["train", "validation"],
              "columns": {"id": "idx_str", "title": "word", "context": "text", "question": "text",
                          "answers": "answers"}},
    # google-research-datasets/nq_open: question, answer (a list of strings).
    "nq_open": {"splits": ["train", "validation"],
                "columns": {"question": "text", "answer": "answer_list"}},
    # alexfabbri/multi_news: document, summary.
    "multi_news": {"splits": ["train", "validation", "test"],
                   "columns": {"document": "text", "summary": "text"}},
    # Samsung/samsum: id, dialogue, summary.
    "samsum": {"splits": ["train", "validation", "test"],
               "columns": {"id": "idx_str", "dialogue": "text", "summary": "text"}},
}
ROWS = {"train": 24}
EVAL_ROWS = 8


def catalog():
    out = {}
    for f in sorted(os.listdir(CATALOG)):
        if f.endswith(".toml") and not f.startswith("demo-"):
            with open(os.path.join(CATALOG, f), "rb") as fh:
                d = tomllib.load(fh)
            out[d["name"]] = d
    return out


def words(rng, lo, hi):
    return " ".join(rng.choice(WORDS[:-5]) for _ in range(rng.randint(lo, hi)))


def column(rng, kind, n, split, spec):
    if isinstance(kind, tuple):
        values = kind[1]
        if spec.get("glue") and split.startswith("test"):
            return pa.array([-1] * n, pa.int64())
        col = [values[i % len(values)] for i in range(n)]
        rng.shuffle(col)
        if spec.get("no_gold"):
            col[:2] = [-1, -1]
        return pa.array(col, pa.int64())
    if kind == "text":
        return pa.array([words(rng, 3, 12) for _ in range(n)])
    if kind == "word":
        return pa.array([rng.choice(WORDS[:40]) for _ in range(n)])
    if kind == "idx":
        return pa.array(list(range(n)), pa.int32())
    if kind == "idx_str":
        return pa.array([f"{split}-{i}" for i in range(n)])
    if kind == "text_list":
        return pa.array([[words(rng, 2, 4)] for _ in range(n)], pa.list_(pa.string()))
    if kind == "answer_list":
        return pa.array([[words(rng, 1, 2), words(rng, 1, 3)] for _ in range(n)],
                        pa.list_(pa.string()))
    if kind == "answers":
        ty = pa.struct([("text", pa.list_(pa.string())), ("answer_start", pa.list_(pa.int32()))])
        return pa.array([{"text": [words(rng, 1, 3)], "answer_start": [0]} for _ in range(n)], ty)
    raise ValueError(kind)


def write_data(cat):
    rng = random.Random(7)
    for task, spec in HF.items():
        d = cat[task]
        folder = os.path.join(OUT, "data", d.get("data_dir", task))
        os.makedirs(folder, exist_ok=True)
        for split in spec["splits"]:
            n = ROWS.get(split, ROWS["train"] if "train" in split else EVAL_ROWS)
            table = pa.table({name: column(rng, kind, n, split, spec)
                              for name, kind in spec["columns"].items()})
            pq.write_table(table, os.path.join(folder, f"{split}.parquet"))


def label_words(cat, *keys):
    out = set()
    for d in cat.values():
        for key in keys:
            out.update(d.get("verbalizer", {}).get(key, []))
    return sorted(out)


def bpe_tokenizer(labels):
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    # Label words both at a text's start and after a space, many times over, so that BPE
    # merges each into one token in both forms: `positive` and `Ġpositive` are different ids.
    corpus = ([" ".join(WORDS)] * 4 + [" " + w for w in WORDS] * 8 + [w for w in WORDS] * 8
              + [w for w in labels] * 40 + [" " + w for w in labels] * 40)
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    for w in labels:
        for form in (w, " " + w):
            assert len(tok.encode(form, add_special_tokens=False).ids) == 1, form
    return tok


def unigram_tokenizer(labels):
    # A hand-made SentencePiece vocabulary: every word (label words included) is one piece after
    # the word-start mark, as T5's real vocabulary has its frequent words, so label words differ
    # in their first token; single characters cover everything else.
    words = sorted(set(WORDS) | set(labels) | {"hypothesis:", "sentence:", "premise:", "context:",
                                                  "question:", "[SEP]", "SEP"})
    chars = sorted({c for w in words for c in w})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0) for w in words] + [(c, -5.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    # T5 puts its 100 sentinels after the pieces, <extra_id_0> last.
    tok.add_special_tokens([f"<extra_id_{i}>" for i in range(99, -1, -1)])
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)])
    for w in labels:
        assert len(tok.encode(w, add_special_tokens=False).ids) == 1, w
    return tok


def save(model, tok, name):
    out = os.path.join(OUT, "models", name)
    os.makedirs(out, exist_ok=True)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    for f in os.listdir(out):
        if f not in ("config.json", "model.safetensors", "tokenizer.json"):
            os.remove(os.path.join(out, f))


def main():
    torch.manual_seed(0)
    cat = catalog()
    write_data(cat)
    bpe = bpe_tokenizer(label_words(cat, "encoder"))
    for name, width in [("roberta-base", 32), ("roberta-large", 48)]:
        config = RobertaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=width,
                               num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=2 * width, max_position_embeddings=514,
                               pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1)
        save(RobertaForMaskedLM(config), bpe, name)
    uni = unigram_tokenizer(label_words(cat, "t5"))
    config = T5Config(vocab_size=uni.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                      num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="relu",
                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    save(T5ForConditionalGeneration(config), uni, "t5-base")


if __name__ == "__main__":
    main()
