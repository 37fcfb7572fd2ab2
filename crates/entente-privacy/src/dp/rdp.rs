//! Rényi differential privacy of the Poisson-sampled Gaussian mechanism.
//!
//! One step of the sampled Gaussian mechanism (SGM) picks each record with probability `q`,
//! sums a function of L2-sensitivity 1 over the picked records and adds `N(0, sigma^2)` noise
//! (`sigma` is the noise multiplier: noise std over the clipping norm). Its RDP at order
//! `alpha` is `log(A_alpha) / (alpha - 1)` (Mironov, Talwar and Zhang 2019, section 3.3):
//! a closed-form binomial sum for integer `alpha` and a two-sided series with `erfc` terms for
//! fractional `alpha`, both evaluated in log space. `q = 0` costs nothing, `q = 1` is the plain
//! Gaussian mechanism (`alpha / (2 sigma^2)`), `sigma = 0` is no privacy (infinite RDP).
//!
//! RDP composes by addition, order by order (Mironov 2017, proposition 1): over the steps of a
//! round and over rounds. [`get_privacy_spent`] turns an RDP curve into (epsilon, delta)-DP with
//! the conversion of Balle et al. 2020 (theorem 21), minimised over the orders.
//!
//! This module follows Opacus's `opacus.accountants.analysis.rdp` (`compute_rdp`,
//! `get_privacy_spent`) step for step, and [`default_orders`] are Opacus's `DEFAULT_ALPHAS`;
//! `tests/dp_reference.rs` checks it against Opacus and Google's dp-accounting.

use serde::{Deserialize, Serialize};

use super::{DpError, check_delta, check_range};

/// Opacus's default RDP orders (`RDPAccountant.DEFAULT_ALPHAS`): 1.1 to 10.9 by 0.1, then
/// every integer from 12 to 63; 151 orders.
pub fn default_orders() -> Vec<f64> {
    (1..100)
        .map(|x| 1.0 + f64::from(x) / 10.0)
        .chain((12..64).map(f64::from))
        .collect()
}

/// Largest RDP order accepted. The integer-order sum has `order + 1` terms; dp-accounting's
/// default orders stop at 1024.
pub const MAX_ORDER: f64 = 10_000.0;

/// Checks that every order is in `(1, MAX_ORDER]`, and that there is at least one.
fn check_orders(orders: &[f64]) -> Result<(), DpError> {
    if orders.is_empty() {
        return Err(DpError::EmptyOrders);
    }
    for &order in orders {
        if !(order > 1.0 && order <= MAX_ORDER) {
            return Err(DpError::InvalidParameter {
                name: "order",
                value: order,
                expected: "greater than 1 and at most 10000",
            });
        }
    }
    Ok(())
}

/// Checks the sampling rate and the noise multiplier.
fn check_sgm(q: f64, noise_multiplier: f64) -> Result<(), DpError> {
    check_range("q", q, 0.0, 1.0, "a sampling rate in [0, 1]")?;
    check_range(
        "noise_multiplier",
        noise_multiplier,
        0.0,
        f64::MAX,
        "finite and non-negative",
    )
}

/// `log(exp(x) + exp(y))`.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// `log(exp(x) - exp(y))`, or `None` when the difference would be negative.
fn log_sub(x: f64, y: f64) -> Option<f64> {
    if x < y {
        return None;
    }
    if y == f64::NEG_INFINITY {
        return Some(x);
    }
    if x == y {
        return Some(f64::NEG_INFINITY);
    }
    // exp(x) - exp(y) = exp(x) * (1 - exp(y - x)), stable for any gap.
    Some(x + (-(y - x).exp_m1()).ln())
}

/// `log(erfc(x))`, accurate where `erfc(x)` underflows (large positive `x`).
fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        return libm::erfc(x).ln();
    }
    // Asymptotic expansion: erfc(x) = exp(-x^2) / (x sqrt(pi)) * sum_k (-1)^k (2k-1)!! / (2x^2)^k.
    // At x >= 20 the terms fall below 1e-16 well before the series starts to diverge.
    let inv = 1.0 / (2.0 * x * x);
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..=8 {
        term *= -f64::from(2 * k - 1) * inv;
        sum += term;
    }
    -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + sum.ln()
}

