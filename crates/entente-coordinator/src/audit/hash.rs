//! The audit entry hash: one canonical byte encoding, hashed with SHA-256.

use super::AuditEntry;

/// The `prev_hash` of the first entry: 64 ASCII zeros.
pub const GENESIS_PREV_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// The fixed prefix of every hashed message, so these hashes never collide with
/// hashes of other entente data.
const DOMAIN: &[u8; 16] = b"entente.audit.v1";

/// The SHA-256 of an audit entry, as 64 lowercase hex digits.
///
/// Covers every field except `hash` itself. The hashed message is the
/// concatenation of
///
/// 1. the 16 ASCII bytes `entente.audit.v1`;
/// 2. `str(prev_hash)`;
/// 3. `seq` as 8 bytes, big-endian;
/// 4. `at_unix_ms` as 8 bytes, big-endian two's complement;
/// 5. `str(kind)`;
/// 6. `run`: the byte `0x00` if absent, else `0x01` then 8 bytes big-endian
///    two's complement;
/// 7. `round`: `0x00` if absent, else `0x01` then 4 bytes big-endian;
/// 8. `site`: `0x00` if absent, else `0x01` then `str(site)`;
/// 9. `str(detail)`;
///
/// where `str(s)` is the length of `s` in UTF-8 bytes as 8 bytes big-endian,
/// followed by those bytes. Every field has a fixed size or a length prefix, so
/// no two distinct entries encode to the same message.
pub fn entry_hash(entry: &AuditEntry) -> String {
    let mut message = Vec::with_capacity(128 + entry.detail.len());
    message.extend_from_slice(DOMAIN);
    put_str(&mut message, &entry.prev_hash);
    message.extend_from_slice(&entry.seq.to_be_bytes());
    message.extend_from_slice(&entry.at_unix_ms.to_be_bytes());
    put_str(&mut message, &entry.kind);
    match entry.run {
        None => message.push(0),
        Some(run) => {
            message.push(1);
            message.extend_from_slice(&run.to_be_bytes());
        }
    }
    match entry.round {
        None => message.push(0),
        Some(round) => {
            message.push(1);
            message.extend_from_slice(&round.to_be_bytes());
        }
    }
    match &entry.site {
        None => message.push(0),
        Some(site) => {
            message.push(1);
            put_str(&mut message, site);
        }
    }
    put_str(&mut message, &entry.detail);
    sha256_hex(&message)
}

pub(crate) use entente_core::digest::sha256_hex;

fn put_str(message: &mut Vec<u8>, s: &str) {
    // usize -> u64 is lossless on every platform Rust supports.
    message.extend_from_slice(&(s.len() as u64).to_be_bytes());
    message.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn entry() -> AuditEntry {
        AuditEntry {
            seq: 2,
            at_unix_ms: 1_700_000_000_123,
            kind: "update_rejected".into(),
            run: Some(7),
            round: Some(3),
            site: Some("clinic-b".into()),
            detail: r#"{"reason":"norm"}"#.into(),
            prev_hash: "ab".repeat(32),
            hash: String::new(),
        }
    }

    /// The documented message, written out byte by byte, hashed with sha2 directly.
    #[test]
    fn known_answer() {
        let mut message = Vec::new();
        message.extend_from_slice(b"entente.audit.v1");
        message.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 64]);
        message.extend_from_slice("ab".repeat(32).as_bytes());
        message.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        message.extend_from_slice(&[0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x7b]); // 1_700_000_000_123
        message.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 15]);
        message.extend_from_slice(b"update_rejected");
        message.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 7]);
        message.extend_from_slice(&[1, 0, 0, 0, 3]);
        message.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 8]);
        message.extend_from_slice(b"clinic-b");
        message.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 17]);
        message.extend_from_slice(br#"{"reason":"norm"}"#);
        let expected: String = Sha256::digest(&message)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(entry_hash(&entry()), expected);
    }

    #[test]
    fn absent_fields_are_distinct_from_empty_ones() {
        let mut absent = entry();
        absent.site = None;
        let mut empty = entry();
        empty.site = Some(String::new());
        assert_ne!(entry_hash(&absent), entry_hash(&empty));

        let mut no_run = entry();
        no_run.run = None;
        let mut run_zero = entry();
        run_zero.run = Some(0);
        assert_ne!(entry_hash(&no_run), entry_hash(&run_zero));
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_hash() {
        let mut a = entry();
        a.kind = "ab".into();
        a.detail = "c".into();
        let mut b = entry();
        b.kind = "a".into();
        b.detail = "bc".into();
        assert_ne!(entry_hash(&a), entry_hash(&b));
    }

    #[test]
    fn hash_ignores_the_hash_field() {
        let mut with_hash = entry();
        with_hash.hash = "ff".repeat(32);
        assert_eq!(entry_hash(&with_hash), entry_hash(&entry()));
    }

    #[test]
    fn sha256_hex_of_abc() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
