//! Semantic checks of a parsed manifest; each failure names the key and its line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::schema::{
    RawData, RawManifest, RawPersonalization, RawPrivacy, RawSecureAggregation, RawStrategy,
};
use super::{
    DEFAULT_MAX_ROWS, DataFormat, DataSchema, DataSpec, MAX_CLASSES, MAX_FEATURES, MAX_MAX_ROWS,
    MAX_ROUNDS, Manifest, ManifestError, ModelChoice, PartitionChoice, Personalization,
    PrivacyMechanism, PrivacySpec, SecureAggregationSpec, Selection,
};
use crate::aggregators::{FedOptKind, Strategy};
use crate::engine::{DpSgd, LocalOptimizer, LocalTraining};
use crate::params::{MAX_FILE_BYTES, MODEL_FILE, ParamSet};
use crate::text::excerpt;
use crate::update::UpdatePolicy;

/// Longest time a manifest may name (about 30 years): beyond any deadline a federation needs,
/// and small enough to convert to a `Duration` without overflow.
const MAX_SECONDS: f64 = 1e9;

/// Longest path a manifest may name, in bytes (Linux's `PATH_MAX`).
const MAX_PATH: usize = 4096;

/// Builds errors that point at a key's line in the source text.
pub(super) struct Reporter<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Reporter<'_> {
    pub(super) fn err(&self, key: &str, message: impl Into<String>) -> ManifestError {
        ManifestError::Invalid {
            path: self.origin.to_string(),
            line: find_line(self.text, key),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Like [`Reporter::err`], pointing at the line where `value` appears quoted.
    fn err_at_value(&self, key: &str, value: &str, message: impl Into<String>) -> ManifestError {
        let quoted = format!("\"{value}\"");
        let line = self
            .text
            .lines()
            .position(|l| l.contains(&quoted))
            .map(|i| i + 1)
            .or_else(|| find_line(self.text, key));
        ManifestError::Invalid {
            path: self.origin.to_string(),
            line,
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The path `value` of `key`, resolved against `base`; refused when longer than any path
    /// a file system takes, so that no error ever echoes it whole.
    fn path(&self, key: &str, base: &Path, value: &str) -> Result<PathBuf, ManifestError> {
        self.ensure(
            value.len() <= MAX_PATH,
            key,
            format!(
                "`{}` is not a usable path: it is longer than {MAX_PATH} bytes",
                excerpt(value)
            ),
        )?;
        Ok(base.join(value))
    }

    pub(super) fn ensure(
        &self,
        ok: bool,
        key: &str,
        message: impl Into<String>,
    ) -> Result<(), ManifestError> {
        if ok {
            Ok(())
        } else {
            Err(self.err(key, message))
        }
    }
}

/// 1-based line on which `table.key` is set (or the table header when `key` is a table).
fn find_line(text: &str, dotted: &str) -> Option<usize> {
    let (table, key) = dotted.rsplit_once('.').unwrap_or((dotted, ""));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if key.is_empty() && current == table {
                return Some(i + 1);
            }
            continue;
        }
        if current == table
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == key
        {
            return Some(i + 1);
        }
    }
    None
}

/// A federation name: 1-64 letters, digits, '-', '_' or '.', not only dots (it names run
/// folders).
fn valid_federation_name(name: &str) -> bool {
    !name.is_empty()
        && !name.bytes().all(|b| b == b'.')
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub(super) fn check(
    raw: RawManifest,
    text: &str,
    origin: &str,
    base: &Path,
) -> Result<Manifest, ManifestError> {
    let r = Reporter { text, origin };

    r.ensure(
        valid_federation_name(&raw.federation.name),
        "federation.name",
        format!(
            "`{}` is not a valid name: use 1-64 letters, digits, '-', '_' or '.' (it names run folders)",
            excerpt(&raw.federation.name)
        ),
    )?;

    // Sites.
    r.ensure(
        !raw.sites.is_empty(),
        "sites",
        "no site listed; add one [[sites]] table with a `name` per institution",
    )?;
    let mut seen = HashSet::new();
    for site in &raw.sites {
        if site.epsilon_budget.is_some() && raw.privacy.is_none() {
            return Err(r.err_at_value(
                "sites.epsilon_budget",
                &site.name,
                "applies only when the manifest has a [privacy] table",
            ));
        }
        if let Some(problem) = super::site_name_problem(&site.name) {
            return Err(r.err_at_value(
                "sites.name",
                &site.name,
                format!(
                    "`{}` is not a valid site name ({problem}): use 1-63 letters, digits, '-', \
                     '_' or '.', not starting with '-'",
                    excerpt(&site.name)
                ),
            ));
        }
        if !seen.insert(site.name.clone()) {
            return Err(r.err_at_value(
                "sites.name",
                &site.name,
                format!(
                    "site `{}` is listed twice; site names must be unique",
                    site.name
                ),
            ));
        }
    }
    let sites: Vec<String> = raw.sites.iter().map(|s| s.name.clone()).collect();
    let mut site_data = Vec::with_capacity(raw.sites.len());
    for site in &raw.sites {
        site_data.push(match &site.data {
            Some(p) if p.trim().is_empty() => {
                return Err(r.err_at_value(
                    "sites.data",
                    &site.name,
                    format!("site `{}`: data must not be empty", site.name),
                ));
            }
            Some(p) => Some(r.path("sites.data", base, p)?),
            None => None,
        });
    }

    let data = check_data(&r, &raw, base)?;
    let model = check_model(&r, &raw, base)?;
    let mut training = check_training(&r, &raw)?;
    let privacy = match &raw.privacy {
        Some(p) => Some(check_privacy(&r, p, &raw, base)?),
        None => None,
    };
    if let Some(p) = privacy
        .as_ref()
        .filter(|p| p.mechanism == PrivacyMechanism::DpSgd)
    {
        training.dp_sgd = Some(DpSgd {
            clip: p.clip,
            noise_multiplier: p.noise_multiplier,
        });
    }
    let (strategy, mut policy) = check_strategy(&r, &raw.strategy, sites.len())?;
    let control_dir = match strategy {
        Strategy::Scaffold { .. } => {
            check_scaffold(&r, &raw, &training)?;
            let dir = raw
                .strategy
                .control_dir
                .as_deref()
                .unwrap_or(DEFAULT_CONTROL_DIR);
            Some(r.path("strategy.control_dir", base, dir)?)
        }
        _ => None,
    };

    let sel = &raw.selection;
    r.ensure(
        sel.fraction > 0.0 && sel.fraction <= 1.0,
        "selection.fraction",
        format!("is {}; allowed: greater than 0 and at most 1", sel.fraction),
    )?;
    r.ensure(
        sel.min_sites >= 1 && sel.min_sites <= sites.len(),
        "selection.min_sites",
        format!(
            "is {}; allowed: 1 to the number of sites ({})",
            sel.min_sites,
            sites.len()
        ),
    )?;

    r.ensure(
        sel.deadline_secs > 0.0 && sel.deadline_secs <= MAX_SECONDS,
        "selection.deadline_secs",
        format!(
            "is {}; allowed: a number of seconds greater than 0 and at most {MAX_SECONDS:e}",
            sel.deadline_secs
        ),
    )?;

    let secure_aggregation = match &raw.secure_aggregation {
        Some(sa) => Some(check_secure_aggregation(
            &r,
            sa,
            &raw.strategy,
            sites.len(),
        )?),
        None => None,
    };
    // Under secure aggregation no site can declare more than the encoding's bound, so neither
    // may its claim at the coordinator: the lower of the two bounds is the one enforced.
    if let Some(sa) = &secure_aggregation {
        policy.max_examples = Some(
            policy
                .max_examples
                .map_or(sa.max_examples, |b| b.min(sa.max_examples)),
        );
    }

    if let (Some(p), Some(sa)) = (&privacy, &secure_aggregation)
        && p.mechanism == PrivacyMechanism::Distributed
    {
        let range = super::distributed_dp_range(p.clip, p.noise_multiplier, sel.min_sites);
        r.ensure(
            sa.clip >= range,
            "secure_aggregation.clip",
            format!(
                "is {}; under privacy.mechanism = \"distributed\" it must hold every coordinate of \
                 a site's noisy update, at least privacy.clip * (1 + {} * \
                 privacy.noise_multiplier / sqrt(selection.min_sites)) = {range:.4}: sites clip \
                 to this range before the sum, which is only safe if it (almost) never acts",
                sa.clip,
                super::DISTRIBUTED_DP_TAIL_STDS,
            ),
        )?;
    }

    let personalization = match &raw.personalization {
        Some(p) => Some(check_personalization(&r, p, &training, &raw, &model)?),
        None => None,
    };
    let personal_dir = match (&personalization, &raw.personalization) {
        (Some(p), Some(rp)) if !p.personal_tensors().is_empty() => Some(r.path(
            "personalization.dir",
            base,
            rp.dir.as_deref().unwrap_or(DEFAULT_PERSONAL_DIR),
        )?),
        (_, Some(rp)) => {
            r.ensure(
                rp.dir.is_none(),
                "personalization.dir",
                "applies only to method = \"fedper\" and \"fedrep\", whose nodes keep \
                 personal tensors",
            )?;
            None
        }
        _ => None,
    };

    let required_signatures = check_agreement(&r, &raw, &sites)?;

    let terms = super::digest::terms_of(text, &model).map_err(|message| ManifestError::Syntax {
        path: origin.to_string(),
        message,
    })?;
    Ok(Manifest {
        name: raw.federation.name.clone(),
        seed: raw.federation.seed,
        data,
        sites,
        site_data,
        model,
        rounds: raw.training.rounds,
        training,
        strategy,
        control_dir,
        selection: Selection {
            fraction: sel.fraction,
            min_sites: sel.min_sites,
            deadline: std::time::Duration::from_secs_f64(sel.deadline_secs),
        },
        policy,
        secure_aggregation,
        privacy,
        personalization,
        personal_dir,
        required_signatures,
        source: text.to_string(),
        terms,
    })
}

/// `[agreement] require_signatures`: `"all"`, `"none"` or a list of the manifest's sites; the
/// sites whose signature is required, in manifest order.
fn check_agreement(
    r: &Reporter,
    raw: &RawManifest,
    sites: &[String],
) -> Result<Vec<String>, ManifestError> {
    use super::schema::RawRequiredSignatures;
    const KEY: &str = "agreement.require_signatures";
    let Some(required) = raw
        .agreement
        .as_ref()
        .and_then(|a| a.require_signatures.as_ref())
    else {
        return Ok(Vec::new());
    };
    match required {
        RawRequiredSignatures::Word(word) if word == "all" => Ok(sites.to_vec()),
        RawRequiredSignatures::Word(word) if word == "none" => Ok(Vec::new()),
        RawRequiredSignatures::Word(word) => Err(r.err(
            KEY,
            format!(
                "`{}` is not allowed; use \"all\", \"none\" or a list of site names such as \
                 [\"{}\"]",
                excerpt(word),
                sites.first().map_or("site-a", String::as_str)
            ),
        )),
        RawRequiredSignatures::Sites(names) => {
            let mut seen = HashSet::new();
            for name in names {
                if !sites.contains(name) {
                    return Err(r.err(
                        KEY,
                        format!(
                            "`{}` is not a site of this manifest; list only names of its \
                             [[sites]]",
                            excerpt(name)
                        ),
                    ));
                }
                if !seen.insert(name.as_str()) {
                    return Err(r.err(KEY, format!("`{name}` is listed twice")));
                }
            }
            Ok(sites
                .iter()
                .filter(|s| seen.contains(s.as_str()))
                .cloned()
                .collect())
        }
    }
}

/// Where a site keeps its SCAFFOLD control variate unless `strategy.control_dir` says.
const DEFAULT_CONTROL_DIR: &str = "scaffold-controls";

/// What SCAFFOLD does not combine with, and why.
fn check_scaffold(
    r: &Reporter,
    raw: &RawManifest,
    training: &LocalTraining,
) -> Result<(), ManifestError> {
    r.ensure(
        raw.secure_aggregation.is_none(),
        "secure_aggregation",
        "does not combine with strategy.kind = \"scaffold\": the control variates would have to \
         be aggregated securely too, which entente does not do yet; remove one of the two",
    )?;
    r.ensure(
        raw.privacy.is_none(),
        "privacy",
        "does not combine with strategy.kind = \"scaffold\": neither DP-FedAvg's clipping nor \
         DP-SGD's accounting covers the control variates a site sends; remove one of the two",
    )?;
    r.ensure(
        matches!(training.optimizer, LocalOptimizer::Sgd { .. }),
        "training.optimizer",
        "must be \"sgd\" under strategy.kind = \"scaffold\": its control variates estimate the \
         mean gradient of plain SGD steps",
    )?;
    r.ensure(
        training.optimizer == LocalOptimizer::Sgd { momentum: 0.0 },
        "training.momentum",
        "must be 0 under strategy.kind = \"scaffold\": its control variates estimate the mean \
         gradient of plain SGD steps, and with momentum beta the correction comes out about \
         1 / (1 - beta) times too strong (77% against FedAvg's 93% on the digits at 0.9)",
    )?;
    r.ensure(
        !matches!(
            raw.personalization.as_ref().map(|p| p.method.as_str()),
            Some("ditto")
        ),
        "personalization.method",
        "\"ditto\" does not combine with strategy.kind = \"scaffold\" (the personal model \
         would train without the drift correction); use method = \"finetune\"",
    )
}

/// Most epochs of fine-tuning (or of FedRep's personal tensors) a manifest may ask for.
pub(super) const MAX_PERSONAL_EPOCHS: usize = 1000;

/// Where a node keeps its personal tensors unless `personalization.dir` says.
const DEFAULT_PERSONAL_DIR: &str = "personal-models";

/// Largest Ditto weight: far past where the personal model is the global one.
const MAX_DITTO_LAMBDA: f64 = 1e6;

fn check_personalization(
    r: &Reporter,
    p: &RawPersonalization,
    training: &LocalTraining,
    raw: &RawManifest,
    model: &ModelChoice,
) -> Result<Personalization, ManifestError> {
    if !matches!(p.method.as_str(), "fedper" | "fedrep") {
        r.ensure(
            p.personal.is_none(),
            "personalization.personal",
            "belongs to method = \"fedper\" and \"fedrep\", which keep those tensors at \
             each site",
        )?;
        r.ensure(
            p.head_epochs.is_none(),
            "personalization.head_epochs",
            "belongs to method = \"fedrep\"",
        )?;
    }
    match p.method.as_str() {
        "fedper" | "fedrep" => super::personal_layers::check(r, p, raw, model),
        "finetune" => {
            r.ensure(
                p.lambda.is_none(),
                "personalization.lambda",
                "belongs to method = \"ditto\"; fine-tuning takes `epochs` only",
            )?;
            let epochs = p.epochs.unwrap_or(1);
            r.ensure(
                (1..=MAX_PERSONAL_EPOCHS).contains(&epochs),
                "personalization.epochs",
                format!("is {epochs}; allowed: 1 to {MAX_PERSONAL_EPOCHS} epochs of fine-tuning"),
            )?;
            Ok(Personalization::FineTune { epochs })
        }
        "ditto" => {
            r.ensure(
                p.epochs.is_none(),
                "personalization.epochs",
                "belongs to method = \"finetune\"; Ditto's personal model trains \
                 training.local_epochs each round",
            )?;
            let Some(lambda) = p.lambda else {
                return Err(r.err(
                    "personalization",
                    "method = \"ditto\" needs `lambda`, the pull of each personal model toward \
                     the global one (Li et al. try 0.01 to 2; 0: every site trains alone)",
                ));
            };
            r.ensure(
                lambda.is_finite() && (0.0..=MAX_DITTO_LAMBDA).contains(&lambda),
                "personalization.lambda",
                format!("is {lambda}; allowed: 0 to {MAX_DITTO_LAMBDA:e}"),
            )?;
            // Each SGD step moves the personal model `learning_rate * lambda` of the way to
            // the global one: past all the way it overshoots, and soon diverges.
            let step = lambda * training.learning_rate;
            r.ensure(
                !matches!(training.optimizer, LocalOptimizer::Sgd { .. }) || step <= 1.0,
                "personalization.lambda",
                format!(
                    "is {lambda}: with SGD at training.learning_rate = {}, each step would move \
                     a personal model {step} times the way to the global model, overshooting \
                     it; allowed: lambda * learning_rate at most 1 (lambda <= {})",
                    training.learning_rate,
                    1.0 / training.learning_rate
                ),
            )?;
            Ok(Personalization::Ditto { lambda })
        }
        other => Err(r.err(
            "personalization.method",
            format!(
                "is \"{other}\"; allowed: \"finetune\" (each site trains the final global \
                 model on its own records), \"ditto\" (each site keeps a personal model \
                 pulled toward the global one), \"fedper\" or \"fedrep\" (a shared body, \
                 and the tensors named in `personal` kept at each site)"
            ),
        )),
    }
}

fn check_data(r: &Reporter, raw: &RawManifest, base: &Path) -> Result<DataSpec, ManifestError> {
    let d = &raw.data;
    let csv_only = |key: &str, present: bool| {
        r.ensure(
            !present || d.format == "csv",
            &format!("data.{key}"),
            "applies only to format = \"csv\"",
        )
    };
    let format = match d.format.as_str() {
        "idx" => {
            csv_only("label_column", d.label_column.is_some())?;
            csv_only("standardize", d.standardize.is_some())?;
            csv_only("test_fraction", d.test_fraction.is_some())?;
            csv_only("skip_rows", d.skip_rows > 0)?;
            DataFormat::Idx
        }
        "csv" => {
            let test_fraction = d.test_fraction.unwrap_or(0.2);
            r.ensure(
                test_fraction > 0.0 && test_fraction < 1.0,
                "data.test_fraction",
                format!("is {test_fraction}; allowed: between 0 and 1, exclusive"),
            )?;
            DataFormat::Csv {
                label_column: d.label_column,
                skip_rows: d.skip_rows,
                standardize: d.standardize.unwrap_or(true),
                test_fraction,
            }
        }
        other => {
            return Err(r.err(
                "data.format",
                format!(
                    "`{}` is not a known format; allowed: \"idx\", \"csv\"",
                    excerpt(other)
                ),
            ));
        }
    };
    r.ensure(
        (0.0..0.9).contains(&d.site_test_fraction),
        "data.site_test_fraction",
        format!("is {}; allowed: 0 to 0.9", d.site_test_fraction),
    )?;
    let only_for = |key: &str, present: bool, kind: &str| {
        r.ensure(
            !present || d.partition == kind,
            &format!("data.{key}"),
            format!("applies only to partition = \"{kind}\""),
        )
    };
    only_for("alpha", d.alpha.is_some(), "dirichlet")?;
    only_for("shards_per_site", d.shards_per_site.is_some(), "shards")?;
    only_for("split_file", d.split_file.is_some(), "file")?;
    let partition = match d.partition.as_str() {
        "iid" => PartitionChoice::Iid,
        "dirichlet" => {
            let alpha = d.alpha.unwrap_or(0.5);
            r.ensure(
                alpha.is_finite() && alpha > 0.0,
                "data.alpha",
                format!("is {alpha}; allowed: a positive number (0.1 very skewed, 100 near IID)"),
            )?;
            PartitionChoice::Dirichlet { alpha }
        }
        "shards" => {
            let shards_per_site = d.shards_per_site.unwrap_or(2);
            r.ensure(
                shards_per_site >= 1,
                "data.shards_per_site",
                "must be at least 1",
            )?;
            PartitionChoice::Shards { shards_per_site }
        }
        "file" => match &d.split_file {
            Some(f) => PartitionChoice::File(r.path("data.split_file", base, f)?),
            None => {
                return Err(r.err(
                    "data.partition",
                    "partition = \"file\" needs `split_file`, a JSON list of index lists",
                ));
            }
        },
        other => {
            return Err(r.err(
                "data.partition",
                format!(
                    "`{}` is not a known partition; allowed: \"iid\", \"dirichlet\", \"shards\", \"file\"",
                    excerpt(other)
                ),
            ));
        }
    };
    r.ensure(!d.path.trim().is_empty(), "data.path", "must not be empty")?;
    // `embedded:` names are kept as they are (an empty base leaves them alone).
    let embedded = d.path.starts_with("embedded:");
    let path = r.path(
        "data.path",
        if embedded { Path::new("") } else { base },
        &d.path,
    )?;
    if let Some(limit) = d.limit {
        r.ensure(limit > 0, "data.limit", "must be at least 1 when set")?;
    }
    let max_rows = d.max_rows.unwrap_or(DEFAULT_MAX_ROWS);
    r.ensure(
        (1..=MAX_MAX_ROWS).contains(&max_rows),
        "data.max_rows",
        format!("is {max_rows}; allowed: 1 to {MAX_MAX_ROWS} examples per data file"),
    )?;
    Ok(DataSpec {
        format,
        path,
        site_test_fraction: d.site_test_fraction,
        partition,
        limit: d.limit,
        schema: check_schema(r, d)?,
        max_rows,
    })
}

/// `data.shape` (or `data.features`) and `data.classes`: what every site's records look like.
fn check_schema(r: &Reporter, d: &RawData) -> Result<Option<DataSchema>, ManifestError> {
    let shape = match (&d.shape, d.features) {
        (Some(_), Some(_)) => {
            return Err(r.err(
                "data.features",
                "give either data.shape (for example [1, 28, 28]) or data.features (for a \
                 table), not both",
            ));
        }
        (Some(shape), None) => Some(shape.clone()),
        (None, Some(features)) => Some(vec![features]),
        (None, None) => None,
    };
    let (shape, classes) = match (shape, d.classes) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(r.err(
                "data.classes",
                "data.shape / data.features need data.classes, the number of classes",
            ));
        }
        (None, Some(_)) => {
            return Err(r.err(
                "data.classes",
                "data.classes needs data.shape (images: [channels, height, width]) or \
                 data.features (tables: the number of feature columns)",
            ));
        }
        (Some(s), Some(c)) => (s, c),
    };
    let key = if d.features.is_some() {
        "data.features"
    } else {
        "data.shape"
    };
    r.ensure(
        matches!(shape.len(), 1 | 3) && shape.iter().all(|&n| n >= 1),
        key,
        format!(
            "is {}; allowed: [features] for a table or [channels, height, width] for \
             images, every size at least 1",
            excerpt(&format!("{shape:?}"))
        ),
    )?;
    let features = shape
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .filter(|&f| f <= MAX_FEATURES);
    r.ensure(
        features.is_some(),
        key,
        format!(
            "{} has more than {MAX_FEATURES} features, the most one example may have",
            excerpt(&format!("{shape:?}"))
        ),
    )?;
    r.ensure(
        (2..=MAX_CLASSES).contains(&classes),
        "data.classes",
        format!("is {classes}; allowed: 2 to {MAX_CLASSES}"),
    )?;
    Ok(Some(DataSchema { shape, classes }))
}

