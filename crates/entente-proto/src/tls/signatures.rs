//! Signed manifests: a site's signature over the manifest's agreement digest, kept in a
//! signature file beside the manifest, and checked against the federation CA.
//!
//! What is signed is the canonical form of the validated manifest, not the file's bytes: the
//! message is [`MESSAGE_PREFIX`] followed by the agreement digest
//! ([`Manifest::agreement_digest`], lowercase hex), so comments, key order, formatting and each
//! site's local paths do not matter, and a signature made on one site's copy verifies on
//! another's. The key is the site's own TLS key (`sites/SITE.key`, ECDSA P-256, issued by
//! `entente keys issue SITE`); signing uses ring through rcgen's [`KeyPair`], and verification
//! uses webpki: the signer's certificate must chain to the federation CA (as a client
//! certificate, valid now), name the site (see [`super::site_name`]), and its public key must
//! verify the signature (ECDSA P-256 with SHA-256, ASN.1 DER signature).
//!
//! The signature file (`STEM.signatures.toml` beside `STEM.toml`, see [`signatures_path`]):
//!
//! ```toml
//! version = 1
//!
//! [[signatures]]
//! site = "site-a"                 # the signer, as the manifest and its certificate name it
//! algorithm = "ecdsa-p256-sha256" # the only algorithm there is
//! digest = "3f2a…"                # the agreement digest signed (64 lowercase hex digits)
//! signature = "3045…"             # the DER signature, hex
//! certificate = """               # the signer's certificate chain (sites/SITE.pem)
//! -----BEGIN CERTIFICATE-----
//! …
//! """
//! ```
//!
//! A site appears at most once: signing again replaces its entry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use entente_core::manifest::Manifest;
use entente_core::text::{excerpt, printable};
use rcgen::{KeyPair, SigningKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::config::provider;
use super::error::TlsError;
use super::{files, peer};

/// The signature algorithm of every entry: ECDSA over P-256 with SHA-256, DER-encoded.
pub const ALGORITHM: &str = "ecdsa-p256-sha256";

/// The version of the signature file's layout.
pub const FORMAT_VERSION: u32 = 1;

/// What precedes the agreement digest in the signed message (domain separation: a site's key
/// also signs TLS handshakes).
pub const MESSAGE_PREFIX: &str = "entente manifest agreement v1\n";

/// Largest signature file read (about 10,000 sites' entries).
pub const MAX_SIGNATURE_FILE_BYTES: u64 = 32 << 20;

/// Longest signature accepted, in bytes (a P-256 DER signature has at most 72).
const MAX_SIGNATURE_BYTES: usize = 512;

/// Why signing, reading or verifying manifest signatures failed. Every message names the file
/// and what to do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature file could not be read.
    #[error("{0}")]
    Read(#[from] entente_core::files::FileError),
    /// The signature file is not one `entente manifest sign` writes.
    #[error(
        "{} is not a valid manifest signature file: {message}; sign again with `entente manifest \
         sign MANIFEST --key keys/sites/SITE.key` (or remove the broken entry)",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line when known.
        message: String,
    },
    /// The signature file could not be written.
    #[error("cannot write {}: {source}; check that its folder is writable", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The key or certificate cannot sign for a site of this manifest.
    #[error("cannot sign with {}: {reason}", path.display())]
    Signer {
        /// The key or certificate file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The CA or a certificate file could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The manifest requires signatures that are missing or do not verify.
    #[error(
        "the manifest requires signatures (agreement.require_signatures) from {}; missing: {}. \
         Each of these sites signs its copy with `entente manifest sign MANIFEST --key \
         keys/sites/SITE.key`, adding its entry to {}",
        required.join(", "),
        missing.iter().map(|(site, why)| format!("{site} ({why})")).collect::<Vec<_>>().join("; "),
        file.display()
    )]
    Missing {
        /// The signature file looked at.
        file: PathBuf,
        /// Every site whose signature is required.
        required: Vec<String>,
        /// The sites whose signature is missing or invalid, each with why.
        missing: Vec<(String, String)>,
    },
}

