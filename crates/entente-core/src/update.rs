//! Model updates sent by sites, and their validation at the boundary.
//!
//! A site's update arrives as named tensors in whatever order the sender chose. [`validate`]
//! checks it against the global model's layout before anything else sees it: every expected
//! tensor present, no unknown ones, shapes equal, all values finite, and the distance from the
//! global model within the configured bound. Only a [`ValidUpdate`] reaches an aggregator.

use std::sync::Arc;

use crate::params::{Layout, ParamSet};

/// A site's local model after training, as received (not yet validated).
#[derive(Debug, Clone)]
pub struct SiteUpdate {
    /// Name of the site that produced it.
    pub site: String,
    /// Number of training examples behind the update (the FedAvg weight).
    pub num_examples: u64,
    /// The site's parameters after local training.
    pub params: ParamSet,
    /// Mean training loss over the local epochs.
    pub train_loss: f64,
}

/// An update that passed [`validate`]: same layout as the global model, finite, within bounds.
#[derive(Debug, Clone)]
pub struct ValidUpdate {
    /// Name of the site that produced it.
    pub site: String,
    /// Number of training examples behind the update.
    pub num_examples: u64,
    /// Parameters in the global model's layout.
    pub params: ParamSet,
    /// L2 distance between these parameters and the global model.
    pub update_norm: f64,
    /// Mean training loss the site reported (finite).
    pub train_loss: f64,
}

/// What exactly is wrong with a rejected update.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateProblem {
    /// A tensor the global model has is absent.
    #[error("tensor `{0}` is missing")]
    MissingTensor(String),
    /// A tensor the global model does not have was sent.
    #[error("tensor `{0}` is not part of the model")]
    UnknownTensor(String),
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    WrongShape {
        /// Tensor name.
        name: String,
        /// Shape sent.
        got: Vec<usize>,
        /// Shape of the global model's tensor.
        expected: Vec<usize>,
    },
    /// A value is NaN or infinite.
    #[error("tensor `{name}` holds a non-finite value ({value}) at index {index}")]
    NonFinite {
        /// Tensor name.
        name: String,
        /// Index within the tensor.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// The update moves the model further than the bound allows.
    #[error("update norm {norm:.4} exceeds the bound {bound} (strategy.max_update_norm)")]
    NormTooLarge {
        /// Measured L2 norm of the update.
        norm: f64,
        /// Configured bound.
        bound: f64,
    },
    /// The update claims no training examples.
    #[error("the update claims 0 training examples")]
    NoExamples,
    /// The update claims more examples than the bound allows.
    #[error(
        "the update claims {claimed} examples, more than the bound {bound} (strategy.max_examples)"
    )]
    TooManyExamples {
        /// Examples claimed.
        claimed: u64,
        /// Configured bound.
        bound: u64,
    },
    /// The reported training loss is NaN or infinite.
    #[error("the reported training loss is not finite ({0})")]
    NonFiniteLoss(f64),
}

/// An update was rejected; names the site and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("update from site `{site}` rejected: {problem}")]
pub struct UpdateRejected {
    /// The site that sent the update.
    pub site: String,
    /// What is wrong.
    pub problem: UpdateProblem,
}

/// Rules an update must satisfy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UpdatePolicy {
    /// Largest accepted L2 distance between an update and the global model; `None` disables it.
    pub max_update_norm: Option<f64>,
    /// Largest example count a site may claim (its FedAvg weight); `None` disables it.
    pub max_examples: Option<u64>,
}

/// Checks what a site claims about its training: at least one example and at most the bound,
/// and a finite loss. The secure path runs this alone, since the coordinator sees no tensors.
pub fn check_claims(update: &SiteUpdate, policy: &UpdatePolicy) -> Result<(), UpdateProblem> {
    if update.num_examples == 0 {
        return Err(UpdateProblem::NoExamples);
    }
    // Whatever the manifest allows, no claim beyond what every sum, weight and store holds
    // exactly: a larger one leaves the site out instead of stopping the run when it is recorded.
    let bound = policy
        .max_examples
        .map_or(MAX_CLAIMED_EXAMPLES, |b| b.min(MAX_CLAIMED_EXAMPLES));
    if update.num_examples > bound {
        return Err(UpdateProblem::TooManyExamples {
            claimed: update.num_examples,
            bound,
        });
    }
    if !update.train_loss.is_finite() {
        return Err(UpdateProblem::NonFiniteLoss(update.train_loss));
    }
    Ok(())
}