/// Longest tensor name of an external model.
const MAX_TENSOR_NAME: usize = 256;
/// Most tensors of an external model (the names of all of them fit a task's header).
const MAX_TENSORS: usize = 10_000;

/// Reads an external model's initial tensors and the SHA-256 of its file.
pub(super) fn read_external_init(path: &Path) -> Result<(ParamSet, String), ManifestError> {
    let invalid = |message: String| ManifestError::Invalid {
        path: path.display().to_string(),
        line: None,
        key: "model.init".into(),
        message,
    };
    let bytes = crate::files::read_bounded(path, MAX_FILE_BYTES, MODEL_FILE)
        .map_err(|e| invalid(format!("cannot read the initial model: {e}")))?;
    let params = ParamSet::from_safetensors(&bytes).map_err(|e| {
        invalid(format!(
            "not a safetensors file of f32 tensors ({e}); save it with \
             safetensors.torch.save_file(model.state_dict(), PATH) or entente.torch"
        ))
    })?;
    if params.is_empty() {
        return Err(invalid("the initial model holds no tensor".into()));
    }
    // Every name travels in each task's header: bounded, so that any model the manifest
    // accepts can be sent.
    if let Some(spec) = params
        .iter()
        .map(|(spec, _)| spec)
        .find(|s| s.name.is_empty() || s.name.len() > MAX_TENSOR_NAME)
    {
        return Err(invalid(format!(
            "a tensor name is empty or longer than {MAX_TENSOR_NAME} bytes (`{}`)",
            excerpt(&spec.name)
        )));
    }
    if params.len() > MAX_TENSORS {
        return Err(invalid(format!(
            "the model has {} tensors, more than the {MAX_TENSORS} a task can describe",
            params.len()
        )));
    }
    if let Some((spec, _)) = params
        .iter()
        .find(|(_, v)| v.iter().any(|x| !x.is_finite()))
    {
        return Err(invalid(format!(
            "tensor `{}` holds a NaN or infinite value",
            excerpt(&spec.name)
        )));
    }
    Ok((params, crate::digest::sha256_hex(&bytes)))
}

