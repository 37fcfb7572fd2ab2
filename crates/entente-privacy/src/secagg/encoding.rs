//! Fixed-point encoding of weighted, clipped updates in the ring Z/2^32 (or Z/2^64).
//!
//! Site `u` with update `x` and weight `w` (its number of examples) sends, before masking,
//! `q_i = round(w * clip(x_i) * scale) mod 2^BITS` for every coordinate, followed by one more
//! coordinate holding `w`. The unmasked sum therefore carries both the weighted sum and the
//! total weight, and the coordinator decodes the weighted FedAvg without seeing any weight.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::SecAggError;

/// Smallest number of coordinates a parallel task of [`encode`] or [`decode`] handles.
const PAR_MIN_LEN: usize = 8192;

/// Size of the ring the encoded updates live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Modulus {
    /// Z/2^32: 4 bytes per coordinate.
    Pow32,
    /// Z/2^64: 8 bytes per coordinate, for ranges that 2^32 cannot hold.
    Pow64,
}

impl Modulus {
    /// Bits of a ring element.
    pub fn bits(self) -> u32 {
        match self {
            Modulus::Pow32 => 32,
            Modulus::Pow64 => 64,
        }
    }
}

/// The declared encoding every site agreed to: clipping range, fixed-point scale, largest
/// weight and ring size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncodingSettings {
    /// Every coordinate is clipped to `[-clip, clip]` before weighting.
    pub clip: f32,
    /// Fixed-point scale: one unit of the ring is `1 / scale`.
    pub scale: f64,
    /// Largest weight (number of examples) a site may declare; weights are `1..=max_weight`.
    pub max_weight: u64,
    /// Ring size.
    pub modulus: Modulus,
}

impl EncodingSettings {
    /// Checks the settings are usable by `n_sites` sites without overflow: the largest possible
    /// sum `n * (max_weight * clip * scale + 1/2)` must stay below 2^(BITS-1), so it decodes as
    /// a signed value, and `n * max_weight` below 2^BITS for the weight coordinate.
    pub fn validate(&self, n_sites: usize) -> Result<(), SecAggError> {
        let bad = |m: String| Err(SecAggError::Config(m));
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return bad(format!(
                "clip must be finite and positive, got {}",
                self.clip
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return bad(format!(
                "scale must be finite and positive, got {}",
                self.scale
            ));
        }
        if self.max_weight == 0 {
            return bad("max_weight must be at least 1".into());
        }
        if self.max_weight >= 1 << 53 {
            return bad("max_weight must be below 2^53".into());
        }
        let n = n_sites as f64;
        let bits = self.modulus.bits();
        let worst = n * (self.max_weight as f64 * f64::from(self.clip) * self.scale + 0.5);
        let limit = 2f64.powi(bits as i32 - 1);
        if worst >= limit {
            return bad(format!(
                "{n_sites} sites x max_weight {} x clip {} x scale {} could reach {worst:.3e}, \
                 which overflows the signed range 2^{} of the ring; lower the scale to at most \
                 {:.6e} or use a larger modulus",
                self.max_weight,
                self.clip,
                self.scale,
                bits - 1,
                self.max_safe_scale(n_sites)
            ));
        }
        if n * self.max_weight as f64 >= 2f64.powi(bits as i32) {
            return bad(format!(
                "{n_sites} sites x max_weight {} overflows the weight coordinate (2^{bits})",
                self.max_weight
            ));
        }
        Ok(())
    }

    /// The largest scale that [`EncodingSettings::validate`] accepts for `n_sites` sites (minus
    /// a small margin).
    pub fn max_safe_scale(&self, n_sites: usize) -> f64 {
        let limit = 2f64.powi(self.modulus.bits() as i32 - 1);
        let n = n_sites.max(1) as f64;
        ((limit / n - 0.5) / (self.max_weight as f64 * f64::from(self.clip))) * (1.0 - 1e-9)
    }
}

/// Largest possible error `|decoded weighted mean - exact weighted mean of the clipped
/// updates|` per coordinate, for `n_sites` contributing sites with weights `>= 1`.
///
/// Each site rounds `w x scale` once (error <= 1/2, plus f64 rounding of the product); the sum
/// of `n` such errors is divided by `scale * W` with `W >= n`. The f64 division and the final
/// rounding to f32 add a relative error of at most 2^-24 of the (clipped) magnitude.
pub fn quantization_bound(settings: &EncodingSettings, n_sites: usize) -> f64 {
    quantization_bound_for_weight(settings, n_sites, n_sites as u64)
}

/// [`quantization_bound`] when the total weight `W` of the contributors is known (it is
/// decoded with the sum): the rounding error shrinks as `n / (2 scale W)`.
pub fn quantization_bound_for_weight(
    settings: &EncodingSettings,
    n_sites: usize,
    total_weight: u64,
) -> f64 {
    let n = n_sites.max(1) as f64;
    let c = f64::from(settings.clip);
    let s = settings.scale;
    let per_site = 0.5 + settings.max_weight as f64 * c * s * 2f64.powi(-51);
    let quant = n * per_site / (s * total_weight.max(1) as f64);
    quant + (c + quant) * (2f64.powi(-24) + 2f64.powi(-50))
}

/// An element of the ring Z/2^BITS (implemented for `u32` and `u64`).
pub trait Word: Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// Bytes of the little-endian encoding.
    const BYTES: usize;
    /// Reads a little-endian element from exactly `BYTES` bytes.
    fn from_le_slice(bytes: &[u8]) -> Self;
    /// Addition modulo 2^BITS.
    fn wrapping_add(self, other: Self) -> Self;
    /// Subtraction modulo 2^BITS.
    fn wrapping_sub(self, other: Self) -> Self;
    /// The residue of a signed integer.
    fn from_i64(v: i64) -> Self;
    /// The two's-complement (signed) reading.
    fn to_signed(self) -> i64;
    /// The unsigned reading.
    fn to_unsigned(self) -> u64;
}