/// Most training examples a site may claim for one update (2^40, about 1.1e12), whatever the
/// manifest's `strategy.max_examples`: every claim is then exact as an `f64` weight, its sum over
/// a million sites fits in an `i64`, and the store records it.
pub const MAX_CLAIMED_EXAMPLES: u64 = 1 << 40;

/// Checks `update` against the global model and returns it in the global layout.
pub fn validate(
    global: &ParamSet,
    update: SiteUpdate,
    policy: &UpdatePolicy,
) -> Result<ValidUpdate, UpdateRejected> {
    let claims = check_claims(&update, policy);
    let site = update.site;
    let reject = |problem| UpdateRejected {
        site: site.clone(),
        problem,
    };
    claims.map_err(&reject)?;
    let params = align(global.layout(), update.params).map_err(&reject)?;
    let norm = params.l2_distance(global);
    if let Some(bound) = policy.max_update_norm
        && norm > bound
    {
        return Err(reject(UpdateProblem::NormTooLarge { norm, bound }));
    }
    Ok(ValidUpdate {
        site,
        num_examples: update.num_examples,
        params,
        update_norm: norm,
        train_loss: update.train_loss,
    })
}

/// Reorders `received` into `layout`, checking names, shapes and finiteness. An update already
/// in the layout (the usual case) keeps its buffer: no copy.
fn align(layout: &Arc<Layout>, received: ParamSet) -> Result<ParamSet, UpdateProblem> {
    if received.has_layout(layout) {
        for (i, spec) in layout.specs().iter().enumerate() {
            check_finite(&spec.name, &received.as_flat()[layout.range(i)])?;
        }
        return Ok(ParamSet::from_checked_parts(
            Arc::clone(layout),
            received.into_flat(),
        ));
    }
    for spec in received.layout().specs() {
        if layout.position(&spec.name).is_none() {
            return Err(UpdateProblem::UnknownTensor(spec.name.clone()));
        }
    }
    let mut data = Vec::with_capacity(layout.total());
    for spec in layout.specs() {
        let theirs = received.layout().position(&spec.name);
        let Some(i) = theirs else {
            return Err(UpdateProblem::MissingTensor(spec.name.clone()));
        };
        let got = &received.layout().specs()[i].shape;
        if *got != spec.shape {
            return Err(UpdateProblem::WrongShape {
                name: spec.name.clone(),
                got: got.clone(),
                expected: spec.shape.clone(),
            });
        }
        let values = &received.as_flat()[received.layout().range(i)];
        check_finite(&spec.name, values)?;
        data.extend_from_slice(values);
    }
    // Every tensor of the layout was copied with its checked shape, so the length matches.
    Ok(ParamSet::from_checked_parts(Arc::clone(layout), data))
}

