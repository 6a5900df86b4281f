//! A small seeded generator (SplitMix64) for shuffling and prompt initialisation. Owning it,
//! rather than using torch's global generator, makes a run a pure function of its seed and
//! step, so that a resumed job replays exactly the batches an uninterrupted one would see.

pub(crate) use promptgrid_common::rng::SplitMix64;

/// The ML core's draws on [`SplitMix64`]: uniform floats, normals, indices and permutations.
pub(crate) trait Draws {
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64;
    /// Uniform in [0, 1) as float32: 24 random bits, so that rounding never gives 1.
    fn next_f32(&mut self) -> f32;
    /// Uniform in [0, n); `n` > 0.
    fn below(&mut self, n: u64) -> u64;
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64;
    /// A Fisher-Yates permutation of 0..n.
    fn permutation(&mut self, n: usize) -> Vec<usize>;
}

impl Draws for SplitMix64 {
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u32 << 24) as f32
    }

    fn below(&mut self, n: u64) -> u64 {
        // Modulo bias is below 2^-40 for the sizes used here (datasets, vocabularies).
        self.next_u64() % n.max(1)
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

/// The training example order: epoch `e` is a permutation drawn from `(seed, e)`, and
/// micro-batch `g` takes examples `g·b .. (g+1)·b` of the concatenated epochs.
#[derive(Debug)]
pub struct Sampler {
    seed: u64,
    n: usize,
    epoch: Option<(usize, Vec<usize>)>,
}

impl Sampler {
    pub fn new(seed: u64, n: usize) -> Sampler {
        Sampler {
            seed,
            n,
            epoch: None,
        }
    }

    /// Indices of micro-batch `g` of size `b`.
    pub fn micro_batch(&mut self, g: usize, b: usize) -> Vec<usize> {
        (g * b..(g + 1) * b)
            .map(|k| {
                let e = k / self.n;
                if self.epoch.as_ref().is_none_or(|(cur, _)| *cur != e) {
                    let mut rng =
                        SplitMix64::new(self.seed ^ (e as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                    self.epoch = Some((e, rng.permutation(self.n)));
                }
                self.epoch.as_ref().map(|(_, p)| p[k % self.n]).unwrap_or(0)
            })
            .collect()
    }
}
