//! The cross-model projector: both objectives lower what they optimize, shapes are checked with
//! messages that say what is wrong, and files round-trip or are rejected naming the bad field.
//! Projectors between random tensors, and onto the tiny trainable BERT under tests/data/.
//!
//! `projector_training_throughput` is a benchmark (ignored by default), run by
//! scripts/bench-projector.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use promptgrid_ml::{
    EncoderModel, Head, Layout, MlError, Projector, ProjectorConfig, ProjectorMeta, TaskData,
    evaluate_prompts, train_distance, train_task,
};
use tch::{Device, Kind, Tensor};

mod toy;
use toy::generate;

fn data_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

/// Normal-ish values from a seed (a sum of uniforms), independent of torch's global generator
/// that parallel tests share.
fn random(seed: u64, shape: &[i64]) -> Tensor {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| ((0..4).map(|_| uniform()).sum::<f64>() - 2.0) as f32 * 1.7)
        .collect();
    Tensor::from_slice(&values).view(shape)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

/// Σ over pairs of ‖proj(P_src) − P_tgt‖ (Frobenius).
fn total_distance(p: &Projector, pairs: &[(Tensor, Tensor)]) -> f64 {
    pairs
        .iter()
        .map(|(s, t)| (p.project(s).unwrap() - t).norm().double_value(&[]))
        .sum()
}

fn cfg(steps: usize, batch_size: usize) -> ProjectorConfig {
    ProjectorConfig {
        hidden: 64,
        learning_rate: 1e-3,
        steps,
        batch_size,
        seed: 7,
    }
}

fn pairs(n: u64, len: i64, d_src: i64, d_tgt: i64) -> Vec<(Tensor, Tensor)> {
    (0..n)
        .map(|i| {
            (
                random(100 + i, &[len, d_src]),
                random(200 + i, &[len, d_tgt]),
            )
        })
        .collect()
}

#[test]
fn distance_training_at_least_halves_the_distance() {
    let pairs = pairs(6, 8, 24, 32);
    let train = |batch_size| {
        let mut p = Projector::new(8, 24, 32, 64, 3, Device::Cpu).unwrap();
        let before = total_distance(&p, &pairs);
        let mut seen = Vec::new();
        let out = train_distance(&mut p, &pairs, &cfg(200, batch_size), &mut |s, l| {
            seen.push((s, l));
            true
        })
        .unwrap();
        let after = total_distance(&p, &pairs);
        println!(
            "batch {batch_size}: distance {before:.3} -> {after:.3}, loss {:.4} -> {:.4}",
            out.first_loss, out.final_loss
        );
        assert!(after < before / 2.0, "distance {before} -> {after}");
        assert!(out.final_loss < out.first_loss / 2.0, "{out:?}");
        assert_eq!((out.steps, out.stopped), (200, false));
        assert_eq!(seen, out.losses);
        assert_eq!(out.losses[0].1, out.first_loss);
        (out.losses, p.project(&pairs[0].0).unwrap())
    };
    // Full batches, and batches of 4 of the 6 pairs drawn from the seed.
    let _ = train(8);
    let (a, pa) = train(4);
    let (b, pb) = train(4);
    assert_eq!(a, b, "the same seeds give the same run");
    assert_eq!(max_abs_diff(&pa, &pb), 0.0);
}

#[test]
fn on_step_false_stops_the_run() {
    let pairs = pairs(2, 4, 8, 8);
    let mut p = Projector::new(4, 8, 8, 16, 0, Device::Cpu).unwrap();
    let out = train_distance(&mut p, &pairs, &cfg(50, 2), &mut |s, _| s < 5).unwrap();
    assert_eq!((out.steps, out.stopped, out.losses.len()), (5, true, 5));
}

#[test]
fn a_nan_loss_is_reported_with_its_step() {
    let mut pairs = pairs(1, 4, 8, 8);
    pairs[0].0 = Tensor::full([4, 8], f64::NAN, (Kind::Float, Device::Cpu));
    let mut p = Projector::new(4, 8, 8, 16, 0, Device::Cpu).unwrap();
    let err = train_distance(&mut p, &pairs, &cfg(5, 1), &mut |_, _| true).unwrap_err();
    assert!(matches!(err, MlError::NanLoss { step: 1 }), "{err}");
}

fn task(model: &EncoderModel, template: &str, cues: [&str; 2], words: [&str; 2]) -> TaskData {
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    TaskData::encode_with(model, template, &words, &generate(128, 11, cues), 8, None).unwrap()
}

