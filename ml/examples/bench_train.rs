//! Times promptgrid prompt-tuning steps on a model folder (random weights are fine) with
//! synthetic inputs: `bench_train DIR [batch text_tokens prompt_tokens steps]`. Prints one JSON
//! line. Driven by scripts/bench-train, which times transformers + peft on the same folder.

use std::time::Instant;

use promptgrid_ml::{
    Encoded, EncoderModel, Head, Init, Layout, TaskData, TuneConfig, TuneObserver,
    evaluate_prompts, init_prompt, tune,
};

struct Timer {
    last: Instant,
    steps: Vec<f64>,
}

impl TuneObserver for Timer {
    fn on_step(&mut self, _step: usize, _loss: f64) {
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
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: bench_train DIR [batch text prompt steps head]")?;
    let num =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (batch, text, prompt_len, steps) = (num(2, 16), num(3, 128), num(4, 100), num(5, 5));
    let head = args
        .get(6)
        .map(|h| h.parse())
        .transpose()?
        .unwrap_or(Head::Mlm);
    let model = EncoderModel::load(dir.as_ref(), head, Layout::Prefix, tch::Device::Cpu)?;
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
        last: Instant::now(),
        steps: Vec::new(),
    };
    tune(&model, &data, None, &cfg, None, &mut timer)?;
    // The first step warms allocators up; report the median of the rest.
    let times = timer.steps[1..].to_vec();
    let peak_train = peak_rss_mib();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let (median, min) = (sorted[sorted.len() / 2], sorted[0]);

    // Zero-shot evaluation of 14 prompts on one target (`batch` examples): one batched pass
    // vs. the official code's way, one model load and pass per prompt.
    let data = TaskData {
        inputs: data.inputs[..batch].to_vec(),
        labels: data.labels[..batch].to_vec(),
        ..data
    };
    let prompts: Vec<_> = (0..14)
        .map(|s| init_prompt(&model, &Init::Random, prompt_len, s).unwrap())
        .collect();
    let refs: Vec<_> = prompts.iter().collect();
    let start = Instant::now();
    evaluate_prompts(&model, &refs, &data, 64)?;
    let batched = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for p in &refs {
        let model = EncoderModel::load(dir.as_ref(), head, Layout::Prefix, tch::Device::Cpu)?;
        evaluate_prompts(&model, &[p], &data, 64)?;
    }
    let separate = start.elapsed().as_secs_f64();
    println!(
        "{{\"impl\": \"promptgrid\", \"step_s_median\": {median:.4}, \"step_s_min\": {min:.4}, \"peak_rss_mib\": {peak_train:.0}, \"steps\": {:?}, \"threads\": {}, \"eval14_batched_s\": {batched:.3}, \"eval14_separate_s\": {separate:.3}, \"eval_examples\": {}}}",
        times,
        tch::get_num_threads(),
        data.len()
    );
    Ok(())
}
