//! The federation's mutual-TLS identities, end to end: a key folder is created with
//! `init_ca`/`issue_site`/`issue_coordinator`, and real rustls handshakes run in memory
//! between `server_config` and `client_config` (or hand-built clients that misbehave).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use entente_proto::tls::{
    KeyDir, Revocations, Revokee, SiteCertError, TlsError, check_coordinator_certificate,
    check_site_certificate, client_config, init_ca, issue_coordinator, issue_site, read_pem,
    revoke, serial_hex, serial_of, server_config, site_name,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};

/// A key folder with a CA, site "clinic-a" and a coordinator for 127.0.0.1 and localhost.
fn federation() -> (tempfile::TempDir, KeyDir) {
    federation_named("hospitals")
}

fn federation_named(name: &str) -> (tempfile::TempDir, KeyDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = KeyDir::new(tmp.path().join("keys"));
    init_ca(&dir, name).unwrap();
    issue_site(&dir, "clinic-a", false).unwrap();
    issue_coordinator(
        &dir,
        &["127.0.0.1".to_owned(), "localhost".to_owned()],
        false,
    )
    .unwrap();
    (tmp, dir)
}

fn server(dir: &KeyDir) -> ServerConnection {
    let config = server_config(
        &dir.ca_cert(),
        &dir.coordinator_cert(),
        &dir.coordinator_key(),
        &no_revocations(),
    )
    .unwrap();
    ServerConnection::new(config).unwrap()
}

/// A revocation list that revokes nothing.
fn no_revocations() -> Arc<Revocations> {
    Arc::new(Revocations::none())
}

fn client(config: Arc<rustls::ClientConfig>, host: &str) -> ClientConnection {
    ClientConnection::new(config, ServerName::try_from(host.to_owned()).unwrap()).unwrap()
}

fn site_client(dir: &KeyDir, site: &str, host: &str) -> ClientConnection {
    let config = client_config(
        &dir.ca_cert(),
        &dir.site_cert(site),
        &dir.site_key(site),
        &no_revocations(),
    )
    .unwrap();
    client(config, host)
}

/// Which side failed a handshake, and how.
#[derive(Debug)]
enum Failure {
    Client(rustls::Error),
    Server(rustls::Error),
}

/// Moves bytes between the two sides until both finish the handshake or one fails.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), Failure> {
    for _ in 0..20 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets().map_err(Failure::Server)?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().map_err(Failure::Client)?;
        }
    }
    panic!("handshake did not finish in 20 rounds");
}

fn server_error(result: Result<(), Failure>) -> rustls::Error {
    match result {
        Err(Failure::Server(e)) => e,
        other => panic!("expected the server to refuse the handshake, got {other:?}"),
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_folder_layout_and_key_modes() {
    let (_tmp, dir) = federation();
    for path in [
        dir.ca_cert(),
        dir.ca_key(),
        dir.site_cert("clinic-a"),
        dir.site_key("clinic-a"),
        dir.coordinator_cert(),
        dir.coordinator_key(),
    ] {
        assert!(!read_pem(&path).unwrap().is_empty(), "{}", path.display());
    }
    assert_eq!(dir.site_cert("x"), dir.root.join("sites/x.pem"));
    assert_eq!(dir.coordinator_key(), dir.root.join("coordinator.key"));
    #[cfg(unix)]
    for key in [
        dir.ca_key(),
        dir.site_key("clinic-a"),
        dir.coordinator_key(),
    ] {
        assert_eq!(mode(&key), 0o600, "{}", key.display());
    }
    // Each chain file holds the leaf, then the CA certificate.
    let ca = fs::read_to_string(dir.ca_cert()).unwrap();
    for chain in [dir.site_cert("clinic-a"), dir.coordinator_cert()] {
        let chain = fs::read_to_string(chain).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(chain.ends_with(&ca));
    }
}

#[test]
fn existing_keys_are_not_overwritten_unless_asked() {
    let (_tmp, dir) = federation();

    let ca_key = fs::read(dir.ca_key()).unwrap();
    let err = init_ca(&dir, "hospitals").unwrap_err();
    assert!(matches!(err, TlsError::CaExists { .. }), "{err}");
    assert!(err.to_string().contains("ca.key"), "{err}");
    assert_eq!(fs::read(dir.ca_key()).unwrap(), ca_key);

    let site_key = fs::read(dir.site_key("clinic-a")).unwrap();
    let err = issue_site(&dir, "clinic-a", false).unwrap_err();
    assert!(matches!(err, TlsError::KeyExists { .. }), "{err}");
    assert!(err.to_string().contains("clinic-a.key") && err.to_string().contains("--overwrite"));
    assert_eq!(fs::read(dir.site_key("clinic-a")).unwrap(), site_key);

    let hosts = ["localhost".to_owned()];
    let err = issue_coordinator(&dir, &hosts, false).unwrap_err();
    assert!(matches!(err, TlsError::KeyExists { .. }), "{err}");

    issue_site(&dir, "clinic-a", true).unwrap();
    assert_ne!(fs::read(dir.site_key("clinic-a")).unwrap(), site_key);
    issue_coordinator(&dir, &hosts, true).unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&dir.site_key("clinic-a")), 0o600);
}