fn check_model(r: &Reporter, raw: &RawManifest, base: &Path) -> Result<ModelChoice, ManifestError> {
    let m = &raw.model;
    r.ensure(
        m.init.is_none() || m.kind == "external",
        "model.init",
        "applies only to kind = \"external\"",
    )?;
    match m.kind.as_str() {
        "external" => {
            r.ensure(
                m.hidden.is_none(),
                "model.hidden",
                "applies only to kind = \"mlp\"; an external model's shapes come from model.init",
            )?;
            let Some(init) = &m.init else {
                return Err(r.err(
                    "model.init",
                    "kind = \"external\" needs init = \"FILE.safetensors\": the names, shapes \
                     and initial values of every tensor, in PyTorch's layout",
                ));
            };
            let init = r.path("model.init", base, init)?;
            let (_, sha256) = read_external_init(&init).map_err(|e| match e {
                ManifestError::Invalid { message, .. } => {
                    r.err("model.init", format!("{}: {message}", init.display()))
                }
                other => other,
            })?;
            Ok(ModelChoice::External { init, sha256 })
        }
        "mlp" => {
            let hidden = m.hidden.clone().unwrap_or_else(|| vec![200, 200]);
            r.ensure(
                hidden.iter().all(|&h| h > 0),
                "model.hidden",
                "every hidden layer needs a width of at least 1",
            )?;
            Ok(ModelChoice::Mlp { hidden })
        }
        "cnn" => {
            r.ensure(
                m.hidden.is_none(),
                "model.hidden",
                "applies only to kind = \"mlp\"",
            )?;
            Ok(ModelChoice::Cnn)
        }
        other => Err(r.err(
            "model.kind",
            format!(
                "`{}` is not a known model; allowed: \"mlp\", \"cnn\", \"external\"",
                excerpt(other)
            ),
        )),
    }
}