impl SignatureError {
    /// The sites whose required signature is missing or invalid (empty for other errors).
    pub fn missing_sites(&self) -> Vec<&str> {
        match self {
            Self::Missing { missing, .. } => missing.iter().map(|(s, _)| s.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

/// The signature file of the manifest at `manifest`: `STEM.signatures.toml` in its folder
/// (`federation.toml` gives `federation.signatures.toml`).
pub fn signatures_path(manifest: &Path) -> PathBuf {
    let stem = manifest
        .file_stem()
        .map_or_else(|| "manifest".into(), |s| s.to_string_lossy().into_owned());
    manifest.with_file_name(format!("{stem}.signatures.toml"))
}

/// The message a site signs for the manifest with agreement digest `digest`.
pub fn signed_message(digest: &str) -> Vec<u8> {
    format!("{MESSAGE_PREFIX}{digest}").into_bytes()
}

/// One site's signature, as the file stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signing site.
    pub site: String,
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// The agreement digest signed (hex).
    pub digest: String,
    /// The DER signature over [`signed_message`] of `digest`, hex.
    pub signature: String,
    /// The signer's certificate chain, PEM (the site certificate first).
    pub certificate: String,
}

/// A signature file: every site's signature of one manifest's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// The layout's version, [`FORMAT_VERSION`].
    pub version: u32,
    /// The signatures, one per site.
    #[serde(default)]
    pub signatures: Vec<Signature>,
}

impl Default for SignatureFile {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            signatures: Vec::new(),
        }
    }
}

impl SignatureFile {
    /// Reads the signature file at `path`; `None` when there is no file there.
    pub fn read(path: &Path) -> Result<Option<Self>, SignatureError> {
        if !files::exists(path) {
            return Ok(None);
        }
        let bytes = entente_core::files::read_bounded(
            path,
            MAX_SIGNATURE_FILE_BYTES,
            "a manifest signature file",
        )?;
        let text = String::from_utf8(bytes).map_err(|e| SignatureError::Malformed {
            path: path.to_owned(),
            message: format!(
                "not UTF-8 text (at byte {}); it is TOML",
                e.utf8_error().valid_up_to()
            ),
        })?;
        Self::parse(&text, path).map(Some)
    }

    /// Parses signature-file text; `path` names it in errors. Checks the layout (version,
    /// known keys, one entry per site, hex fields), not the signatures.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SignatureError> {
        let malformed = |message: String| SignatureError::Malformed {
            path: path.to_owned(),
            message,
        };
        let file: Self = toml::from_str(text).map_err(|e| {
            let what = excerpt(e.message().trim()).replace('\n', "; ");
            match e.span() {
                Some(span) => {
                    let before = &text.as_bytes()[..span.start.min(text.len())];
                    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                    malformed(format!("line {line}: {what}"))
                }
                None => malformed(what),
            }
        })?;
        if file.version != FORMAT_VERSION {
            return Err(malformed(format!(
                "version is {}; this entente reads version {FORMAT_VERSION}",
                file.version
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in file.signatures.iter().enumerate() {
            let entry = format!(
                "signature {} (site `{}`)",
                i + 1,
                printable(&excerpt(&s.site))
            );
            if !seen.insert(s.site.as_str()) {
                return Err(malformed(format!(
                    "{entry}: the site signed twice; keep one entry per site"
                )));
            }
            if !is_lowercase_hex(&s.digest, 64) {
                return Err(malformed(format!(
                    "{entry}: digest is not 64 lowercase hexadecimal digits"
                )));
            }
            if s.signature.is_empty() || from_hex(&s.signature, MAX_SIGNATURE_BYTES).is_none() {
                return Err(malformed(format!(
                    "{entry}: signature is not hexadecimal of at most {MAX_SIGNATURE_BYTES} bytes"
                )));
            }
        }
        Ok(file)
    }

    /// The file as TOML, with a header saying what it is.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# Signatures of a manifest's agreement terms: `entente manifest sign` adds one,\n\
             # `entente manifest verify` checks them against the federation CA.\n{body}"
        )
    }

    /// Writes the file to `path`, replacing any file there at once (never half-written).
    pub fn write(&self, path: &Path) -> Result<(), SignatureError> {
        files::write(
            path,
            self.to_toml().as_bytes(),
            files::Secrecy::Public,
            files::Existing::Replace,
        )
        .map_err(|e| match e {
            TlsError::Write { path, error } => SignatureError::Write {
                path,
                source: error,
            },
            other => SignatureError::Tls(other),
        })
    }

    /// Adds `signature`, replacing the entry of the same site; whether one was replaced.
    pub fn add(&mut self, signature: Signature) -> bool {
        match self
            .signatures
            .iter_mut()
            .find(|s| s.site == signature.site)
        {
            Some(existing) => {
                *existing = signature;
                true
            }
            None => {
                self.signatures.push(signature);
                false
            }
        }
    }
}

/// Signs `manifest`'s agreement digest with the site key `key_pem`, whose certificate chain is
/// `cert_pem`, checking first that the certificate was issued by the federation CA `ca_pem`
/// to a site of the manifest, and that the key belongs to it.
pub fn sign(
    manifest: &Manifest,
    key_pem: &Path,
    cert_pem: &Path,
    ca_pem: &Path,
) -> Result<Signature, SignatureError> {
    let signer = |path: &Path, reason: String| SignatureError::Signer {
        path: path.to_owned(),
        reason,
    };
    let key_text = files::read_text(key_pem)?;
    let key = KeyPair::from_pem(&key_text).map_err(|e| {
        signer(
            key_pem,
            format!("it is not a usable private key ({e}); pass a site's .key written by `entente keys issue`"),
        )
    })?;
    if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(signer(
            key_pem,
            format!(
                "it is not an ECDSA P-256 key; manifest signatures are {ALGORITHM}, the keys \
                 `entente keys issue` writes"
            ),
        ));
    }
    let certificate = files::read_text(cert_pem)?.trim().to_string();
    let chain = chain_of(&certificate).map_err(|reason| signer(cert_pem, reason))?;
    let site = verify_chain(ca_pem, &chain).map_err(|reason| signer(cert_pem, reason))?;
    if !manifest.sites.contains(&site) {
        return Err(signer(
            cert_pem,
            format!(
                "its site `{site}` is not a site of federation `{}`; sign with the key of one \
                 of its [[sites]]",
                manifest.name
            ),
        ));
    }
    let digest = manifest.agreement_digest();
    let message = signed_message(&digest);
    let der = key.sign(&message).map_err(|e| {
        signer(
            key_pem,
            format!("signing failed ({e}); this is a bug in entente, please report it"),
        )
    })?;
    // The key must be the certificate's: otherwise the entry would never verify.
    verify_signature(&chain[0], &message, &der).map_err(|_| {
        signer(
            key_pem,
            format!(
                "the key does not belong to the certificate {}; use the .key and .pem that \
                 `entente keys issue {site}` wrote together",
                cert_pem.display()
            ),
        )
    })?;
    Ok(Signature {
        site,
        algorithm: ALGORITHM.into(),
        digest,
        signature: to_hex(&der),
        certificate,
    })
}

