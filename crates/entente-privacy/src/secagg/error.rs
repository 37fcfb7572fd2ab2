//! Typed errors and abort reasons of the secure aggregation protocol.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::SiteId;

/// The four message phases of a round (Bonawitz et al. section 4), plus the terminal states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Round 0: sites advertise their two public keys.
    AdvertiseKeys,
    /// Round 1: sites send encrypted Shamir shares, routed by the coordinator.
    ShareKeys,
    /// Round 2: sites send their masked, encoded update.
    MaskedInput,
    /// Active security only: survivors sign the list of sites whose masked input arrived.
    ConsistencyCheck,
    /// Round 3: survivors reveal the shares that remove the masks.
    Unmasking,
    /// The round finished (site: shares revealed; coordinator: sum released).
    Done,
    /// The round was aborted; nothing more is accepted and nothing is released.
    Aborted,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Phase::AdvertiseKeys => "AdvertiseKeys",
            Phase::ShareKeys => "ShareKeys",
            Phase::MaskedInput => "MaskedInput",
            Phase::ConsistencyCheck => "ConsistencyCheck",
            Phase::Unmasking => "Unmasking",
            Phase::Done => "Done",
            Phase::Aborted => "Aborted",
        };
        f.write_str(name)
    }
}

/// Which of a site's two secrets a Shamir share belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ShareKind {
    /// A share of the self-mask seed `b_u` (revealed for sites that sent a masked input).
    SelfMaskSeed,
    /// A share of the mask key `s_sk` (revealed for sites that dropped after sharing).
    MaskKey,
}

impl fmt::Display for ShareKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShareKind::SelfMaskSeed => "self-mask seed",
            ShareKind::MaskKey => "mask key",
        })
    }
}

/// Why a round was aborted. An aborted round never releases a sum, partial or whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AbortReason {
    /// Fewer sites than required are left in a phase.
    #[error("only {remaining} sites left in phase {phase}, at least {required} are required")]
    TooFewSites {
        /// Phase in which the count fell short.
        phase: Phase,
        /// Sites still taking part.
        remaining: usize,
        /// Sites required (threshold or `min_survivors`).
        required: usize,
    },
    /// A secret cannot be reconstructed: fewer than `threshold` holders of its shares remain.
    #[error(
        "only {available} holders of site {site}'s {kind} shares remain, threshold is {threshold}"
    )]
    TooFewShares {
        /// Site whose secret is needed.
        site: SiteId,
        /// Which secret.
        kind: ShareKind,
        /// Holders that can (still) reveal a share.
        available: usize,
        /// Shares needed.
        threshold: usize,
    },
    /// The revealed shares of a secret do not lie on one polynomial of degree < t.
    #[error("the revealed {kind} shares of site {site} are inconsistent")]
    InconsistentShares {
        /// Site whose shares disagree.
        site: SiteId,
        /// Which secret.
        kind: ShareKind,
    },
    /// A peer's signed message does not verify (active security): a substituted key, a
    /// credential the federation did not issue to that site, or a message of another round.
    #[error("the signature of site {site} over its {what} does not verify: {reason}")]
    BadSignature {
        /// The claimed signer.
        site: SiteId,
        /// What was signed (`public keys`, `survivor list`).
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The unmasking request names other survivors than the list this site signed.
    #[error("the unmasking request names other survivors than the list this site signed")]
    InconsistentSurvivors,
    /// Too few members of U3 vouched for this site's view of the survivors.
    #[error(
        "only {valid} valid signatures over this site's survivor list, at least {required} are required"
    )]
    TooFewSignatures {
        /// Valid signatures from distinct survivors.
        valid: usize,
        /// The threshold.
        required: usize,
    },
    /// The reconstructed mask key does not match the public key the site advertised.
    #[error("the reconstructed mask key of site {site} does not match its advertised public key")]
    KeyMismatch {
        /// Site whose key failed the check.
        site: SiteId,
    },
}

