#!/usr/bin/env python3
"""Writes ml/tests/data/textmetrics.json: the reference values that ml/tests/textmetrics.rs
checks promptgrid's generation metrics (ml/src/textmetrics.rs) against.

* QA (exact match, token F1, max over gold answers): the functions of the official SQuAD v1.1
  evaluation script, `evaluate-v1.1.py` from https://rajpurkar.github.io/SQuAD-explorer/
  (also github.com/allenai/bi-att-flow/blob/master/squad/evaluate-v1.1.py), copied verbatim
  below.
* ROUGE-1/2/L: Google's `rouge-score` package (pinned in scripts/requirements.txt),
  `rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)`.
* BLEU as the official T5 runs score generation (Prompt-Transferability-1.0 model/PromptT5.py:
  299-304): NLTK's `sentence_bleu([reference], hypothesis, weights=(0.7, 0.3, 0.0, 0.0),
  smoothing_function=SmoothingFunction().method1)` on piece sequences, 0 for an empty
  hypothesis.

The examples are hand-made to cover the normalization edge cases (articles, punctuation, case,
whitespace, empty strings, several golds, Unicode punctuation and case mapping, numbers,
repeated tokens), plus a few longer pseudo-random texts for the LCS.

Usage: . scripts/env.sh && python scripts/make-textmetrics-fixtures.py
"""
import json
import os
import random
import re
import string
from collections import Counter
from importlib.metadata import version

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score import rouge_scorer, tokenize


# ---- SQuAD v1.1 evaluate-v1.1.py, verbatim ------------------------------------------------------
def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def exact_match_score(prediction, ground_truth):
    return (normalize_answer(prediction) == normalize_answer(ground_truth))


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)
# ---- end of the SQuAD script -------------------------------------------------------------------


QA = [
    # (prediction, gold answers)
    ("The Eiffel Tower", ["Eiffel Tower"]),
    ("an apple a day", ["apple day"]),
    ("Theatre anew", ["the theatre, anew"]),
    ("Anthem of The Andes", ["anthem andes"]),
    ("  eiffel   TOWER\t\n", ["Eiffel Tower"]),
    ("", ["Paris"]),
    ("", [""]),
    ("Paris", [""]),
    ("the", ["a", "an"]),
    ("A.", ["a"]),
    ("Paris, France", ["Paris", "France", "Paris France"]),
    ("in Paris", ["London", "paris", "Paris, Texas"]),
    ("Paris", ["paris texas", "the city of paris"]),
    ("\u201cParis\u201d", ["Paris"]),
    ("\u201cthe\u201d end", ["end"]),
    ("it\u2019s the end", ["its end", "it s end"]),
    ("It's the end", ["its end"]),
    ("\u00bfQu\u00e9?", ["qu\u00e9"]),
    ("Paris \u2014 France", ["paris france"]),
    ("1,000", ["1000"]),
    ("3.14 meters", ["3 14 meters", "314 meters"]),
    ("twenty-one (21)", ["21", "twentyone"]),
    ("$1.5 million", ["1.5 million dollars"]),
    ("the 1990s", ["1990s", "the '90s"]),
    ("the the the cat", ["the cat cat"]),
    ("cat cat cat dog", ["cat dog dog"]),
    ("New York New York", ["new york"]),
    ("U.S.A.", ["USA", "United States"]),
    ("rock-n-roll", ["rock n roll"]),
    ("the_answer", ["answer"]),
    ("Mr. Smith's dog", ["mr smiths dog"]),
    ("\u00dcn\u00efc\u00f6d\u00e9 CAF\u00c9", ["\u00fcn\u00efc\u00f6d\u00e9 caf\u00e9"]),
    ("Th\u00e9 answer", ["the answer"]),
    ("the\u0301 end", ["end"]),
    ("\u0130stanbul", ["istanbul", "i\u0307stanbul"]),
    ("5 \u212aelvin", ["5 kelvin"]),
    ("\u039f\u0394\u039f\u03a3", ["\u03bf\u03b4\u03bf\u03c3", "\u03bf\u03b4\u03bf\u03c2"]),
    ("STRASSE", ["stra\u00dfe", "strasse"]),
    ("non\u00a0breaking\u2003space\u3000here", ["non breaking space here"]),
    ("sep\x1cchar\x1fhere", ["sep char here"]),
    ("zero\u200bwidth", ["zero width", "zero\u200bwidth"]),
    ("\u216b the king", ["\u217b king"]),
    ("a1 an2 the3", ["a1 an2 the3"]),
    ("A An THE aN tHe", ["an"]),
    ("the quick brown fox jumps over the lazy dog",
     ["quick brown fox", "a lazy dog", "the fox jumped over the dog"]),
]

ROUGE = [
    # (reference, prediction)
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("the cat sat on the mat", "the cat was on the mat"),
    ("The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log."),
    ("", "something"),
    ("something", ""),
    ("", ""),
    ("!!! ???", "... ---"),
    ("The Quick Brown Fox", "the quick brown fox"),
    ("the the the the", "the the"),
    ("a b a b a b", "b a b a"),
    ("x", "x"),
    ("a", "b"),
    ("caf\u00e9 r\u00e9sum\u00e9 na\u00efve", "cafe resume naive"),
    ("in 2019, 3.5% grew", "2019 3 5 grew"),
    ("\u0130stanbul 5\u212a run", "istanbul 5k run"),
    ("state-of-the-art_model", "state of the art model"),
    ("\u039f\u0394\u039f\u03a3 \u4e2d\u6587", "\u03bf\u03b4\u03bf\u03c2"),
    ("line one\nline two\ttabbed", "line  one line\r\ntwo"),
    ("Amanda baked cookies and will bring Jerry some tomorrow.",
     "Amanda will bring Jerry cookies tomorrow, she baked them."),
    ("Olivia and Olivier are voting for liberals in this election.",
     "Olivia and Olivier vote for the liberals."),
    ("John's flight is delayed. He'll arrive at 10:30 p.m. instead of 8 p.m.",
     "John will arrive at 10:30 pm because his flight is delayed."),
]


