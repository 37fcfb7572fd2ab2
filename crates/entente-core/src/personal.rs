//! A shared body with personal tensors (FedPer, FedRep): which of a model's tensors a site
//! keeps to itself, and how a full model comes apart into its shared and personal parts and
//! back. The global model, every task and every update hold the shared part only.

use std::sync::Arc;

use crate::params::{Layout, ParamError, ParamSet};

/// Why a model could not be split into its shared and personal parts, or put back together.
#[derive(Debug, thiserror::Error)]
pub enum PersonalError {
    /// A tensor the full model needs is in neither part.
    #[error("tensor `{0}` is neither in the shared part nor in the personal one")]
    Missing(String),
    /// A tensor of one part has another shape than the full model's.
    #[error("tensor `{name}` has shape {got:?}, the model's is {expected:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// Shape in the part.
        got: Vec<usize>,
        /// Shape in the full model.
        expected: Vec<usize>,
    },
    /// Building a part failed.
    #[error(transparent)]
    Param(#[from] ParamError),
}

/// The first of `personal`'s names that `layout` holds: a layout that must carry only shared
/// tensors (a task, an update) fails when this is `Some`.
pub fn carried<'a>(layout: &Layout, personal: &'a [String]) -> Option<&'a str> {
    personal
        .iter()
        .find(|name| layout.position(name).is_some())
        .map(String::as_str)
}

/// `params` cut into its shared tensors and the tensors named in `personal`, each in the
/// order of `params`.
pub fn split(params: &ParamSet, personal: &[String]) -> Result<(ParamSet, ParamSet), ParamError> {
    let is_personal = |name: &str| personal.iter().any(|p| p == name);
    let part = |keep: bool| {
        ParamSet::from_tensors(
            params
                .iter()
                .filter(|(spec, _)| is_personal(&spec.name) == keep)
                .map(|(spec, values)| (spec.name.clone(), spec.shape.clone(), values.to_vec())),
        )
    };
    Ok((part(false)?, part(true)?))
}

/// The full model of `layout` from its two parts: each tensor from whichever part holds it.
pub fn join(
    layout: &Arc<Layout>,
    shared: &ParamSet,
    personal: &ParamSet,
) -> Result<ParamSet, PersonalError> {
    let mut data = Vec::with_capacity(layout.total());
    for spec in layout.specs() {
        let part = [shared, personal]
            .into_iter()
            .find(|p| p.layout().position(&spec.name).is_some())
            .ok_or_else(|| PersonalError::Missing(spec.name.clone()))?;
        let i = part
            .layout()
            .position(&spec.name)
            .ok_or_else(|| PersonalError::Missing(spec.name.clone()))?;
        let got = &part.layout().specs()[i].shape;
        if *got != spec.shape {
            return Err(PersonalError::Shape {
                name: spec.name.clone(),
                got: got.clone(),
                expected: spec.shape.clone(),
            });
        }
        data.extend_from_slice(&part.as_flat()[part.layout().range(i)]);
    }
    Ok(ParamSet::from_flat(Arc::clone(layout), data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ParamSet {
        ParamSet::from_tensors([
            ("body.weight".to_string(), vec![2, 2], vec![1., 2., 3., 4.]),
            ("head.weight".to_string(), vec![1, 2], vec![5., 6.]),
            ("head.bias".to_string(), vec![1], vec![7.]),
        ])
        .unwrap()
    }

    #[test]
    fn a_model_splits_into_its_parts_and_joins_back_to_the_bit() {
        let full = model();
        let personal = vec!["head.bias".to_string(), "head.weight".to_string()];
        let (shared, own) = split(&full, &personal).unwrap();
        assert_eq!(shared.layout().specs().len(), 1);
        assert_eq!(shared.get("body.weight"), Some(&[1., 2., 3., 4.][..]));
        assert_eq!(own.get("head.weight"), Some(&[5., 6.][..]));
        assert_eq!(carried(shared.layout(), &personal), None);
        assert_eq!(carried(own.layout(), &personal), Some("head.bias"));
        assert_eq!(join(full.layout(), &shared, &own).unwrap(), full);
    }

    #[test]
    fn a_missing_or_misshapen_tensor_is_named() {
        let full = model();
        let (shared, _) = split(&full, &["head.weight".into(), "head.bias".into()]).unwrap();
        let half =
            ParamSet::from_tensors([("head.weight".to_string(), vec![1, 2], vec![0.; 2])]).unwrap();
        assert!(matches!(
            join(full.layout(), &shared, &half),
            Err(PersonalError::Missing(n)) if n == "head.bias"
        ));
        let wrong = ParamSet::from_tensors([
            ("head.weight".to_string(), vec![2, 1], vec![0.; 2]),
            ("head.bias".to_string(), vec![1], vec![0.]),
        ])
        .unwrap();
        assert!(matches!(
            join(full.layout(), &shared, &wrong),
            Err(PersonalError::Shape { name, .. }) if name == "head.weight"
        ));
    }
}
