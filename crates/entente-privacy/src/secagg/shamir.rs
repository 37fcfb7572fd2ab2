//! Shamir secret sharing over the Mersenne prime field GF(2^61 - 1).
//!
//! A 32-byte secret is cut into [`SECRET_CHUNKS`] chunks of at most 7 bytes (each below 2^56,
//! so a canonical field element) and every chunk gets its own random polynomial of degree
//! t - 1. Holder `x` (never 0) receives the values of the polynomials at `x`.

use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::error::ShamirError;

/// The field modulus, the Mersenne prime 2^61 - 1.
pub const P: u64 = (1 << 61) - 1;
/// Bytes of the secret carried by one field element.
pub const CHUNK_BYTES: usize = 7;
/// Field elements per 32-byte secret.
pub const SECRET_CHUNKS: usize = 32usize.div_ceil(CHUNK_BYTES);

/// One holder's share of a 32-byte secret: the evaluation point and one value per chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Evaluation point (non-zero field element).
    pub x: u64,
    /// Values of the chunk polynomials at `x`.
    pub y: [u64; SECRET_CHUNKS],
}

/// Field addition.
pub fn add(a: u64, b: u64) -> u64 {
    let s = a + b; // both < 2^61, no overflow
    if s >= P { s - P } else { s }
}

/// Field subtraction.
pub fn sub(a: u64, b: u64) -> u64 {
    if a >= b { a - b } else { a + P - b }
}

/// Field multiplication (Mersenne reduction of the 122-bit product).
pub fn mul(a: u64, b: u64) -> u64 {
    let prod = u128::from(a) * u128::from(b);
    let lo = (prod as u64) & P;
    let hi = (prod >> 61) as u64;
    let mut s = lo + hi;
    while s >= P {
        s -= P;
    }
    s
}

/// Field exponentiation by squaring.
pub fn pow(mut base: u64, mut exp: u64) -> u64 {
    let mut acc = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul(acc, base);
        }
        base = mul(base, base);
        exp >>= 1;
    }
    acc
}

/// Multiplicative inverse (Fermat); `None` for zero.
pub fn inv(a: u64) -> Option<u64> {
    if a.is_multiple_of(P) {
        None
    } else {
        Some(pow(a, P - 2))
    }
}

/// A uniformly random field element (rejection sampling, no bias).
pub fn random_element(rng: &mut impl RngCore) -> u64 {
    loop {
        let v = rng.next_u64() & P;
        if v < P {
            return v;
        }
    }
}

/// Evaluates the polynomial with the given coefficients (constant term first) at `x` (Horner).
pub fn eval_poly(coeffs: &[u64], x: u64) -> u64 {
    coeffs.iter().rev().fold(0, |acc, &c| add(mul(acc, x), c))
}

/// Lagrange coefficients for interpolating at `at` from the points `xs`.
///
/// Errors if a point is zero-equal-to-another (repeated) or not a field element.
pub fn lagrange_coefficients(xs: &[u64], at: u64) -> Result<Vec<u64>, ShamirError> {
    for (i, &xi) in xs.iter().enumerate() {
        if xi >= P || xs[..i].contains(&xi) {
            return Err(ShamirError::BadPoint(xi));
        }
    }
    let mut out = Vec::with_capacity(xs.len());
    for (i, &xi) in xs.iter().enumerate() {
        let mut num = 1;
        let mut den = 1;
        for (k, &xk) in xs.iter().enumerate() {
            if k != i {
                num = mul(num, sub(at, xk));
                den = mul(den, sub(xi, xk));
            }
        }
        let den_inv = inv(den).ok_or(ShamirError::BadPoint(xi))?;
        out.push(mul(num, den_inv));
    }
    Ok(out)
}

/// Interpolates the polynomial through `points` and evaluates it at zero.
pub fn interpolate_at_zero(points: &[(u64, u64)]) -> Result<u64, ShamirError> {
    let xs: Vec<u64> = points.iter().map(|p| p.0).collect();
    let lambdas = lagrange_coefficients(&xs, 0)?;
    let mut acc = 0;
    for (&(_, y), l) in points.iter().zip(lambdas) {
        if y >= P {
            return Err(ShamirError::NotFieldElement(y));
        }
        acc = add(acc, mul(y, l));
    }
    Ok(acc)
}