#[test]
fn task_training_lowers_the_target_task_loss() {
    let model = EncoderModel::load(
        &data_dir("tiny-bert-train"),
        Head::Mlm,
        Layout::Prefix,
        Device::Cpu,
    )
    .unwrap();
    let d_tgt = model.hidden_size();
    let tasks_data = [
        task(
            &model,
            "{text} it was {mask} .",
            ["terrible", "great"],
            ["terrible", "great"],
        ),
        task(&model, "{text} ? {mask} .", ["bad", "good"], ["no", "yes"]),
    ];
    let tasks: Vec<(Tensor, &TaskData)> = tasks_data
        .iter()
        .enumerate()
        .map(|(i, d)| (random(300 + i as u64, &[8, 16]), d))
        .collect();
    let losses = |p: &Projector| -> Vec<f64> {
        tasks
            .iter()
            .map(|(src, data)| {
                let prompt = p.project(src).unwrap();
                evaluate_prompts(&model, &[&prompt], data, 64).unwrap()[0].loss
            })
            .collect()
    };
    let embeddings = model.word_embeddings().copy();
    let mut p = Projector::new(8, 16, d_tgt, 64, 1, Device::Cpu).unwrap();
    let before = losses(&p);
    let config = ProjectorConfig {
        learning_rate: 3e-3,
        batch_size: 16,
        ..cfg(120, 16)
    };
    let out = train_task(&mut p, &model, &tasks, &config, &mut |_, _| true).unwrap();
    let after = losses(&p);
    println!("target-task losses {before:?} -> {after:?}");
    for (b, a) in before.iter().zip(&after) {
        assert!(a < b, "task loss {b} -> {a}");
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&after) < 0.8 * mean(&before),
        "mean task loss {before:?} -> {after:?}"
    );
    assert_eq!(out.steps, 120);
    // The target model stayed frozen: no gradient, same weights.
    let emb = model.word_embeddings();
    assert!(!emb.requires_grad() && !emb.grad().defined());
    assert_eq!(max_abs_diff(emb, &embeddings), 0.0);
}

#[test]
fn task_training_rejects_a_projector_for_another_width() {
    let model = EncoderModel::load(
        &data_dir("tiny-bert-train"),
        Head::Mlm,
        Layout::Prefix,
        Device::Cpu,
    )
    .unwrap();
    let data = task(
        &model,
        "{text} it was {mask} .",
        ["bad", "good"],
        ["no", "yes"],
    );
    let mut p = Projector::new(8, 16, 48, 32, 1, Device::Cpu).unwrap();
    let tasks = [(random(1, &[8, 16]), &data)];
    let err = train_task(&mut p, &model, &tasks, &cfg(3, 4), &mut |_, _| true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target model tiny-bert-train: the hidden size (d_tgt) is 32, but the projector expects 48"
    );
}

#[test]
fn projects_between_widths_and_rejects_wrong_shapes() {
    for (d_src, d_tgt) in [(384, 768), (768, 384)] {
        let p = Projector::new(4, d_src, d_tgt, 32, 0, Device::Cpu).unwrap();
        let out = p.forward(&random(1, &[4, d_src])).unwrap();
        assert_eq!(out.size(), [4, d_tgt]);
        assert!(out.requires_grad(), "forward keeps the graph");
        let projected = p.project(&random(1, &[4, d_src])).unwrap();
        assert!(!projected.requires_grad());
        assert_eq!(max_abs_diff(&out.detach(), &projected), 0.0);
        // LayerNorm per token, identity affine at init: every row has mean 0, variance 1.
        let mean = projected.mean_dim(-1, false, Kind::Float).abs().max();
        assert!(mean.double_value(&[]) < 1e-5);
        let batched = p.project(&random(2, &[3, 4, d_src])).unwrap();
        assert_eq!(batched.size(), [3, 4, d_tgt]);
    }
    let p = Projector::new(4, 384, 768, 32, 0, Device::Cpu).unwrap();
    let msg = |t: Tensor| p.forward(&t).unwrap_err().to_string();
    assert_eq!(
        msg(random(1, &[4, 512])),
        "source prompt of shape [4, 512]: the width (d_src) is 512, but the projector expects 384"
    );
    assert_eq!(
        msg(random(1, &[5, 384])),
        "source prompt of shape [5, 384]: the length (prompt_len) is 5, but the projector \
         expects 4"
    );
    assert_eq!(
        msg(random(1, &[1536])),
        "source prompt of shape [1536]: expected [L, d] or [B, L, d]"
    );
    // A target prompt of the wrong width, in the distance objective.
    let mut p = Projector::new(4, 8, 16, 8, 0, Device::Cpu).unwrap();
    let bad = [(random(1, &[4, 8]), random(2, &[4, 12]))];
    let err = train_distance(&mut p, &bad, &cfg(1, 1), &mut |_, _| true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target prompt of pair 0 of shape [4, 12]: the width (d_tgt) is 12, but the projector \
         expects 16"
    );
}