#[test]
fn issuing_needs_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = KeyDir::new(tmp.path());
    let err = issue_site(&dir, "clinic-a", false).unwrap_err();
    assert!(matches!(err, TlsError::MissingCa { .. }), "{err}");
    assert!(err.to_string().contains("entente keys init"), "{err}");
}

#[test]
fn a_ca_key_from_another_ca_is_refused() {
    let (_tmp, dir) = federation();
    let (_other_tmp, other) = federation();
    fs::copy(other.ca_key(), dir.ca_key()).unwrap();
    let err = issue_site(&dir, "clinic-b", false).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
}

#[test]
fn invalid_names_and_hosts_are_refused() {
    let (_tmp, dir) = federation();
    for bad in ["", "-site", "a/b", "../x", "a b", &"s".repeat(64)] {
        let err = issue_site(&dir, bad, false).unwrap_err();
        assert!(
            matches!(err, TlsError::InvalidSiteName { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(matches!(
        issue_coordinator(&dir, &[], true),
        Err(TlsError::NoHosts)
    ));
    let err = issue_coordinator(&dir, &["not a host".to_owned()], true).unwrap_err();
    assert!(matches!(err, TlsError::InvalidHost { .. }), "{err}");
}

#[test]
fn handshake_with_a_site_certificate_names_the_site() {
    let (_tmp, dir) = federation();
    for host in ["127.0.0.1", "localhost"] {
        let mut server = server(&dir);
        let mut client = site_client(&dir, "clinic-a", host);
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(client.alpn_protocol(), Some(&b"h2"[..]));
        let leaf = &server.peer_certificates().unwrap()[0];
        assert_eq!(site_name(leaf).unwrap(), "clinic-a");
    }
}

#[test]
fn site_names_with_dots_and_underscores_handshake() {
    let (_tmp, dir) = federation();
    issue_site(&dir, "Clinic_B.west", false).unwrap();
    let mut server = server(&dir);
    let mut client = site_client(&dir, "Clinic_B.west", "localhost");
    handshake(&mut client, &mut server).unwrap();
    let leaf = &server.peer_certificates().unwrap()[0];
    assert_eq!(site_name(leaf).unwrap(), "Clinic_B.west");
}

/// Runs a handshake where the client trusts `dir`'s CA (so the coordinator passes) but
/// presents `other`'s site certificate; returns the server's error.
fn present_foreign_site(dir: &KeyDir, other: &KeyDir) -> rustls::Error {
    let config = client_config(
        &dir.ca_cert(),
        &other.site_cert("clinic-a"),
        &other.site_key("clinic-a"),
        &no_revocations(),
    )
    .unwrap();
    let mut server = server(dir);
    server_error(handshake(&mut client(config, "localhost"), &mut server))
}

#[test]
fn a_site_from_another_ca_is_refused() {
    let (_tmp, dir) = federation();
    let (_other_tmp, other) = federation_named("banks");
    let err = present_foreign_site(&dir, &other);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}

#[test]
fn a_site_from_an_impostor_ca_with_the_same_name_is_refused() {
    let (_tmp, dir) = federation();
    let (_other_tmp, impostor) = federation();
    let err = present_foreign_site(&dir, &impostor);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{err:?}"
    );
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let (_tmp, dir) = federation();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_file_iter(dir.ca_cert()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut server = server(&dir);
    let err = server_error(handshake(
        &mut client(Arc::new(config), "localhost"),
        &mut server,
    ));
    assert!(
        matches!(err, rustls::Error::NoCertificatesPresented),
        "{err:?}"
    );
}

#[test]
fn a_client_refuses_a_coordinator_for_another_host() {
    let (_tmp, dir) = federation();
    let mut server = server(&dir);
    let mut client = site_client(&dir, "clinic-a", "coordinator.example.org");
    match handshake(&mut client, &mut server) {
        Err(Failure::Client(rustls::Error::InvalidCertificate(e))) => {
            assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}")
        }
        other => panic!("expected the client to refuse, got {other:?}"),
    }
}

#[test]
fn a_site_cannot_pose_as_the_coordinator() {
    let (_tmp, dir) = federation();
    // The site's certificate is clientAuth-only and names no coordinator host.
    let config = server_config(
        &dir.ca_cert(),
        &dir.site_cert("clinic-a"),
        &dir.site_key("clinic-a"),
        &no_revocations(),
    )
    .unwrap();
    let mut server = ServerConnection::new(config).unwrap();
    let mut client = site_client(&dir, "clinic-a", "clinic-a");
    assert!(matches!(
        handshake(&mut client, &mut server),
        Err(Failure::Client(_))
    ));
}

#[test]
fn the_coordinator_certificate_is_not_a_site() {
    let (_tmp, dir) = federation();
    let pem = fs::read(dir.coordinator_cert()).unwrap();
    let leaf = rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    let leaf: rustls::pki_types::CertificateDer = leaf;
    let err = site_name(&leaf).unwrap_err();
    assert!(
        matches!(err, TlsError::NotASite(SiteCertError::NoClientAuth)),
        "{err}"
    );
    assert!(err.to_string().contains("clientAuth"), "{err}");
}

#[test]
fn configs_refuse_wrong_files_with_the_file_named() {
    let (_tmp, dir) = federation();
    // A site chain where the CA belongs.
    let err = server_config(
        &dir.site_cert("clinic-a"),
        &dir.coordinator_cert(),
        &dir.coordinator_key(),
        &no_revocations(),
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::NotCa { .. }), "{err}");
    assert!(err.to_string().contains("clinic-a.pem"), "{err}");
    // A key that does not belong to the certificate, on either side.
    let err = client_config(
        &dir.ca_cert(),
        &dir.site_cert("clinic-a"),
        &dir.coordinator_key(),
        &no_revocations(),
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("coordinator.key does not belong to the certificate"),
        "{err}"
    );
    let err = server_config(
        &dir.ca_cert(),
        &dir.coordinator_cert(),
        &dir.site_key("clinic-a"),
        &no_revocations(),
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    // A certificate where the key belongs.
    let err = client_config(
        &dir.ca_cert(),
        &dir.site_cert("clinic-a"),
        &dir.ca_cert(),
        &no_revocations(),
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
    // A file that is not there.
    let err = server_config(
        &dir.root.join("nope.pem"),
        &dir.coordinator_cert(),
        &dir.ca_key(),
        &no_revocations(),
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }) && err.to_string().contains("nope.pem"));
}

#[test]
fn certificates_are_checked_for_their_role_and_ca_before_any_handshake() {
    let (_tmp, dir) = federation();
    let (_other_tmp, other) = federation_named("banks");
    let hosts = check_coordinator_certificate(&dir.ca_cert(), &dir.coordinator_cert()).unwrap();
    assert_eq!(hosts, ["127.0.0.1", "localhost"]);
    assert_eq!(
        check_site_certificate(&dir.ca_cert(), &dir.site_cert("clinic-a")).unwrap(),
        "clinic-a"
    );
    // Another federation's certificates, and certificates in each other's role.
    for err in [
        check_coordinator_certificate(&dir.ca_cert(), &other.coordinator_cert()).unwrap_err(),
        check_site_certificate(&dir.ca_cert(), &other.site_cert("clinic-a")).unwrap_err(),
    ] {
        assert!(matches!(err, TlsError::Unusable { .. }), "{err}");
        assert!(
            err.to_string().contains("not issued by the federation CA"),
            "{err}"
        );
    }
    let err =
        check_coordinator_certificate(&dir.ca_cert(), &dir.site_cert("clinic-a")).unwrap_err();
    assert!(
        err.to_string().contains("as the coordinator certificate"),
        "{err}"
    );
    let err = check_site_certificate(&dir.ca_cert(), &dir.coordinator_cert()).unwrap_err();
    assert!(err.to_string().contains("clientAuth"), "{err}");
}

proptest::proptest! {
    // A fixed seed keeps the run deterministic; no regression files are written.
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 24,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_7151),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Every valid site name survives issuing and comes back from `site_name` unchanged.
    #[test]
    fn every_valid_site_name_round_trips(site in "[A-Za-z0-9_.][A-Za-z0-9_.-]{0,62}") {
        // `.` and `..` name folders and are refused (site_names covers them).
        proptest::prop_assume!(!site.bytes().all(|b| b == b'.'));
        let tmp = tempfile::tempdir().unwrap();
        let dir = KeyDir::new(tmp.path());
        init_ca(&dir, "hospitals").unwrap();
        issue_site(&dir, &site, false).unwrap();
        let pem = fs::read(dir.site_cert(&site)).unwrap();
        let leaf: rustls::pki_types::CertificateDer =
            rustls::pki_types::pem::PemObject::pem_slice_iter(&pem).next().unwrap().unwrap();
        proptest::prop_assert_eq!(site_name(&leaf).unwrap(), site);
    }

    /// A name with any character outside `[A-Za-z0-9-_.]` is refused, and nothing is written.
    #[test]
    fn names_with_other_characters_are_refused(
        prefix in "[a-z]{0,5}",
        bad in "[^A-Za-z0-9_.-]",
        suffix in "[a-z]{0,5}",
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = KeyDir::new(tmp.path());
        // With a CA in place, so that accepting the name would write its files.
        init_ca(&dir, "fed").unwrap();
        let site = format!("{prefix}{bad}{suffix}");
        let refused = matches!(
            issue_site(&dir, &site, false),
            Err(TlsError::InvalidSiteName { .. })
        );
        proptest::prop_assert!(refused, "{:?} was not refused", site);
        proptest::prop_assert!(!tmp.path().join("sites").exists());
    }
}

/// The coordinator of `dir`, refusing what `revocations` revokes.
fn revoking_server(dir: &KeyDir, revocations: &Arc<Revocations>) -> ServerConnection {
    let config = server_config(
        &dir.ca_cert(),
        &dir.coordinator_cert(),
        &dir.coordinator_key(),
        revocations,
    )
    .unwrap();
    ServerConnection::new(config).unwrap()
}

fn revocations_of(dir: &KeyDir) -> Arc<Revocations> {
    Arc::new(Revocations::load(&dir.ca_cert(), Some(&dir.revocation_list())).unwrap())
}

#[test]
fn a_revoked_site_is_refused_at_the_next_handshake_after_a_reload() {
    let (_tmp, dir) = federation();
    issue_site(&dir, "clinic-b", false).unwrap();
    // No list yet: nothing is revoked, and both sites get in.
    let revocations = revocations_of(&dir);
    assert!(revocations.current().is_empty());
    let server = |r| revoking_server(&dir, r);
    for site in ["clinic-a", "clinic-b"] {
        handshake(
            &mut site_client(&dir, site, "localhost"),
            &mut server(&revocations),
        )
        .unwrap();
    }

    let revoked = revoke(&dir, &Revokee::Site("clinic-a".into())).unwrap();
    assert_eq!((revoked.number, revoked.revoked), (1, 1));
    assert_eq!(revoked.list, dir.revocation_list());
    // The server's configuration is not rebuilt: the reloaded list applies at once.
    let reloaded = revocations.reload().unwrap().unwrap();
    assert_eq!(reloaded.number, 1);
    let serial = serial_of(&first_cert(&dir.site_cert("clinic-a"))).unwrap();
    assert_eq!(reloaded.newly_revoked, std::slice::from_ref(&serial));
    assert_eq!(serial_hex(&serial), revoked.serial);
    assert_eq!(revocations.reload().unwrap(), None, "unchanged file");
    let err = server_error(handshake(
        &mut site_client(&dir, "clinic-a", "localhost"),
        &mut server(&revocations),
    ));
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
    );
    handshake(
        &mut site_client(&dir, "clinic-b", "localhost"),
        &mut server(&revocations),
    )
    .unwrap();

    // A new certificate admits the site again; revoking twice is refused, naming the cure.
    let again = revoke(&dir, &Revokee::Site("clinic-a".into())).unwrap_err();
    assert!(matches!(again, TlsError::AlreadyRevoked { .. }), "{again}");
    assert!(again.to_string().contains("--overwrite"), "{again}");
    issue_site(&dir, "clinic-a", true).unwrap();
    handshake(
        &mut site_client(&dir, "clinic-a", "localhost"),
        &mut server(&revocations),
    )
    .unwrap();
    // The list grows: revoking the second site keeps the first revocation.
    let second = revoke(&dir, &Revokee::Site("clinic-b".into())).unwrap();
    assert_eq!((second.number, second.revoked), (2, 2));
    assert_eq!(
        revocations.reload().unwrap().unwrap().newly_revoked.len(),
        1
    );
    assert!(revocations.current().revokes(&serial));
}

