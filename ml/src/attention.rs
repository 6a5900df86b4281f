//! Scaled dot-product attention of [N, H, Q, dh] queries over [N, H, S, dh] keys and values,
//! on whichever kernel is fastest for the device, the product type and the pass.

use tch::{Device, Kind, Tensor};

use crate::heap;

/// Which implementation attention runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// libtorch's `scaled_dot_product_attention`, its inputs cast to this type.
    Fused(Kind),
    /// Two products in the inputs' type around a softmax in float32 arithmetic ([`products`]).
    Products,
}

/// The kernel for products in `kind` on `device`, whose scores would take `score_bytes` in
/// float32, with or without a backward pass to follow. On CUDA the fused kernel in `kind` is the
/// fast path. On the CPU, bf16 runs the two products in bf16 around a softmax in float32
/// arithmetic while the allocator reuses the scores' memory (up to
/// [`heap::largest_reused_block`]; the bound still counts the scores in float32, as the products
/// path kept them when it was measured, though they are bf16 now): measured with promptgrid's
/// malloc settings, torch 2.13, against libtorch's flash kernel in float32 (its bf16 variant is
/// slower still), forward + backward 16×12 heads×228×32, one thread, 64 ms against 79;
/// 16×12×228×64 (RoBERTa-base), two threads, 50 against 80; 32×12×400×64, 344 against 419;
/// forward only, 64×12×72×32, 13.5 against 16.3 (18.3 for bf16 flash). Larger scores would be
/// faulted in afresh on every call (16×12×228×32 without the settings: 175 ms), so they take the
/// flash kernel: float32 with a backward, bf16 without. Float32 runs the flash kernel throughout
/// (what the parity tests check).
fn kernel(kind: Kind, device: Device, score_bytes: i64, backward: bool) -> Kernel {
    match device {
        Device::Cpu if kind == Kind::BFloat16 && score_bytes <= heap::largest_reused_block() => {
            Kernel::Products
        }
        Device::Cpu if backward => Kernel::Fused(Kind::Float),
        _ => Kernel::Fused(kind),
    }
}

/// `softmax(q kᵀ / √dh + mask) v` with dropout `p_dropout` on the probabilities; `mask`
/// [N, 1, 1, S] is true where a key may be attended. `backward` says whether a gradient will
/// flow back through it.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    p_dropout: f64,
    backward: bool,
) -> Tensor {
    // [N, H, Q, dh] · [N, H, S, dh]ᵀ: N·H·Q·S float32 scores.
    let (qs, ks) = (q.size(), k.size());
    let score_bytes = qs[..qs.len() - 1].iter().product::<i64>() * ks[ks.len() - 2] * 4;
    match kernel(q.kind(), q.device(), score_bytes, backward) {
        Kernel::Products => products(q, k, v, mask, p_dropout),
        Kernel::Fused(kind) => Tensor::scaled_dot_product_attention(
            &q.to_kind(kind),
            &k.to_kind(kind),
            &v.to_kind(kind),
            Some(mask),
            p_dropout,
            false,
            None,
            false,
        ),
    }
}

