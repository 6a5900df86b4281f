//! The generation metrics against their reference implementations: the official SQuAD v1.1
//! evaluation functions and Google's `rouge-score`, whose values on hand-made edge cases
//! scripts/make-textmetrics-fixtures.py wrote to tests/data/textmetrics.json. The scores must be
//! the same floats, bit for bit.

use promptgrid_ml::textmetrics::{
    RougeScore, max_exact_match, max_token_f1, normalize_answer, qa_corpus, rouge, rouge_corpus,
    rouge_tokenize,
};
use serde_json::Value;

fn fixtures() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/textmetrics.json");
    let text = std::fs::read_to_string(path).expect("run scripts/make-textmetrics-fixtures.py");
    serde_json::from_str(&text).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Scores are stored as strings (Python's `repr`): `str::parse` rounds correctly, serde_json's
/// default float parser does not always, and the comparison is bit for bit.
fn num(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

#[track_caller]
fn assert_same(got: f64, want: f64, what: &str) {
    assert!(
        got.to_bits() == want.to_bits(),
        "{what}: got {got:?}, the reference gives {want:?}"
    );
}

#[test]
fn qa_examples_match_squad_v1_1() {
    let data = fixtures();
    let examples = data["qa"].as_array().unwrap();
    assert!(examples.len() >= 40);
    for e in examples {
        let prediction = e["prediction"].as_str().unwrap();
        let golds = strings(&e["golds"]);
        let what = format!("prediction {prediction:?}, golds {golds:?}");
        assert_eq!(
            normalize_answer(prediction),
            e["normalized_prediction"].as_str().unwrap(),
            "{what}"
        );
        let normalized: Vec<String> = golds.iter().map(|g| normalize_answer(g)).collect();
        assert_eq!(normalized, strings(&e["normalized_golds"]), "{what}");
        let em = max_exact_match(prediction, &golds).unwrap();
        assert_same(em, num(&e["exact_match"]), &format!("EM of {what}"));
        let f1 = max_token_f1(prediction, &golds).unwrap();
        assert_same(f1, num(&e["f1"]), &format!("F1 of {what}"));
    }
}

#[test]
fn qa_corpus_is_the_mean() {
    let data = fixtures();
    let examples = data["qa"].as_array().unwrap();
    let predictions: Vec<&str> = examples
        .iter()
        .map(|e| e["prediction"].as_str().unwrap())
        .collect();
    let golds: Vec<Vec<String>> = examples.iter().map(|e| strings(&e["golds"])).collect();
    let scores = qa_corpus(&predictions, &golds).unwrap();
    assert_same(
        scores.exact_match,
        num(&data["qa_corpus"]["exact_match"]),
        "corpus EM",
    );
    assert_same(scores.f1, num(&data["qa_corpus"]["f1"]), "corpus F1");
}

#[test]
fn qa_needs_gold_answers() {
    assert!(max_exact_match("x", &[] as &[&str]).is_err());
    assert!(max_token_f1("x", &[] as &[&str]).is_err());
    assert!(qa_corpus(&["x", "y"], &[vec!["x"]]).is_err());
}

fn check_score(got: RougeScore, want: &Value, what: &str) {
    assert_same(got.precision, num(&want[0]), &format!("{what} precision"));
    assert_same(got.recall, num(&want[1]), &format!("{what} recall"));
    assert_same(got.fmeasure, num(&want[2]), &format!("{what} F"));
}

#[test]
fn rouge_examples_match_rouge_score() {
    let data = fixtures();
    let examples = data["rouge"].as_array().unwrap();
    assert!(examples.len() >= 20);
    for e in examples {
        let reference = e["reference"].as_str().unwrap();
        let prediction = e["prediction"].as_str().unwrap();
        let what = format!("reference {reference:?}, prediction {prediction:?}");
        assert_eq!(
            rouge_tokenize(reference),
            strings(&e["reference_tokens"]),
            "{what}"
        );
        assert_eq!(
            rouge_tokenize(prediction),
            strings(&e["prediction_tokens"]),
            "{what}"
        );
        let scores = rouge(reference, prediction);
        check_score(scores.rouge1, &e["rouge1"], &format!("ROUGE-1 of {what}"));
        check_score(scores.rouge2, &e["rouge2"], &format!("ROUGE-2 of {what}"));
        check_score(scores.rouge_l, &e["rougeL"], &format!("ROUGE-L of {what}"));
    }
}

#[test]
fn rouge_corpus_is_the_mean() {
    let data = fixtures();
    let examples = data["rouge"].as_array().unwrap();
    let field =
        |k: &str| -> Vec<&str> { examples.iter().map(|e| e[k].as_str().unwrap()).collect() };
    let scores = rouge_corpus(&field("prediction"), &field("reference")).unwrap();
    let want = &data["rouge_corpus"];
    assert_same(scores.rouge1, num(&want["rouge1"]), "corpus ROUGE-1");
    assert_same(scores.rouge2, num(&want["rouge2"]), "corpus ROUGE-2");
    assert_same(scores.rouge_l, num(&want["rougeL"]), "corpus ROUGE-L");
}

#[test]
fn official_bleu_is_nltks_smoothed_sentence_bleu() {
    let f = fixtures();
    let cases = f["bleu"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let (hyp, reference) = (strings(&case["hypothesis"]), strings(&case["reference"]));
        let got = promptgrid_ml::bleu::official_bleu(&hyp, &reference);
        assert_same(got, num(&case["bleu"]), &format!("{hyp:?} / {reference:?}"));
    }
}
