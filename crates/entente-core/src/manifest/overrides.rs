//! Settings a command line overrides (`--rounds`). An override is written into the manifest's
//! text, so the run's record of its manifest says what ran, and its agreement terms change with
//! it: a node must hold the same manifest, override included, to take part.

use super::{MAX_ROUNDS, Manifest, ManifestError, digest};

impl Manifest {
    /// Runs `rounds` rounds instead of the file's `training.rounds`; `origin` names the
    /// override in errors (for example `--rounds`). Checked like the file's value.
    pub fn override_rounds(&mut self, rounds: u32, origin: &str) -> Result<(), ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: origin.to_string(),
            line: None,
            key: "training.rounds".into(),
            message,
        };
        if !(1..=MAX_ROUNDS).contains(&rounds) {
            return Err(invalid(format!(
                "is {rounds}; allowed: 1 to {MAX_ROUNDS} (the most rounds a run may have)"
            )));
        }
        let mut doc: toml_edit::DocumentMut = self
            .source
            .parse()
            .map_err(|e: toml_edit::TomlError| invalid(format!("the manifest's text: {e}")))?;
        let training = doc
            .get_mut("training")
            .ok_or_else(|| invalid("the manifest has no [training] table".into()))?;
        // The note goes after the value where a line ends there: not inside an inline table.
        let inline = training.is_inline_table();
        let training = training
            .as_table_like_mut()
            .ok_or_else(|| invalid("`training` is not a table".into()))?;
        let mut value = toml_edit::value(i64::from(rounds));
        if let (false, Some(decor)) = (
            inline,
            value.as_value_mut().map(toml_edit::Value::decor_mut),
        ) {
            decor.set_suffix(format!(
                "  # {origin} {rounds}; the file said {}",
                self.rounds
            ));
        }
        training.insert("rounds", value);
        let source = doc.to_string();
        // The text as written must read back with the new number, and nothing else changed.
        let written: Option<i64> = toml::from_str::<toml::Table>(&source)
            .ok()
            .and_then(|t| t.get("training")?.get("rounds")?.as_integer());
        if written != Some(i64::from(rounds)) {
            return Err(invalid(
                "could not be written into the manifest's text; edit training.rounds in the file"
                    .into(),
            ));
        }
        self.terms = digest::terms_of(&source, &self.model).map_err(invalid)?;
        self.source = source;
        self.rounds = rounds;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const TEXT: &str = r#"# A comment that stays.
[federation]
name = "override-test"
seed = 3

[data]
format = "csv"
path = "a.csv"
features = 4
classes = 2

[[sites]]
name = "a"

[model]
kind = "mlp"
hidden = [8]

[training]
rounds = 5 # the agreed number
local_epochs = 1
batch_size = 4
learning_rate = 0.1
"#;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text, "m.toml", Path::new(".")).unwrap()
    }

    #[test]
    fn an_override_is_written_into_the_text_and_the_terms() {
        let mut m = manifest(TEXT);
        let before = m.agreement_digest();
        m.override_rounds(2, "--rounds").unwrap();
        assert_eq!(m.rounds, 2);
        assert!(
            m.source.starts_with("# A comment that stays."),
            "{}",
            m.source
        );
        assert!(
            m.source
                .contains("rounds = 2  # --rounds 2; the file said 5"),
            "{}",
            m.source
        );
        // The text as written reads back as the manifest that runs, with the same terms.
        let reread = manifest(&m.source);
        assert_eq!(reread.rounds, 2);
        assert_eq!(reread.agreement_digest(), m.agreement_digest());
        assert_ne!(before, m.agreement_digest(), "the terms did not change");
        // The same number as the file's changes nothing a node compares.
        let mut same = manifest(TEXT);
        same.override_rounds(5, "--rounds").unwrap();
        assert_eq!(same.agreement_digest(), before);
    }

    #[test]
    fn an_inline_training_table_and_dotted_keys_take_the_override() {
        let tables = TEXT.find("[training]").unwrap();
        for training in [
            "training = { rounds = 5, local_epochs = 1, batch_size = 4, learning_rate = 0.1 }\n",
            "training.rounds = 5\ntraining.local_epochs = 1\ntraining.batch_size = 4\n\
             training.learning_rate = 0.1\n",
        ] {
            // Top-level keys go before the first table.
            let text = format!("{training}{}", &TEXT[..tables]);
            let mut m = manifest(&text);
            m.override_rounds(3, "--rounds").unwrap();
            assert_eq!(manifest(&m.source).rounds, 3, "{}", m.source);
        }
    }

    #[test]
    fn an_override_out_of_range_is_refused_naming_it() {
        let mut m = manifest(TEXT);
        for bad in [0, MAX_ROUNDS + 1] {
            let e = m.override_rounds(bad, "--rounds").unwrap_err().to_string();
            assert!(
                e.contains("--rounds") && e.contains("training.rounds"),
                "{e}"
            );
        }
        assert_eq!(m.rounds, 5, "a refused override changed the manifest");
    }
}
