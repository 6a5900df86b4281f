//! Mixed precision for the frozen model: bf16 matrix products, float32 everywhere else.
//!
//! This is what `torch.autocast(dtype=torch.bfloat16)` does to these models: linear layers and
//! attention products run in bf16 (on the CPU, attention's kernel follows the pass and the size
//! of its scores: see attention.rs),
//! normalisation, softmax, residual sums, the readout and the loss in float32. tch 0.26 reaches autocast only for float16, so the policy is explicit:
//! the frozen linear weights are converted once (autocast would cast them on every call; they
//! never change, so converting them in place is the same numbers for half the memory), and each
//! product casts its input to its weight's type. The prompt, its gradient and the optimizer
//! state stay float32.

use std::fmt;
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

use super::error::MlError;

/// The number type of the frozen model's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in float32 (what the parity tests check).
    #[default]
    F32,
    /// bf16 products, float32 accumulation points: for devices with native bf16 (GPUs from
    /// Ampere on, CPUs with AVX512-BF16).
    Bf16,
}

impl Precision {
    /// The type matrix products run in.
    pub fn matmul_kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

impl FromStr for Precision {
    type Err = MlError;

    fn from_str(s: &str) -> Result<Precision, MlError> {
        match s {
            "fp32" | "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(MlError::Invalid(format!(
                "precision {s:?}: expected fp32 or bf16"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// What `--precision` asks for: one precision, or `auto`, the fastest one the device runs
/// natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecisionRequest {
    Fixed(Precision),
    Auto,
}

impl FromStr for PrecisionRequest {
    type Err = MlError;

    fn from_str(s: &str) -> Result<PrecisionRequest, MlError> {
        match s {
            "auto" => Ok(PrecisionRequest::Auto),
            _ => s.parse().map(PrecisionRequest::Fixed).map_err(|_| {
                MlError::Invalid(format!("precision {s:?}: expected fp32, bf16 or auto"))
            }),
        }
    }
}

impl PrecisionRequest {
    /// The precision `device` runs for this request, and why, in words for the worker's start
    /// line.
    pub fn resolve(self, device: Device) -> (Precision, String) {
        let native = native_bf16(device);
        match (self, native) {
            (PrecisionRequest::Auto, Some(why)) => {
                (Precision::Bf16, format!("--precision auto: {why}"))
            }
            (PrecisionRequest::Auto, None) => (
                Precision::F32,
                "--precision auto: this device has no native bf16 products".into(),
            ),
            (PrecisionRequest::Fixed(Precision::F32), Some(why)) => (
                Precision::F32,
                format!(
                    "--precision fp32, what the parity tests check; {why}, so bf16 \
                     (--precision bf16 or auto) would run faster"
                ),
            ),
            (PrecisionRequest::Fixed(Precision::F32), None) => {
                (Precision::F32, "--precision fp32".into())
            }
            (PrecisionRequest::Fixed(Precision::Bf16), Some(why)) => {
                (Precision::Bf16, format!("--precision bf16: {why}"))
            }
            (PrecisionRequest::Fixed(Precision::Bf16), None) => (
                Precision::Bf16,
                "--precision bf16, but this device has no native bf16 products: libtorch \
                 emulates them, slower than fp32"
                    .into(),
            ),
        }
    }
}

/// Why `device` runs bf16 matrix products natively; `None` where it would emulate them.
fn native_bf16(device: Device) -> Option<&'static str> {
    match device {
        Device::Cpu if cpu_has_bf16() => Some("this CPU has AVX512-BF16"),
        Device::Cpu => None,
        // tch does not report a GPU's compute capability; bf16 tensor cores start with Ampere.
        _ => Some("a CUDA device (bf16 tensor cores from Ampere, compute capability 8.0, on)"),
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_bf16() -> bool {
    false
}

/// Converts a frozen weight in place, so that every handle on it (the var store's included)
/// sees the new type and the float32 copy is freed.
pub(crate) fn convert(weight: &Tensor, kind: Kind) {
    if weight.kind() != kind {
        tch::no_grad(|| {
            let mut w = weight.shallow_clone();
            w.set_data(&weight.to_kind(kind));
        });
    }
}

/// `x @ weightᵀ (+ bias)` in the weight's type: a float32 input meets bf16 weights as bf16.
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    x.to_kind(weight.kind()).linear(weight, bias)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_resolve_by_the_hardware() {
        let parse = |s: &str| s.parse::<PrecisionRequest>();
        assert_eq!(parse("auto").unwrap(), PrecisionRequest::Auto);
        assert_eq!(
            parse("bf16").unwrap(),
            PrecisionRequest::Fixed(Precision::Bf16)
        );
        let err = parse("fp16").unwrap_err().to_string();
        assert!(
            err.contains("precision \"fp16\": expected fp32, bf16 or auto"),
            "{err}"
        );

        // A fixed request is kept whatever the hardware; auto follows it.
        let cpu = Device::Cpu;
        let (p, why) = PrecisionRequest::Fixed(Precision::F32).resolve(cpu);
        assert_eq!(p, Precision::F32, "{why}");
        let (p, why) = PrecisionRequest::Fixed(Precision::Bf16).resolve(cpu);
        assert_eq!(p, Precision::Bf16, "{why}");
        assert_eq!(why.contains("emulates"), !cpu_has_bf16(), "{why}");
        let (p, why) = PrecisionRequest::Auto.resolve(cpu);
        let native = std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|info| info.contains(" avx512_bf16"));
        assert_eq!(p == Precision::Bf16, native, "{why}");
        assert_eq!(
            PrecisionRequest::Auto.resolve(Device::Cuda(0)).0,
            Precision::Bf16
        );
    }
}
