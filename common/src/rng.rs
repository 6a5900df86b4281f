//! SplitMix64 (Steele, Lea and Flood 2014), the one seeded generator of promptgrid: the ML core
//! draws its example orders and initial prompts from it, the report its bootstrap and
//! permutation indices. A one-word state makes a draw a pure function of its seed, and it is
//! easy to re-implement exactly (the fixture scripts do, in Python). Each user builds its own
//! draws on [`SplitMix64::next_u64`]; their exact forms are pinned by fixtures there.

/// `state += 0x9E3779B97F4A7C15`, then `z = state; z = (z ^ z >> 30) · 0xBF58476D1CE4E5B9;
/// z = (z ^ z >> 27) · 0x94D049BB133111EB; z ^ z >> 31`, all modulo 2⁶⁴.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