fn check_training(r: &Reporter, raw: &RawManifest) -> Result<LocalTraining, ManifestError> {
    let t = &raw.training;
    r.ensure(
        (1..=MAX_ROUNDS).contains(&t.rounds),
        "training.rounds",
        format!(
            "is {}; allowed: 1 to {MAX_ROUNDS} (the most rounds a run may have)",
            t.rounds
        ),
    )?;
    // Both travel to the nodes as 32-bit numbers.
    r.ensure(
        (1..=u32::MAX as usize).contains(&t.local_epochs),
        "training.local_epochs",
        "must be at least 1 and at most 4294967295",
    )?;
    r.ensure(
        (1..=u32::MAX as usize).contains(&t.batch_size),
        "training.batch_size",
        "must be at least 1 and at most 4294967295",
    )?;
    r.ensure(
        t.learning_rate.is_finite() && t.learning_rate > 0.0,
        "training.learning_rate",
        format!(
            "is {}; allowed: a positive number such as 0.05",
            t.learning_rate
        ),
    )?;
    r.ensure(
        (0.0..1.0).contains(&t.momentum),
        "training.momentum",
        format!(
            "is {}; allowed: 0 (none) up to but not including 1",
            t.momentum
        ),
    )?;
    r.ensure(
        t.fedprox_mu.is_finite() && t.fedprox_mu >= 0.0,
        "training.fedprox_mu",
        format!(
            "is {}; allowed: 0 (plain FedAvg) or a positive number",
            t.fedprox_mu
        ),
    )?;
    let optimizer = match t.optimizer.as_str() {
        "sgd" => LocalOptimizer::Sgd {
            momentum: t.momentum,
        },
        "adam" => {
            r.ensure(
                t.momentum == 0.0,
                "training.momentum",
                "applies only to optimizer = \"sgd\"",
            )?;
            LocalOptimizer::Adam
        }
        other => {
            return Err(r.err(
                "training.optimizer",
                format!(
                    "`{}` is not a known optimizer; allowed: \"sgd\", \"adam\"",
                    excerpt(other)
                ),
            ));
        }
    };
    Ok(LocalTraining {
        epochs: t.local_epochs,
        batch_size: t.batch_size,
        learning_rate: t.learning_rate,
        optimizer,
        fedprox_mu: t.fedprox_mu,
        dp_sgd: None,
    })
}

