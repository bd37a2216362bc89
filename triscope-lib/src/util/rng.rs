//! The one pseudo-random generator of the library and the keys that keep its uses apart.
//! Everything random in Triscope (initial weights, shuffling, augmentation, attack starts,
//! dropout, SmoothGrad noise, TCAV's random concepts, audit subsets, the eval's noise check)
//! draws from SplitMix64, so results are identical on every platform and thread count.

/// SplitMix64: small, fast and identical on every platform (weights must not depend on it).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn next_normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

/// Standard normal samples in pairs (Box-Muller, both values used), on a SplitMix64 stream
/// whose seed is offset so that it differs from [`SplitMix64::new`] of the same seed
/// (SmoothGrad's noise).
#[derive(Debug, Clone)]
pub struct NormalPairs {
    bits: SplitMix64,
    spare: Option<f64>,
}

impl NormalPairs {
    pub fn new(seed: u64) -> Self {
        Self {
            bits: SplitMix64::new(seed ^ 0x9E37_79B9_7F4A_7C15),
            spare: None,
        }
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.bits.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// Stream keys of a training run's keyed generators (kept apart so no two uses share a
/// sequence).
pub mod stream {
    pub const SHUFFLE: u64 = 1;
    pub const AUGMENT: u64 = 2;
    pub const ATTACK: u64 = 3;
    pub const DROPOUT: u64 = 4;
    pub const VAL_ATTACK: u64 = 5;
    pub const MIX: u64 = 6;
    pub const BACKGROUND: u64 = 7;
}

/// A generator for (seed, stream, a, b): SplitMix64 on a mixed key.
pub fn keyed_rng(seed: u64, stream: u64, a: u64, b: u64) -> SplitMix64 {
    let mut k = SplitMix64::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let x = k.next_u64() ^ a.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut k = SplitMix64::new(x);
    let y = k.next_u64() ^ b.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7);
    SplitMix64::new(y)
}

/// Seed offsets of the evaluation's own generators.
pub mod offset {
    /// The audit's image subsets.
    pub const AUDIT: u64 = 0x5eed;
    /// The eval's uniform-noise check.
    pub const EVAL_NOISE: u64 = 0x006E_6F69_7365;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_normalish() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<f32> = (0..20000).map(|_| a.next_normal()).collect();
        let ys: Vec<f32> = (0..20000).map(|_| b.next_normal()).collect();
        assert_eq!(xs, ys);
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }

    #[test]
    fn normal_pairs_match_their_definition() {
        // SplitMix64 on the offset seed, two uniforms in (0, 1], cos then sin.
        let mut bits = SplitMix64::new(9 ^ 0x9E37_79B9_7F4A_7C15);
        let mut u = || ((bits.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let (u1, u2) = (u(), u());
        let r = (-2.0 * u1.ln()).sqrt();
        let mut n = NormalPairs::new(9);
        assert_eq!(n.normal(), r * (std::f64::consts::TAU * u2).cos());
        assert_eq!(n.normal(), r * (std::f64::consts::TAU * u2).sin());
    }
}
