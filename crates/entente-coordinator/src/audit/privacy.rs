//! The privacy a run charged each site, recomputed from the audit log's
//! [`kind::PRIVACY_CHARGED`] entries with the ledgers' accountant.

use std::collections::BTreeMap;

use entente_privacy::dp::Accountant;
use serde::Deserialize;

use super::{AuditEntry, kind};

/// One `privacy_charged` entry's detail (the rest of its fields are not needed here).
#[derive(Deserialize)]
struct Charge {
    sampling_rate: f64,
    noise_multiplier: f64,
    steps: u64,
}

/// The epsilon (at `delta`) each site was charged in `run`, by site name: every
/// `privacy_charged` entry of the run composed in order. An entry whose detail cannot be read,
/// or that the accountant refuses, makes that site's figure infinite: never smaller than what
/// was spent.
pub fn charged_in_run(entries: &[AuditEntry], run: i64, delta: f64) -> BTreeMap<String, f64> {
    let mut accountants: BTreeMap<String, Option<Accountant>> = BTreeMap::new();
    for entry in entries {
        let (true, Some(site)) = (
            entry.kind == kind::PRIVACY_CHARGED && entry.run == Some(run),
            &entry.site,
        ) else {
            continue;
        };
        let slot = accountants
            .entry(site.clone())
            .or_insert_with(|| Some(Accountant::new()));
        let charged = serde_json::from_str::<Charge>(&entry.detail)
            .ok()
            .zip(slot.as_mut())
            .is_some_and(|(c, acc)| {
                acc.compose(c.sampling_rate, c.noise_multiplier, c.steps)
                    .is_ok()
            });
        if !charged {
            *slot = None;
        }
    }
    accountants
        .into_iter()
        .map(|(site, acc)| {
            let epsilon = acc
                .and_then(|a| a.epsilon(delta).ok())
                .map_or(f64::INFINITY, |s| s.epsilon);
            (site, epsilon)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(run: i64, site: &str, detail: &str) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at_unix_ms: 0,
            kind: kind::PRIVACY_CHARGED.into(),
            run: Some(run),
            round: Some(1),
            site: Some(site.into()),
            detail: detail.into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    const ROUND: &str = r#"{"mechanism":"client","sampling_rate":1.0,"noise_multiplier":1.1,"steps":1,"delta":1e-5}"#;

    #[test]
    fn a_runs_charges_compose_like_the_accountant_and_other_runs_are_left_out() {
        let entries = vec![
            charge(1, "a", ROUND),
            charge(1, "a", ROUND),
            charge(1, "b", ROUND),
            charge(2, "b", ROUND),
        ];
        let spent = charged_in_run(&entries, 1, 1e-5);
        let mut two = Accountant::new();
        two.compose(1.0, 1.1, 2).unwrap();
        let mut one = Accountant::new();
        one.compose(1.0, 1.1, 1).unwrap();
        assert!((spent["a"] - two.epsilon(1e-5).unwrap().epsilon).abs() < 1e-9);
        assert!((spent["b"] - one.epsilon(1e-5).unwrap().epsilon).abs() < 1e-9);
        assert!(spent["a"] > spent["b"]);
        assert_eq!(spent.len(), 2);
    }

    #[test]
    fn an_unreadable_charge_counts_as_unbounded() {
        let entries = vec![charge(1, "a", ROUND), charge(1, "a", "{}")];
        assert_eq!(charged_in_run(&entries, 1, 1e-5)["a"], f64::INFINITY);
    }
}
