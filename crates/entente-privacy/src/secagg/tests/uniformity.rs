//! The coordinator's view of one site: a single masked input must look uniformly random.

use super::{config, seed_of};
use crate::secagg::encoding::encode;
use crate::secagg::{GraphSpec, MaskedVector, SecAggClient, SecAggServer};

/// Complementary error function (Numerical Recipes `erfcc`, fractional error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Upper-tail p-value of a chi-square statistic (Wilson-Hilferty normal approximation).
fn chi_square_p(stat: f64, dof: f64) -> f64 {
    let z = ((stat / dof).cbrt() - (1.0 - 2.0 / (9.0 * dof))) / (2.0 / (9.0 * dof)).sqrt();
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Chi-square statistic of 256 bins of a byte taken at `shift` from every word.
fn chi_square(words: &[u32], shift: u32) -> (f64, f64) {
    let mut bins = [0u64; 256];
    for w in words {
        bins[((w >> shift) & 0xff) as usize] += 1;
    }
    let expected = words.len() as f64 / 256.0;
    let stat = bins
        .iter()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum::<f64>();
    (stat, chi_square_p(stat, 255.0))
}

#[test]
fn chi_square_p_value_is_calibrated() {
    // Known quantiles of chi-square with 255 degrees of freedom: median ~254.3, 99% ~310.5.
    assert!((chi_square_p(254.33, 255.0) - 0.5).abs() < 0.01);
    assert!((chi_square_p(310.46, 255.0) - 0.01).abs() < 0.002);
}

#[test]
fn a_single_masked_input_is_uniformly_distributed() {
    // Site 0's update is the constant 0.5 (all encoded coordinates equal); across 40 seeds its
    // masked input, as the coordinator sees it, must be uniform in its top and bottom bytes.
    let dim = 1000;
    let cfg = config(3, 2, GraphSpec::Complete, dim);
    let update = vec![0.5f32; dim];
    let mut seen: Vec<u32> = Vec::new();
    for salt in 0..40u64 {
        let mut server = SecAggServer::new(cfg.clone()).unwrap();
        let mut clients: Vec<_> = (0..3)
            .map(|id| SecAggClient::new(cfg.clone(), id, seed_of(id, 1000 + salt)).unwrap())
            .collect();
        for c in &mut clients {
            server
                .receive_advertise(&c.advertise_keys().unwrap())
                .unwrap();
        }
        for m in server.close_advertise().unwrap() {
            let s = clients[m.recipient as usize].share_keys(&m).unwrap();
            server.receive_shares(&s).unwrap();
        }
        let routed = server.close_shares().unwrap();
        let y = clients[0].masked_input(&routed[0], &update, 500).unwrap();
        let MaskedVector::U32(v) = y.vector else {
            panic!("expected the 2^32 ring");
        };
        seen.extend_from_slice(&v[..dim]);
    }
    for shift in [24, 0] {
        let (stat, p) = chi_square(&seen, shift);
        assert!(p > 1e-4, "byte at bit {shift}: chi2 {stat:.1}, p {p:e}");
    }
    // Negative control: the unmasked encoding fails the same test overwhelmingly.
    let plain = encode::<u32>(&update, 500, &cfg.encoding);
    let plain: Vec<u32> = plain[..dim]
        .iter()
        .cycle()
        .take(seen.len())
        .copied()
        .collect();
    let (_, p) = chi_square(&plain, 24);
    assert!(
        p < 1e-12,
        "the test cannot tell a constant from uniform: p {p:e}"
    );
}
