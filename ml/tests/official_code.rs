//! promptgrid against the official code itself: tests/data/official/ holds what the official
//! Prompt-Transferability-1.0 modules (thunlp/Prompt-Transferability 2d15de5) computed when
//! scripts/make-official-fixtures.py imported and ran them on tiny random checkpoints
//! (RoBERTa with the real vocabulary size, so that the hard-coded ids hold; T5 v1.0 with t5-base's
//! special ids). Dropout off, float32, CPU. Each value must match within 1e-5.

use std::collections::HashMap;
use std::path::PathBuf;

use promptgrid_common::catalog::{Metric, TaskKind};
use promptgrid_ml::{
    EncoderModel, Example, Head, Init, Layout, PromptFile, PromptModel, T5Backbone, T5Data,
    TaskData, TuneConfig, init_prompt, tune,
};
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-5;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/official")
}

fn tensors(file: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir().join(file))
        .unwrap()
        .into_iter()
        .collect()
}

fn inputs() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("inputs.json")).unwrap()).unwrap()
}

#[track_caller]
fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.size(), want.size(), "{what}: shapes");
    let d = (got.to_kind(Kind::Float) - want.to_kind(Kind::Float))
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        d < TOLERANCE,
        "{what}: differs from the official code by {d}"
    );
}

fn rows(t: &Tensor) -> Vec<Vec<i64>> {
    Vec::<Vec<i64>>::try_from(t).unwrap()
}

/// A saved prompt file holding `prompt`, for a run that starts from it.
fn prompt_file(dir: &tempfile::TempDir, prompt: &Tensor, model: &str) -> PathBuf {
    let path = dir.path().join("init.safetensors");
    PromptFile::new(prompt, model, "official", 0, None)
        .save(&path)
        .unwrap();
    path
}

/// The official training step on the whole batch `data`, from the fixture's prompt: the loss,
/// the prompt's gradient, and the prompt after one step of `tune` (transformers' AdamW, eps
/// 1e-6, at learning rate `lr`). `w` reads the fixture's tensors of the task.
fn assert_training_step<'a, M: PromptModel>(
    model: &M,
    data: &M::Data,
    w: impl Fn(&str) -> &'a Tensor,
    lr: f64,
    task: &str,
) {
    let prompt = w("prompt").copy().set_requires_grad(true);
    let n = model.data_len(data);
    let idx: Vec<usize> = (0..n).collect();
    let loss = model.micro_batch_loss(&prompt, data, &idx).unwrap();
    let loss1 = loss.detach().reshape([1]);
    assert_close(&loss1, w("loss"), &format!("{task}: loss"));
    loss.backward();
    assert_close(
        &prompt.grad(),
        w("prompt_grad"),
        &format!("{task}: gradient"),
    );

    let tmp = tempfile::tempdir().unwrap();
    let cfg = TuneConfig {
        lr,
        adam_eps: 1e-6,
        batch_size: n,
        max_steps: 1,
        eval_every: 0,
        init: Init::From(prompt_file(&tmp, w("prompt"), "official")),
        metric: Metric::Accuracy,
        ..Default::default()
    };
    let after = tune(model, data, None, &cfg, None, &mut ())
        .unwrap()
        .best_prompt;
    assert_close(
        &after,
        w("prompt_after_step"),
        &format!("{task}: AdamW step"),
    );
}

// ---- RoBERTa, the official layout (model/PromptRoberta.py, model/modelling_roberta.py) ----

fn roberta_examples(task: &str) -> (Vec<Example>, &'static str, Vec<String>) {
    let m = inputs();
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap().to_string();
    let examples = m[format!("roberta_{task}")]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let fields = match task {
                "sst2" => [("sentence".to_string(), field(e, "sent"))].into(),
                // MNLIPromptRobertaFormatter.py: sent1 first, then sent2.
                _ => [
                    ("hypothesis".to_string(), field(e, "sent1")),
                    ("premise".to_string(), field(e, "sent2")),
                ]
                .into(),
            };
            Example {
                fields,
                label: e["label"].as_u64().unwrap() as usize,
            }
        })
        .collect();
    let (template, words): (&str, &[&str]) = match task {
        "sst2" => ("{mask} {sentence}", &["negative", "positive"]),
        _ => (
            "{mask} {hypothesis} {sep} {premise}",
            &["no", "neutral", "yes"],
        ),
    };
    (
        examples,
        template,
        words.iter().map(|w| w.to_string()).collect(),
    )
}