/// `log(A_alpha)` for integer `alpha >= 2` and `0 < q < 1`: the closed-form binomial sum
/// `sum_i C(alpha, i) q^i (1 - q)^(alpha - i) exp((i^2 - i) / (2 sigma^2))`.
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let inv_two_var = 1.0 / (2.0 * sigma * sigma);
    let n = alpha as f64;
    let mut log_a = f64::NEG_INFINITY;
    let mut log_binom = 0.0; // log C(alpha, 0)
    for i in 0..=alpha {
        let fi = i as f64;
        if i > 0 {
            log_binom += (n - fi + 1.0).ln() - fi.ln();
        }
        let log_coef = log_binom + fi * log_q + (n - fi) * log_1mq;
        log_a = log_add(log_a, log_coef + (fi * fi - fi) * inv_two_var);
    }
    log_a
}

/// Upper bound on the number of terms of the fractional-order series. The terms fall off
/// polynomially (about `i^-(alpha + 2)`), so the `-30` cut-off is reached after a few tens of
/// thousands of terms in the slowest grid case (`q = 0.5`, `sigma = 10`, `alpha = 1.1`).
const MAX_FRAC_TERMS: u64 = 10_000_000;

/// `log(A_alpha)` for fractional `alpha > 1` and `0 < q < 1`: the two series over `(-inf, z0]`
/// and `[z0, inf)` of Mironov, Talwar and Zhang 2019 (section 3.3), with signed binomial
/// coefficients, summed until both terms fall below `exp(-30)` as Opacus does. Returns
/// infinity (no bound at this order) if the series does not settle.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let var = sigma * sigma;
    let z0 = var * (log_1mq - log_q) + 0.5;
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    let log_half = 0.5f64.ln();

    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    // C(alpha, i) as a sign and the log of its magnitude.
    let mut log_coef = 0.0;
    let mut positive = true;
    let mut i: u64 = 0;
    loop {
        let fi = i as f64;
        let j = alpha - fi;
        let log_t0 = log_coef + fi * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + fi * log_1mq;
        let log_e0 = log_half + log_erfc((fi - z0) / sqrt2_sigma);
        let log_e1 = log_half + log_erfc((z0 - j) / sqrt2_sigma);
        let log_s0 = log_t0 + (fi * fi - fi) / (2.0 * var) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * var) + log_e1;
        if positive {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            match (log_sub(log_a0, log_s0), log_sub(log_a1, log_s1)) {
                (Some(a0), Some(a1)) => {
                    log_a0 = a0;
                    log_a1 = a1;
                }
                // A partial sum went negative: numerically lost, so no bound at this order.
                _ => return f64::INFINITY,
            }
        }
        if log_s0.is_nan() || log_s1.is_nan() {
            return f64::INFINITY;
        }
        i += 1;
        if log_s0.max(log_s1) < -30.0 {
            break;
        }
        if i >= MAX_FRAC_TERMS {
            return f64::INFINITY;
        }
        // C(alpha, i) = C(alpha, i - 1) * (alpha - i + 1) / i.
        let factor = alpha - fi; // alpha - (i - 1) with the new i
        log_coef += factor.abs().ln() - (fi + 1.0).ln();
        if factor < 0.0 {
            positive = !positive;
        }
    }
    log_add(log_a0, log_a1)
}

