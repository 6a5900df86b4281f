use std::collections::HashMap;
use std::path::PathBuf;

use promptgrid_ml::{EncoderModel, Head, Layout};
use tch::{Device, Tensor};

pub fn data_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

pub fn load(name: &str, head: Head, layout: Layout) -> EncoderModel {
    EncoderModel::load(&data_dir(name), head, layout, Device::Cpu).unwrap()
}

pub fn expected(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(data_dir(name).join("expected.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

/// max |a - b| / max |b|
pub fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs_diff(a, b) / b.abs().max().double_value(&[]).max(1e-30)
}