/// Errors of Shamir secret sharing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// Fewer shares than the threshold.
    #[error("{got} shares given, {need} needed")]
    NotEnoughShares {
        /// Shares given.
        got: usize,
        /// Threshold.
        need: usize,
    },
    /// Threshold is zero or larger than the number of holders.
    #[error("threshold {threshold} is invalid for {holders} holders")]
    BadThreshold {
        /// Requested threshold.
        threshold: usize,
        /// Number of holders.
        holders: usize,
    },
    /// Two shares (or holders) have the same evaluation point, or a point is zero.
    #[error("evaluation point {0} is zero, repeated or outside the field")]
    BadPoint(u64),
    /// A share value is not a field element.
    #[error("share value {0} is not a field element")]
    NotFieldElement(u64),
    /// The reconstructed value does not encode a 32-byte secret (shares inconsistent or too few).
    #[error("reconstructed value does not encode a secret")]
    NotCanonical,
    /// Two subsets of the given shares reconstruct different secrets.
    #[error("the shares do not lie on one polynomial of degree below the threshold")]
    Inconsistent,
}

/// Everything that can go wrong in a secure aggregation round, for sites and coordinator alike.
///
/// A rejected message leaves the state machine exactly as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecAggError {
    /// The round settings are unusable (threshold, graph, encoding range, ...).
    #[error("invalid secure aggregation settings: {0}")]
    Config(String),
    /// A message belongs to another round.
    #[error("message for round {got}, this round is {expected}")]
    WrongRound {
        /// This round.
        expected: u64,
        /// Round named by the message.
        got: u64,
    },
    /// A message arrived in the wrong phase.
    #[error("{got} message arrived while the state machine is in phase {current}")]
    WrongPhase {
        /// Current phase.
        current: Phase,
        /// Phase the message belongs to.
        got: Phase,
    },
    /// A sender sent a second message in the same phase.
    #[error("site {sender} already sent its {phase} message (replay)")]
    Replay {
        /// Repeated sender.
        sender: SiteId,
        /// Phase.
        phase: Phase,
    },
    /// The sender is not (or no longer) taking part in this phase.
    #[error("site {sender} is not expected in phase {phase}")]
    UnexpectedSender {
        /// Sender.
        sender: SiteId,
        /// Phase.
        phase: Phase,
    },
    /// A message is addressed to another site.
    #[error("message addressed to site {got}, this is site {expected}")]
    WrongRecipient {
        /// This site.
        expected: SiteId,
        /// Addressee named in the message.
        got: SiteId,
    },
    /// An encrypted share failed authentication (tampered, wrong round, wrong pair of sites).
    #[error("encrypted shares from site {sender} to site {recipient} failed authentication")]
    Decryption {
        /// Sender of the ciphertext.
        sender: SiteId,
        /// Recipient of the ciphertext.
        recipient: SiteId,
    },
    /// A message is structurally wrong.
    #[error("malformed message from site {sender}: {reason}")]
    Malformed {
        /// Sender (or, for coordinator messages, the recipient site).
        sender: SiteId,
        /// What is wrong.
        reason: String,
    },
    /// A peer's public key is a low-order point (the key agreement would be non-contributory).
    #[error("site {peer} advertised a weak public key")]
    WeakKey {
        /// Peer with the weak key.
        peer: SiteId,
    },
    /// A site was asked, or offered, to reveal both kinds of share for the same peer.
    #[error("both the self-mask seed and the mask key shares of site {peer} would be revealed")]
    BothShareKinds {
        /// Peer whose two secrets would both be exposed.
        peer: SiteId,
    },
    /// A revealed share is of the wrong kind for its owner's status.
    #[error("site {sender} revealed a {kind} share of site {owner}, which is not what it owes")]
    ShareKindMismatch {
        /// Revealing site.
        sender: SiteId,
        /// Owner of the secret.
        owner: SiteId,
        /// Kind revealed.
        kind: ShareKind,
    },
    /// The site's own update is unusable (wrong length, NaN, weight out of range).
    #[error("invalid update: {0}")]
    InvalidUpdate(String),
    /// The round was aborted.
    #[error("round aborted: {0}")]
    Aborted(AbortReason),
    /// Shamir secret sharing failed.
    #[error("secret sharing: {0}")]
    Shamir(#[from] ShamirError),
    /// This site's identity could not sign (active security).
    #[error("identity: {0}")]
    Auth(#[from] super::auth::AuthError),
}