/// RDP of one step of the sampled Gaussian mechanism at one order (parameters already
/// checked). Can be infinite.
fn rdp_one_step(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    let var = sigma * sigma;
    if var == 0.0 {
        // No noise (or so little that its variance underflows): no privacy.
        return f64::INFINITY;
    }
    if var.is_infinite() {
        // The limit as sigma grows; the true value is below 1e-300 here.
        return 0.0;
    }
    if q == 1.0 {
        return alpha / (2.0 * var);
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    let rdp = log_a / (alpha - 1.0);
    if rdp.is_nan() {
        // Numerically lost: no bound at this order.
        return f64::INFINITY;
    }
    // log(A_alpha) >= 0 in exact arithmetic; clamp rounding below zero.
    rdp.max(0.0)
}

/// RDP at each of `orders` of the sampled Gaussian mechanism with sampling rate `q` and noise
/// multiplier `noise_multiplier`, run `steps` times (Opacus's `compute_rdp`).
///
/// Values can be infinite (`noise_multiplier = 0`). Orders must be in `(1, MAX_ORDER]`.
pub fn compute_rdp(
    q: f64,
    noise_multiplier: f64,
    steps: u64,
    orders: &[f64],
) -> Result<Vec<f64>, DpError> {
    check_sgm(q, noise_multiplier)?;
    check_orders(orders)?;
    if steps == 0 {
        return Ok(vec![0.0; orders.len()]);
    }
    Ok(orders
        .iter()
        .map(|&alpha| rdp_one_step(q, noise_multiplier, alpha) * steps as f64)
        .collect())
}

/// An (epsilon, delta) guarantee read off an RDP curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacySpent {
    /// The epsilon at the requested delta (never negative; infinite when no order bounds it).
    pub epsilon: f64,
    /// The RDP order at which the bound is tightest.
    pub order: f64,
}

/// Converts RDP values `rdp` at `orders` into the smallest epsilon for `delta`
/// (Opacus's `get_privacy_spent`).
///
/// Uses Balle et al. 2020, theorem 21: `eps = rdp - (log(delta) + log(alpha)) / (alpha - 1) +
/// log((alpha - 1) / alpha)`, minimised over the orders (the first order wins a tie). Epsilon
/// is clamped at 0 (Opacus can return a negative number for a large delta; a guarantee with
/// a negative epsilon holds with 0 too).
pub fn get_privacy_spent(orders: &[f64], rdp: &[f64], delta: f64) -> Result<PrivacySpent, DpError> {
    check_orders(orders)?;
    if orders.len() != rdp.len() {
        return Err(DpError::LengthMismatch {
            orders: orders.len(),
            rdp: rdp.len(),
        });
    }
    check_delta(delta)?;
    for &r in rdp {
        if r.is_nan() || r < 0.0 {
            return Err(DpError::InvalidParameter {
                name: "rdp",
                value: r,
                expected: "non-negative (infinity allowed)",
            });
        }
    }
    let log_delta = delta.ln();
    let mut best = PrivacySpent {
        epsilon: f64::INFINITY,
        order: orders[0],
    };
    for (&alpha, &r) in orders.iter().zip(rdp) {
        let eps = r - (log_delta + alpha.ln()) / (alpha - 1.0) + ((alpha - 1.0) / alpha).ln();
        if eps < best.epsilon {
            best = PrivacySpent {
                epsilon: eps,
                order: alpha,
            };
        }
    }
    best.epsilon = best.epsilon.max(0.0);
    Ok(best)
}

/// Epsilon at `delta` of `steps` steps of the sampled Gaussian mechanism, over
/// [`default_orders`].
pub fn epsilon(
    q: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
) -> Result<PrivacySpent, DpError> {
    let orders = default_orders();
    let rdp = compute_rdp(q, noise_multiplier, steps, &orders)?;
    get_privacy_spent(&orders, &rdp, delta)
}

/// One entry of an accountant's history: `steps` steps of the sampled Gaussian mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgmEvent {
    /// Poisson sampling rate of each step, in `[0, 1]`.
    pub q: f64,
    /// Noise standard deviation over the clipping norm.
    pub noise_multiplier: f64,
    /// Number of steps.
    pub steps: u64,
}

/// Accumulates sampled-Gaussian events (steps within a round, rounds within a run, runs on
/// one data set) and reports the (epsilon, delta) spent.
///
/// RDP is added order by order. Serialised, an accountant is its orders and its events; the
/// RDP curve is recomputed (and every value checked) when it is read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AccountantRecord", into = "AccountantRecord")]
pub struct Accountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
    events: Vec<SgmEvent>,
}

/// The stored form of an [`Accountant`].
#[derive(Serialize, Deserialize)]
struct AccountantRecord {
    orders: Vec<f64>,
    events: Vec<SgmEvent>,
}