/// Whether one signature verified, and if not why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The signature is the site's, over this manifest's terms, with a certificate the
    /// federation CA issued to that site.
    Valid,
    /// It does not verify: why, and what to do.
    Invalid(String),
}

/// One entry of a signature file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The site the entry says signed.
    pub site: String,
    /// The entry's algorithm.
    pub algorithm: String,
    /// The entry's signature (hex).
    pub signature: String,
    /// Whether it verified.
    pub verdict: Verdict,
}

impl Checked {
    /// Whether the signature verified.
    pub fn is_valid(&self) -> bool {
        self.verdict == Verdict::Valid
    }
}

/// Checks every signature of `file` against `manifest`'s agreement digest and the federation
/// CA `ca_pem`, in file order. Fails only when the CA cannot be read; each entry's own
/// problems are in its [`Verdict`].
pub fn verify(
    manifest: &Manifest,
    file: &SignatureFile,
    ca_pem: &Path,
) -> Result<Vec<Checked>, SignatureError> {
    // Read once up front, so that a missing or wrong CA file is an error of its own.
    files::load_roots(ca_pem)?;
    let digest = manifest.agreement_digest();
    let message = signed_message(&digest);
    Ok(file
        .signatures
        .iter()
        .map(|s| Checked {
            site: s.site.clone(),
            algorithm: s.algorithm.clone(),
            signature: s.signature.clone(),
            verdict: match check_one(manifest, &digest, &message, s, ca_pem) {
                Ok(()) => Verdict::Valid,
                // The reason quotes the file: escaped, so it cannot forge lines on a terminal.
                Err(reason) => Verdict::Invalid(printable(&reason).into_owned()),
            },
        })
        .collect())
}

