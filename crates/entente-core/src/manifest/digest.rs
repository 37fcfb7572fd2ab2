//! The digest of what every site agreed to: the manifest without the settings that are each
//! site's own business (where its data lives, where its privacy ledger is kept). Coordinator and
//! nodes compare digests, so a node never works for a federation whose terms differ from its
//! own copy, whatever paths each side uses.

use super::{Manifest, ModelChoice};
use crate::digest::sha256_hex;

/// Keys left out of the digest: local paths and limits that may differ between sites.
const LOCAL_KEYS: &[(&str, &str)] = &[
    ("data", "path"),
    ("data", "max_rows"),
    ("data", "split_file"),
    ("privacy", "ledger"),
    ("strategy", "control_dir"),
    ("personalization", "dir"),
];

impl Manifest {
    /// SHA-256 (hex) of the manifest's terms ([`Manifest::agreement_terms`]), so comments, key
    /// order and formatting do not matter.
    pub fn agreement_digest(&self) -> String {
        sha256_hex(self.agreement_terms().as_bytes())
    }

    /// The manifest's terms: every table and key except local paths, in a canonical form (keys
    /// sorted, serialized as JSON). A node sends them with its digest, so that a coordinator
    /// whose terms differ can name the first key that differs ([`super::compare_terms`]).
    /// Computed once, from the validated manifest's text (and again after an override).
    pub fn agreement_terms(&self) -> String {
        self.terms.clone()
    }
}

/// The terms of the manifest text `source`, whose model is `model` (see
/// [`Manifest::agreement_terms`]); what is wrong if the text is not TOML or its values have no
/// JSON form.
pub(super) fn terms_of(source: &str, model: &ModelChoice) -> Result<String, String> {
    let mut value: toml::Table = toml::from_str(source).map_err(|e| e.to_string())?;
    for (table, key) in LOCAL_KEYS {
        if let Some(toml::Value::Table(t)) = value.get_mut(*table) {
            t.remove(*key);
        }
    }
    // Each site's own data path is local too.
    if let Some(toml::Value::Array(sites)) = value.get_mut("sites") {
        for site in sites.iter_mut() {
            if let toml::Value::Table(t) = site {
                t.remove("data");
            }
        }
    }
    // An external model is agreed by its content, not by where each site keeps the file.
    if let (ModelChoice::External { sha256, .. }, Some(toml::Value::Table(m))) =
        (model, value.get_mut("model"))
    {
        m.insert(
            "init".into(),
            toml::Value::String(format!("sha256:{sha256}")),
        );
    }
    serde_json::to_string(&value).map_err(|e| format!("its terms have no JSON form: {e}"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = r#"
[federation]
name = "digest-test"
seed = 3

[data]
format = "csv"
path = "a.csv"

[[sites]]
name = "a"

[[sites]]
name = "b"

[model]
kind = "mlp"

[training]
rounds = 2
learning_rate = 0.1
"#;

    fn digest(text: &str) -> String {
        Manifest::parse(text, "test", Path::new("."))
            .unwrap()
            .agreement_digest()
    }

    #[test]
    fn local_paths_formatting_and_order_do_not_change_the_digest() {
        let base = digest(BASE);
        assert_eq!(base.len(), 64);
        assert_eq!(digest(&BASE.replace("a.csv", "/elsewhere/b.csv")), base);
        let reordered = BASE.replace("seed = 3\n", "").replace(
            "name = \"digest-test\"",
            "# a comment\nseed = 3\nname   =   \"digest-test\"",
        );
        assert_eq!(digest(&reordered), base);
    }

    #[test]
    fn terms_change_the_digest() {
        let base = digest(BASE);
        assert_ne!(digest(&BASE.replace("rounds = 2", "rounds = 3")), base);
        assert_ne!(digest(&BASE.replace("name = \"b\"", "name = \"c\"")), base);
        assert_ne!(digest(&BASE.replace("seed = 3", "seed = 4")), base);
        assert_ne!(
            digest(&BASE.replace("kind = \"mlp\"", "kind = \"cnn\"")),
            base
        );
    }
}