impl TryFrom<AccountantRecord> for Accountant {
    type Error = DpError;

    fn try_from(record: AccountantRecord) -> Result<Self, DpError> {
        let mut accountant = Accountant::with_orders(record.orders)?;
        for event in record.events {
            accountant.compose(event.q, event.noise_multiplier, event.steps)?;
        }
        Ok(accountant)
    }
}

impl From<Accountant> for AccountantRecord {
    fn from(accountant: Accountant) -> Self {
        AccountantRecord {
            orders: accountant.orders,
            events: accountant.events,
        }
    }
}

impl Default for Accountant {
    fn default() -> Self {
        Self::new()
    }
}

impl Accountant {
    /// An empty accountant over [`default_orders`].
    pub fn new() -> Self {
        let orders = default_orders();
        Accountant {
            rdp: vec![0.0; orders.len()],
            orders,
            events: Vec::new(),
        }
    }

    /// An empty accountant over the given orders (each in `(1, MAX_ORDER]`).
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, DpError> {
        check_orders(&orders)?;
        Ok(Accountant {
            rdp: vec![0.0; orders.len()],
            orders,
            events: Vec::new(),
        })
    }

    /// Records `steps` steps of the sampled Gaussian mechanism with sampling rate `q` and
    /// noise multiplier `noise_multiplier`. Nothing is recorded on error.
    pub fn compose(&mut self, q: f64, noise_multiplier: f64, steps: u64) -> Result<(), DpError> {
        let rdp = compute_rdp(q, noise_multiplier, steps, &self.orders)?;
        for (total, r) in self.rdp.iter_mut().zip(rdp) {
            *total += r;
        }
        self.events.push(SgmEvent {
            q,
            noise_multiplier,
            steps,
        });
        Ok(())
    }

    /// Adds everything another accountant recorded (for example an earlier run on the same
    /// data). Both must use the same orders.
    pub fn merge(&mut self, other: &Accountant) -> Result<(), DpError> {
        if self.orders != other.orders {
            return Err(DpError::OrdersDiffer);
        }
        for (total, r) in self.rdp.iter_mut().zip(&other.rdp) {
            *total += r;
        }
        self.events.extend_from_slice(&other.events);
        Ok(())
    }

    /// The (epsilon, delta) spent so far, for `delta` in `(0, 1)`.
    pub fn epsilon(&self, delta: f64) -> Result<PrivacySpent, DpError> {
        get_privacy_spent(&self.orders, &self.rdp, delta)
    }

    /// What [`epsilon`](Self::epsilon) would return after also recording `steps` steps at
    /// `(q, noise_multiplier)`; the accountant is left unchanged. This is the check a site
    /// makes before agreeing to a round.
    pub fn epsilon_after(
        &self,
        q: f64,
        noise_multiplier: f64,
        steps: u64,
        delta: f64,
    ) -> Result<PrivacySpent, DpError> {
        let extra = compute_rdp(q, noise_multiplier, steps, &self.orders)?;
        let total: Vec<f64> = self.rdp.iter().zip(extra).map(|(a, b)| a + b).collect();
        get_privacy_spent(&self.orders, &total, delta)
    }