/// Attention as autocast's math path runs it: the two products in the inputs' type, the masked
/// softmax's arithmetic in float32. With bf16 inputs the softmax reads and writes bf16 (the
/// kernel computes in float32 inside, so its output equals a float32 softmax rounded to bf16,
/// which is what the second product reads either way) instead of converting the scores to
/// float32 and back: two passes fewer over the N·H·Q·S scores in the forward and two in the
/// backward, which then reads the bf16 probabilities. Measured on 16×12×228×228 scores, one
/// thread, forward and backward of the mask and softmax: 14.4 ms against 24.1, the scores'
/// gradient within 0.23% of float32's (0.17% before).
fn products(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, p_dropout: f64) -> Tensor {
    let dh = q.size().last().copied().unwrap_or(1) as f64;
    let scores = (q * (1.0 / dh.sqrt())).matmul(&k.transpose(-2, -1));
    // An additive mask (0 or −∞, exact in bf16): cheaper through autograd than masked_fill on
    // every score, and none at all for a batch without padding.
    let scores = if mask.all().int64_value(&[]) == 1 {
        scores
    } else {
        let bias = Tensor::zeros(mask.size(), (scores.kind(), q.device()))
            .masked_fill(&mask.logical_not(), f64::NEG_INFINITY);
        scores + bias
    };
    let probs = scores.softmax(-1, scores.kind());
    let probs = if p_dropout > 0.0 {
        probs.dropout(p_dropout, true)
    } else {
        probs
    };
    probs.matmul(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_follows_the_device_the_type_the_pass_and_the_size() {
        let (bf16, cpu) = (Kind::BFloat16, Device::Cpu);
        let reused = heap::largest_reused_block();
        let small = 16 * 12 * 68 * 68 * 4;
        for backward in [false, true] {
            assert_eq!(kernel(bf16, cpu, small, backward), Kernel::Products);
            assert_eq!(kernel(bf16, cpu, reused, backward), Kernel::Products);
        }
        assert_eq!(kernel(bf16, cpu, reused + 1, false), Kernel::Fused(bf16));
        assert_eq!(
            kernel(bf16, cpu, reused + 1, true),
            Kernel::Fused(Kind::Float)
        );
        for backward in [false, true] {
            assert_eq!(
                kernel(Kind::Float, cpu, small, backward),
                Kernel::Fused(Kind::Float)
            );
        }
        assert_eq!(
            kernel(bf16, Device::Cuda(0), small, true),
            Kernel::Fused(bf16)
        );
    }

    #[test]
    fn the_products_path_matches_the_fused_kernel() {
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        let (q, k, v) = (
            Tensor::randn([2, 3, 5, 8], opts),
            Tensor::randn([2, 3, 7, 8], opts),
            Tensor::randn([2, 3, 7, 8], opts),
        );
        let mask = Tensor::from_slice2(&[[1i64, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
            .to_kind(Kind::Bool)
            .view([2, 1, 1, 7]);
        let fused = attend(&q, &k, &v, &mask, 0.0, false);
        let ours = products(&q, &k, &v, &mask, 0.0);
        let diff = (&fused - &ours).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "float32: {diff}");
        // bf16 training takes the products path; it stays within bf16's rounding of float32.
        let bf = |t: &Tensor| t.to_kind(Kind::BFloat16).set_requires_grad(true);
        let (qb, kb, vb) = (bf(&q), bf(&k), bf(&v));
        let out = attend(&qb, &kb, &vb, &mask, 0.0, true);
        assert_eq!(out.kind(), Kind::BFloat16);
        let diff = (out.to_kind(Kind::Float) - &fused)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 0.05, "bf16: {diff}");
        out.sum(Kind::Float).backward();
        assert!(qb.grad().defined() && kb.grad().defined() && vb.grad().defined());
    }

    /// The bf16 softmax's output is the float32 softmax of the bf16 scores, rounded to bf16:
    /// skipping the conversions changes no number of the forward pass.
    #[test]
    fn the_bf16_softmax_is_the_float32_one_rounded() {
        tch::manual_seed(11);
        let opts = (Kind::BFloat16, Device::Cpu);
        let (q, k, v) = (
            Tensor::randn([2, 3, 5, 8], opts),
            Tensor::randn([2, 3, 7, 8], opts),
            Tensor::randn([2, 3, 7, 8], opts),
        );
        for keep in [[1i64, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]] {
            let mask = Tensor::from_slice(&keep)
                .to_kind(Kind::Bool)
                .view([1, 1, 1, 7]);
            let scores = (&q * (1.0 / 8f64.sqrt())).matmul(&k.transpose(-2, -1));
            let bias = Tensor::zeros([1, 1, 1, 7], (Kind::Float, Device::Cpu))
                .masked_fill(&mask.logical_not(), f64::NEG_INFINITY);
            let probs = (scores.to_kind(Kind::Float) + bias).softmax(-1, Kind::Float);
            let expected = probs.to_kind(Kind::BFloat16).matmul(&v);
            let ours = products(&q, &k, &v, &mask, 0.0);
            assert_eq!(ours.kind(), Kind::BFloat16);
            let diff = (ours - expected).abs().max().double_value(&[]);
            assert_eq!(diff, 0.0, "mask {keep:?}");
        }
    }
}