#[test]
fn roberta_official_layout_scores_loss_gradient_and_adamw_step_are_the_official_codes() {
    let model = EncoderModel::load(
        &dir().join("roberta"),
        Head::Mlm,
        Layout::Official,
        Device::Cpu,
    )
    .unwrap();
    let want = tensors("roberta.safetensors");
    for task in ["sst2", "mnli"] {
        let w = |k: &str| &want[&format!("{task}.{k}")];
        let (examples, template, words) = roberta_examples(task);
        let data =
            TaskData::encode_with(&model, template, &words, &examples, 100, Some(128)).unwrap();
        // The formatter's text: everything after the prompt ids and before the pads, which our
        // inputs hold with the mask that the official layout moves to slot 0.
        let official: Vec<Vec<i64>> = rows(w("input_ids"))
            .into_iter()
            .zip(rows(&w("attention_mask").to_kind(Kind::Int64)))
            .map(|(ids, mask)| {
                ids.into_iter()
                    .zip(mask)
                    .filter(|&(id, m)| id >= 0 && m == 1)
                    .map(|(id, _)| id)
                    .collect()
            })
            .collect();
        let ours: Vec<Vec<i64>> = data
            .inputs
            .iter()
            .map(|e| {
                let mut ids = e.ids.clone();
                ids.remove(e.mask_index);
                ids
            })
            .collect();
        assert_eq!(ours, official, "{task}: the official formatter's ids");
        assert_eq!(
            data.labels,
            Vec::<i64>::try_from(w("labels")).unwrap(),
            "{task}: labels"
        );

        let refs: Vec<_> = data.inputs.iter().collect();
        let batch = model.batch(&refs);
        let label_ids = Tensor::from_slice(&data.label_ids);
        let scores = tch::no_grad(|| model.label_scores(w("prompt"), &batch, &label_ids)).unwrap();
        assert_close(&scores, w("scores"), &format!("{task}: label scores"));
        if task == "sst2" {
            let full = tch::no_grad(|| model.full_logits(w("prompt"), &batch).unwrap());
            assert_close(&full, w("mask_logits"), "sst2: logits at slot 0");
        }
        let lr = inputs()[format!("roberta_{task}")]["lr"].as_f64().unwrap();
        assert_training_step(&model, &data, w, lr, task);
    }
}

// ---- T5 (model/PromptT5.py, model/modeling_t5.py) ----

/// The official batch as promptgrid's T5 data: each row's text ids (the formatter's ids less
/// the prompt ids and the pads), targets cut to target_len, and the official training batches'
/// width (max_len + 2 text tokens, pads attended).
fn t5_data(want: &HashMap<String, Tensor>, task: &str, label_ids: Vec<i64>) -> T5Data {
    let w = |k: &str| &want[&format!("{task}.{k}")];
    let ids = rows(w("input_ids"));
    let width = ids[0].iter().filter(|&&i| i >= 0).count();
    let inputs: Vec<Vec<i64>> = ids
        .iter()
        .map(|r| {
            let text: Vec<i64> = r.iter().copied().filter(|&i| i >= 0).collect();
            let end = text.iter().rposition(|&i| i != 0).map_or(0, |p| p + 1);
            text[..end].to_vec()
        })
        .collect();
    let targets: Vec<Vec<i64>> = rows(w("labels"))
        .into_iter()
        .map(|r| r.into_iter().filter(|&i| i != -100).collect())
        .collect();
    let labels = targets
        .iter()
        .map(|t| label_ids.iter().position(|&l| l == t[0]).unwrap() as i64)
        .collect();
    T5Data {
        kind: TaskKind::Classification,
        max_target_tokens: targets.iter().map(Vec::len).max().unwrap(),
        inputs,
        targets,
        labels,
        label_ids,
        golds: vec![],
        lengths: None,
        bleu_refs: vec![],
        train_width: Some(width),
    }
}