    /// The RDP orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The accumulated RDP at each order (same length as [`orders`](Self::orders)).
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// Every event recorded, in order.
    pub fn events(&self) -> &[SgmEvent] {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_orders_match_opacus() {
        let orders = default_orders();
        assert_eq!(orders.len(), 151);
        assert_eq!(orders[0], 1.1);
        assert_eq!(orders[98], 10.9);
        assert_eq!(orders[99], 12.0);
        assert_eq!(orders[150], 63.0);
        assert_eq!(orders[9], 2.0);
    }

    #[test]
    fn log_helpers() {
        let (a, b) = (3.0f64.ln(), 2.0f64.ln());
        assert!((log_add(a, b) - 5.0f64.ln()).abs() < 1e-15);
        assert!((log_sub(a, b).unwrap() - 0.0).abs() < 1e-15);
        assert_eq!(log_sub(b, a), None);
        assert_eq!(log_add(f64::NEG_INFINITY, a), a);
        for x in [-3.0, -0.5, 0.0, 0.5, 3.0, 10.0, 19.9] {
            let direct = libm::erfc(x).ln();
            assert!((log_erfc(x) - direct).abs() <= 1e-12 * direct.abs().max(1.0));
        }
        // Continuity across the switch to the asymptotic series.
        let (below, above) = (log_erfc(19.999_999), log_erfc(20.0));
        assert!((below - above).abs() < 1e-4);
        // erfc(30) = 2.5646562037561116e-393 underflows; its log does not.
        assert!((log_erfc(30.0) - (-903.974_117_110_643_9)).abs() < 1e-9);
    }

    #[test]
    fn special_cases() {
        let orders = [2.0, 2.5, 32.0];
        assert_eq!(compute_rdp(0.0, 1.0, 10, &orders).unwrap(), vec![0.0; 3]);
        assert_eq!(compute_rdp(0.0, 0.0, 10, &orders).unwrap(), vec![0.0; 3]);
        assert!(
            compute_rdp(0.5, 0.0, 1, &orders)
                .unwrap()
                .iter()
                .all(|r| r.is_infinite())
        );
        assert_eq!(compute_rdp(0.5, 0.0, 0, &orders).unwrap(), vec![0.0; 3]);
        let full = compute_rdp(1.0, 2.0, 3, &orders).unwrap();
        for (r, a) in full.iter().zip(orders) {
            assert!((r - 3.0 * a / 8.0).abs() < 1e-15);
        }
        // No privacy at all: infinite epsilon, no panic.
        let spent = epsilon(0.5, 0.0, 1, 1e-5).unwrap();
        assert!(spent.epsilon.is_infinite());
        // Variance underflowing or overflowing: the limits, never NaN.
        let orders = default_orders();
        for q in [0.001, 0.5, 0.9] {
            let tiny = compute_rdp(q, 1e-200, 1, &orders).unwrap();
            assert!(tiny.iter().all(|r| r.is_infinite()), "{q}");
            let huge = compute_rdp(q, 1e200, 1, &orders).unwrap();
            assert!(huge.iter().all(|&r| r == 0.0), "{q}");
            for sigma in [1e-3, 1e-1, 1e3, 1e6, 1e8] {
                let rdp = compute_rdp(q, sigma, 1, &orders).unwrap();
                assert!(rdp.iter().all(|r| !r.is_nan() && *r >= 0.0), "{q} {sigma}");
            }
        }
        assert!(epsilon(0.5, 1e200, 1, 1e-5).unwrap().epsilon.is_finite());
    }

    #[test]
    fn opacus_docstring_example() {
        // opacus.accountants.analysis.rdp's module example: (0.336, 23).
        let orders: Vec<f64> = (2..=32).map(f64::from).collect();
        let mut acc = Accountant::with_orders(orders).unwrap();
        acc.compose(1e-5, 1.0, 10).unwrap();
        acc.compose(1e-4, 3.0, 4).unwrap();
        let spent = acc.epsilon(1e-5).unwrap();
        assert!((spent.epsilon - 0.336).abs() < 5e-4, "{spent:?}");
        assert_eq!(spent.order, 23.0);
    }

    #[test]
    fn rejects_bad_input() {
        let orders = default_orders();
        assert!(compute_rdp(-0.1, 1.0, 1, &orders).is_err());
        assert!(compute_rdp(1.1, 1.0, 1, &orders).is_err());
        assert!(compute_rdp(f64::NAN, 1.0, 1, &orders).is_err());
        assert!(compute_rdp(0.1, -1.0, 1, &orders).is_err());
        assert!(compute_rdp(0.1, f64::INFINITY, 1, &orders).is_err());
        assert!(compute_rdp(0.1, 1.0, 1, &[]).is_err());
        assert!(compute_rdp(0.1, 1.0, 1, &[1.0]).is_err());
        assert!(compute_rdp(0.1, 1.0, 1, &[0.5]).is_err());
        assert!(compute_rdp(0.1, 1.0, 1, &[f64::INFINITY]).is_err());
        assert!(compute_rdp(0.1, 1.0, 1, &[f64::NAN]).is_err());
        assert!(compute_rdp(0.1, 1.0, 1, &[MAX_ORDER + 1.0]).is_err());
        assert!(compute_rdp(0.1, 1.0, 1, &[MAX_ORDER, 1024.5]).is_ok());
        assert!(get_privacy_spent(&[2.0], &[1.0, 2.0], 1e-5).is_err());
        assert!(get_privacy_spent(&[2.0], &[1.0], 0.0).is_err());
        assert!(get_privacy_spent(&[2.0], &[1.0], 1.0).is_err());
        assert!(get_privacy_spent(&[2.0], &[-1.0], 1e-5).is_err());
        assert!(get_privacy_spent(&[2.0], &[f64::NAN], 1e-5).is_err());
        assert!(Accountant::with_orders(vec![]).is_err());
        let mut acc = Accountant::new();
        assert!(acc.compose(2.0, 1.0, 1).is_err());
        assert!(acc.events().is_empty());
        assert!(acc.rdp().iter().all(|&r| r == 0.0));
    }

    #[test]
    fn composition_adds_up() {
        // Steps within a round and rounds within a run give the same curve.
        let mut rounds = Accountant::new();
        for _ in 0..10 {
            rounds.compose(0.01, 1.1, 100).unwrap();
        }
        let mut once = Accountant::new();
        once.compose(0.01, 1.1, 1000).unwrap();
        for (a, b) in rounds.rdp().iter().zip(once.rdp()) {
            assert!((a - b).abs() <= 1e-12 * b.max(1e-300));
        }
        let (e1, e2) = (rounds.epsilon(1e-5).unwrap(), once.epsilon(1e-5).unwrap());
        assert!((e1.epsilon - e2.epsilon).abs() < 1e-10);

        // merge = compose both histories.
        let mut a = Accountant::new();
        a.compose(0.01, 1.0, 50).unwrap();
        let mut b = Accountant::new();
        b.compose(0.05, 2.0, 20).unwrap();
        let expected = a.epsilon_after(0.05, 2.0, 20, 1e-6).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.events().len(), 2);
        assert!((a.epsilon(1e-6).unwrap().epsilon - expected.epsilon).abs() < 1e-12);
        let other = Accountant::with_orders(vec![2.0, 3.0]).unwrap();
        assert_eq!(a.merge(&other), Err(DpError::OrdersDiffer));
    }