def random_text(rng, n, vocab):
    words = [rng.choice(vocab) for _ in range(n)]
    return " ".join(words)


def long_pairs():
    rng = random.Random(10)
    vocab = ["the", "a", "court", "said", "on", "Monday", "that", "it", "would", "rule", "Rule",
             "in", "2024", "U.S.", "officials", "report", "reported", "of", "and", "news",
             "state-of-the-art", "model's", "data", "(", ")", ",", "."]
    pairs = []
    for n, m in [(60, 40), (200, 150), (300, 260)]:
        ref = random_text(rng, n, vocab)
        pred = random_text(rng, m, vocab)
        pairs.append((ref, pred))
    # A prediction that copies much of its reference, shuffled in blocks (LCS < bag overlap).
    ref = random_text(rng, 120, vocab)
    words = ref.split()
    blocks = [words[i:i + 15] for i in range(0, len(words), 15)]
    rng.shuffle(blocks)
    pairs.append((ref, " ".join(w for b in blocks for w in b[:12])))
    return pairs


# (hypothesis, reference) piece sequences: exact, partial, reordered, repeated pieces (clipping),
# shorter and longer than the reference (brevity penalty), a single piece (no bigram), no
# overlap, an empty hypothesis and an empty reference.
BLEU = [
    ("▁the ▁cat ▁sat", "▁the ▁cat ▁sat"),
    ("▁the ▁cat", "▁the ▁cat ▁sat ▁on ▁the ▁mat"),
    ("▁cat", "▁the ▁cat ▁sat"),
    ("▁sat ▁cat ▁the", "▁the ▁cat ▁sat"),
    ("▁the ▁the ▁the ▁the", "▁the ▁cat ▁the ▁mat"),
    ("▁the ▁cat ▁sat ▁on ▁the ▁mat ▁today ▁again", "▁the ▁cat ▁sat ▁on ▁the ▁mat"),
    ("▁dog ▁runs", "▁the ▁cat ▁sat"),
    ("", "▁the ▁cat"),
    ("▁the ▁cat", ""),
    ("▁Paris", "▁Paris"),
    ("▁in ▁19 89", "▁19 89"),
    ("▁a ▁b ▁c ▁d ▁a ▁b ▁c ▁d", "▁a ▁b ▁c ▁d ▁e ▁a ▁b"),
]


def official_bleu(hypothesis, reference):
    """model/PromptT5.py:299-304: `len(y) != 0` is always true (y = [reference])."""
    if len(hypothesis) == 0:
        return 0
    return sentence_bleu([reference], hypothesis, weights=(0.7, 0.3, 0.0, 0.0),
                         smoothing_function=SmoothingFunction().method1)


def exact(x):
    """A score as the string of its shortest round-trip repr: serde_json's default float parser
    is not correctly rounded, Rust's `str::parse::<f64>` is, so the test reads the same bits."""
    return repr(float(x))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(root, "ml", "tests", "data", "textmetrics.json")

    qa = []
    for prediction, golds in QA:
        qa.append({
            "prediction": prediction,
            "golds": golds,
            "normalized_prediction": normalize_answer(prediction),
            "normalized_golds": [normalize_answer(g) for g in golds],
            "exact_match": exact(metric_max_over_ground_truths(exact_match_score, prediction, golds)),
            "f1": exact(metric_max_over_ground_truths(f1_score, prediction, golds)),
        })
    qa_corpus = {k: exact(sum(float(e[k]) for e in qa) / len(qa)) for k in ["exact_match", "f1"]}

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    rouge = []
    for reference, prediction in ROUGE + long_pairs():
        s = scorer.score(reference, prediction)
        rouge.append({
            "reference": reference,
            "prediction": prediction,
            "reference_tokens": tokenize.tokenize(reference, None),
            "prediction_tokens": tokenize.tokenize(prediction, None),
            **{k: [exact(s[k].precision), exact(s[k].recall), exact(s[k].fmeasure)]
               for k in ["rouge1", "rouge2", "rougeL"]},
        })
    rouge_corpus = {k: exact(sum(float(e[k][2]) for e in rouge) / len(rouge))
                    for k in ["rouge1", "rouge2", "rougeL"]}

    bleu = []
    for hypothesis, reference in BLEU:
        h, r = hypothesis.split(), reference.split()
        bleu.append({"hypothesis": h, "reference": r, "bleu": exact(official_bleu(h, r))})

    data = {
        "source": "scripts/make-textmetrics-fixtures.py",
        "rouge_score_version": version("rouge-score"),
        "nltk_version": version("nltk"),
        "bleu": bleu,
        "qa": qa,
        "qa_corpus": qa_corpus,
        "rouge": rouge,
        "rouge_corpus": rouge_corpus,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {out}: {len(qa)} QA examples, {len(rouge)} ROUGE pairs")


if __name__ == "__main__":
    main()