fn meta() -> ProjectorMeta {
    ProjectorMeta {
        src_model: "roberta-base".into(),
        tgt_model: "bert-base".into(),
        objective: "distance".into(),
        train_tasks: vec!["sst2".into(), "mnli".into()],
    }
}

#[test]
fn save_load_round_trip_gives_identical_outputs() {
    let mut p = Projector::new(5, 12, 20, 16, 4, Device::Cpu).unwrap();
    // Train a little so that every weight, the LayerNorm's included, differs from its init.
    train_distance(&mut p, &pairs(3, 5, 12, 20), &cfg(5, 3), &mut |_, _| true).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sub/proj.safetensors");
    p.save(&path, &meta()).unwrap();
    let (q, m) = Projector::load(&path, Device::Cpu).unwrap();
    assert_eq!(m, meta());
    assert_eq!(
        (q.prompt_len(), q.d_src(), q.d_tgt(), q.hidden()),
        (5, 12, 20, 16)
    );
    let src = random(9, &[2, 5, 12]);
    assert_eq!(
        max_abs_diff(&p.project(&src).unwrap(), &q.project(&src).unwrap()),
        0.0
    );
    let (r, m) = Projector::from_bytes(&p.to_bytes(&meta()).unwrap(), Device::Cpu).unwrap();
    assert_eq!(m, meta());
    assert_eq!(
        max_abs_diff(&p.project(&src).unwrap(), &r.project(&src).unwrap()),
        0.0
    );
    // The official module's state_dict names, so PyTorch can read the file as it is.
    let names: Vec<String> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for n in [
        "encoder.weight",
        "encoder.bias",
        "decoder.weight",
        "decoder.bias",
        "layer_norm.weight",
        "layer_norm.bias",
    ] {
        assert!(names.iter().any(|m| m == n), "{n} missing from {names:?}");
    }
    let empty = ProjectorMeta {
        train_tasks: vec![],
        ..meta()
    };
    let (_, m) = Projector::from_bytes(&p.to_bytes(&empty).unwrap(), Device::Cpu).unwrap();
    assert_eq!(m, empty);
    let comma = ProjectorMeta {
        train_tasks: vec!["a,b".into()],
        ..meta()
    };
    assert!(p.to_bytes(&comma).is_err());
}

/// Rewrites a projector file's metadata with `edit`, tensors unchanged.
fn with_metadata(bytes: &[u8], edit: impl FnOnce(&mut HashMap<String, String>)) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    edit(&mut meta);
    safetensors::serialize(st.tensors(), Some(meta)).unwrap()
}

#[test]
fn inconsistent_metadata_is_rejected_naming_the_field() {
    let p = Projector::new(5, 12, 20, 16, 4, Device::Cpu).unwrap();
    let good = p.to_bytes(&meta()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.safetensors");
    let load_err = |bytes: Vec<u8>| {
        std::fs::write(&path, bytes).unwrap();
        Projector::load(&path, Device::Cpu).unwrap_err().to_string()
    };
    let prefix = format!("{}: projector file: ", path.display());
    let set = |k: &'static str, v: &'static str| {
        with_metadata(&good, |m| {
            m.insert(k.into(), v.into());
        })
    };
    let cases = [
        (set("d_src", "24"), "d_src"),
        (set("d_tgt", "10"), "d_tgt"),
        (set("prompt_len", "4"), "prompt_len"),
        (set("hidden", "32"), "hidden"),
        (set("hidden", "many"), "hidden"),
        (set("format", "something-else"), "format"),
        (
            with_metadata(&good, |m| {
                m.remove("tgt_model");
            }),
            "tgt_model",
        ),
    ];
    for (bytes, field) in cases {
        let err = load_err(bytes);
        println!("{err}");
        assert!(
            err.starts_with(&format!("{prefix}{field}: ")),
            "{err:?} should name {field}"
        );
    }
    assert_eq!(
        load_err(set("d_src", "24")),
        format!(
            "{prefix}d_src: the metadata (prompt_len 5, d_src 24, d_tgt 20, hidden 16) needs \
             encoder.weight of shape [16, 120], but it is [16, 60]"
        )
    );
    // Bytes without a file name say where they came from too.
    let err = Projector::from_bytes(&set("d_tgt", "10"), Device::Cpu).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("(projector bytes): projector file: d_tgt: "),
        "{err}"
    );
}

