//! Times promptgrid prompt-tuning steps on a model folder (random weights are fine) with
//! synthetic inputs: `bench_train DIR [batch text_tokens prompt_tokens steps head precision
//! device eval]` (defaults 16 128 100 5 mlm fp32 cpu; `eval` also times scoring 14 prompts, and
//! 0 steps times scoring alone). Prints one JSON line. Driven by
//! scripts/bench-train, which times the PyTorch baselines on the same folder.

use std::time::Instant;

use promptgrid_ml::{
    Encoded, EncoderModel, Head, Init, Layout, Precision, TaskData, TuneConfig, TuneObserver,
    evaluate_prompts, init_prompt, parse_device, tune,
};
use tch::Device;

/// Waits for the device's queued kernels, so that a clock read after it counts them.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The clock of each optimizer step: `tune` calls `on_step` right after the prompt's update.
struct Timer {
    device: Device,
    last: Instant,
    steps: Vec<f64>,
}

impl TuneObserver for Timer {
    fn on_step(&mut self, _step: usize, _loss: f64) {
        sync(self.device);
        self.steps.push(self.last.elapsed().as_secs_f64());
        self.last = Instant::now();
    }
}

/// Peak resident memory in MiB (Linux's VmHWM), or -1 where unknown.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(-1.0, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the promptgrid binary does at start (bench_train.py sets the same for PyTorch).
    promptgrid_ml::heap::retain_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: bench_train DIR [batch text prompt steps head precision device eval]")?;
    let num =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (batch, text, prompt_len, steps) = (num(2, 16), num(3, 128), num(4, 100), num(5, 5));
    let head = args
        .get(6)
        .map(|h| h.parse())
        .transpose()?
        .unwrap_or(Head::Mlm);
    let precision: Precision = args.get(7).map_or(Ok(Precision::F32), |p| p.parse())?;
    let device = parse_device(args.get(8).map_or("cpu", String::as_str))?;
    let load = || -> Result<EncoderModel, promptgrid_ml::MlError> {
        let mut model = EncoderModel::load(dir.as_ref(), head, Layout::Prefix, device)?;
        model.set_precision(precision)?;
        Ok(model)
    };
    let model = load()?;
    // Synthetic inputs: `text` ids with the mask in the middle, the same as the Python side.
    let vocab = model.config.vocab_size;
    let inputs: Vec<Encoded> = (0..batch * 4)
        .map(|i| {
            let mut ids: Vec<i64> = (0..text as i64)
                .map(|j| 5 + (i as i64 * 7919 + j * 104729) % (vocab - 5))
                .collect();
            ids[text / 2] = model.tokenizer.mask_id;
            Encoded {
                ids,
                mask_index: text / 2,
            }
        })
        .collect();
    let labels = (0..inputs.len() as i64).map(|i| i % 2).collect();
    let data = TaskData {
        inputs,
        labels,
        label_ids: vec![(vocab - 1).min(100), (vocab - 2).min(200)],
    };
    let cfg = TuneConfig {
        prompt_len,
        batch_size: batch,
        max_steps: steps + 1,
        eval_every: 0,
        init: Init::Random,
        ..TuneConfig::default()
    };
    let mut timer = Timer {
        device,
        last: Instant::now(),
        steps: Vec::new(),
    };
    // Zero steps times scoring alone (for its memory).
    if steps > 0 {
        tune(&model, &data, None, &cfg, None, &mut timer)?;
    }
    // The first step warms allocators up; report the median of the rest.
    let times = timer.steps.get(1..).unwrap_or_default().to_vec();
    let peak_train = peak_rss_mib();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let (median, min) = (
        sorted.get(sorted.len() / 2).copied(),
        sorted.first().copied(),
    );

    let mut line = serde_json::json!({
        "impl": "promptgrid",
        "precision": precision.to_string(),
        "step_s_median": median,
        "step_s_min": min,
        "peak_rss_mib": peak_train.round() as i64,
        "steps": times,
        "threads": tch::get_num_threads(),
    });
    if args.get(9).map(String::as_str) == Some("eval") {
        let (load_s, batched, separate) = time_scoring(&load, model, data, batch, prompt_len)?;
        line["load_s"] = load_s.into();
        line["eval14_batched_s"] = batched.into();
        line["eval14_separate_s"] = separate.into();
        line["eval_examples"] = batch.into();
    }
    println!("{line}");
    Ok(())
}

/// Zero-shot scoring of 14 prompts on one target (`batch` examples): one batched pass vs. one
/// pass per prompt (the official code's way, which also loads the model once per prompt; here
/// each side counts exactly one load, also timed apart). Returns (load, batched, separate) s.
fn time_scoring(
    load: &dyn Fn() -> Result<EncoderModel, promptgrid_ml::MlError>,
    model: EncoderModel,
    data: TaskData,
    batch: usize,
    prompt_len: usize,
) -> Result<(f64, f64, f64), Box<dyn std::error::Error>> {
    let data = TaskData {
        inputs: data.inputs[..batch].to_vec(),
        labels: data.labels[..batch].to_vec(),
        ..data
    };
    let prompts: Vec<_> = (0..14)
        .map(|s| init_prompt(&model, &Init::Random, prompt_len, s))
        .collect::<Result<_, _>>()?;
    let refs: Vec<_> = prompts.iter().collect();
    let device = model.device;
    drop(model);
    // Scoring reads its predictions back to the host, which waits for the device.
    let start = Instant::now();
    let model = load()?;
    sync(device);
    let load_s = start.elapsed().as_secs_f64();
    evaluate_prompts(&model, &refs, &data, 64)?;
    let batched = start.elapsed().as_secs_f64();
    drop(model);
    let start = Instant::now();
    let model = load()?;
    for p in &refs {
        evaluate_prompts(&model, &[p], &data, 64)?;
    }
    Ok((load_s, batched, start.elapsed().as_secs_f64()))
}
