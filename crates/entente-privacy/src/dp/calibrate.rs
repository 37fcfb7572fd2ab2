//! Noise calibration: the smallest noise multiplier that keeps epsilon at or below a target.
//!
//! Epsilon falls as the noise multiplier grows, towards a floor set by the conversion (and by
//! what an accountant has already recorded): with infinite noise the new steps cost nothing.
//! A target at or below that floor is unreachable and reported as such. Otherwise the search
//! doubles the noise multiplier from 1 until the target is met, then bisects until the
//! bracket is narrower than `tolerance` times its upper end, and returns that upper end, so
//! the answer always meets the target.

use super::rdp::Accountant;
use super::{DpError, check_delta, check_range};

/// Default relative tolerance of the bisection: the answer is within 0.01% of the smallest
/// noise multiplier that meets the target.
pub const DEFAULT_TOLERANCE: f64 = 1e-4;

/// Largest noise multiplier the search tries before giving up with
/// [`DpError::NotReached`].
pub const MAX_NOISE_MULTIPLIER: f64 = 1e8;

/// The smallest noise multiplier `sigma` (to relative `tolerance`) such that `steps` steps of
/// the sampled Gaussian mechanism with sampling rate `q` give epsilon at most
/// `target_epsilon` at `delta`, over the default orders.
///
/// Returns 0 when the steps cost nothing (`q = 0` or `steps = 0`). Errors with
/// [`DpError::TargetUnreachable`] when no noise suffices and [`DpError::InvalidParameter`] for
/// inputs out of range (`tolerance` must be in `(0, 0.5]`).
pub fn calibrate_noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    q: f64,
    steps: u64,
    tolerance: f64,
) -> Result<f64, DpError> {
    calibrate_noise_multiplier_after(
        &Accountant::new(),
        target_epsilon,
        delta,
        q,
        steps,
        tolerance,
    )
}

/// Like [`calibrate_noise_multiplier`], on top of what `spent` has already recorded: the
/// smallest noise multiplier for the next `steps` steps such that the total epsilon stays at
/// most `target_epsilon` (the budget) at `delta`. Uses `spent`'s orders.
pub fn calibrate_noise_multiplier_after(
    spent: &Accountant,
    target_epsilon: f64,
    delta: f64,
    q: f64,
    steps: u64,
    tolerance: f64,
) -> Result<f64, DpError> {
    check_range(
        "target_epsilon",
        target_epsilon,
        f64::MIN_POSITIVE,
        f64::MAX,
        "finite and positive",
    )?;
    check_delta(delta)?;
    check_range("q", q, 0.0, 1.0, "a sampling rate in [0, 1]")?;
    check_range(
        "tolerance",
        tolerance,
        f64::MIN_POSITIVE,
        0.5,
        "in (0, 0.5]",
    )?;

    // With infinite noise the new steps add no RDP: this is the best achievable epsilon.
    let floor = spent.epsilon(delta)?.epsilon;
    let unreachable = DpError::TargetUnreachable {
        target: target_epsilon,
        delta,
        floor,
    };
    if q == 0.0 || steps == 0 {
        return if floor <= target_epsilon {
            Ok(0.0)
        } else {
            Err(unreachable)
        };
    }
    if floor >= target_epsilon {
        return Err(unreachable);
    }

    let eps = |sigma: f64| -> Result<f64, DpError> {
        Ok(spent.epsilon_after(q, sigma, steps, delta)?.epsilon)
    };

    // Bracket: eps(lo) > target >= eps(hi). eps(0) is infinite.
    let mut lo = 0.0;
    let mut hi = 1.0;
    loop {
        let e = eps(hi)?;
        if e <= target_epsilon {
            break;
        }
        if hi >= MAX_NOISE_MULTIPLIER {
            return Err(DpError::NotReached {
                target: target_epsilon,
                noise_multiplier: hi,
                epsilon: e,
            });
        }
        lo = hi;
        hi *= 2.0;
    }
    while hi - lo > tolerance * hi {
        let mid = 0.5 * (lo + hi);
        if eps(mid)? <= target_epsilon {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::rdp::epsilon;

    #[test]
    fn finds_the_boundary() {
        let (target, delta, q, steps) = (2.0, 1e-5, 0.01, 1000);
        let sigma = calibrate_noise_multiplier(target, delta, q, steps, 1e-4).unwrap();
        assert!(epsilon(q, sigma, steps, delta).unwrap().epsilon <= target);
        assert!(
            epsilon(q, sigma * (1.0 - 2e-4), steps, delta)
                .unwrap()
                .epsilon
                > target
        );
    }

    #[test]
    fn free_steps_need_no_noise() {
        assert_eq!(
            calibrate_noise_multiplier(1.0, 1e-5, 0.0, 100, 1e-3),
            Ok(0.0)
        );
        assert_eq!(calibrate_noise_multiplier(1.0, 1e-5, 0.1, 0, 1e-3), Ok(0.0));
    }

    #[test]
    fn unreachable_targets_are_reported() {
        // The conversion alone costs about 0.10 at delta = 1e-5 over the default orders.
        match calibrate_noise_multiplier(0.05, 1e-5, 0.01, 100, 1e-3) {
            Err(DpError::TargetUnreachable { floor, .. }) => {
                assert!(floor > 0.05 && floor < 0.2, "{floor}");
            }
            other => panic!("{other:?}"),
        }
        // A budget already spent cannot be topped up by more noise.
        let mut spent = Accountant::new();
        spent.compose(0.1, 0.8, 1000).unwrap();
        let err = calibrate_noise_multiplier_after(&spent, 3.0, 1e-5, 0.01, 10, 1e-3);
        assert!(
            matches!(err, Err(DpError::TargetUnreachable { .. })),
            "{err:?}"
        );
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains("unreachable"), "{msg}");
    }

    #[test]
    fn rejects_bad_input() {
        for (t, d, q, tol) in [
            (0.0, 1e-5, 0.1, 1e-3),
            (-1.0, 1e-5, 0.1, 1e-3),
            (f64::NAN, 1e-5, 0.1, 1e-3),
            (f64::INFINITY, 1e-5, 0.1, 1e-3),
            (1.0, 0.0, 0.1, 1e-3),
            (1.0, 1.0, 0.1, 1e-3),
            (1.0, 1e-5, 1.5, 1e-3),
            (1.0, 1e-5, 0.1, 0.0),
            (1.0, 1e-5, 0.1, 0.9),
            (1.0, 1e-5, 0.1, f64::NAN),
        ] {
            assert!(
                matches!(
                    calibrate_noise_multiplier(t, d, q, 10, tol),
                    Err(DpError::InvalidParameter { .. })
                ),
                "{t} {d} {q} {tol}"
            );
        }
    }
}
