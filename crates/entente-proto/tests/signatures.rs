//! Signed manifests: sites sign a manifest's agreement terms with the keys the federation CA
//! issued them (`init_ca`/`issue_site`), and signatures are checked against that CA. Each
//! test issues a throw-away CA; a changed term, another CA's key, another site's certificate
//! or a broken signature file must each fail, with an error that says what is wrong.

use std::fs;
use std::path::{Path, PathBuf};

use entente_core::manifest::Manifest;
use entente_proto::tls::signatures::{
    self, ALGORITHM, FORMAT_VERSION, MESSAGE_PREFIX, Signature, SignatureError, SignatureFile,
    Verdict,
};
use entente_proto::tls::{KeyDir, init_ca, issue_coordinator, issue_site};
use rcgen::{KeyPair, SigningKey};

const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

/// Three sites; `agreement` is the `[agreement]` table's body (empty: no table).
fn manifest_text(rounds: u32, agreement: &str) -> String {
    let mut text = format!(
        r#"
[federation]
name = "signed"
seed = 7

[data]
format = "csv"
path = "all.csv"
features = 4
classes = 2

[[sites]]
name = "site-a"
data = "site-a.csv"

[[sites]]
name = "site-b"
data = "site-b.csv"

[[sites]]
name = "site-c"
data = "site-c.csv"

[model]
kind = "mlp"
hidden = [8]

[training]
rounds = {rounds}
learning_rate = 0.05

[selection]
min_sites = 2
"#
    );
    if !agreement.is_empty() {
        text.push_str(&format!("\n[agreement]\n{agreement}\n"));
    }
    text
}

fn parse(text: &str) -> Manifest {
    Manifest::parse(text, "federation.toml", Path::new("/base")).unwrap()
}

/// The manifest every site signs here: every signature required.
fn manifest() -> Manifest {
    parse(&manifest_text(5, "require_signatures = \"all\""))
}

/// A key folder with a CA for federation "signed", the three sites and a coordinator.
struct Keys {
    _tmp: tempfile::TempDir,
    dir: KeyDir,
}

impl Keys {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = KeyDir::new(tmp.path().join("keys"));
        init_ca(&dir, "signed").unwrap();
        for site in SITES {
            issue_site(&dir, site, false).unwrap();
        }
        issue_coordinator(&dir, &["127.0.0.1".to_owned()], false).unwrap();
        Self { _tmp: tmp, dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.ca_cert()
    }

    /// `site`'s signature of `manifest`, checked against this folder's CA.
    fn sign(&self, manifest: &Manifest, site: &str) -> Signature {
        signatures::sign(
            manifest,
            &self.dir.site_key(site),
            &self.dir.site_cert(site),
            &self.ca(),
        )
        .unwrap()
    }

    /// A signature file with the signatures of `sites`.
    fn signed_by(&self, manifest: &Manifest, sites: &[&str]) -> SignatureFile {
        let mut file = SignatureFile::default();
        for site in sites {
            assert!(!file.add(self.sign(manifest, site)));
        }
        file
    }
}

/// Each entry's site and verdict.
fn verdicts(manifest: &Manifest, file: &SignatureFile, ca: &Path) -> Vec<(String, Verdict)> {
    signatures::verify(manifest, file, ca)
        .unwrap()
        .into_iter()
        .map(|c| (c.site, c.verdict))
        .collect()
}