fn check_one(
    manifest: &Manifest,
    digest: &str,
    message: &[u8],
    s: &Signature,
    ca_pem: &Path,
) -> Result<(), String> {
    if s.algorithm != ALGORITHM {
        return Err(format!(
            "algorithm `{}` is not supported; entente signs with \"{ALGORITHM}\"",
            excerpt(&s.algorithm)
        ));
    }
    if !manifest.sites.contains(&s.site) {
        return Err(format!(
            "`{}` is not a site of this manifest",
            excerpt(&s.site)
        ));
    }
    if s.digest != digest {
        return Err(format!(
            "it signs other terms (agreement digest {}…, this manifest's is {}…): the manifest \
             changed after `{}` signed it; compare the copies, then sign again",
            excerpt(&s.digest.chars().take(12).collect::<String>()),
            &digest[..12],
            excerpt(&s.site)
        ));
    }
    let chain = chain_of(&s.certificate)?;
    let site = verify_chain(ca_pem, &chain)?;
    if site != s.site {
        return Err(format!(
            "its certificate is site `{site}`'s, not `{}`'s",
            s.site
        ));
    }
    let der = from_hex(&s.signature, MAX_SIGNATURE_BYTES).ok_or("the signature is not hex")?;
    verify_signature(&chain[0], message, &der).map_err(|_| {
        format!(
            "the signature does not verify with `{}`'s certificate: it was not made with that \
             site's key over these terms; sign again",
            s.site
        )
    })
}

/// Checks the signatures of `file` (the signature file at `path`, `None` if there is none)
/// against `manifest.required_signatures`: every required site must have a valid one. Returns
/// every valid signature (required or not), for the audit log.
pub fn check_required(
    manifest: &Manifest,
    file: Option<&SignatureFile>,
    path: &Path,
    ca_pem: &Path,
) -> Result<Vec<Checked>, SignatureError> {
    let checked = match file {
        Some(file) => verify(manifest, file, ca_pem)?,
        None => Vec::new(),
    };
    let missing: Vec<(String, String)> = manifest
        .required_signatures
        .iter()
        .filter_map(|site| match checked.iter().find(|c| &c.site == site) {
            None if file.is_none() => Some((site.clone(), "no signature file".to_string())),
            None => Some((site.clone(), "no signature".to_string())),
            Some(Checked {
                verdict: Verdict::Invalid(why),
                ..
            }) => Some((site.clone(), format!("invalid: {why}"))),
            Some(_) => None,
        })
        .collect();
    if !missing.is_empty() {
        return Err(SignatureError::Missing {
            file: path.to_owned(),
            required: manifest.required_signatures.clone(),
            missing,
        });
    }
    Ok(checked.into_iter().filter(Checked::is_valid).collect())
}

/// Reads the signature file at `path` (none there counts as no signatures) and checks it with
/// [`check_required`]: what the coordinator does before a run and a node before it trains.
pub fn read_and_check(
    manifest: &Manifest,
    path: &Path,
    ca_pem: &Path,
) -> Result<Vec<Checked>, SignatureError> {
    let file = SignatureFile::read(path)?;
    check_required(manifest, file.as_ref(), path, ca_pem)
}

/// What `serve` and every node check before a run: the signature file at `path` if one is
/// configured ([`read_and_check`]), else only that the manifest requires no signature.
pub fn check_before_run(
    manifest: &Manifest,
    path: Option<&Path>,
    ca_pem: &Path,
) -> Result<Vec<Checked>, SignatureError> {
    match path {
        Some(path) => read_and_check(manifest, path, ca_pem),
        None => check_required(manifest, None, Path::new("(no signature file)"), ca_pem),
    }
}

/// The certificates of PEM text, the site's first.
fn chain_of(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("its certificate is not PEM ({e})"))?;
    if chain.is_empty() {
        return Err("it holds no -----BEGIN CERTIFICATE----- section".into());
    }
    Ok(chain)
}

/// Verifies that `chain` is a site certificate (with its chain) issued by the CA in
/// `ca_pem` and valid now; the site it names.
fn verify_chain(ca_pem: &Path, chain: &[CertificateDer<'static>]) -> Result<String, String> {
    let (leaf, rest) = chain.split_first().ok_or("no certificate")?;
    let site = peer::site_name(leaf).map_err(|e| e.to_string())?;
    let roots = Arc::new(files::load_roots(ca_pem).map_err(|e| e.to_string())?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| format!("cannot verify with {}: {e}", ca_pem.display()))?;
    verifier
        .verify_client_cert(leaf, rest, UnixTime::now())
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            ) => format!(
                "the certificate of `{site}` was not issued by the federation CA in {}",
                ca_pem.display()
            ),
            other => format!("the certificate of `{site}` is not valid now: {other}"),
        })?;
    Ok(site)
}

/// Verifies an ECDSA P-256 SHA-256 signature with the public key of certificate `leaf`.
pub(super) fn verify_signature(
    leaf: &CertificateDer<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(leaf)?;
    cert.verify_signature(webpki::ring::ECDSA_P256_SHA256, message, signature)
}

fn is_lowercase_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hex `text`, if it is hex of at most `max` bytes.
fn from_hex(text: &str, max: usize) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() / 2 > max {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| (b as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}