impl Word for u32 {
    const BYTES: usize = 4;
    fn from_le_slice(b: &[u8]) -> Self {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn wrapping_add(self, o: Self) -> Self {
        u32::wrapping_add(self, o)
    }
    fn wrapping_sub(self, o: Self) -> Self {
        u32::wrapping_sub(self, o)
    }
    fn from_i64(v: i64) -> Self {
        v as u32
    }
    fn to_signed(self) -> i64 {
        i64::from(self as i32)
    }
    fn to_unsigned(self) -> u64 {
        u64::from(self)
    }
}

impl Word for u64 {
    const BYTES: usize = 8;
    fn from_le_slice(b: &[u8]) -> Self {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
    fn wrapping_add(self, o: Self) -> Self {
        u64::wrapping_add(self, o)
    }
    fn wrapping_sub(self, o: Self) -> Self {
        u64::wrapping_sub(self, o)
    }
    fn from_i64(v: i64) -> Self {
        v as u64
    }
    fn to_signed(self) -> i64 {
        self as i64
    }
    fn to_unsigned(self) -> u64 {
        self
    }
}

/// Checks a site's own update and weight before anything is encoded: right length, every
/// value finite, weight in `1..=max_weight`.
pub fn check_update(
    update: &[f32],
    weight: u64,
    dimension: usize,
    settings: &EncodingSettings,
) -> Result<(), SecAggError> {
    if update.len() != dimension {
        return Err(SecAggError::InvalidUpdate(format!(
            "update has {} values, the round declares {dimension}",
            update.len()
        )));
    }
    if let Some(i) = update.iter().position(|v| !v.is_finite()) {
        return Err(SecAggError::InvalidUpdate(format!(
            "value {} at index {i} is not finite",
            update[i]
        )));
    }
    if weight == 0 || weight > settings.max_weight {
        return Err(SecAggError::InvalidUpdate(format!(
            "weight {weight} is outside 1..={}",
            settings.max_weight
        )));
    }
    Ok(())
}

/// Encodes a checked update: clip, weight, scale, round, reduce; appends the weight.
pub fn encode<W: Word>(update: &[f32], weight: u64, settings: &EncodingSettings) -> Vec<W> {
    let c = settings.clip;
    let factor = weight as f64 * settings.scale;
    let mut out = Vec::with_capacity(update.len() + 1);
    // Element-wise, so computing it in parallel gives the same vector.
    out.par_extend(
        update
            .par_iter()
            .with_min_len(PAR_MIN_LEN)
            .map(|&x| W::from_i64((f64::from(x.clamp(-c, c)) * factor).round() as i64)),
    );
    out.push(W::from_i64(weight as i64));
    out
}

/// Decodes an unmasked sum: returns the total weight, the weighted sum and the weighted mean.
pub fn decode<W: Word>(sum: &[W], settings: &EncodingSettings) -> (u64, Vec<f64>, Vec<f32>) {
    let (values, weight) = match sum.split_last() {
        Some((w, v)) => (v, w.to_unsigned()),
        None => (sum, 0),
    };
    // Element-wise, so computing it in parallel gives the same vectors.
    let weighted_sum: Vec<f64> = values
        .par_iter()
        .with_min_len(PAR_MIN_LEN)
        .map(|v| v.to_signed() as f64 / settings.scale)
        .collect();
    let denom = settings.scale * weight.max(1) as f64;
    let mean = values
        .par_iter()
        .with_min_len(PAR_MIN_LEN)
        .map(|v| (v.to_signed() as f64 / denom) as f32)
        .collect();
    (weight, weighted_sum, mean)
}