fn check_strategy(
    r: &Reporter,
    s: &RawStrategy,
    num_sites: usize,
) -> Result<(Strategy, UpdatePolicy), ManifestError> {
    let kind = s.kind.as_str();
    let allowed: &[&str] = match kind {
        "fedavg" | "median" => &[],
        "fedavgm" => &["server_learning_rate", "server_momentum"],
        "fedadam" | "fedyogi" => &["server_learning_rate", "beta1", "beta2", "tau"],
        "fedadagrad" => &["server_learning_rate", "beta1", "tau"],
        "trimmed_mean" => &["trim_fraction"],
        "krum" => &["faulty"],
        "multi_krum" => &["faulty", "select"],
        "scaffold" => &["server_learning_rate", "control_dir"],
        other => {
            return Err(r.err(
                "strategy.kind",
                format!(
                    "`{}` is not a known strategy; allowed: \"fedavg\", \"fedavgm\", \
                     \"fedadam\", \"fedyogi\", \"fedadagrad\", \"median\", \"trimmed_mean\", \
                     \"krum\", \"multi_krum\", \"scaffold\"",
                    excerpt(other)
                ),
            ));
        }
    };
    let present = [
        ("server_learning_rate", s.server_learning_rate.is_some()),
        ("server_momentum", s.server_momentum.is_some()),
        ("beta1", s.beta1.is_some()),
        ("beta2", s.beta2.is_some()),
        ("tau", s.tau.is_some()),
        ("trim_fraction", s.trim_fraction.is_some()),
        ("faulty", s.faulty.is_some()),
        ("select", s.select.is_some()),
        ("control_dir", s.control_dir.is_some()),
    ];
    for (key, is_set) in present {
        r.ensure(
            !is_set || allowed.contains(&key),
            &format!("strategy.{key}"),
            format!("does not apply to kind = \"{kind}\""),
        )?;
    }
    let in_unit = |key: &str, v: f64| {
        r.ensure(
            (0.0..1.0).contains(&v),
            &format!("strategy.{key}"),
            format!("is {v}; allowed: 0 up to but not including 1"),
        )
    };
    let positive = |key: &str, v: f64| {
        r.ensure(
            v.is_finite() && v > 0.0,
            &format!("strategy.{key}"),
            format!("is {v}; allowed: a positive number"),
        )
    };
    let eta = s.server_learning_rate;
    let strategy = match kind {
        "fedavg" => Strategy::FedAvg,
        "median" => Strategy::Median,
        "fedavgm" => {
            let server_learning_rate = eta.unwrap_or(1.0);
            let momentum = s.server_momentum.unwrap_or(0.9);
            positive("server_learning_rate", server_learning_rate)?;
            in_unit("server_momentum", momentum)?;
            Strategy::FedAvgM {
                server_learning_rate,
                momentum,
            }
        }
        "fedadam" | "fedyogi" | "fedadagrad" => {
            let (fedopt, default_eta) = match kind {
                "fedadam" => (FedOptKind::Adam, 0.01),
                "fedyogi" => (FedOptKind::Yogi, 0.01),
                _ => (FedOptKind::Adagrad, 0.1),
            };
            let server_learning_rate = eta.unwrap_or(default_eta);
            let beta1 = s.beta1.unwrap_or(0.9);
            let beta2 = s.beta2.unwrap_or(0.99);
            let tau = s.tau.unwrap_or(1e-3);
            positive("server_learning_rate", server_learning_rate)?;
            in_unit("beta1", beta1)?;
            in_unit("beta2", beta2)?;
            positive("tau", tau)?;
            Strategy::FedOpt {
                kind: fedopt,
                server_learning_rate,
                beta1,
                beta2,
                tau,
            }
        }
        "scaffold" => {
            let server_learning_rate = eta.unwrap_or(1.0);
            positive("server_learning_rate", server_learning_rate)?;
            Strategy::Scaffold {
                server_learning_rate,
                population: num_sites,
            }
        }
        "trimmed_mean" => {
            let trim_fraction = s.trim_fraction.unwrap_or(0.1);
            r.ensure(
                (0.0..0.5).contains(&trim_fraction),
                "strategy.trim_fraction",
                format!("is {trim_fraction}; allowed: 0 up to but not including 0.5"),
            )?;
            Strategy::TrimmedMean { trim_fraction }
        }
        _ => {
            let faulty = s.faulty.unwrap_or(1);
            let select = if kind == "krum" {
                1
            } else {
                s.select.unwrap_or(num_sites.saturating_sub(faulty).max(1))
            };
            r.ensure(
                num_sites >= 2 * faulty + 3,
                "strategy.faulty",
                format!(
                    "is {faulty}; Krum needs at least 2 * faulty + 3 sites and {num_sites} are listed"
                ),
            )?;
            r.ensure(
                select >= 1 && select <= num_sites,
                "strategy.select",
                format!("is {select}; allowed: 1 to the number of sites ({num_sites})"),
            )?;
            Strategy::Krum { faulty, select }
        }
    };
    if let Some(bound) = s.max_examples {
        r.ensure(
            bound >= 1,
            "strategy.max_examples",
            "must be at least 1 when set",
        )?;
    }
    if let Some(bound) = s.max_update_norm {
        positive("max_update_norm", bound)?;
    }
    Ok((
        strategy,
        UpdatePolicy {
            max_update_norm: s.max_update_norm,
            max_examples: s.max_examples,
        },
    ))
}