#[test]
fn a_node_refuses_a_revoked_coordinator() {
    let (_tmp, dir) = federation();
    revoke(&dir, &Revokee::Coordinator).unwrap();
    let revocations = revocations_of(&dir);
    let config = client_config(
        &dir.ca_cert(),
        &dir.site_cert("clinic-a"),
        &dir.site_key("clinic-a"),
        &revocations,
    )
    .unwrap();
    match handshake(&mut client(config, "localhost"), &mut server(&dir)) {
        Err(Failure::Client(e)) => assert_eq!(
            e,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
        ),
        other => panic!("expected the node to refuse the coordinator, got {other:?}"),
    }
    // The coordinator itself refuses to start with a revoked certificate, saying so.
    let err = revocations.check_own(&dir.coordinator_cert()).unwrap_err();
    assert!(
        matches!(err, TlsError::OwnCertificateRevoked { .. }),
        "{err}"
    );
    revocations.check_own(&dir.site_cert("clinic-a")).unwrap();
}

#[test]
fn a_forged_old_or_removed_revocation_list_is_refused_and_the_list_in_force_stays() {
    let (_tmp, dir) = federation();
    issue_site(&dir, "clinic-b", false).unwrap();
    revoke(&dir, &Revokee::Site("clinic-a".into())).unwrap();
    let first_list = fs::read(dir.revocation_list()).unwrap();
    revoke(&dir, &Revokee::Site("clinic-b".into())).unwrap();
    let revocations = revocations_of(&dir);
    assert_eq!(revocations.current().number, 2);

    // A list signed by another CA with the same name.
    let (_other_tmp, other) = federation_named("hospitals");
    revoke(&other, &Revokee::Coordinator).unwrap();
    fs::copy(other.revocation_list(), dir.revocation_list()).unwrap();
    let err = revocations.reload().unwrap_err();
    assert!(matches!(err, TlsError::BadRevocationList { .. }), "{err}");
    assert!(err.to_string().contains("signature"), "{err}");
    let err = Revocations::load(&dir.ca_cert(), Some(&dir.revocation_list())).unwrap_err();
    assert!(matches!(err, TlsError::BadRevocationList { .. }), "{err}");

    // An older list of this CA would re-admit clinic-b.
    fs::write(dir.revocation_list(), &first_list).unwrap();
    let err = revocations.reload().unwrap_err();
    assert!(matches!(err, TlsError::RevocationRollback { .. }), "{err}");
    assert!(err.to_string().contains("older than number 2"), "{err}");

    // Garbage, and then no file at all.
    fs::write(
        dir.revocation_list(),
        b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    assert!(matches!(
        revocations.reload(),
        Err(TlsError::BadRevocationList { .. })
    ));
    fs::remove_file(dir.revocation_list()).unwrap();
    assert!(matches!(
        revocations.reload(),
        Err(TlsError::RevocationListRemoved { number: 2, .. })
    ));
    assert_eq!(revocations.current().number, 2);
    assert_eq!(revocations.current().len(), 2);
}

fn first_cert(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

#[test]
fn a_revoked_site_cannot_resume_an_earlier_session() {
    let (_tmp, dir) = federation();
    let revocations = revocations_of(&dir);
    let config = client_config(
        &dir.ca_cert(),
        &dir.site_cert("clinic-a"),
        &dir.site_key("clinic-a"),
        &no_revocations(),
    )
    .unwrap();
    let server_config = server_config(
        &dir.ca_cert(),
        &dir.coordinator_cert(),
        &dir.coordinator_key(),
        &revocations,
    )
    .unwrap();
    let connect = || {
        let mut server = ServerConnection::new(Arc::clone(&server_config)).unwrap();
        let mut site = client(Arc::clone(&config), "localhost");
        let result = handshake(&mut site, &mut server);
        // Let the client take any session ticket the server sends after the handshake.
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            site.read_tls(&mut buf.as_slice()).unwrap();
            let _ = site.process_new_packets();
        }
        result
    };
    connect().unwrap();
    revoke(&dir, &Revokee::Site("clinic-a".into())).unwrap();
    revocations.reload().unwrap();
    // The same client configuration (and so its session cache) connects again.
    let err = server_error(connect());
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
    );
}

