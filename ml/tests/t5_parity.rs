//! T5 v1.0 and v1.1 against transformers on random tiny checkpoints. The fixtures and the
//! expected values come from `scripts/make-t5-fixtures.py` (see its docstring for each tensor).

use std::collections::HashMap;
use std::path::PathBuf;

use promptgrid_ml::t5::{self, BeamOptions, Capture, GenerateOptions, T5Model};
use promptgrid_ml::{MlError, Precision};
use tch::{Device, Kind, Tensor};

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

struct Fixture {
    model: T5Model,
    expected: HashMap<String, Tensor>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let dir = fixture_dir(name);
        let model = t5::load(&dir, Device::Cpu).unwrap();
        let expected = Tensor::read_safetensors(dir.join("expected.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
        Fixture { model, expected }
    }

    fn get(&self, key: &str) -> &Tensor {
        self.expected
            .get(key)
            .unwrap_or_else(|| panic!("expected.safetensors has no {key}"))
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// Asserts |a - b| <= tol everywhere, and prints the measured error for the record.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    let err = max_abs_diff(got, want);
    println!("{what}: max abs error {err:.3e}");
    assert!(err <= tol, "{what}: max abs error {err:e} > {tol:e}");
}

fn step0_logits(name: &str) {
    let f = Fixture::load(name);
    let (p, ids, mask) = (f.get("prompt"), f.get("input_ids"), f.get("attention_mask"));
    let logits = tch::no_grad(|| f.model.first_step_logits(Some(p), ids, mask)).unwrap();
    assert_close(
        &format!("{name} step-0 logits"),
        &logits,
        f.get("step0_logits"),
        1e-4,
    );

    let labels: Vec<i64> = Vec::try_from(f.get("label_ids")).unwrap();
    let scores = tch::no_grad(|| f.model.label_logits(Some(p), ids, mask, &labels)).unwrap();
    let want = f.get("step0_logits").index_select(1, f.get("label_ids"));
    assert_close(&format!("{name} label logits"), &scores, &want, 1e-4);
}

fn loss_and_prompt_gradient(name: &str) {
    let f = Fixture::load(name);
    let p = f.get("prompt").copy().set_requires_grad(true);
    let loss = f
        .model
        .teacher_forced_loss(
            Some(&p),
            f.get("input_ids"),
            f.get("attention_mask"),
            f.get("target_ids"),
            f.get("target_mask"),
        )
        .unwrap();
    assert_eq!(loss.size(), Vec::<i64>::new());
    assert_close(&format!("{name} loss"), &loss.detach(), f.get("loss"), 1e-4);

    loss.backward();
    let grad = p.grad();
    let want = f.get("prompt_grad");
    let rel = max_abs_diff(&grad, want) / want.abs().max().double_value(&[]);
    println!("{name} prompt gradient: max error relative to max |grad| {rel:.3e}");
    assert!(
        rel <= 1e-4,
        "{name} prompt gradient: relative error {rel:e}"
    );
    // The backbone is frozen: no weight took a gradient.
    for (key, var) in f.model.var_store().variables() {
        assert!(!var.requires_grad(), "{key} requires grad");
    }
}

fn decoder_ffn_activations(name: &str) {
    let f = Fixture::load(name);
    let (p, ids, mask) = (f.get("prompt"), f.get("input_ids"), f.get("attention_mask"));
    let step = tch::no_grad(|| {
        f.model
            .first_step(Some(p), ids, mask, Capture { decoder_ffn: true })
    })
    .unwrap();
    assert_eq!(
        step.decoder_ffn.len() as i64,
        f.model.config().decoder_layers()
    );
    for (i, act) in step.decoder_ffn.iter().enumerate() {
        assert_close(
            &format!("{name} decoder FFN activation {i}"),
            act,
            f.get(&format!("ffn_act.{i}")),
            1e-4,
        );
    }
    // Capturing changes nothing in the output.
    assert_close(
        &format!("{name} logits with capture"),
        &step.logits,
        f.get("step0_logits"),
        1e-4,
    );
}

fn greedy_generation(name: &str) {
    let f = Fixture::load(name);
    let want_ids = f.get("gen_ids");
    let max_new_tokens = 8;
    let generation = f
        .model
        .greedy_generate(
            Some(f.get("prompt")),
            f.get("input_ids"),
            f.get("attention_mask"),
            GenerateOptions {
                max_new_tokens,
                min_new_tokens: 0,
                keep_logits: true,
            },
        )
        .unwrap();
    assert_eq!(
        Vec::<Vec<i64>>::try_from(&generation.sequences).unwrap(),
        Vec::<Vec<i64>>::try_from(want_ids).unwrap(),
        "{name}: greedy tokens"
    );
    assert_close(
        &format!("{name} generation logits"),
        &generation.logits.unwrap(),
        f.get("gen_logits"),
        1e-4,
    );
}

/// Each row's tokens up to its first end-of-sequence (inclusive), then `fill`: transformers pads
/// finished beams with the end-of-sequence id when pad_token_id is 0, promptgrid with the pad.
fn refill_after_eos(seqs: &Tensor, eos: &[i64], fill: i64) -> Vec<Vec<i64>> {
    let mut rows = Vec::<Vec<i64>>::try_from(seqs).unwrap();
    for row in &mut rows {
        if let Some(end) = row.iter().skip(1).position(|t| eos.contains(t)) {
            row[end + 2..].fill(fill);
        }
    }
    rows
}

/// The fixture's beam search settings: expected-value prefix, length penalty, early stopping.
const BEAM_VARIANTS: [(&str, f64, bool); 3] = [
    ("beam", 1.0, false),
    ("beam_es", 1.0, true),
    ("beam_lp0", 0.0, false),
];

fn beam_search(name: &str) {
    let f = Fixture::load(name);
    for (key, length_penalty, early_stopping) in BEAM_VARIANTS {
        beam_variant(
            &f,
            name,
            key,
            BeamOptions {
                num_beams: 3,
                max_new_tokens: 8,
                length_penalty,
                early_stopping,
            },
        );
    }
}

fn beam_variant(f: &Fixture, name: &str, key: &str, options: BeamOptions) {
    let out = f
        .model
        .beam_generate(
            Some(f.get("prompt")),
            f.get("input_ids"),
            f.get("attention_mask"),
            options,
        )
        .unwrap();
    let (eos, pad) = (
        f.model.config().eos_token_ids(),
        f.model.config().pad_token_id(),
    );
    assert_eq!(
        Vec::<Vec<i64>>::try_from(&out.sequences).unwrap(),
        refill_after_eos(f.get(&format!("{key}_ids")), &eos, pad),
        "{name}: {key} tokens"
    );
    assert_close(
        &format!("{name} {key} scores"),
        &out.scores,
        f.get(&format!("{key}_scores")),
        1e-4,
    );
}

#[test]
fn v1_0_beam_search_matches_generate() {
    beam_search("t5-v1_0");
}

#[test]
fn v1_1_beam_search_matches_generate() {
    beam_search("t5-v1_1");
}

#[test]
fn v1_0_step0_logits_match_transformers() {
    step0_logits("t5-v1_0");
}

#[test]
fn v1_1_step0_logits_match_transformers() {
    step0_logits("t5-v1_1");
}

#[test]
fn v1_0_loss_and_prompt_gradient_match_transformers() {
    loss_and_prompt_gradient("t5-v1_0");
}

#[test]
fn v1_1_loss_and_prompt_gradient_match_transformers() {
    loss_and_prompt_gradient("t5-v1_1");
}

#[test]
fn v1_0_decoder_ffn_activations_match_forward_hooks() {
    decoder_ffn_activations("t5-v1_0");
}

#[test]
fn v1_1_decoder_ffn_activations_match_forward_hooks() {
    decoder_ffn_activations("t5-v1_1");
}

#[test]
fn v1_0_greedy_generation_matches_generate() {
    greedy_generation("t5-v1_0");
}

#[test]
fn v1_1_greedy_generation_matches_generate() {
    greedy_generation("t5-v1_1");
}

#[test]
fn per_row_prompts_equal_a_shared_prompt() {
    // Scoring several prompts in one pass: a [B, L, d] prompt with identical rows must give what
    // the [L, d] prompt gives.
    let f = Fixture::load("t5-v1_1");
    let (p, ids, mask) = (f.get("prompt"), f.get("input_ids"), f.get("attention_mask"));
    let rows = p.unsqueeze(0).repeat([ids.size()[0], 1, 1]);
    let logits = tch::no_grad(|| f.model.first_step_logits(Some(&rows), ids, mask)).unwrap();
    assert_close("per-row prompts", &logits, f.get("step0_logits"), 1e-5);
}

#[test]
fn prompt_of_the_wrong_width_is_rejected() {
    let f = Fixture::load("t5-v1_0");
    let p = Tensor::zeros([5, 31], (Kind::Float, Device::Cpu));
    let err = f
        .model
        .first_step_logits(Some(&p), f.get("input_ids"), f.get("attention_mask"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            MlError::PromptWidth {
                got: 31,
                expected: 32,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("31") && err.to_string().contains("32"),
        "{err}"
    );
}

#[test]
fn out_of_vocabulary_ids_are_rejected() {
    let f = Fixture::load("t5-v1_0");
    let ids = Tensor::from_slice(&[3i64, 96]).view([1, 2]);
    let err = f
        .model
        .first_step_logits(None, &ids, &ids.ones_like())
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}

/// Copies a fixture to a temporary folder with its safetensors rewritten by `edit`.
fn edited_checkpoint(
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, Tensor)>),
) -> tempfile::TempDir {
    let src = fixture_dir(name);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut tensors = Tensor::read_safetensors(src.join("model.safetensors")).unwrap();
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn missing_tensor_is_named_with_its_shape() {
    let key = "decoder.block.1.layer.2.DenseReluDense.wi_1.weight";
    let dir = edited_checkpoint("t5-v1_1", |t| t.retain(|(k, _)| k != key));
    let err = t5::load(dir.path(), Device::Cpu).unwrap_err();
    assert!(matches!(err, MlError::WeightsMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("{key}: missing, expected shape [48, 32]")),
        "{err}"
    );
}

#[test]
fn misshapen_and_unexpected_tensors_are_reported() {
    let dir = edited_checkpoint("t5-v1_0", |t| {
        for (k, v) in t.iter_mut() {
            if k == "encoder.final_layer_norm.weight" {
                *v = Tensor::ones([31], (Kind::Float, Device::Cpu));
            }
        }
        t.push((
            "encoder.block.2.layer.0.layer_norm.weight".into(),
            Tensor::ones([32], (Kind::Float, Device::Cpu)),
        ));
    });
    let err = t5::load(dir.path(), Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains(
            "encoder.final_layer_norm.weight: Float of shape [31], expected float of shape [32]"
        ),
        "{err}"
    );
    assert!(
        err.contains("encoder.block.2.layer.0.layer_norm.weight: unexpected tensor of shape [32]"),
        "{err}"
    );
}

#[test]
fn untied_config_without_lm_head_is_an_error() {
    let dir = edited_checkpoint("t5-v1_1", |t| t.retain(|(k, _)| k != "lm_head.weight"));
    let err = t5::load(dir.path(), Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("lm_head.weight: missing, expected shape [96, 32]"),
        "{err}"
    );
}

#[test]
fn model_prefixed_checkpoint_loads_the_same() {
    let dir = edited_checkpoint("t5-v1_0", |t| {
        for (k, _) in t.iter_mut() {
            *k = format!("model.{k}");
        }
    });
    let model = t5::load(dir.path(), Device::Cpu).unwrap();
    let f = Fixture::load("t5-v1_0");
    let (p, ids, mask) = (f.get("prompt"), f.get("input_ids"), f.get("attention_mask"));
    let logits = tch::no_grad(|| model.first_step_logits(Some(p), ids, mask)).unwrap();
    assert_close(
        "model.-prefixed checkpoint",
        &logits,
        f.get("step0_logits"),
        1e-4,
    );
}

#[test]
fn sharded_checkpoint_loads_the_same() {
    let src = fixture_dir("t5-v1_1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let tensors = Tensor::read_safetensors(src.join("model.safetensors")).unwrap();
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        Tensor::write_safetensors(part, dir.path().join(file)).unwrap();
        for (key, _) in part {
            weight_map.insert(key.clone(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let model = t5::load(dir.path(), Device::Cpu).unwrap();
    let f = Fixture::load("t5-v1_1");
    let (p, ids, mask) = (f.get("prompt"), f.get("input_ids"), f.get("attention_mask"));
    let logits = tch::no_grad(|| model.first_step_logits(Some(p), ids, mask)).unwrap();
    assert_close("sharded checkpoint", &logits, f.get("step0_logits"), 1e-4);
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = t5::load(dir.path(), Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, MlError::MissingFile { path } if path.ends_with("config.json")),
        "{err}"
    );
    std::fs::copy(
        fixture_dir("t5-v1_0").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = t5::load(dir.path(), Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, MlError::MissingFile { path } if path.ends_with("model.safetensors")),
        "{err}"
    );
}

/// `--precision bf16`: bf16 attention and feed-forward products keep step-0 logits, the loss and
/// greedy decoding (the incremental cache holds bf16 keys and values) within bf16's rounding of
/// the float32 reference, and the numbers do move.
fn bf16_stays_within_rounding(name: &str) {
    let mut f = Fixture::load(name);
    f.model.set_precision(Precision::Bf16).unwrap();
    let (p, ids, mask) = (f.get("prompt"), f.get("input_ids"), f.get("attention_mask"));
    let logits = tch::no_grad(|| f.model.first_step_logits(Some(p), ids, mask)).unwrap();
    assert_eq!(logits.kind(), Kind::Float);
    let want = f.get("step0_logits");
    let scale = want.abs().max().double_value(&[]);
    let err = max_abs_diff(&logits, want);
    println!("{name} bf16 step-0 logits: max abs error {err:.3e} (scale {scale:.3})");
    assert!(err > 1e-6, "{name}: bf16 logits equal float32 ones");
    assert!(err < 0.02 * scale, "{name}: bf16 logits differ by {err}");
    let loss = tch::no_grad(|| {
        f.model.teacher_forced_loss(
            Some(p),
            ids,
            mask,
            f.get("target_ids"),
            f.get("target_mask"),
        )
    })
    .unwrap();
    let d_loss = max_abs_diff(&loss, f.get("loss"));
    println!("{name} bf16 loss: error {d_loss:.3e}");
    assert!(d_loss < 0.01 * f.get("loss").double_value(&[]).abs());

    let generation = f
        .model
        .greedy_generate(
            Some(p),
            ids,
            mask,
            GenerateOptions {
                max_new_tokens: 8,
                min_new_tokens: 0,
                keep_logits: true,
            },
        )
        .unwrap();
    let want = f.get("gen_logits");
    let err = max_abs_diff(&generation.logits.unwrap(), want);
    let scale = want.abs().max().double_value(&[]);
    println!("{name} bf16 cached decoding logits: max abs error {err:.3e} (scale {scale:.3})");
    assert!(
        err < 0.02 * scale,
        "{name}: bf16 decoding logits differ by {err}"
    );
}

#[test]
fn v1_0_bf16_products_stay_within_rounding() {
    bf16_stays_within_rounding("t5-v1_0");
}

#[test]
fn v1_1_bf16_products_stay_within_rounding() {
    bf16_stays_within_rounding("t5-v1_1");
}
