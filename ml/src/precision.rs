//! Mixed precision for the frozen model: bf16 matrix products, float32 everywhere else.
//!
//! This is what `torch.autocast(dtype=torch.bfloat16)` does to these models: linear layers and
//! attention products run in bf16, normalisation, softmax, residual sums, the readout and the
//! loss in float32. tch 0.26 reaches autocast only for float16, so the policy is explicit:
//! the frozen linear weights are converted once (autocast would cast them on every call; they
//! never change, so converting them in place is the same numbers for half the memory), and each
//! product casts its input to its weight's type. The prompt, its gradient and the optimizer
//! state stay float32.

use std::fmt;
use std::str::FromStr;

use tch::{Kind, Tensor};

use super::error::MlError;

/// The number type of the frozen model's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in float32 (what the parity tests check).
    #[default]
    F32,
    /// bf16 products, float32 accumulation points: for GPUs with bf16 tensor cores.
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
