//! Reading PEM files and writing key-folder files.
//!
//! Private keys are created with mode 0600 from the start (never chmod-ed afterwards), and
//! new folders with mode 0700, so a key is never readable by others, not even briefly.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::TlsError;

/// Reads a PEM file and checks that it holds at least one PEM section.
///
/// The bytes are returned as they are, ready for `tonic::transport::Certificate::from_pem` or
/// `tonic::transport::Identity::from_pem`.
pub fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = read_file(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let begins = text
        .lines()
        .any(|l| l.trim_start().starts_with("-----BEGIN "));
    let ends = text
        .lines()
        .any(|l| l.trim_start().starts_with("-----END "));
    if !begins || !ends {
        let problem = if bytes.iter().all(u8::is_ascii_whitespace) {
            "the file is empty".to_owned()
        } else {
            "no -----BEGIN …----- / -----END …----- section found".to_owned()
        };
        return Err(TlsError::Pem {
            path: path.to_owned(),
            expected: "PEM data",
            problem,
        });
    }
    Ok(bytes)
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Reads a UTF-8 PEM file, naming it in the error.
pub(crate) fn read_text(path: &Path) -> Result<String, TlsError> {
    let bytes = read_pem(path)?;
    String::from_utf8(bytes).map_err(|_| TlsError::Pem {
        path: path.to_owned(),
        expected: "PEM data",
        problem: "the file is not UTF-8 text".to_owned(),
    })
}

/// Reads every certificate of a PEM file, in order; at least one must be there.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path)?;
    let pem_error = |problem: String| TlsError::Pem {
        path: path.to_owned(),
        expected: "PEM certificate",
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(
            "no -----BEGIN CERTIFICATE----- section found".to_owned(),
        ));
    }
    Ok(certs)
}

/// The first certificate of a PEM file, as DER.
pub(crate) fn first_cert(path: &Path) -> Result<Vec<u8>, TlsError> {
    // `load_certs` never returns an empty list.
    Ok(load_certs(path)?
        .into_iter()
        .next()
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default())
}

/// Reads the CA certificates of a PEM file, refusing any certificate that is not a CA.
///
/// This catches the easy mistake of passing a site's `sites/NAME.pem` (which ends with the CA
/// certificate but starts with the site's own) where `ca.pem` belongs.
pub(crate) fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        let (_, parsed) = X509Certificate::from_der(&cert).map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            expected: "CA certificate",
            problem: e.to_string(),
        })?;
        if !parsed.is_ca() {
            return Err(TlsError::NotCa {
                path: path.to_owned(),
                subject: parsed.subject().to_string(),
            });
        }
        roots.add(cert).map_err(|source| TlsError::Rustls {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        expected: "PEM private key",
        problem: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no -----BEGIN PRIVATE KEY----- section found".to_owned()
            }
            other => other.to_string(),
        },
    })
}

/// Whether anything (even a dangling symlink) is at `path`.
pub(crate) fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// How [`write`] treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Fail with [`TlsError::KeyExists`] (checked atomically at creation).
    Refuse,
    /// Replace it atomically (write a temporary file, then rename it over).
    Replace,
}

/// Whether a file holds a secret (mode 0600) or public data (default mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrecy {
    /// A private key: created with mode 0600.
    Private,
    /// A certificate: created with the default mode.
    Public,
}

/// Writes `contents` to `path`, creating its parent folders.
pub(crate) fn write(
    path: &Path,
    contents: &[u8],
    secrecy: Secrecy,
    existing: Existing,
) -> Result<(), TlsError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |error| TlsError::Write { path, error }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent).map_err(write_error(parent))?;
    }
    match existing {
        Existing::Refuse => match create_new(path, secrecy) {
            Ok(file) => write_all(file, contents).map_err(write_error(path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(TlsError::KeyExists {
                path: path.to_owned(),
            }),
            Err(e) => Err(write_error(path)(e)),
        },
        Existing::Replace => {
            let tmp = temporary_sibling(path);
            let result = create_new(&tmp, secrecy)
                .and_then(|file| write_all(file, contents))
                .and_then(|()| fs::rename(&tmp, path));
            if result.is_err() {
                // Best effort: the temporary file may not even exist.
                let _ = fs::remove_file(&tmp);
            }
            result.map_err(write_error(path))
        }
    }
}

fn write_all(mut file: fs::File, contents: &[u8]) -> io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

fn create_new(path: &Path, secrecy: Secrecy) -> io::Result<fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secrecy == Secrecy::Private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secrecy;
    options.open(path)
}

fn create_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_pem_rejects_empty_and_non_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "\n").unwrap();
        let err = read_pem(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.pem") && err.contains("empty"), "{err}");

        let junk = dir.path().join("junk.pem");
        fs::write(&junk, "hello").unwrap();
        let err = read_pem(&junk).unwrap_err().to_string();
        assert!(err.contains("junk.pem") && err.contains("BEGIN"), "{err}");

        let missing = dir.path().join("missing.pem");
        assert!(matches!(read_pem(&missing), Err(TlsError::Read { .. })));
    }

    #[test]
    fn replace_overwrites_and_refuse_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/x.key");
        write(&path, b"one", Secrecy::Private, Existing::Refuse).unwrap();
        let err = write(&path, b"two", Secrecy::Private, Existing::Refuse).unwrap_err();
        assert!(matches!(err, TlsError::KeyExists { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write(&path, b"three", Secrecy::Private, Existing::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_created_0600_even_when_replacing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.key");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write(&path, b"new", Secrecy::Private, Existing::Replace).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