fn check_secure_aggregation(
    r: &Reporter,
    sa: &RawSecureAggregation,
    strategy: &RawStrategy,
    num_sites: usize,
) -> Result<SecureAggregationSpec, ManifestError> {
    r.ensure(
        matches!(
            strategy.kind.as_str(),
            "fedavg" | "fedavgm" | "fedadam" | "fedyogi" | "fedadagrad"
        ),
        "strategy.kind",
        format!(
            "\"{}\" needs every update, but with secure aggregation the coordinator sees only \
             their mean; use \"fedavg\", \"fedavgm\", \"fedadam\", \"fedyogi\" or \"fedadagrad\"",
            strategy.kind
        ),
    )?;
    r.ensure(
        num_sites >= 3,
        "secure_aggregation",
        format!("needs at least 3 sites to hide any one of them, and {num_sites} are listed"),
    )?;
    r.ensure(
        sa.threshold > 0.5 && sa.threshold <= 1.0,
        "secure_aggregation.threshold",
        format!(
            "is {}; allowed: above 0.5 (a strict majority of a site's holders) up to 1",
            sa.threshold
        ),
    )?;
    if let Some(k) = sa.neighbours {
        r.ensure(
            k >= 2 && k % 2 == 0 && k < num_sites,
            "secure_aggregation.neighbours",
            format!(
                "is {k}; allowed: an even number from 2 to fewer than the number of sites ({num_sites}); \
                 leave it out to pair every site with every other"
            ),
        )?;
    }
    r.ensure(
        sa.clip.is_finite() && sa.clip > 0.0,
        "secure_aggregation.clip",
        format!("is {}; allowed: a positive number", sa.clip),
    )?;
    r.ensure(
        sa.max_examples >= 1,
        "secure_aggregation.max_examples",
        "must be at least 1",
    )?;
    r.ensure(
        sa.bits == 32 || sa.bits == 64,
        "secure_aggregation.bits",
        format!("is {}; allowed: 32 or 64", sa.bits),
    )?;
    let prg = match sa.prg.as_deref() {
        None => super::SecAggPrg::default(),
        Some("aes128-ctr") => super::SecAggPrg::Aes128Ctr,
        Some("chacha20") => super::SecAggPrg::ChaCha20,
        Some(other) => {
            return Err(r.err(
                "secure_aggregation.prg",
                format!(
                    "`{}` is not a known mask generator; allowed: \"aes128-ctr\", \"chacha20\"",
                    excerpt(other)
                ),
            ));
        }
    };
    let security = match sa.security.as_deref() {
        None => super::SecAggSecurity::default(),
        Some("active") => super::SecAggSecurity::Active,
        Some("honest-but-curious") => super::SecAggSecurity::HonestButCurious,
        Some(other) => {
            return Err(r.err(
                "secure_aggregation.security",
                format!(
                    "`{}` is not a known threat model; allowed: \"active\" (signed keys and a \
                     consistency check against a cheating coordinator, the default) or \
                     \"honest-but-curious\"",
                    excerpt(other)
                ),
            ));
        }
    };
    Ok(SecureAggregationSpec {
        threshold: sa.threshold,
        neighbours: sa.neighbours,
        clip: sa.clip,
        max_examples: sa.max_examples,
        bits: sa.bits,
        prg,
        security,
    })
}

