//! Running a padded batch's position-wise work on its real positions only.
//!
//! Every linear layer, norm and activation of an encoder layer acts on each position alone;
//! only attention mixes positions. A training batch pads its examples to the longest one, and
//! on the demo's tasks (about 22 text tokens on average, up to the 48-token cap) a third of
//! the padded positions are padding. [`Packing`] lets the layers run those products on the
//! non-pad rows, [T, c] with T the real positions, and attention on the padded layout. The
//! non-pad rows compute what they computed padded (a padded position never reaches them
//! through attention's mask), so only the wasted work goes.

use tch::{Kind, Tensor};

/// Where the real positions of an [N, S] batch sit among its N·S padded ones.
#[derive(Debug)]
pub(crate) struct Packing {
    /// Row-major indices of the attended positions, [T].
    index: Tensor,
    n: i64,
    s: i64,
}

impl Packing {
    /// The packing of `mask` [N, S] (nonzero where a position is real), or `None` when no
    /// position is padding: packing would then only copy.
    pub(crate) fn of(mask: &Tensor) -> Option<Packing> {
        let (n, s) = mask.size2().ok()?;
        let index = mask.to_kind(Kind::Bool).view([-1]).nonzero().view([-1]);
        (index.size()[0] < n * s).then_some(Packing { index, n, s })
    }

    /// [N, S, c] → [T, c]: the real positions' rows.
    pub(crate) fn pack(&self, x: &Tensor) -> Tensor {
        let c = x.size()[2];
        x.reshape([self.n * self.s, c]).index_select(0, &self.index)
    }

    /// [T, c] → [N, S, c], zeros at the padding (which attention's mask never reads).
    pub(crate) fn pad(&self, x: &Tensor) -> Tensor {
        let c = x.size()[1];
        Tensor::zeros([self.n * self.s, c], (x.kind(), x.device()))
            .index_copy(0, &self.index, x)
            .view([self.n, self.s, c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_keeps_the_real_positions_and_pad_puts_them_back() {
        let mask = Tensor::from_slice2(&[[1i64, 1, 0], [1, 1, 1]]);
        let packing = Packing::of(&mask).unwrap();
        let x = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([2, 3, 2]);
        let packed = packing.pack(&x);
        assert_eq!(packed.size(), [5, 2]);
        assert_eq!(
            Vec::<f32>::try_from(packed.view([-1])).unwrap(),
            [0., 1., 2., 3., 6., 7., 8., 9., 10., 11.]
        );
        let padded = packing.pad(&packed);
        let expected = x * mask.unsqueeze(-1);
        assert!(padded.equal(&expected));
    }

    #[test]
    fn a_batch_without_padding_is_not_packed() {
        assert!(Packing::of(&Tensor::ones([2, 3], (Kind::Int64, tch::Device::Cpu))).is_none());
    }
}
