//! Comparing two sides' manifest terms ([`super::Manifest::agreement_terms`]) key by key, so
//! that a refusal for a differing manifest names what differs instead of showing two hashes.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::text::excerpt;

/// The first key, in sorted order, whose value differs between two sides' terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermDifference {
    /// Dotted key, with the index of a table in an array: `training.learning_rate`,
    /// `sites[1].name`.
    pub key: String,
    /// The value on our side (as JSON), `None` where our manifest does not set the key.
    pub ours: Option<String>,
    /// The value on their side (as JSON), `None` where theirs does not set it.
    pub theirs: Option<String>,
    /// How many keys differ in all.
    pub count: usize,
}

impl TermDifference {
    /// One sentence naming the key and both values, `ours` and `theirs` naming the sides (for
    /// example "the coordinator's manifest" and "this node's").
    pub fn describe(&self, ours: &str, theirs: &str) -> String {
        let value = |v: &Option<String>| {
            v.as_deref()
                .map_or_else(|| "it unset".to_string(), |v| excerpt(v).into_owned())
        };
        let others = match self.count {
            0 | 1 => String::new(),
            2 => " (1 other key differs too)".to_string(),
            n => format!(" ({} other keys differ too)", n - 1),
        };
        format!(
            "`{}` differs: {ours} has {}, {theirs} {}{others}",
            self.key,
            value(&self.ours),
            value(&self.theirs)
        )
    }
}

impl fmt::Display for TermDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe("ours", "theirs"))
    }
}

/// The first difference between two sides' terms, `None` if they hold the same keys and values.
/// `theirs` comes from elsewhere (a node's message): text that is not a JSON object is an error
/// naming what is wrong.
pub fn compare_terms(ours: &str, theirs: &str) -> Result<Option<TermDifference>, String> {
    let parse = |text: &str| -> Result<BTreeMap<String, String>, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the terms are not JSON: {e}"))?;
        if !value.is_object() {
            return Err("the terms are not a JSON object".into());
        }
        let mut flat = BTreeMap::new();
        flatten(String::new(), &value, &mut flat);
        Ok(flat)
    };
    let (ours, theirs) = (parse(ours)?, parse(theirs)?);
    let mut keys: Vec<&String> = ours.keys().chain(theirs.keys()).collect();
    keys.sort();
    keys.dedup();
    let differing: Vec<&String> = keys
        .into_iter()
        .filter(|k| ours.get(*k) != theirs.get(*k))
        .collect();
    Ok(differing.first().map(|key| TermDifference {
        key: (*key).clone(),
        ours: ours.get(*key).cloned(),
        theirs: theirs.get(*key).cloned(),
        count: differing.len(),
    }))
}

/// Adds every leaf of `value` under `prefix` to `flat`: tables by key, arrays of tables by
/// index, anything else (numbers, strings, arrays of values) as one JSON value.
fn flatten(prefix: String, value: &Value, flat: &mut BTreeMap<String, String>) {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(join(k), v, flat);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            for (i, v) in items.iter().enumerate() {
                flatten(format!("{prefix}[{i}]"), v, flat);
            }
        }
        leaf => {
            flat.insert(prefix, leaf.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_first_differing_key_and_both_values() {
        let ours =
            r#"{"sites":[{"name":"a"},{"name":"b"}],"training":{"learning_rate":0.05,"rounds":2}}"#;
        let theirs =
            r#"{"sites":[{"name":"a"},{"name":"c"}],"training":{"learning_rate":0.5,"rounds":2}}"#;
        let d = compare_terms(ours, theirs).unwrap().unwrap();
        assert_eq!(d.key, "sites[1].name");
        assert_eq!(d.ours.as_deref(), Some("\"b\""));
        assert_eq!(d.count, 2);
        let text = d.describe("the coordinator's manifest", "this node's");
        assert_eq!(
            text,
            "`sites[1].name` differs: the coordinator's manifest has \"b\", this node's \"c\" \
             (1 other key differs too)"
        );
        assert_eq!(compare_terms(ours, ours).unwrap(), None);
    }

    #[test]
    fn a_key_set_on_one_side_only_is_a_difference() {
        let d = compare_terms(r#"{"training":{"momentum":0}}"#, r#"{"training":{}}"#)
            .unwrap()
            .unwrap();
        assert_eq!((d.key.as_str(), d.theirs), ("training.momentum", None));
        assert!(compare_terms("{}", "[1]").is_err());
        assert!(compare_terms("{}", "not json").is_err());
    }
}