/// Splits a single field element with the given polynomial coefficients (constant term =
/// secret). Exposed for known-answer tests.
pub fn share_element(coeffs: &[u64], xs: &[u64]) -> Vec<(u64, u64)> {
    xs.iter().map(|&x| (x, eval_poly(coeffs, x))).collect()
}

fn check_points(xs: &[u64]) -> Result<(), ShamirError> {
    for (i, &x) in xs.iter().enumerate() {
        if x == 0 || x >= P || xs[..i].contains(&x) {
            return Err(ShamirError::BadPoint(x));
        }
    }
    Ok(())
}

/// Cuts a 32-byte secret into little-endian 7-byte field elements.
pub fn secret_to_chunks(secret: &[u8; 32]) -> [u64; SECRET_CHUNKS] {
    let mut out = [0u64; SECRET_CHUNKS];
    for (c, chunk) in out.iter_mut().zip(secret.chunks(CHUNK_BYTES)) {
        let mut buf = [0u8; 8];
        buf[..chunk.len()].copy_from_slice(chunk);
        *c = u64::from_le_bytes(buf);
    }
    out
}

/// Inverse of [`secret_to_chunks`]; errors if a chunk does not fit its byte width.
pub fn chunks_to_secret(chunks: &[u64; SECRET_CHUNKS]) -> Result<[u8; 32], ShamirError> {
    let mut out = [0u8; 32];
    for (c, dst) in chunks.iter().zip(out.chunks_mut(CHUNK_BYTES)) {
        let bytes = c.to_le_bytes();
        if bytes[dst.len()..].iter().any(|&b| b != 0) {
            return Err(ShamirError::NotCanonical);
        }
        dst.copy_from_slice(&bytes[..dst.len()]);
    }
    Ok(out)
}

/// Splits a 32-byte secret into one share per evaluation point in `xs`, any `threshold` of
/// which reconstruct it and fewer of which reveal nothing.
pub fn split_secret(
    secret: &[u8; 32],
    threshold: usize,
    xs: &[u64],
    rng: &mut impl RngCore,
) -> Result<Vec<Share>, ShamirError> {
    if threshold == 0 || threshold > xs.len() {
        return Err(ShamirError::BadThreshold {
            threshold,
            holders: xs.len(),
        });
    }
    check_points(xs)?;
    let chunks = secret_to_chunks(secret);
    let mut shares: Vec<Share> = xs
        .iter()
        .map(|&x| Share {
            x,
            y: [0; SECRET_CHUNKS],
        })
        .collect();
    let mut coeffs = vec![0u64; threshold];
    for (j, &chunk) in chunks.iter().enumerate() {
        coeffs[0] = chunk;
        for c in coeffs.iter_mut().skip(1) {
            *c = random_element(rng);
        }
        for share in shares.iter_mut() {
            share.y[j] = eval_poly(&coeffs, share.x);
        }
    }
    coeffs.iter_mut().for_each(|c| *c = 0);
    Ok(shares)
}

fn reconstruct_chunks(shares: &[Share]) -> Result<[u64; SECRET_CHUNKS], ShamirError> {
    let xs: Vec<u64> = shares.iter().map(|s| s.x).collect();
    check_points(&xs)?;
    let lambdas = lagrange_coefficients(&xs, 0)?;
    let mut chunks = [0u64; SECRET_CHUNKS];
    for (share, &l) in shares.iter().zip(&lambdas) {
        for (c, &y) in chunks.iter_mut().zip(&share.y) {
            if y >= P {
                return Err(ShamirError::NotFieldElement(y));
            }
            *c = add(*c, mul(y, l));
        }
    }
    Ok(chunks)
}

/// Reconstructs a 32-byte secret from at least `threshold` shares.
///
/// Uses the first `threshold` shares; when more are given, the last `threshold` are used too
/// and both results must agree (a cheap consistency check against corrupted shares).
pub fn reconstruct_secret(shares: &[Share], threshold: usize) -> Result<[u8; 32], ShamirError> {
    if threshold == 0 || shares.len() < threshold {
        return Err(ShamirError::NotEnoughShares {
            got: shares.len(),
            need: threshold.max(1),
        });
    }
    let first = reconstruct_chunks(&shares[..threshold])?;
    if shares.len() > threshold {
        let all: Vec<u64> = shares.iter().map(|s| s.x).collect();
        check_points(&all)?;
        let last = reconstruct_chunks(&shares[shares.len() - threshold..])?;
        if last != first {
            return Err(ShamirError::Inconsistent);
        }
    }
    chunks_to_secret(&first)
}