#[test]
fn t5_training_loss_gradient_adamw_step_and_first_step_scores_are_the_official_codes() {
    let model = T5Backbone::load(&dir().join("t5"), Device::Cpu).unwrap();
    let want = tensors("t5.safetensors");
    let m = inputs();
    for task in ["sst2", "mnli"] {
        let w = |k: &str| &want[&format!("{task}.{k}")];
        let meta = &m[format!("t5_{task}")];
        let label_ids: Vec<i64> = meta["label_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let data = t5_data(&want, task, label_ids.clone());
        assert_eq!(data.train_width, Some(130), "{task}: max_len + 2");
        assert_eq!(
            data.targets[0].len(),
            meta["target_len"].as_u64().unwrap() as usize,
            "{task}: targets cut to target_len"
        );

        // Training: PromptT5.forward in train mode, pads attended (no attention_mask).
        assert_training_step(&model, &data, w, meta["lr"].as_f64().unwrap(), task);

        // Scoring: generate's scores[0] at the label ids, the pads masked.
        let refs: Vec<&[i64]> = data.inputs.iter().map(Vec::as_slice).collect();
        let width = refs.iter().map(|r| r.len()).max().unwrap();
        let mut ids = vec![0i64; refs.len() * width];
        let mut mask = vec![0i64; refs.len() * width];
        for (r, row) in refs.iter().enumerate() {
            ids[r * width..r * width + row.len()].copy_from_slice(row);
            mask[r * width..r * width + row.len()].fill(1);
        }
        let shape = [refs.len() as i64, width as i64];
        let scores = tch::no_grad(|| {
            model.model.label_logits(
                Some(w("prompt")),
                &Tensor::from_slice(&ids).view(shape),
                &Tensor::from_slice(&mask).view(shape),
                &label_ids,
            )
        })
        .unwrap();
        assert_close(
            &scores,
            w("valid_scores0"),
            &format!("{task}: first-step scores"),
        );
    }
}

#[test]
fn a_random_t5_prompt_starts_as_the_official_embedding_one_draw_per_seed() {
    let model = T5Backbone::load(&dir().join("t5"), Device::Cpu).unwrap();
    // The official prompt embedding at d = 768 (modeling_t5.py:1476): sd 1.0017.
    let official_sd = inputs()["t5_initial_prompt_d768"]["sd"].as_f64().unwrap();
    assert!((official_sd - 1.0).abs() < 0.01);
    let a = init_prompt(&model, &Init::Random, 100, 7).unwrap();
    let sd = a.std(true).double_value(&[]);
    assert!(
        (sd - 1.0).abs() < 0.1,
        "sd {sd}: N(0, 1) as the official init"
    );
    assert!(a.equal(&init_prompt(&model, &Init::Random, 100, 7).unwrap()));
    assert!(!a.equal(&init_prompt(&model, &Init::Random, 100, 8).unwrap()));
    // RoBERTa keeps its own N(0, 0.02) (the official initial prompt there: sd 0.0199).
    let roberta = EncoderModel::load(
        &dir().join("roberta"),
        Head::Mlm,
        Layout::Official,
        Device::Cpu,
    )
    .unwrap();
    let sd = init_prompt(&roberta, &Init::Random, 100, 7)
        .unwrap()
        .std(true)
        .double_value(&[]);
    assert!((sd - 0.02).abs() < 0.002, "sd {sd}");
}

// ---- BLEU (model/PromptT5.py:289-310) ----

#[test]
fn bleu_on_the_official_pieces_is_the_official_bleu() {
    let m = inputs();
    let model = T5Backbone::load(&dir().join("t5"), Device::Cpu).unwrap();
    let bleu = &m["bleu"];
    let pairs = bleu["pairs"].as_array().unwrap();
    let mut total = 0.0;
    for p in pairs {
        let ids = |k: &str| -> Vec<i64> {
            p[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .filter(|&i| i != -100)
                .collect()
        };
        let (hyp, reference) = (
            model.tokenizer.pieces(&ids("hypothesis_ids")),
            model.tokenizer.pieces(&ids("reference_ids")),
        );
        let pieces = |k: &str| -> Vec<String> { serde_json::from_value(p[k].clone()).unwrap() };
        assert_eq!(hyp, pieces("hypothesis_pieces"), "{}: pieces", p["name"]);
        assert_eq!(
            reference,
            pieces("reference_pieces"),
            "{}: pieces",
            p["name"]
        );
        let got = promptgrid_ml::bleu::official_bleu(&hyp, &reference);
        let want = p["value"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{}: {got} vs {want}", p["name"]);
        total += got;
    }
    // The official evaluator keeps int(sum) per batch: our mean is the untruncated one.
    let batch = &bleu["batch"];
    assert!((total - batch["sum_of_values"].as_f64().unwrap()).abs() < 1e-9);
    assert_eq!(
        batch["right_int_total_bleu"].as_u64().unwrap(),
        total.floor() as u64
    );
}

// ---- The projector (tools/projector.py, tools/train_tool_cross.py) ----

/// The official projector's initial weights as a promptgrid projector file.
fn official_projector(want: &HashMap<String, Tensor>, dir: &tempfile::TempDir) -> PathBuf {
    let names = [
        "encoder.weight",
        "encoder.bias",
        "decoder.weight",
        "decoder.bias",
        "layer_norm.weight",
        "layer_norm.bias",
    ];
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = names
        .iter()
        .map(|n| {
            let t = want[&format!("init.{n}")].contiguous();
            let values = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let shape = t.size().iter().map(|&d| d as usize).collect();
            (n.to_string(), bytes, shape)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, bytes, shape)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap();
            (n.clone(), view)
        })
        .collect();
    let meta: HashMap<String, String> = [
        ("format", "promptgrid-projector/1"),
        ("prompt_len", "100"),
        ("d_src", "16"),
        ("hidden", "8"),
        ("d_tgt", "12"),
        ("objective", "distance"),
        ("src_model", "src"),
        ("tgt_model", "tgt"),
        ("train_tasks", "a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let path = dir.path().join("projector.safetensors");
    std::fs::write(&path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    path
}

#[test]
fn the_projector_forward_and_one_adamw_step_are_the_official_codes() {
    use promptgrid_ml::projector::{Projector, ProjectorConfig, train_distance};
    let want = tensors("projector.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let (mut p, _) = Projector::load(&official_projector(&want, &tmp), Device::Cpu).unwrap();
    let src = want["source"].view([100, 16]);
    let tgt = want["target"].view([100, 12]);
    // The tanh projector the official training uses (AE_1_layer_mutiple_100_paper).
    let out = p.project(&src).unwrap();
    assert_close(&out.view([1, 1200]), &want["out_tanh"], "projector forward");
    // The LeakyReLU module the official base -> large evaluation loads the same weights into
    // (tools/init_tool.py:61) computes something else: docs/fidelity.md's table names it.
    let leaky = (&want["out_leaky_relu"] - &want["out_tanh"]).abs().max();
    assert!(leaky.double_value(&[]) > 0.1, "{leaky}");
    // One step on the mean squared distance (the official script's stand-in loss), with the
    // official optimizer: transformers' AdamW, lr 0.005, eps 1e-6.
    let cfg = ProjectorConfig {
        hidden: 8,
        learning_rate: 0.005,
        steps: 1,
        batch_size: 1,
        seed: 1,
    };
    let outcome = train_distance(&mut p, &[(src, tgt)], &cfg, &mut |_, _| true).unwrap();
    let loss = want["loss"].double_value(&[0]);
    assert!(
        (outcome.losses[0].1 - loss).abs() < TOLERANCE,
        "{:?} vs {loss}",
        outcome.losses
    );
    let saved = tmp.path().join("after.safetensors");
    p.save(&saved, &Default::default()).unwrap();
    for (name, t) in Tensor::read_safetensors(&saved).unwrap() {
        assert_close(
            &t,
            &want[&format!("after_step.{name}")],
            &format!("step: {name}"),
        );
    }
}

// ---- ON: the activated neurons (activate_neuron_Roberta.py, activate_neuron_T5.py) ----

#[test]
fn on_masks_are_the_official_activated_neurons() {
    use promptgrid_ml::activations::{encoder_activations, t5_activations};
    let want = tensors("activations.safetensors");
    let roberta = EncoderModel::load(
        &dir().join("roberta"),
        Head::Mlm,
        Layout::Official,
        Device::Cpu,
    )
    .unwrap();
    let acts = encoder_activations(&roberta, &want["roberta.prompt"]).unwrap();
    let acts = Tensor::stack(&acts, 0).view([12, 64]);
    assert_close(&acts, &want["roberta.act"], "RoBERTa FFN activations");
    assert!(
        acts.gt(0.0)
            .to_kind(Kind::Uint8)
            .equal(&want["roberta.mask"])
    );

    let t5 = T5Backbone::load(&dir().join("t5"), Device::Cpu).unwrap();
    let probe = promptgrid_ml::activations::t5_probe_id(&t5).unwrap();
    assert_eq!(probe, 32099, "<extra_id_0> in t5-base's layout");
    let acts = t5_activations(&t5.model, &want["t5.prompt"], probe).unwrap();
    let acts = Tensor::stack(&acts, 0).view([12, 32]);
    // The official hook reads `wi` before the ReLU: its positive part is the activation.
    assert_close(&acts, &want["t5.wi"].relu(), "T5 decoder FFN activations");
    assert!(acts.gt(0.0).to_kind(Kind::Uint8).equal(&want["t5.mask"]));
}
