//! `entente manifest`: sign a manifest's agreement terms with a site's key, and verify who
//! signed. The signature file's format is documented in
//! [`entente_proto::tls::signatures`] and the README.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use entente_core::manifest::Manifest;
use entente_proto::tls::signatures::{self, SignatureFile, Verdict};

/// Arguments of `entente manifest`.
#[derive(Args)]
pub struct ManifestArgs {
    #[command(subcommand)]
    command: ManifestCommand,
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Sign the manifest's agreement terms (its agreement digest, not the file's bytes) with a
    /// site's key, adding the signature to the signature file beside it.
    Sign {
        /// The manifest.
        manifest: PathBuf,
        /// The site's private key, as `entente keys issue SITE` wrote it (keys/sites/SITE.key).
        #[arg(long)]
        key: PathBuf,
        /// The site's certificate chain [default: the key's path with .pem].
        #[arg(long)]
        cert: Option<PathBuf>,
        /// The federation CA certificate [default: ca.pem in the folder above the key's].
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The signature file [default: beside the manifest, STEM.signatures.toml].
        #[arg(long, value_name = "FILE")]
        signatures: Option<PathBuf>,
    },
    /// List who signed the manifest and whether each signature verifies against the site's
    /// certificate issued by the federation CA; fails if any does not, or if a signature the
    /// manifest requires is missing.
    Verify {
        /// The manifest.
        manifest: PathBuf,
        /// The federation CA certificate [default: KEYS/ca.pem].
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Folder holding ca.pem.
        #[arg(long, default_value = "keys")]
        keys: PathBuf,
        /// The signature file [default: beside the manifest, STEM.signatures.toml].
        #[arg(long, value_name = "FILE")]
        signatures: Option<PathBuf>,
    },
}

/// Runs `entente manifest`.
pub fn run(args: ManifestArgs) -> Result<()> {
    match args.command {
        ManifestCommand::Sign {
            manifest,
            key,
            cert,
            ca,
            signatures,
        } => sign(&manifest, &key, cert, ca, signatures),
        ManifestCommand::Verify {
            manifest,
            ca,
            keys,
            signatures,
        } => verify(
            &manifest,
            &ca.unwrap_or_else(|| keys.join("ca.pem")),
            signatures,
        ),
    }
}

fn sign(
    manifest_path: &Path,
    key: &Path,
    cert: Option<PathBuf>,
    ca: Option<PathBuf>,
    file: Option<PathBuf>,
) -> Result<()> {
    let manifest = Manifest::load(manifest_path)?;
    let cert = cert.unwrap_or_else(|| key.with_extension("pem"));
    let ca = ca.unwrap_or_else(|| {
        key.parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
            .join("ca.pem")
    });
    let path = file.unwrap_or_else(|| signatures::signatures_path(manifest_path));
    let mut signed = SignatureFile::read(&path)?.unwrap_or_default();
    let signature = signatures::sign(&manifest, key, &cert, &ca)?;
    let (site, digest) = (signature.site.clone(), signature.digest.clone());
    let replaced = signed.add(signature);
    signed.write(&path)?;
    println!(
        "site `{site}` {} the agreement terms of {} (digest {digest}) in {} ({} signature{})",
        if replaced { "signed again" } else { "signed" },
        manifest_path.display(),
        path.display(),
        signed.signatures.len(),
        if signed.signatures.len() == 1 {
            ""
        } else {
            "s"
        },
    );
    Ok(())
}

fn verify(manifest_path: &Path, ca: &Path, file: Option<PathBuf>) -> Result<()> {
    let manifest = Manifest::load(manifest_path)?;
    let path = file.unwrap_or_else(|| signatures::signatures_path(manifest_path));
    let signed = SignatureFile::read(&path)?;
    println!(
        "{}: federation `{}`, agreement digest {}",
        manifest_path.display(),
        manifest.name,
        manifest.agreement_digest()
    );
    let checked = match &signed {
        Some(file) => signatures::verify(&manifest, file, ca)?,
        None => Vec::new(),
    };
    if signed.is_none() {
        println!("no signature file ({} not found)", path.display());
    } else if checked.is_empty() {
        println!("{}: no signatures", path.display());
    } else {
        println!(
            "{} (checked against the federation CA {}):",
            path.display(),
            ca.display()
        );
    }
    let width = checked.iter().map(|c| c.site.len()).max().unwrap_or(0);
    for c in &checked {
        let verdict = match &c.verdict {
            Verdict::Valid => "valid".to_string(),
            Verdict::Invalid(why) => format!("INVALID: {why}"),
        };
        println!(
            "  {:<width$}  {}  {verdict}",
            entente_core::text::printable(&c.site),
            entente_core::text::printable(&c.algorithm)
        );
    }
    let required = &manifest.required_signatures;
    if required.is_empty() {
        println!("required signatures: none (agreement.require_signatures is not set)");
    } else {
        println!("required signatures: {}", required.join(", "));
    }
    let invalid = checked.iter().filter(|c| !c.is_valid()).count();
    signatures::check_required(&manifest, signed.as_ref(), &path, ca)?;
    if invalid > 0 {
        bail!(
            "{invalid} of {} signatures do not verify (see above)",
            checked.len()
        );
    }
    Ok(())
}
