//! Parity with Hugging Face transformers (BertForMaskedLM / RobertaForMaskedLM with
//! inputs_embeds = concat(P, E[ids])): logits and loss within 1e-4, prompt gradient within 1e-4
//! relative. Golden values: scripts/make-parity-fixtures.py.

use promptgrid_ml::{Encoded, EncoderModel, Head, Layout, Precision};
use tch::{Kind, Tensor};

use crate::util::{data_dir, expected, load, max_abs_diff, max_rel_diff};

struct Inputs {
    texts: Vec<String>,
    suffix: String,
    label_ids: Vec<i64>,
    labels: Vec<i64>,
    label_words: Vec<String>,
}

fn inputs(name: &str) -> Inputs {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir(name).join("inputs.json")).unwrap())
            .unwrap();
    let strs = |k: &str| {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let ints = |k: &str| {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    Inputs {
        texts: strs("texts"),
        suffix: v["template_suffix"].as_str().unwrap().to_string(),
        label_ids: ints("label_ids"),
        labels: ints("labels"),
        label_words: strs("label_words"),
    }
}

fn encode(model: &EncoderModel, inp: &Inputs) -> Vec<Encoded> {
    inp.texts
        .iter()
        .map(|t| {
            let text = format!("{t}{}{}", inp.suffix, model.tokenizer.mask_token);
            model.encode_text(&text).unwrap()
        })
        .collect()
}

fn check(name: &str, head: Head) {
    let exp = expected(name);
    let inp = inputs(name);
    let model = load(name, head, Layout::Prefix);
    let encoded = encode(&model, &inp);
    // The tokenizer crate reads tokenizer.json as the Python library does.
    let ref_ids = &exp["input_ids"];
    for (i, e) in encoded.iter().enumerate() {
        let row: Vec<i64> =
            Vec::try_from(ref_ids.get(i as i64).narrow(0, 0, e.ids.len() as i64)).unwrap();
        assert_eq!(row, e.ids, "{name}: token ids of example {i}");
    }
    assert_eq!(
        model.tokenizer.label_ids(&inp.label_words).unwrap(),
        inp.label_ids
    );

    let refs: Vec<&Encoded> = encoded.iter().collect();
    let batch = model.batch(&refs);
    let label_ids = Tensor::from_slice(&inp.label_ids);
    let prompt = exp["prompt"].copy().set_requires_grad(true);
    let h = match head {
        Head::Mlm => "mlm",
        Head::Tied => "tied",
    };
    let scores = model.label_scores(&prompt, &batch, &label_ids).unwrap();
    let loss = scores.cross_entropy_for_logits(&Tensor::from_slice(&inp.labels));
    loss.backward();
    let d_scores = max_abs_diff(&scores.detach(), &exp[&format!("{h}.scores")]);
    let d_loss = max_abs_diff(&loss.detach().reshape([1]), &exp[&format!("{h}.loss")]);
    let d_grad = max_rel_diff(&prompt.grad(), &exp[&format!("{h}.prompt_grad")]);
    let full = tch::no_grad(|| model.full_logits(&prompt, &batch).unwrap());
    let d_full = max_abs_diff(&full, &exp[&format!("{h}.full_logits")]);
    println!(
        "{name} {h}: scores {d_scores:.2e} loss {d_loss:.2e} grad(rel) {d_grad:.2e} full logits {d_full:.2e}"
    );
    assert!(
        d_scores < 1e-4,
        "{name} {h}: label scores differ by {d_scores}"
    );
    assert!(d_loss < 1e-4, "{name} {h}: loss differs by {d_loss}");
    assert!(
        d_grad < 1e-4,
        "{name} {h}: prompt gradient differs by {d_grad} (relative)"
    );
    assert!(d_full < 1e-4, "{name} {h}: full logits differ by {d_full}");

    if head == Head::Tied {
        let hidden = tch::no_grad(|| model.hidden_states(&exp["prompt"], &batch).unwrap());
        let d_hidden = max_abs_diff(&hidden.to_kind(Kind::Float), &exp["hidden"]);
        println!("{name}: hidden states {d_hidden:.2e}");
        assert!(
            d_hidden < 1e-4,
            "{name}: hidden states differ by {d_hidden}"
        );
    }
}

#[test]
fn bert_mlm_head_matches_transformers() {
    check("tiny-bert", Head::Mlm);
}

#[test]
fn bert_tied_readout_matches_transformers() {
    check("tiny-bert", Head::Tied);
}

#[test]
fn roberta_mlm_head_matches_transformers() {
    check("tiny-roberta", Head::Mlm);
}

#[test]
fn roberta_tied_readout_matches_transformers() {
    check("tiny-roberta", Head::Tied);
}

/// The official layout (mask at prompt slot 0, prompt slots without positions) has no
/// transformers reference; check the invariances it promises, on the wider-weights model where
/// positions matter clearly.
#[test]
fn official_layout_ignores_prompt_slot_zero_and_reads_the_mask() {
    let model = load("tiny-bert-train", Head::Mlm, Layout::Official);
    let inp = inputs("tiny-bert");
    let encoded = encode(&model, &inp);
    let refs: Vec<&Encoded> = encoded.iter().collect();
    let batch = model.batch(&refs);
    let label_ids = Tensor::from_slice(&inp.label_ids);
    let prompt = expected("tiny-bert")["prompt"].copy();
    let a = tch::no_grad(|| model.label_scores(&prompt, &batch, &label_ids).unwrap());
    // Slot 0 holds the mask: changing the prompt's first row changes nothing.
    let other = prompt.copy();
    let _ = other.get(0).fill_(3.0);
    let b = tch::no_grad(|| model.label_scores(&other, &batch, &label_ids).unwrap());
    assert!(max_abs_diff(&a, &b) < 1e-6);
    // Prompt rows carry no position: permuting rows 1.. leaves the scores unchanged.
    let perm = Tensor::from_slice(&[0i64, 4, 3, 2, 1]);
    let c = tch::no_grad(|| {
        model
            .label_scores(&prompt.index_select(0, &perm), &batch, &label_ids)
            .unwrap()
    });
    assert!(max_abs_diff(&a, &c) < 1e-5);
    // While the prefix layout does depend on the order.
    let prefix = load("tiny-bert-train", Head::Mlm, Layout::Prefix);
    let d = tch::no_grad(|| prefix.label_scores(&prompt, &batch, &label_ids).unwrap());
    let e = tch::no_grad(|| {
        prefix
            .label_scores(&prompt.index_select(0, &perm), &batch, &label_ids)
            .unwrap()
    });
    assert!(max_abs_diff(&d, &e) > 1e-3, "{}", max_abs_diff(&d, &e));
    // And the official layout reads somewhere else than the prefix layout.
    assert!(max_abs_diff(&a, &d) > 1e-3);
}

/// Scoring K prompts in one batched pass gives each prompt's own scores.
#[test]
fn batched_prompts_score_like_single_prompts() {
    let model = load("tiny-roberta", Head::Mlm, Layout::Prefix);
    let inp = inputs("tiny-roberta");
    let encoded = encode(&model, &inp);
    let refs: Vec<&Encoded> = encoded.iter().collect();
    let batch = model.batch(&refs);
    let label_ids = Tensor::from_slice(&inp.label_ids);
    let p1 = expected("tiny-roberta")["prompt"].copy();
    let p2 = &p1 * -0.5;
    let rows = Tensor::stack(&[&p1, &p1, &p1, &p2, &p2, &p2], 0);
    let big = model.batch(&refs.iter().chain(refs.iter()).copied().collect::<Vec<_>>());
    let both = tch::no_grad(|| model.label_scores(&rows, &big, &label_ids).unwrap());
    let s1 = tch::no_grad(|| model.label_scores(&p1, &batch, &label_ids).unwrap());
    let s2 = tch::no_grad(|| model.label_scores(&p2, &batch, &label_ids).unwrap());
    assert!(max_abs_diff(&both.narrow(0, 0, 3), &s1) < 1e-5);
    assert!(max_abs_diff(&both.narrow(0, 3, 3), &s2) < 1e-5);
}

/// `--precision bf16`: the same model with bf16 matrix products stays within bf16's rounding of
/// the float32 reference, and its products do run in bf16 (the numbers move).
#[test]
fn bf16_products_stay_within_rounding_of_transformers() {
    for name in ["tiny-bert", "tiny-roberta"] {
        let exp = expected(name);
        let inp = inputs(name);
        let mut model = load(name, Head::Mlm, Layout::Prefix);
        model.set_precision(Precision::Bf16).unwrap();
        let encoded = encode(&model, &inp);
        let refs: Vec<&Encoded> = encoded.iter().collect();
        let batch = model.batch(&refs);
        let prompt = exp["prompt"].copy().set_requires_grad(true);
        let scores = model
            .label_scores(&prompt, &batch, &Tensor::from_slice(&inp.label_ids))
            .unwrap();
        assert_eq!(scores.kind(), Kind::Float, "{name}: scores are float32");
        let loss = scores.cross_entropy_for_logits(&Tensor::from_slice(&inp.labels));
        loss.backward();
        let want = &exp["mlm.scores"];
        let d_scores = max_abs_diff(&scores.detach(), want);
        let scale = want.abs().max().double_value(&[]);
        let grad = prompt.grad();
        let want_grad = &exp["mlm.prompt_grad"];
        let cos = (&grad * want_grad).sum(Kind::Float).double_value(&[])
            / (grad.norm().double_value(&[]) * want_grad.norm().double_value(&[]));
        println!("{name} bf16: scores {d_scores:.2e} (scale {scale:.2}) gradient cosine {cos:.5}");
        assert!(
            d_scores > 1e-6,
            "{name}: bf16 scores equal float32 ones: the products did not run in bf16"
        );
        assert!(
            d_scores < 0.01 * scale,
            "{name}: bf16 scores differ by {d_scores}"
        );
        assert!(cos > 0.99, "{name}: bf16 prompt gradient cosine {cos}");
        assert!(
            model.set_precision(Precision::F32).is_err(),
            "{name}: float32 weights cannot come back"
        );
    }
}

#[test]
fn precision_names_parse_and_a_wrong_one_is_named() {
    assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
    assert_eq!("fp32".parse::<Precision>().unwrap(), Precision::F32);
    let err = "fp16".parse::<Precision>().unwrap_err().to_string();
    assert!(err.contains("\"fp16\"") && err.contains("bf16"), "{err}");
}