/// The one entry's reason for being invalid.
fn invalid_because(manifest: &Manifest, signature: Signature, ca: &Path) -> String {
    let file = SignatureFile {
        version: FORMAT_VERSION,
        signatures: vec![signature],
    };
    match signatures::verify(manifest, &file, ca)
        .unwrap()
        .remove(0)
        .verdict
    {
        Verdict::Invalid(why) => why,
        Verdict::Valid => panic!("the signature verified"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `site`'s key's raw signature of `message`.
fn raw_sign(keys: &Keys, site: &str, message: &[u8]) -> String {
    let key = KeyPair::from_pem(&fs::read_to_string(keys.dir.site_key(site)).unwrap()).unwrap();
    hex(&key.sign(message).unwrap())
}

#[test]
fn a_signature_round_trips_through_the_file_and_verifies() {
    let keys = Keys::new();
    let m = manifest();
    let s = keys.sign(&m, "site-a");
    assert_eq!(s.site, "site-a");
    assert_eq!(s.algorithm, ALGORITHM);
    assert_eq!(s.digest, m.agreement_digest());
    assert!(s.certificate.starts_with("-----BEGIN CERTIFICATE-----"));

    let dir = tempfile::tempdir().unwrap();
    let path = signatures::signatures_path(&dir.path().join("federation.toml"));
    assert_eq!(path, dir.path().join("federation.signatures.toml"));
    assert!(SignatureFile::read(&path).unwrap().is_none());
    let mut file = keys.signed_by(&m, &["site-a", "site-b"]);
    file.write(&path).unwrap();
    let read = SignatureFile::read(&path).unwrap().unwrap();
    assert_eq!(read, file);
    assert_eq!(
        verdicts(&m, &read, &keys.ca()),
        vec![
            ("site-a".to_string(), Verdict::Valid),
            ("site-b".to_string(), Verdict::Valid)
        ]
    );

    // Signing again replaces the site's entry rather than adding one.
    assert!(file.add(keys.sign(&m, "site-a")));
    assert_eq!(file.signatures.len(), 2);
    assert!(!file.add(keys.sign(&m, "site-c")));
    file.write(&path).unwrap();
    let checked = signatures::read_and_check(&m, &path, &keys.ca()).unwrap();
    assert_eq!(
        checked.iter().map(|c| c.site.as_str()).collect::<Vec<_>>(),
        SITES
    );
    assert!(checked.iter().all(|c| c.is_valid()));
}

#[test]
fn a_changed_term_fails_verification() {
    let keys = Keys::new();
    let m = manifest();
    let file = keys.signed_by(&m, &["site-a", "site-b", "site-c"]);
    let changed = parse(&manifest_text(6, "require_signatures = \"all\""));
    assert_ne!(changed.agreement_digest(), m.agreement_digest());
    for (site, verdict) in verdicts(&changed, &file, &keys.ca()) {
        match verdict {
            Verdict::Invalid(why) => assert!(
                why.contains("signs other terms") && why.contains(&site),
                "{why}"
            ),
            Verdict::Valid => panic!("{site}'s signature verified for other terms"),
        }
    }
    let err = signatures::check_required(&changed, Some(&file), Path::new("f.toml"), &keys.ca())
        .unwrap_err();
    assert_eq!(err.missing_sites(), SITES);
    assert!(
        err.to_string().contains("invalid: it signs other terms"),
        "{err}"
    );

    // Dropping the requirement is a change of terms too: the signatures do not carry over.
    let relaxed = parse(&manifest_text(5, ""));
    assert!(matches!(
        verdicts(&relaxed, &file, &keys.ca())[0].1,
        Verdict::Invalid(_)
    ));

    // The digest field rewritten to the new terms: the signature itself no longer verifies.
    let mut forged = keys.sign(&m, "site-a");
    forged.digest = changed.agreement_digest();
    let why = invalid_because(&changed, forged, &keys.ca());
    assert!(why.contains("does not verify"), "{why}");
}

#[test]
fn a_reformatted_manifest_with_the_same_terms_still_verifies() {
    let keys = Keys::new();
    let m = manifest();
    let file = keys.signed_by(&m, &["site-a", "site-b", "site-c"]);
    // Comments, blank lines, whitespace, key and table order, inline quoting, and each
    // site's own data path: none of it is a term.
    let reformatted = r#"
# The same federation, written by someone else.
[training]
learning_rate   = 0.050
rounds = 5

[federation]
seed = 7     # the seed
name = 'signed'

[agreement]
require_signatures = "all"

[model]
hidden = [ 8 ]
kind = "mlp"

[data]
classes = 2
features = 4
format = "csv"
path = "all.csv"

[[sites]]
name = "site-a"
data = "/srv/elsewhere/a.csv"

[[sites]]
data = "site-b.csv"
name = "site-b"

[[sites]]
name = "site-c"
data = "site-c.csv"

[selection]
min_sites = 2
"#;
    let other = parse(reformatted);
    assert_ne!(other.source, m.source);
    assert_eq!(other.agreement_digest(), m.agreement_digest());
    assert!(
        verdicts(&other, &file, &keys.ca())
            .iter()
            .all(|(_, v)| *v == Verdict::Valid)
    );
    assert!(
        signatures::check_required(&other, Some(&file), Path::new("f.toml"), &keys.ca()).is_ok()
    );
}

#[test]
fn a_key_and_certificate_of_another_ca_do_not_count() {
    let ours = Keys::new();
    // Another CA of a federation of the same name, with sites of the same names.
    let theirs = Keys::new();
    let m = manifest();

    // Signing refuses a certificate our CA did not issue.
    let err = signatures::sign(
        &m,
        &theirs.dir.site_key("site-a"),
        &theirs.dir.site_cert("site-a"),
        &ours.ca(),
    )
    .unwrap_err();
    assert!(matches!(err, SignatureError::Signer { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("was not issued by the federation CA"),
        "{err}"
    );

    // Signed under their CA, checked under ours: invalid, and the requirement is not met.
    let file = theirs.signed_by(&m, &["site-a"]);
    assert_eq!(
        verdicts(&m, &file, &theirs.ca())[0].1,
        Verdict::Valid,
        "it is a good signature under its own CA"
    );
    let why = invalid_because(&m, file.signatures[0].clone(), &ours.ca());
    assert!(why.contains("was not issued by the federation CA"), "{why}");
    let err =
        signatures::check_required(&m, Some(&file), Path::new("f.toml"), &ours.ca()).unwrap_err();
    assert!(err.missing_sites().contains(&"site-a"), "{err}");

    // Our site certificate with their site key: the signature is not the certificate's.
    let mut mixed = ours.sign(&m, "site-a");
    mixed.signature = file.signatures[0].signature.clone();
    let why = invalid_because(&m, mixed, &ours.ca());
    assert!(why.contains("does not verify"), "{why}");
}

#[test]
fn one_sites_certificate_cannot_sign_for_another() {
    let keys = Keys::new();
    let m = manifest();
    let by_b = keys.sign(&m, "site-b");
    assert_eq!(by_b.site, "site-b", "the signer is the certificate's site");

    // Site b's signature and certificate, entered as site a's.
    let mut as_a = by_b.clone();
    as_a.site = "site-a".into();
    let why = invalid_because(&m, as_a.clone(), &keys.ca());
    assert!(why.contains("site `site-b`'s, not `site-a`'s"), "{why}");
    let file = SignatureFile {
        version: FORMAT_VERSION,
        signatures: vec![as_a],
    };
    let required_a = parse(&manifest_text(5, "require_signatures = [\"site-a\"]"));
    let as_a_for_required = SignatureFile {
        signatures: vec![Signature {
            digest: required_a.agreement_digest(),
            ..file.signatures[0].clone()
        }],
        ..file
    };
    let err = signatures::check_required(
        &required_a,
        Some(&as_a_for_required),
        Path::new("f.toml"),
        &keys.ca(),
    )
    .unwrap_err();
    assert_eq!(err.missing_sites(), vec!["site-a"]);

    // Site a's certificate with a signature made by site b's key over the same terms.
    let mut a = keys.sign(&m, "site-a");
    a.signature = raw_sign(
        &keys,
        "site-b",
        &signatures::signed_message(&m.agreement_digest()),
    );
    let why = invalid_because(&m, a, &keys.ca());
    assert!(
        why.contains("does not verify with `site-a`'s certificate"),
        "{why}"
    );

    // Signing with one site's key and another's certificate is refused up front.
    let err = signatures::sign(
        &m,
        &keys.dir.site_key("site-b"),
        &keys.dir.site_cert("site-a"),
        &keys.ca(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");

    // The coordinator's key is not a site's.
    let err = signatures::sign(
        &m,
        &keys.dir.coordinator_key(),
        &keys.dir.coordinator_cert(),
        &keys.ca(),
    )
    .unwrap_err();
    assert!(matches!(err, SignatureError::Signer { .. }), "{err:?}");
}

#[test]
fn only_the_prefixed_digest_is_signed() {
    let keys = Keys::new();
    let m = manifest();
    let digest = m.agreement_digest();
    assert_eq!(
        signatures::signed_message(&digest),
        format!("{MESSAGE_PREFIX}{digest}").into_bytes()
    );
    // A signature of the bare digest (what the key might sign elsewhere) does not count.
    let mut bare = keys.sign(&m, "site-a");
    bare.signature = raw_sign(&keys, "site-a", digest.as_bytes());
    let why = invalid_because(&m, bare, &keys.ca());
    assert!(why.contains("does not verify"), "{why}");
    // A signature of the prefixed digest made by hand does.
    let mut by_hand = keys.sign(&m, "site-a");
    by_hand.signature = raw_sign(&keys, "site-a", &signatures::signed_message(&digest));
    let file = SignatureFile {
        version: FORMAT_VERSION,
        signatures: vec![by_hand],
    };
    assert_eq!(verdicts(&m, &file, &keys.ca())[0].1, Verdict::Valid);
}

/// `text` parsed as a signature file: the Malformed error's message.
fn malformed(text: &str) -> String {
    match SignatureFile::parse(text, Path::new("x.signatures.toml")) {
        Err(e @ SignatureError::Malformed { .. }) => {
            let shown = e.to_string();
            assert!(shown.contains("x.signatures.toml"), "{shown}");
            shown
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn a_malformed_signature_file_is_refused_saying_what_is_wrong() {
    let keys = Keys::new();
    let m = manifest();
    let good = keys.signed_by(&m, &["site-a"]).to_toml();
    assert!(SignatureFile::parse(&good, Path::new("x")).is_ok());

    let msg = malformed("this is = = not toml\n");
    assert!(msg.contains("line 1"), "{msg}");
    let msg = malformed(&good.replace("version = 1", "version = 2"));
    assert!(msg.contains("version is 2"), "{msg}");
    let msg = malformed(&good.replace("version = 1", "version = \"1\""));
    assert!(msg.contains("line"), "{msg}");
    let msg = malformed(&good.replace("version = 1\n", ""));
    assert!(msg.contains("version"), "{msg}");
    let msg = malformed(&good.replace("algorithm =", "colour = \"red\"\nalgorithm ="));
    assert!(msg.contains("colour"), "{msg}");

    let s = &keys.signed_by(&m, &["site-a"]).signatures[0];
    let with = |field: &str, value: &str| {
        let mut file = SignatureFile::default();
        let mut entry = s.clone();
        match field {
            "digest" => entry.digest = value.into(),
            "signature" => entry.signature = value.into(),
            "certificate" => entry.certificate = value.into(),
            "algorithm" => entry.algorithm = value.into(),
            "site" => entry.site = value.into(),
            _ => unreachable!(),
        }
        file.signatures.push(entry);
        file.to_toml()
    };
    let msg = malformed(&with("digest", "not hex"));
    assert!(
        msg.contains("signature 1 (site `site-a`): digest is not 64 lowercase hexadecimal digits"),
        "{msg}"
    );
    // The digest is written in lowercase; an uppercase copy is refused, not "other terms".
    let msg = malformed(&with("digest", &s.digest.to_uppercase()));
    assert!(msg.contains("lowercase"), "{msg}");
    let msg = malformed(&with("digest", &s.digest[..63]));
    assert!(msg.contains("digest"), "{msg}");
    for bad in ["", "zz", "abc", "ab".repeat(513).as_str()] {
        let msg = malformed(&with("signature", bad));
        assert!(msg.contains("signature is not hexadecimal"), "{bad}: {msg}");
    }
    let twice = SignatureFile {
        version: FORMAT_VERSION,
        signatures: vec![s.clone(), s.clone()],
    };
    let msg = malformed(&twice.to_toml());
    assert!(msg.contains("signed twice"), "{msg}");
    let msg = malformed("version = 1\n[[signatures]]\nsite = \"site-a\"\n");
    assert!(msg.contains("missing field"), "{msg}");

    // Well-formed, but an entry that cannot verify: named, not a panic.
    let reread = |text: String| SignatureFile::parse(&text, Path::new("x")).unwrap();
    let reason = |text: String| match &signatures::verify(&m, &reread(text), &keys.ca()).unwrap()[0]
        .verdict
    {
        Verdict::Invalid(why) => why.clone(),
        Verdict::Valid => panic!("it verified"),
    };
    // A truncated signature.
    let why = reason(with("signature", &s.signature[..s.signature.len() - 4]));
    assert!(why.contains("does not verify"), "{why}");
    // A signature with one bit flipped.
    let mut flipped = s.signature.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let why = reason(with("signature", &String::from_utf8(flipped).unwrap()));
    assert!(why.contains("does not verify"), "{why}");
    // Certificates that are not certificates.
    let why = reason(with("certificate", "garbage"));
    assert!(why.contains("no -----BEGIN CERTIFICATE-----"), "{why}");
    let huge = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        "QUFB\n".repeat(200_000)
    );
    let why = reason(with("certificate", &huge));
    assert!(!why.is_empty(), "{why}");
    let why = reason(with(
        "certificate",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    ));
    assert!(why.contains("certificate"), "{why}");
    // The CA in place of the site's certificate.
    let ca = fs::read_to_string(keys.ca()).unwrap();
    let why = reason(with("certificate", &ca));
    assert!(!why.is_empty(), "{why}");
    // Other algorithms, and sites the manifest does not have.
    let why = reason(with("algorithm", "rsa-pkcs1-sha256"));
    assert!(why.contains("not supported"), "{why}");
    // Text from the file cannot forge a line or send escape sequences to a terminal.
    let why = reason(with(
        "algorithm",
        "x\n  site-a  ecdsa-p256-sha256  valid\u{1b}[2K",
    ));
    assert!(!why.contains('\n') && !why.contains('\u{1b}'), "{why}");
    let why = reason(with("site", "site-z"));
    assert!(
        why.contains("`site-z` is not a site of this manifest"),
        "{why}"
    );
}

#[test]
fn a_hand_built_entry_with_a_strange_digest_is_invalid_not_a_panic() {
    let keys = Keys::new();
    let m = manifest();
    let mut s = keys.sign(&m, "site-a");
    // Multi-byte characters across the 12th byte, which the message quotes a prefix of.
    s.digest = format!("abcdefghijk{}", "é".repeat(30));
    let why = invalid_because(&m, s, &keys.ca());
    assert!(why.contains("signs other terms"), "{why}");
}

#[test]
fn reading_a_broken_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("federation.signatures.toml");
    fs::write(&path, [0xff, 0xfe, b'v']).unwrap();
    let err = SignatureFile::read(&path).unwrap_err();
    assert!(matches!(err, SignatureError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("not UTF-8"), "{err}");
    assert!(
        err.to_string().contains("federation.signatures.toml"),
        "{err}"
    );

    // Larger than any signature file: refused before it is read whole.
    let f = fs::File::create(&path).unwrap();
    f.set_len(signatures::MAX_SIGNATURE_FILE_BYTES + 1).unwrap();
    let err = SignatureFile::read(&path).unwrap_err();
    assert!(matches!(err, SignatureError::Read(_)), "{err:?}");
    assert!(
        err.to_string().contains("federation.signatures.toml"),
        "{err}"
    );

    // A malformed file stops a run even when its manifest requires nothing.
    fs::write(&path, "version = 1\nnonsense\n").unwrap();
    let keys = Keys::new();
    let err =
        signatures::read_and_check(&parse(&manifest_text(5, "")), &path, &keys.ca()).unwrap_err();
    assert!(matches!(err, SignatureError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn check_required_names_each_missing_site() {
    let keys = Keys::new();
    let m = manifest();
    let path = Path::new("/fed/federation.signatures.toml");

    // No file at all: every site is missing, and the error says so and where to sign.
    let err = signatures::check_required(&m, None, path, &keys.ca()).unwrap_err();
    assert_eq!(err.missing_sites(), SITES);
    let msg = err.to_string();
    assert!(msg.contains("site-a (no signature file)"), "{msg}");
    assert!(msg.contains("agreement.require_signatures"), "{msg}");
    assert!(msg.contains("entente manifest sign"), "{msg}");
    assert!(msg.contains("/fed/federation.signatures.toml"), "{msg}");
    let dir = tempfile::tempdir().unwrap();
    let err =
        signatures::read_and_check(&m, &dir.path().join("none.toml"), &keys.ca()).unwrap_err();
    assert_eq!(err.missing_sites(), SITES);

    // Two of three signed: the third is named, and only it.
    let file = keys.signed_by(&m, &["site-a", "site-c"]);
    let err = signatures::check_required(&m, Some(&file), path, &keys.ca()).unwrap_err();
    assert_eq!(err.missing_sites(), vec!["site-b"]);
    let msg = err.to_string();
    assert!(msg.contains("missing: site-b (no signature)"), "{msg}");
    assert!(msg.contains("from site-a, site-b, site-c"), "{msg}");

    // A stated set: only its sites are needed; other valid signatures are still returned.
    let some = parse(&manifest_text(
        5,
        "require_signatures = [\"site-a\", \"site-c\"]",
    ));
    let file = keys.signed_by(&some, &["site-a", "site-b"]);
    let err = signatures::check_required(&some, Some(&file), path, &keys.ca()).unwrap_err();
    assert_eq!(err.missing_sites(), vec!["site-c"]);
    let file = keys.signed_by(&some, &["site-a", "site-b", "site-c"]);
    let valid = signatures::check_required(&some, Some(&file), path, &keys.ca()).unwrap();
    assert_eq!(valid.len(), 3);

    // Nothing required: no file is fine, and an invalid signature is not returned as valid.
    let none = parse(&manifest_text(5, ""));
    assert!(
        signatures::check_required(&none, None, path, &keys.ca())
            .unwrap()
            .is_empty()
    );
    let stale = keys.signed_by(&m, &["site-a"]);
    assert!(
        signatures::check_required(&none, Some(&stale), path, &keys.ca())
            .unwrap()
            .is_empty()
    );

    // A CA that cannot be read is an error of its own, not a missing signature.
    let err = signatures::check_required(&m, Some(&file), path, Path::new("/nonexistent/ca.pem"))
        .unwrap_err();
    assert!(matches!(err, SignatureError::Tls(_)), "{err:?}");
    assert!(err.missing_sites().is_empty());
}
