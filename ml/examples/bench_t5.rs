//! Times promptgrid's T5 on a folder written by `scripts/bench_t5.py make DIR` (a random-weight
//! checkpoint plus `bench_inputs.safetensors` with `input_ids`, `attention_mask`, `target_ids`
//! and `prompt`): `bench_t5 generate DIR [max_new_tokens repeats threads device]` times batched
//! greedy decoding, `bench_t5 train DIR [repeats threads device]` one prompt-tuning step's
//! forward and backward (the teacher-forced loss, the gradient reaching the prompt alone). Prints
//! one JSON line; scripts/bench-t5 times transformers on the same folder and prints the
//! comparison. Every clock read on a GPU follows a device synchronization.

use std::time::Instant;

use promptgrid_ml::parse_device;
use promptgrid_ml::t5::{self, GenerateOptions};
use tch::{Device, Tensor};

/// This process's CPU time in seconds, all threads (Linux's /proc/self/stat utime + stime, at
/// the usual 100 ticks a second), or NaN where unknown. Less disturbed than wall time by other
/// load on the machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(f64::NAN))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    match (fields.get(11), fields.get(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// Waits for the device's queued kernels, so that a clock read after it counts them.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

const USAGE: &str = "usage: bench_t5 generate DIR [max_new_tokens repeats threads device] | \
                     bench_t5 train DIR [repeats threads device]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, dir) = match (args.get(1), args.get(2)) {
        (Some(m), Some(d)) if m == "generate" || m == "train" => (m.as_str(), d),
        _ => return Err(USAGE.into()),
    };
    // The train mode has no max_new_tokens: its arguments start one earlier.
    let first = if mode == "generate" { 3 } else { 2 };
    let num =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (max_new_tokens, repeats, threads) = (num(3, 32), num(first + 1, 5), num(first + 2, 2));
    let device = parse_device(args.get(first + 3).map_or("cpu", String::as_str))?;
    tch::set_num_threads(threads as i32);
    let dir = std::path::Path::new(dir);
    let model = t5::load(dir, device)?;
    let inputs = Tensor::read_safetensors(dir.join("bench_inputs.safetensors"))?;
    let get = |name: &str| {
        inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.to_device(device))
            .ok_or_else(|| format!("bench_inputs.safetensors has no {name}"))
    };
    let (ids, mask, prompt) = (get("input_ids")?, get("attention_mask")?, get("prompt")?);
    let targets = get("target_ids")?;
    let prompt = prompt.set_requires_grad(mode == "train");
    let options = GenerateOptions {
        max_new_tokens,
        min_new_tokens: 0,
        keep_logits: false,
    };
    let mut seconds = Vec::new();
    let mut cpu = Vec::new();
    let mut sequences = None;
    // One untimed warm-up run, then `repeats` timed ones.
    for i in 0..=repeats {
        sync(device);
        let (start, cpu_start) = (Instant::now(), cpu_seconds());
        if mode == "generate" {
            sequences = Some(
                model
                    .greedy_generate(Some(&prompt), &ids, &mask, options)?
                    .sequences,
            );
        } else {
            let loss = model.teacher_forced_loss(
                Some(&prompt),
                &ids,
                &mask,
                &targets,
                &targets.ones_like(),
            )?;
            let mut grad = prompt.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
            loss.backward();
            // As `tune`, which reads every step's loss to stop on NaN.
            loss.double_value(&[]);
        }
        sync(device);
        if i > 0 {
            seconds.push(start.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - cpu_start);
        }
    }
    let mut line = serde_json::json!({
        "impl": "promptgrid (tch)",
        "mode": mode,
        "threads": tch::get_num_threads(),
        "batch": ids.size()[0],
        "seconds": seconds,
        "cpu_seconds": cpu,
    });
    if let Some(sequences) = sequences {
        line["steps"] = (sequences.size()[1] - 1).into();
        line["sequences"] = Vec::<Vec<i64>>::try_from(&sequences)?.into();
    } else {
        line["input_tokens"] = (prompt.size()[0] + ids.size()[1]).into();
        line["target_tokens"] = targets.size()[1].into();
    }
    println!("{line}");
    Ok(())
}
