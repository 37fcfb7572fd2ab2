//! A node's own records: read from the site's own file or folder, checked against the
//! manifest's data schema, and split into training examples and the site's own test split.
//! Nothing is partitioned and no global test set is cut: every record the site holds trains,
//! less its `data.site_test_fraction`.

use std::path::{Path, PathBuf};

use entente_core::manifest::{DataFormat, Manifest};

use crate::data::{self, Dataset, Split, Standardization};
use crate::simulation::{self, PrepareError, fit_schema};
use crate::site::LocalSite;

/// The records of one site, as its node trains on them.
#[derive(Debug)]
pub struct SiteData {
    /// Where they were read from.
    pub path: PathBuf,
    /// Training examples.
    pub train: Dataset,
    /// The site's own test split (federated evaluation).
    pub test: Dataset,
}

/// Reads site `index`'s own records from `path` (else its `[[sites]] data`, else `data.path`):
/// IDX folders give their `train-*` files, CSV tables every row. The manifest must state the
/// data schema, and the file must fit it.
pub fn load(
    manifest: &Manifest,
    index: usize,
    path: Option<&Path>,
) -> Result<SiteData, PrepareError> {
    let path = path.map_or_else(
        || manifest.site_data_path(index).to_path_buf(),
        Path::to_path_buf,
    );
    let Some(schema) = &manifest.data.schema else {
        return Err(PrepareError::Mismatch(
            "the manifest states no data schema, so this node cannot check its records; add \
             data.shape (images) or data.features (tables), and data.classes"
                .into(),
        ));
    };
    let mut all = match &manifest.data.format {
        DataFormat::Idx => {
            data::load_idx_dir(&path, Split::Train, &simulation::data_limits(manifest))?
        }
        DataFormat::Csv { .. } => simulation::read_csv(manifest, &path)?,
    };
    fit_schema(&mut all, schema, &path)?;
    if let Some(limit) = manifest.data.limit
        && limit < all.len()
    {
        let first: Vec<usize> = (0..limit).collect();
        all = all.subset(&first);
    }
    // The same seeded order and split as a simulated site with the same records gets.
    let (test_idx, train_idx) =
        simulation::own_test_split(manifest, index, (0..all.len()).collect());
    if train_idx.is_empty() {
        return Err(PrepareError::Mismatch(format!(
            "{}: holds no example to train on",
            path.display()
        )));
    }
    let (mut train, mut test) = (all.subset(&train_idx), all.subset(&test_idx));
    if let DataFormat::Csv {
        standardize: true, ..
    } = manifest.data.format
    {
        // The site's own statistics: no figure about other sites' records is needed.
        let z = Standardization::fit(&train)?;
        z.apply(&mut train)?;
        if !test.is_empty() {
            z.apply(&mut test)?;
        }
    }
    Ok(SiteData { path, train, test })
}

/// Site `index`'s participant on its own records ([`load`]), training the manifest's model.
pub fn local_site(
    manifest: &Manifest,
    index: usize,
    path: Option<&Path>,
) -> Result<LocalSite, PrepareError> {
    let name = manifest
        .sites
        .get(index)
        .ok_or_else(|| PrepareError::Mismatch(format!("the manifest has no site {index}")))?;
    let own = load(manifest, index, path)?;
    let spec = simulation::model_spec(manifest, &own.train)?;
    Ok(LocalSite::new(name.clone(), spec, own.train, own.test))
}