fn check_privacy(
    r: &Reporter,
    p: &RawPrivacy,
    raw: &RawManifest,
    base: &Path,
) -> Result<PrivacySpec, ManifestError> {
    let mechanism = match p.mechanism.as_str() {
        "dp-sgd" => PrivacyMechanism::DpSgd,
        "client" => PrivacyMechanism::ClientLevel,
        "distributed" => PrivacyMechanism::Distributed,
        other => {
            return Err(r.err(
                "privacy.mechanism",
                format!(
                    "`{}` is not a known mechanism; allowed: \"dp-sgd\" (record-level DP-SGD \
                     in each site's trainer), \"client\" (client-level DP-FedAvg, noise added by \
                     the coordinator) or \"distributed\" (client-level DP-FedAvg, noise added by \
                     the sites under [secure_aggregation])",
                    excerpt(other)
                ),
            ));
        }
    };
    let positive = |key: &str, v: f64| {
        r.ensure(
            v.is_finite() && v > 0.0,
            &format!("privacy.{key}"),
            format!("is {v}; allowed: a positive number"),
        )
    };
    positive("clip", p.clip)?;
    positive("noise_multiplier", p.noise_multiplier)?;
    positive("epsilon_budget", p.epsilon_budget)?;
    r.ensure(
        p.delta > 0.0 && p.delta < 1.0,
        "privacy.delta",
        format!(
            "is {}; allowed: between 0 and 1, typically below 1 / the number of records",
            p.delta
        ),
    )?;
    match mechanism {
        // The trainer has per-example gradients for every model kind, the CNN included.
        PrivacyMechanism::DpSgd => {}
        PrivacyMechanism::ClientLevel => {
            r.ensure(
                raw.strategy.kind == "fedavg",
                "strategy.kind",
                "mechanism = \"client\" is DP-FedAvg: it replaces the strategy, so use kind = \"fedavg\"",
            )?;
            r.ensure(
                raw.secure_aggregation.is_none(),
                "secure_aggregation",
                "mechanism = \"client\" adds noise at the coordinator, which needs each update; \
                 with [secure_aggregation] use mechanism = \"distributed\" or \"dp-sgd\"",
            )?;
        }
        // The strategy is checked with [secure_aggregation]: it acts on the noisy mean only
        // (post-processing), so every strategy secure aggregation allows keeps the guarantee.
        PrivacyMechanism::Distributed => r.ensure(
            raw.secure_aggregation.is_some(),
            "privacy.mechanism",
            "\"distributed\" has each site add its share of the noise before secure aggregation \
             masks its update, so it needs a [secure_aggregation] table; add one, or use \
             mechanism = \"client\" (noise added by a trusted coordinator)",
        )?,
    }
    let mut budgets = Vec::with_capacity(raw.sites.len());
    for site in &raw.sites {
        let budget = site.epsilon_budget.unwrap_or(p.epsilon_budget);
        if !(budget.is_finite() && budget > 0.0) {
            return Err(r.err_at_value(
                "sites.epsilon_budget",
                &site.name,
                format!(
                    "site `{}`: epsilon_budget is {budget}; allowed: a positive number",
                    site.name
                ),
            ));
        }
        budgets.push(budget);
    }
    Ok(PrivacySpec {
        mechanism,
        clip: p.clip,
        noise_multiplier: p.noise_multiplier,
        delta: p.delta,
        budgets,
        ledger: r.path("privacy.ledger", base, &p.ledger)?,
    })
}
