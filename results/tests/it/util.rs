//! Helpers shared by the integration tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use promptgrid_results::schema::{EvalRow, JobRow, MetricRow};

/// The reference prompts and transfer results of the official code (outside the repository: the
/// repository root's parent holds `shared/`).
pub fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/prompt-transferability/roberta-base")
}

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Writes `data` (`[rows, dim]`, f32) as `<dir>/<name>.safetensors` under tensor `tensor`.
pub fn write_prompt(
    dir: &Path,
    name: &str,
    tensor: &str,
    shape: &[usize],
    data: &[f32],
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &bytes)
            .unwrap();
    let path = dir.join(format!("{name}.safetensors"));
    let map: HashMap<String, safetensors::tensor::TensorView> =
        [(tensor.to_string(), view)].into_iter().collect();
    safetensors::tensor::serialize_to_file(&map, None, &path).unwrap();
    path
}

/// The venv python that `scripts/env.sh` puts first on PATH (it also exports it by name).
pub fn python() -> String {
    std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into())
}

pub fn metric(job: &str, attempt: i64, step: i64, name: &str, value: f64) -> MetricRow {
    MetricRow {
        job_id: job.into(),
        attempt,
        step,
        name: name.into(),
        value,
        wall_s: Some(step as f64 * 0.5),
    }
}

pub fn job(id: &str, kind: &str, model: &str, task: &str, src: Option<&str>, seed: i64) -> JobRow {
    JobRow {
        job_id: id.into(),
        kind: kind.into(),
        model: model.into(),
        task: Some(task.into()),
        src_task: src.map(str::to_string),
        src_model: None,
        objective: None,
        seed: Some(seed),
        attempt: 1,
        worker: Some("w0".into()),
        status: "done".into(),
        error: None,
        started_at: Some(1_700_000_000_000),
        finished_at: Some(1_700_000_060_000),
        duration_s: Some(60.0),
        promptgrid_version: Some("0.1.0".into()),
        git_commit: Some("abc123".into()),
        torch_version: Some("2.13.0+cpu".into()),
        device: Some("cpu".into()),
        precision: Some("fp32".into()),
        threads: Some(2),
    }
}

pub fn eval(model: &str, src: &str, tgt: &str, value: f64, types: &HashMap<&str, &str>) -> EvalRow {
    EvalRow {
        job_id: format!(
            "{}-{model}-{src}-{tgt}",
            if src == tgt { "train" } else { "transfer" }
        ),
        kind: if src == tgt { "train" } else { "transfer" }.into(),
        model: model.into(),
        src_task: src.into(),
        tgt_task: tgt.into(),
        src_model: None,
        split: "test".into(),
        metric: "accuracy".into(),
        value,
        n: 1000,
        src_type: types.get(src).map(|s| s.to_string()),
        tgt_type: types.get(tgt).map(|s| s.to_string()),
        objective: None,
        held_out: None,
    }
}

pub fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} (tolerance {tol})"
    );
}