fn env_or(key: &str, default: i64) -> i64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Training steps per second of the distance objective (scripts/bench-projector compares it
/// with the same module in PyTorch). Prints one JSON line.
#[test]
#[ignore = "benchmark: run by scripts/bench-projector"]
fn projector_training_throughput() {
    let (len, d_src, d_tgt, hidden, batch, steps) = (
        env_or("BENCH_LEN", 100),
        env_or("BENCH_D_SRC", 768),
        env_or("BENCH_D_TGT", 1024),
        env_or("BENCH_HIDDEN", 768),
        env_or("BENCH_BATCH", 8),
        env_or("BENCH_STEPS", 10) as usize,
    );
    let pairs: Vec<(Tensor, Tensor)> = (0..batch as u64)
        .map(|i| {
            (
                random(i, &[len, d_src]) * 0.02,
                random(1000 + i, &[len, d_tgt]),
            )
        })
        .collect();
    let mut p = Projector::new(len, d_src, d_tgt, hidden, 0, Device::Cpu).unwrap();
    let config = ProjectorConfig {
        hidden,
        learning_rate: 1e-3,
        steps: steps + 1,
        batch_size: batch as usize,
        seed: 0,
    };
    // Each step's time from the callback's clock; step 1 (Adam's state allocation) is warm-up.
    let mut times = Vec::new();
    let mut last = Instant::now();
    let out = train_distance(&mut p, &pairs, &config, &mut |_, _| {
        times.push(last.elapsed().as_secs_f64());
        last = Instant::now();
        true
    })
    .unwrap();
    times.remove(0);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "{{\"impl\": \"promptgrid (tch)\", \"step_s_median\": {median:.4}, \"step_s_min\": {:.4}, \
         \"steps_per_s\": {:.3}, \"first_loss\": {:.4}, \"final_loss\": {:.4}, \"threads\": {}}}",
        sorted[0],
        1.0 / median,
        out.first_loss,
        out.final_loss,
        tch::get_num_threads()
    );
}

#[test]
fn union_verbalizer_remaps_labels_into_the_shared_words() {
    use promptgrid_ml::projector::union_verbalizer;
    let (union, remap) = union_verbalizer(&[&[7, 5][..], &[5, 9, 7], &[9]]);
    assert_eq!(union, vec![7, 5, 9]);
    assert_eq!(remap, vec![vec![0, 1], vec![1, 2, 0], vec![2]]);
}

/// The task objective against the official step re-implemented in Python
/// (scripts/make-projector-fixtures.py): union-verbalizer cross-entropy, transformers' AdamW
/// with lr 0.005 and eps 1e-6, six steps on the tiny RoBERTa; losses and weights within 1e-5.
#[test]
fn task_objective_matches_the_official_step() {
    let dir = data_dir("projector");
    let inputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("inputs.json")).unwrap()).unwrap();
    let exp: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("expected.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    let model = EncoderModel::load(
        &data_dir("tiny-roberta"),
        Head::Mlm,
        Layout::Prefix,
        Device::Cpu,
    )
    .unwrap();
    let suffix = inputs["suffix"].as_str().unwrap();
    let ints = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let data: Vec<TaskData> = inputs["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| TaskData {
            inputs: t["texts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    let text = format!(
                        "{}{suffix}{}",
                        x.as_str().unwrap(),
                        model.tokenizer.mask_token
                    );
                    model.encode_text(&text).unwrap()
                })
                .collect(),
            labels: ints(&t["labels"]),
            label_ids: ints(&t["label_ids"]),
        })
        .collect();
    let tasks: Vec<(Tensor, &TaskData)> = data
        .iter()
        .enumerate()
        .map(|(i, d)| (exp[&format!("source.{i}")].shallow_clone(), d))
        .collect();
    let (mut p, meta) = Projector::load(&dir.join("init.safetensors"), Device::Cpu).unwrap();
    let steps = inputs["steps"].as_u64().unwrap() as usize;
    let config = ProjectorConfig {
        hidden: p.hidden(),
        learning_rate: inputs["learning_rate"].as_f64().unwrap(),
        steps,
        batch_size: 3,
        seed: 1,
    };
    let outcome = train_task(&mut p, &model, &tasks, &config, &mut |_, _| true).unwrap();
    let want: Vec<f64> = Vec::try_from(&exp["losses"]).unwrap();
    assert_eq!(outcome.losses.len(), want.len());
    for ((step, got), want) in outcome.losses.iter().zip(&want) {
        assert!(
            (got - want).abs() <= 1e-5,
            "step {step}: loss {got} vs {want}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("trained.safetensors");
    p.save(&path, &meta).unwrap();
    let got: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .collect();
    for (name, t) in &got {
        let err = max_abs_diff(t, &exp[&format!("final.{name}")]);
        println!("{name}: max abs error {err:.2e}");
        assert!(err <= 1e-5, "{name}: {err:e}");
    }
    // Six AdamW steps of lr 0.005 moved the weights well beyond the tolerance.
    let (init, _) = Projector::load(&dir.join("init.safetensors"), Device::Cpu).unwrap();
    let moved = max_abs_diff(
        &init.project(&exp["source.0"]).unwrap(),
        &p.project(&exp["source.0"]).unwrap(),
    );
    assert!(moved > 1e-3, "{moved}");
}