/// Every value of tensor `name` must be finite.
fn check_finite(name: &str, values: &[f32]) -> Result<(), UpdateProblem> {
    match values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        Some((index, value)) => Err(UpdateProblem::NonFinite {
            name: name.to_string(),
            index,
            value: *value,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global() -> ParamSet {
        ParamSet::from_tensors([
            ("w".to_string(), vec![2, 2], vec![0.0; 4]),
            ("b".to_string(), vec![2], vec![0.0; 2]),
        ])
        .unwrap()
    }

    fn update(tensors: Vec<(&str, Vec<usize>, Vec<f32>)>) -> SiteUpdate {
        SiteUpdate {
            site: "clinic-a".into(),
            num_examples: 10,
            params: ParamSet::from_tensors(
                tensors.into_iter().map(|(n, s, v)| (n.to_string(), s, v)),
            )
            .unwrap(),
            train_loss: 0.0,
        }
    }

    #[test]
    fn accepts_reordered_tensors_and_aligns_them() {
        let u = update(vec![
            ("b", vec![2], vec![5.0, 6.0]),
            ("w", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
        ]);
        let v = validate(&global(), u, &UpdatePolicy::default()).unwrap();
        assert_eq!(v.params.as_flat(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!((v.update_norm - 91f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn rejects_missing_unknown_shape_nonfinite_and_norm() {
        let p = UpdatePolicy::default();
        let e = validate(&global(), update(vec![("w", vec![2, 2], vec![0.0; 4])]), &p).unwrap_err();
        assert_eq!(e.problem, UpdateProblem::MissingTensor("b".into()));
        assert!(e.to_string().contains("clinic-a") && e.to_string().contains("`b`"));

        let e = validate(
            &global(),
            update(vec![
                ("w", vec![2, 2], vec![0.0; 4]),
                ("b", vec![2], vec![0.0; 2]),
                ("extra", vec![1], vec![0.0]),
            ]),
            &p,
        )
        .unwrap_err();
        assert_eq!(e.problem, UpdateProblem::UnknownTensor("extra".into()));

        let e = validate(
            &global(),
            update(vec![
                ("w", vec![4], vec![0.0; 4]),
                ("b", vec![2], vec![0.0; 2]),
            ]),
            &p,
        )
        .unwrap_err();
        assert!(matches!(e.problem, UpdateProblem::WrongShape { ref name, .. } if name == "w"));

        let e = validate(
            &global(),
            update(vec![
                ("w", vec![2, 2], vec![0.0, f32::NAN, 0.0, 0.0]),
                ("b", vec![2], vec![0.0; 2]),
            ]),
            &p,
        )
        .unwrap_err();
        assert!(matches!(
            e.problem,
            UpdateProblem::NonFinite { index: 1, .. }
        ));

        let bounded = UpdatePolicy {
            max_update_norm: Some(1.0),
            max_examples: None,
        };
        let e = validate(
            &global(),
            update(vec![
                ("w", vec![2, 2], vec![3.0, 0.0, 0.0, 0.0]),
                ("b", vec![2], vec![0.0; 2]),
            ]),
            &bounded,
        )
        .unwrap_err();
        assert!(matches!(e.problem, UpdateProblem::NormTooLarge { .. }));
    }

    #[test]
    fn rejects_a_non_finite_training_loss() {
        let mut u = update(vec![
            ("w", vec![2, 2], vec![0.0; 4]),
            ("b", vec![2], vec![0.0; 2]),
        ]);
        u.train_loss = f64::NAN;
        let e = validate(&global(), u, &UpdatePolicy::default()).unwrap_err();
        assert!(matches!(e.problem, UpdateProblem::NonFiniteLoss(l) if l.is_nan()));
    }

    #[test]
    fn rejects_more_examples_than_the_bound() {
        let u = update(vec![
            ("w", vec![2, 2], vec![0.0; 4]),
            ("b", vec![2], vec![0.0; 2]),
        ]);
        let policy = UpdatePolicy {
            max_update_norm: None,
            max_examples: Some(5),
        };
        let e = validate(&global(), u.clone(), &policy).unwrap_err();
        assert_eq!(
            e.problem,
            UpdateProblem::TooManyExamples {
                claimed: 10,
                bound: 5
            }
        );
        let roomy = UpdatePolicy {
            max_examples: Some(10),
            ..policy
        };
        assert!(validate(&global(), u, &roomy).is_ok());
    }

    #[test]
    fn no_manifest_lets_a_site_claim_more_than_every_sum_holds() {
        // A hostile site claimed 2^63 examples: the update was taken and recording the round
        // stopped the run, again after every restart. The claim is refused instead.
        for max_examples in [None, Some(u64::MAX)] {
            let mut u = update(vec![
                ("w", vec![2, 2], vec![0.0; 4]),
                ("b", vec![2], vec![0.0; 2]),
            ]);
            u.num_examples = 1 << 63;
            let policy = UpdatePolicy {
                max_update_norm: None,
                max_examples,
            };
            let e = validate(&global(), u.clone(), &policy).unwrap_err();
            assert_eq!(
                e.problem,
                UpdateProblem::TooManyExamples {
                    claimed: 1 << 63,
                    bound: MAX_CLAIMED_EXAMPLES
                }
            );
            u.num_examples = MAX_CLAIMED_EXAMPLES;
            assert!(validate(&global(), u, &policy).is_ok());
        }
    }

    #[test]
    fn rejects_zero_examples() {
        let mut u = update(vec![
            ("w", vec![2, 2], vec![0.0; 4]),
            ("b", vec![2], vec![0.0; 2]),
        ]);
        u.num_examples = 0;
        let e = validate(&global(), u, &UpdatePolicy::default()).unwrap_err();
        assert_eq!(e.problem, UpdateProblem::NoExamples);
    }
}