#[test]
fn another_list_under_the_same_number_or_one_that_drops_a_revocation_is_refused() {
    let (_tmp, dir) = federation();
    issue_site(&dir, "clinic-b", false).unwrap();
    revoke(&dir, &Revokee::Site("clinic-a".into())).unwrap();
    let revokes_a = fs::read(dir.revocation_list()).unwrap();
    fs::remove_file(dir.revocation_list()).unwrap();
    revoke(&dir, &Revokee::Site("clinic-b".into())).unwrap();
    let revokes_b = fs::read(dir.revocation_list()).unwrap();
    revoke(&dir, &Revokee::Coordinator).unwrap();
    let revokes_b_and_coordinator = fs::read(dir.revocation_list()).unwrap();

    fs::write(dir.revocation_list(), &revokes_a).unwrap();
    let revocations = revocations_of(&dir);
    let a = serial_of(&first_cert(&dir.site_cert("clinic-a"))).unwrap();
    assert!(revocations.current().revokes(&a));
    // The same list written again is no change; another list numbered 1 is refused.
    fs::write(dir.revocation_list(), &revokes_a).unwrap();
    assert_eq!(revocations.reload().unwrap(), None);
    fs::write(dir.revocation_list(), &revokes_b).unwrap();
    let err = revocations.reload().unwrap_err();
    assert!(
        err.to_string()
            .contains("another revocation list under number 1"),
        "{err}"
    );
    // Number 2 no longer revokes clinic-a.
    fs::write(dir.revocation_list(), &revokes_b_and_coordinator).unwrap();
    let err = revocations.reload().unwrap_err();
    assert!(
        err.to_string().contains("no longer revokes serial"),
        "{err}"
    );
    assert!(revocations.current().revokes(&a));
    assert_eq!(revocations.current().number, 1);
}

#[cfg(unix)]
#[test]
fn a_pipe_at_the_list_path_is_refused_without_blocking() {
    let (_tmp, dir) = federation();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.revocation_list())
        .status()
        .unwrap();
    assert!(status.success());
    let err = Revocations::load(&dir.ca_cert(), Some(&dir.revocation_list())).unwrap_err();
    assert!(err.to_string().contains("named pipe"), "{err}");
}

#[test]
fn revocations_at_once_all_land_in_the_list() {
    let (_tmp, dir) = federation();
    let sites: Vec<String> = (0..6).map(|i| format!("site-{i}")).collect();
    for site in &sites {
        issue_site(&dir, site, false).unwrap();
    }
    std::thread::scope(|scope| {
        for site in &sites {
            let dir = &dir;
            scope.spawn(move || revoke(dir, &Revokee::Site(site.clone())).unwrap());
        }
    });
    let list = revocations_of(&dir).current();
    assert_eq!((list.number, list.len()), (6, 6));
}
