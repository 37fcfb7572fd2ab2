//! The two steps of the Gaussian mechanism on flat `f32` vectors: clip to an L2 norm, then add
//! Gaussian noise of standard deviation `noise_multiplier * clip_norm`.
//!
//! For client-level DP (McMahan et al., ICLR 2018) each site clips its model update to norm
//! `S` with [`clip_l2`] and the sum of the clipped updates gets noise of standard deviation
//! `sigma * S` with [`add_gaussian_noise`]; the [`rdp`](super::rdp) accountant then counts one
//! step per round with `q` the site sampling rate. Noise is drawn from a seeded
//! [`ChaCha20Rng`] ([`noise_rng`]), so a run is reproducible.

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::{DpError, check_range};

/// Checks that every value is finite.
fn check_finite(values: &[f32]) -> Result<(), DpError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(DpError::NonFiniteValue {
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

/// The L2 norm of `values`, accumulated in `f64`.
pub fn l2_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// Scales `values` in place so that its L2 norm is at most `clip_norm`, and returns the scale
/// factor applied (1 when the norm was already at most `clip_norm`, and the vector is then
/// untouched).
///
/// The clipped norm, measured as [`l2_norm`] measures it, is guaranteed to be at most
/// `clip_norm` despite `f32` rounding. `clip_norm` must be finite and positive, and every value
/// finite; on error `values` is unchanged.
pub fn clip_l2(values: &mut [f32], clip_norm: f64) -> Result<f64, DpError> {
    check_range(
        "clip_norm",
        clip_norm,
        f64::MIN_POSITIVE,
        f64::MAX,
        "finite and positive",
    )?;
    check_finite(values)?;
    let norm = l2_norm(values);
    if norm <= clip_norm {
        return Ok(1.0);
    }
    let original: Vec<f32> = values.to_vec();
    let mut scale = clip_norm / norm;
    // Rounding each product to f32 can push the norm a few ulps above clip_norm; shrink the
    // scale by a few f32 ulps until it does not (one retry in practice).
    for _ in 0..64 {
        for (v, &o) in values.iter_mut().zip(&original) {
            *v = (f64::from(o) * scale) as f32;
        }
        if l2_norm(values) <= clip_norm {
            return Ok(scale);
        }
        scale *= 1.0 - 4.0 * f64::from(f32::EPSILON);
    }
    // Unreachable in practice (each retry shrinks the norm by about 5e-7 relative); zeroing
    // keeps the guarantee whatever happens.
    values.iter_mut().for_each(|v| *v = 0.0);
    Ok(0.0)
}

/// A ChaCha20 generator seeded from `seed`, for reproducible noise.
pub fn noise_rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A ChaCha20 generator seeded by the operating system, for noise nobody else can predict.
pub fn os_noise_rng() -> Result<ChaCha20Rng, String> {
    ChaCha20Rng::try_from_os_rng()
        .map_err(|e| format!("could not seed the noise from the operating system: {e}"))
}

/// Adds independent `N(0, (noise_multiplier * clip_norm)^2)` noise to each of `values`, drawn
/// from `rng`, and returns the standard deviation used.
///
/// `noise_multiplier` must be finite and non-negative (0 adds nothing), `clip_norm` finite and
/// positive, and every value finite; on error `values` is unchanged and `rng` is not advanced.
pub fn add_gaussian_noise<R: Rng + ?Sized>(
    values: &mut [f32],
    noise_multiplier: f64,
    clip_norm: f64,
    rng: &mut R,
) -> Result<f64, DpError> {
    check_range(
        "noise_multiplier",
        noise_multiplier,
        0.0,
        f64::MAX,
        "finite and non-negative",
    )?;
    check_range(
        "clip_norm",
        clip_norm,
        f64::MIN_POSITIVE,
        f64::MAX,
        "finite and positive",
    )?;
    check_finite(values)?;
    let std = noise_multiplier * clip_norm;
    if !std.is_finite() {
        return Err(DpError::InvalidParameter {
            name: "noise_multiplier * clip_norm",
            value: std,
            expected: "finite",
        });
    }
    if std == 0.0 {
        return Ok(0.0);
    }
    let normal = Normal::new(0.0, std).map_err(|_| DpError::InvalidParameter {
        name: "noise std",
        value: std,
        expected: "finite and positive",
    })?;
    for v in values.iter_mut() {
        *v = (f64::from(*v) + normal.sample(rng)) as f32;
    }
    Ok(std)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_leave_values_unchanged() {
        let mut v = vec![3.0f32, f32::NAN, 4.0];
        let err = clip_l2(&mut v, 1.0).unwrap_err();
        assert!(
            matches!(err, DpError::NonFiniteValue { index: 1, .. }),
            "{err}"
        );
        assert_eq!(v[0], 3.0);
        let mut v = vec![3.0f32, 4.0];
        assert!(clip_l2(&mut v, 0.0).is_err());
        assert!(clip_l2(&mut v, f64::NAN).is_err());
        let mut rng = noise_rng(1);
        assert!(add_gaussian_noise(&mut v, -1.0, 1.0, &mut rng).is_err());
        assert!(add_gaussian_noise(&mut v, 1.0, 0.0, &mut rng).is_err());
        assert!(add_gaussian_noise(&mut v, f64::MAX, 10.0, &mut rng).is_err());
        assert_eq!(v, vec![3.0, 4.0]);
        assert_eq!(add_gaussian_noise(&mut v, 0.0, 1.0, &mut rng), Ok(0.0));
        assert_eq!(v, vec![3.0, 4.0]);
    }

    #[test]
    fn empty_vector() {
        let mut v: Vec<f32> = Vec::new();
        assert_eq!(clip_l2(&mut v, 1.0), Ok(1.0));
        assert_eq!(
            add_gaussian_noise(&mut v, 1.0, 1.0, &mut noise_rng(0)),
            Ok(1.0)
        );
    }
}
