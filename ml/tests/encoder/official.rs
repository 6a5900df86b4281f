//! The official layout against the official code (thunlp/Prompt-Transferability 2d15de5,
//! re-implemented in scripts/make-official-fixtures.py on a tiny RoBERTa): the formatters' input
//! ids, the no-space label ids, the label scores at slot 0 and the prompt's gradient (row 0
//! included) within 1e-5. Then the training regime: the random baseline, dropout, AdamW's eps.

use std::collections::BTreeMap;

use promptgrid_common::catalog::Metric;
use promptgrid_ml::{
    EncoderModel, Example, Head, Init, Layout, TaskData, TuneConfig, init_prompt, random_baseline,
    tune,
};
use tch::{Kind, Tensor};

use crate::util::{data_dir, expected, load, max_abs_diff};

const NAME: &str = "tiny-roberta-official";
const PAIR_TEMPLATE: &str = "{mask} {hypothesis} {sep} {premise}";

fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data_dir(NAME).join("inputs.json")).unwrap())
        .unwrap()
}

fn ints(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn example(fields: &[(&str, &str)], label: usize) -> Example {
    Example {
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        label,
    }
}

fn pair_examples(m: &serde_json::Value) -> Vec<Example> {
    let labels = ints(&m["labels"]);
    m["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(labels)
        .map(|(p, l)| {
            example(
                &[
                    ("hypothesis", p["hypothesis"].as_str().unwrap()),
                    ("premise", p["premise"].as_str().unwrap()),
                ],
                l as usize,
            )
        })
        .collect()
}

fn encode(
    model: &EncoderModel,
    template: &str,
    words: &[String],
    examples: &[Example],
    cap: usize,
) -> TaskData {
    TaskData::encode_with(model, template, words, examples, 100, Some(cap)).unwrap()
}

/// The ids of each input without its mask, which the official layout moves to prompt slot 0.
fn text_ids(model: &EncoderModel, data: &TaskData) -> Vec<Vec<i64>> {
    data.inputs
        .iter()
        .map(|e| {
            assert_eq!(e.ids[e.mask_index], model.tokenizer.mask_id);
            let mut ids = e.ids.clone();
            ids.remove(e.mask_index);
            ids
        })
        .collect()
}

#[test]
fn templates_encode_as_the_official_formatters() {
    let m = meta();
    let model = load(NAME, Head::Mlm, Layout::Official);
    let words = strings(&m["label_words"]);
    let cut = m["max_len_cut"].as_u64().unwrap() as usize;
    let want = |k: &str| -> Vec<Vec<i64>> {
        m["text_ids"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(ints)
            .collect()
    };
    let pairs = pair_examples(&m);
    let singles: Vec<Example> = strings(&m["singles"])
        .iter()
        .map(|s| example(&[("sentence", s)], 0))
        .collect();
    let aspects: Vec<Example> = m["aspects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            example(
                &[
                    ("sentence", a["sentence"].as_str().unwrap()),
                    ("aspect", a["aspect"].as_str().unwrap()),
                ],
                0,
            )
        })
        .collect();
    // max_text_tokens is the official max_len: text tokens, special tokens not counted.
    for (case, template, examples, cap) in [
        ("pairs", PAIR_TEMPLATE, &pairs, 128),
        ("pairs_cut", PAIR_TEMPLATE, &pairs, cut),
        ("singles", "{mask} {sentence}", &singles, 128),
        ("singles_cut", "{mask} {sentence}", &singles, cut),
        ("aspects", "{mask} {sentence} {aspect}", &aspects, 128),
        ("aspects_cut", "{mask} {sentence} {aspect}", &aspects, cut),
    ] {
        let data = encode(&model, template, &words, examples, cap);
        assert_eq!(text_ids(&model, &data), want(case), "{case}");
    }
}

#[test]
fn label_words_are_the_official_ids_in_the_official_layout_only() {
    let m = meta();
    let official = load(NAME, Head::Mlm, Layout::Official);
    let prefix = load(NAME, Head::Mlm, Layout::Prefix);
    let mut words = strings(&m["label_words"]);
    words.extend(strings(&m["sentiment_words"]));
    let mut no_space = ints(&m["label_ids"]);
    no_space.extend(ints(&m["sentiment_ids"]));
    // model/PromptRoberta.py scores `tokenizer.encode("positive", add_special_tokens=False)`.
    assert_eq!(official.tokenizer.label_ids(&words).unwrap(), no_space);
    // The prefix layout reads the word as it stands after a space (`Ġpositive`).
    assert_eq!(
        prefix.tokenizer.label_ids(&words).unwrap(),
        ints(&m["spaced_ids"])
    );
}

#[test]
fn official_forward_and_gradient_match_the_official_code() {
    let m = meta();
    let exp = expected(NAME);
    let model = load(NAME, Head::Mlm, Layout::Official);
    let data = encode(
        &model,
        PAIR_TEMPLATE,
        &strings(&m["label_words"]),
        &pair_examples(&m),
        128,
    );
    assert_eq!(data.label_ids, ints(&m["label_ids"]));
    let refs: Vec<_> = data.inputs.iter().collect();
    let batch = model.batch(&refs);
    let label_ids = Tensor::from_slice(&data.label_ids);
    let prompt = exp["prompt"].copy().set_requires_grad(true);
    let scores = model.label_scores(&prompt, &batch, &label_ids).unwrap();
    let loss = scores.cross_entropy_for_logits(&Tensor::from_slice(&data.labels));
    loss.backward();
    let grad = prompt.grad();
    let full = tch::no_grad(|| model.full_logits(&prompt, &batch).unwrap());
    let d_scores = max_abs_diff(&scores.detach(), &exp["scores"]);
    let d_loss = max_abs_diff(&loss.detach().reshape([1]), &exp["loss"]);
    let d_full = max_abs_diff(&full, &exp["full_logits"]);
    let d_grad = max_abs_diff(&grad, &exp["prompt_grad"]);
    let d_row0 = max_abs_diff(&grad.get(0), &exp["prompt_grad"].get(0));
    println!(
        "scores {d_scores:.2e} loss {d_loss:.2e} full {d_full:.2e} grad {d_grad:.2e} row 0 {d_row0:.2e}"
    );
    assert!(d_scores < 1e-5, "label scores differ by {d_scores}");
    assert!(d_loss < 1e-5, "loss differs by {d_loss}");
    assert!(d_full < 1e-5, "full logits differ by {d_full}");
    assert!(d_grad < 1e-5, "prompt gradient differs by {d_grad}");
    // Row 0 trains although its value never enters the forward.
    assert!(grad.get(0).abs().max().double_value(&[]) > 1e-3);
    let moved = prompt.detach().copy();
    let _ = moved.get(0).fill_(7.0);
    let again = tch::no_grad(|| model.label_scores(&moved, &batch, &label_ids).unwrap());
    assert!(max_abs_diff(&again, &scores.detach()) < 1e-6);
}

#[test]
fn the_random_baseline_is_uniform_seeded_and_not_the_training_init() {
    let a = random_baseline(100, 768, 1);
    assert_eq!(a.size(), vec![100, 768]);
    assert_eq!(a.kind(), Kind::Float);
    let (min, max) = (a.min().double_value(&[]), a.max().double_value(&[]));
    let mean = a.mean(Kind::Double).double_value(&[]);
    let sd = a.std(true).double_value(&[]);
    println!("random baseline: min {min} max {max} mean {mean:.4} sd {sd:.4}");
    assert!(min >= 0.0 && max < 1.0);
    // torch.rand: mean 1/2, sd 1/sqrt(12) = 0.2887 (the official random.safetensors: 0.500, 0.288).
    assert!((mean - 0.5).abs() < 0.01, "{mean}");
    assert!((sd - 0.2887).abs() < 0.005, "{sd}");
    // The same bytes for the same seed, another prompt for another seed.
    let bytes = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    assert_eq!(bytes(&a), bytes(&random_baseline(100, 768, 1)));
    assert_ne!(bytes(&a), bytes(&random_baseline(100, 768, 2)));
    // Training still starts from N(0, 0.02), as the official prompt embedding's init.
    let model = load(NAME, Head::Mlm, Layout::Official);
    let init = init_prompt(&model, &Init::Random, 100, 1).unwrap();
    let init_sd = init.std(true).double_value(&[]);
    assert!((init_sd - 0.02).abs() < 0.002, "{init_sd}");
}

fn train_data(model: &EncoderModel) -> TaskData {
    let m = meta();
    encode(
        model,
        PAIR_TEMPLATE,
        &strings(&m["label_words"]),
        &pair_examples(&m),
        128,
    )
}

fn tune_cfg(steps: usize, dropout: f64, adam_eps: f64) -> TuneConfig {
    TuneConfig {
        prompt_len: 100,
        lr: 0.01,
        batch_size: 3,
        max_steps: steps,
        eval_every: 0,
        seed: 3,
        init: Init::Random,
        metric: Metric::Accuracy,
        dropout,
        adam_eps,
        ..TuneConfig::default()
    }
}

#[test]
fn dropout_changes_training_steps_only_and_reruns_are_equal() {
    let model = load(NAME, Head::Mlm, Layout::Official);
    let data = train_data(&model);
    let refs: Vec<_> = data.inputs.iter().collect();
    let batch = model.batch(&refs);
    let label_ids = Tensor::from_slice(&data.label_ids);
    let prompt = expected(NAME)["prompt"].copy();
    let scores = |p: f64| {
        tch::no_grad(|| {
            model
                .label_scores_train(&prompt, &batch, &label_ids, p)
                .unwrap()
        })
    };
    // Off: two forwards agree, and equal eval mode.
    let eval = tch::no_grad(|| model.label_scores(&prompt, &batch, &label_ids).unwrap());
    assert_eq!(max_abs_diff(&scores(0.0), &scores(0.0)), 0.0);
    assert_eq!(max_abs_diff(&scores(0.0), &eval), 0.0);
    // On: two forwards differ, and differ from eval mode.
    let (a, b) = (scores(0.1), scores(0.1));
    assert!(max_abs_diff(&a, &b) > 1e-4, "{}", max_abs_diff(&a, &b));
    assert!(max_abs_diff(&a, &eval) > 1e-4);
    // The same torch seed drops the same units.
    tch::manual_seed(9);
    let c = scores(0.1);
    tch::manual_seed(9);
    assert_eq!(max_abs_diff(&c, &scores(0.1)), 0.0);

    // Through tune: dropout moves the training loss; a rerun repeats it exactly.
    let losses = |dropout: f64| {
        tune(
            &model,
            &data,
            None,
            &tune_cfg(3, dropout, 1e-8),
            None,
            &mut (),
        )
        .unwrap()
        .losses
    };
    let (off, on, on_again) = (losses(0.0), losses(0.1), losses(0.1));
    assert_eq!(on, on_again);
    assert_ne!(off[0].1, on[0].1);
    // Evaluation never drops: the same prompt scores the same after a dropout run.
    let out = tune(&model, &data, None, &tune_cfg(1, 0.1, 1e-8), None, &mut ()).unwrap();
    let p = out.best_prompt;
    let s1 = tch::no_grad(|| model.label_scores(&p, &batch, &label_ids).unwrap());
    let s2 = tch::no_grad(|| model.label_scores(&p, &batch, &label_ids).unwrap());
    assert_eq!(max_abs_diff(&s1, &s2), 0.0);
}

#[test]
fn adam_eps_reaches_the_optimizer_in_the_transformers_form() {
    let model = load(NAME, Head::Mlm, Layout::Official);
    let data = train_data(&model);
    let init = init_prompt(&model, &Init::Random, 100, 3).unwrap();
    // The first step's gradient, as tune computes it (one micro-batch of all three examples,
    // in the sampler's order: the mean loss does not depend on it).
    let p = init.copy().set_requires_grad(true);
    let refs: Vec<_> = data.inputs.iter().collect();
    let scores = model
        .label_scores(
            &p,
            &model.batch(&refs),
            &Tensor::from_slice(&data.label_ids),
        )
        .unwrap();
    scores
        .cross_entropy_for_logits(&Tensor::from_slice(&data.labels))
        .backward();
    let g = p.grad();
    for eps in [1e-8, 1e-3] {
        let out = tune(&model, &data, None, &tune_cfg(1, 0.0, eps), None, &mut ()).unwrap();
        // transformers.AdamW, step 1: m = 0.1 g, v = 0.001 g², p -= lr·sqrt(1-β2)/(1-β1) ·
        // m / (sqrt(v) + eps).
        let (b1, b2, lr) = (0.9f64, 0.999f64, 0.01);
        let m = &g * (1.0 - b1);
        let v = &g * &g * (1.0 - b2);
        let want = &init - m / (v.sqrt() + eps) * (lr * (1.0 - b2).sqrt() / (1.0 - b1));
        let d = max_abs_diff(&out.best_prompt, &want);
        println!("adam_eps {eps}: max abs difference {d:.2e}");
        assert!(d < 1e-6, "adam_eps {eps}: {d}");
    }
}
