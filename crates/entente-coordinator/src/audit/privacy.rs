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
    let mut spent = RunCharges::new(run);
    spent.add(entries);
    spent.epsilons(delta)
}

/// [`charged_in_run`] kept up as the log grows: the entries are given a piece at a time, in
/// log order, each once.
pub struct RunCharges {
    run: i64,
    spent: Composed,
}

impl RunCharges {
    /// Nothing charged yet in `run`.
    pub fn new(run: i64) -> Self {
        RunCharges {
            run,
            spent: Composed::default(),
        }
    }

    /// Composes the charges of the run among `entries`, the log's entries after those given
    /// before.
    pub fn add(&mut self, entries: &[AuditEntry]) {
        for (site, entry) in charges(entries, self.run) {
            self.spent.charge(site, entry);
        }
    }

    /// The epsilon (at `delta`) charged each site so far, by site name.
    pub fn epsilons(&self, delta: f64) -> BTreeMap<String, f64> {
        self.spent.epsilons(delta)
    }
}

/// What [`charged_in_run`] gives, after each round of `run` that charged anyone, by round
/// number: a site's figure after round `r` composes its charges of rounds up to `r` (charges
/// without a round count before round 1).
pub fn charged_after_each_round(
    entries: &[AuditEntry],
    run: i64,
    delta: f64,
) -> BTreeMap<u32, BTreeMap<String, f64>> {
    let mut by_round: BTreeMap<u32, Vec<(&String, &AuditEntry)>> = BTreeMap::new();
    for (site, entry) in charges(entries, run) {
        let round = entry.round.unwrap_or(0);
        by_round.entry(round).or_default().push((site, entry));
    }
    let mut spent = Composed::default();
    by_round
        .into_iter()
        .map(|(round, charges)| {
            for (site, entry) in charges {
                spent.charge(site, entry);
            }
            (round, spent.epsilons(delta))
        })
        .collect()
}

/// The `privacy_charged` entries of `run` that name a site, in log order.
fn charges(entries: &[AuditEntry], run: i64) -> impl Iterator<Item = (&String, &AuditEntry)> {
    entries.iter().filter_map(move |entry| {
        let charged = entry.kind == kind::PRIVACY_CHARGED && entry.run == Some(run);
        entry
            .site
            .as_ref()
            .filter(|_| charged)
            .map(|site| (site, entry))
    })
}

/// One accountant per site; `None` once a charge could not be composed.
#[derive(Default)]
struct Composed(BTreeMap<String, Option<Accountant>>);

impl Composed {
    fn charge(&mut self, site: &str, entry: &AuditEntry) {
        let slot = self
            .0
            .entry(site.to_string())
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

    fn epsilons(&self, delta: f64) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .map(|(site, acc)| {
                let epsilon = acc
                    .as_ref()
                    .and_then(|a| a.epsilon(delta).ok())
                    .map_or(f64::INFINITY, |s| s.epsilon);
                (site.clone(), epsilon)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(run: i64, site: &str, detail: &str) -> AuditEntry {
        charge_in(run, 1, site, detail)
    }

    fn charge_in(run: i64, round: u32, site: &str, detail: &str) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at_unix_ms: 0,
            kind: kind::PRIVACY_CHARGED.into(),
            run: Some(run),
            round: Some(round),
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

    #[test]
    fn each_rounds_figure_composes_the_charges_up_to_it() {
        let entries = vec![
            charge_in(1, 1, "a", ROUND),
            charge_in(1, 1, "b", ROUND),
            charge_in(1, 2, "a", ROUND),
            charge_in(2, 2, "b", ROUND),
            charge_in(1, 4, "a", ROUND),
        ];
        let after = charged_after_each_round(&entries, 1, 1e-5);
        assert_eq!(after.keys().copied().collect::<Vec<_>>(), [1, 2, 4]);
        let rounds = |n| {
            let mut acc = Accountant::new();
            acc.compose(1.0, 1.1, n).unwrap();
            acc.epsilon(1e-5).unwrap().epsilon
        };
        assert!((after[&1]["a"] - rounds(1)).abs() < 1e-9);
        assert!((after[&2]["a"] - rounds(2)).abs() < 1e-9);
        assert!((after[&4]["a"] - rounds(3)).abs() < 1e-9);
        // b was charged once in this run; run 2's charge is another run's.
        assert!((after[&4]["b"] - rounds(1)).abs() < 1e-9);
        assert_eq!(after[&4], charged_in_run(&entries, 1, 1e-5));
    }
}
