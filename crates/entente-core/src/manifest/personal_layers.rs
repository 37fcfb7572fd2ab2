//! `[personalization] method = "fedper"` and `"fedrep"`: the personal tensors must be tensors
//! of the model, leave at least one shared, and the run must be one whose other parts handle a
//! model that is partly personal.

use super::schema::{RawManifest, RawPersonalization};
use super::validate::{MAX_PERSONAL_EPOCHS, Reporter, read_external_init};
use super::{ManifestError, ModelChoice, Personalization};

/// The names of the tensors of `model`, in PyTorch's naming: entente's MLP (`layers.K.weight`,
/// `layers.K.bias`), its CNN (`conv1`, `conv2`, `fc1`, `fc2`), or an external model's file.
/// (entente-learn's models build the same names; its tests check that they agree.)
pub fn model_tensor_names(model: &ModelChoice) -> Result<Vec<String>, ManifestError> {
    let layers = |prefixes: Vec<String>| {
        prefixes
            .into_iter()
            .flat_map(|p| [format!("{p}.weight"), format!("{p}.bias")])
            .collect()
    };
    Ok(match model {
        ModelChoice::Mlp { hidden } => {
            layers((0..=hidden.len()).map(|k| format!("layers.{k}")).collect())
        }
        ModelChoice::Cnn => layers(["conv1", "conv2", "fc1", "fc2"].map(String::from).to_vec()),
        ModelChoice::External { init, .. } => read_external_init(init)?
            .0
            .layout()
            .specs()
            .iter()
            .map(|s| s.name.clone())
            .collect(),
    })
}

/// Checks a FedPer or FedRep table.
pub(super) fn check(
    r: &Reporter,
    p: &RawPersonalization,
    raw: &RawManifest,
    model: &ModelChoice,
) -> Result<Personalization, ManifestError> {
    let method = p.method.as_str();
    for (key, present, owner) in [
        ("epochs", p.epochs.is_some(), "\"finetune\""),
        ("lambda", p.lambda.is_some(), "\"ditto\""),
    ] {
        r.ensure(
            !present,
            &format!("personalization.{key}"),
            format!(
                "belongs to method = {owner}; method = \"{method}\" trains training.local_epochs \
                 each round"
            ),
        )?;
    }
    let Some(personal) = p.personal.clone() else {
        return Err(r.err(
            "personalization",
            format!(
                "method = \"{method}\" needs `personal`, the tensors each site keeps to itself, \
                 for example personal = [\"layers.2.weight\", \"layers.2.bias\"] (the last \
                 layer of an MLP with two hidden layers)"
            ),
        ));
    };
    const KEY: &str = "personalization.personal";
    r.ensure(
        !personal.is_empty(),
        KEY,
        "is empty; name at least one tensor, or use another method",
    )?;
    let names = model_tensor_names(model)?;
    for (i, name) in personal.iter().enumerate() {
        if personal[..i].contains(name) {
            return Err(r.err(KEY, format!("`{name}` is listed twice")));
        }
        if !names.contains(name) {
            return Err(r.err(
                KEY,
                format!(
                    "`{}` is not a tensor of the model; its tensors: {}",
                    crate::text::excerpt(name),
                    names.join(", ")
                ),
            ));
        }
    }
    r.ensure(
        names.len() > personal.len(),
        KEY,
        "names every tensor of the model; at least one must stay shared, or the sites would \
         have nothing to train together",
    )?;
    for (present, key, why) in [
        (
            matches!(raw.strategy.kind.as_str(), "scaffold"),
            "strategy.kind",
            "\"scaffold\" does not combine with a personal head yet: its control variates \
             cover the whole model",
        ),
        (
            raw.secure_aggregation.is_some(),
            "secure_aggregation",
            "does not combine with a personal head yet; remove one of the two",
        ),
        (
            raw.privacy.is_some(),
            "privacy",
            "does not combine with a personal head yet: no DP accounting covers the personal \
             tensors' training; remove one of the two",
        ),
    ] {
        r.ensure(
            !present,
            key,
            format!("{why} (personalization.method = \"{method}\")"),
        )?;
    }
    if method == "fedper" {
        r.ensure(
            p.head_epochs.is_none(),
            "personalization.head_epochs",
            "belongs to method = \"fedrep\"; FedPer trains the whole model together",
        )?;
        return Ok(Personalization::FedPer { personal });
    }
    let head_epochs = p.head_epochs.unwrap_or(1);
    r.ensure(
        (1..=MAX_PERSONAL_EPOCHS).contains(&head_epochs),
        "personalization.head_epochs",
        format!(
            "is {head_epochs}; allowed: 1 to {MAX_PERSONAL_EPOCHS} epochs of training the \
             personal tensors each round"
        ),
    )?;
    Ok(Personalization::FedRep {
        personal,
        head_epochs,
    })
}