    #[test]
    fn epsilon_after_leaves_accountant_unchanged() {
        let mut acc = Accountant::new();
        acc.compose(0.02, 1.0, 100).unwrap();
        let before = acc.clone();
        let after = acc.epsilon_after(0.02, 1.0, 100, 1e-5).unwrap();
        assert_eq!(acc, before);
        acc.compose(0.02, 1.0, 100).unwrap();
        assert_eq!(acc.epsilon(1e-5).unwrap(), after);
    }

    #[test]
    fn fractional_orders_interpolate_integer_orders() {
        // RDP is non-decreasing in the order; the fractional series must sit between its
        // integer neighbours computed by the closed form.
        for (q, sigma) in [(0.01, 1.0), (0.1, 0.8), (0.5, 3.0), (0.001, 10.0)] {
            let orders: Vec<f64> = (20..=40).map(|x| f64::from(x) / 10.0).collect();
            let rdp = compute_rdp(q, sigma, 1, &orders).unwrap();
            for w in rdp.windows(2) {
                assert!(w[1] >= w[0] * (1.0 - 1e-9), "q={q} sigma={sigma} {rdp:?}");
            }
        }
    }

    #[test]
    fn serde_round_trip_recomputes() {
        let mut acc = Accountant::new();
        acc.compose(0.01, 1.0, 100).unwrap();
        acc.compose(0.02, 0.0, 0).unwrap();
        let record = AccountantRecord::from(acc.clone());
        let back = Accountant::try_from(record).unwrap();
        assert_eq!(back, acc);
        let bad = AccountantRecord {
            orders: vec![2.0],
            events: vec![SgmEvent {
                q: 3.0,
                noise_multiplier: 1.0,
                steps: 1,
            }],
        };
        assert!(Accountant::try_from(bad).is_err());
    }
}
