//! In-process driver: runs one whole round with every site in this process, as the
//! simulation engine does, with optional dropouts. Messages still travel as the plain structs
//! of [`super::messages`], so what passes here passes over any transport.

use std::collections::BTreeMap;

use super::auth::InProcessPki;
use super::client::SecAggClient;
use super::error::SecAggError;
use super::messages::SurvivorRequests;
use super::server::{Aggregate, SecAggServer};
use super::{SecAggConfig, Security, SiteId};

/// The point after which a site stops answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropPoint {
    /// Never advertises keys.
    BeforeAdvertise,
    /// Advertises keys, then sends no shares.
    BeforeShareKeys,
    /// Sends shares, then no masked input.
    BeforeMaskedInput,
    /// Sends its masked input, then does not take part in unmasking.
    BeforeUnmasking,
}

/// One site's part in a simulated round.
#[derive(Clone, Debug)]
pub struct SiteInput {
    /// Site id (must be in the round's sites).
    pub id: SiteId,
    /// Seed of the site's key, mask-seed and polynomial randomness.
    pub rng_seed: [u8; 32],
    /// The site's update (already computed; clipped during encoding).
    pub update: Vec<f32>,
    /// The site's weight (number of examples).
    pub weight: u64,
    /// Where the site drops out, if it does.
    pub drop: Option<DropPoint>,
}

fn alive(input: &SiteInput, before: DropPoint) -> bool {
    input.drop.is_none_or(|d| d > before)
}

/// Runs a complete round over in-process sites: every message goes from the sites to the
/// coordinator and back. Under active security the sites' identities come from an
/// [`InProcessPki`] seeded with the round's context. Returns the coordinator's aggregate or
/// the first error (a site's or the coordinator's).
pub fn run_round(config: &SecAggConfig, inputs: &[SiteInput]) -> Result<Aggregate, SecAggError> {
    let mut server = SecAggServer::new(config.clone())?;
    let pki = match config.security {
        Security::Active => Some(InProcessPki::new(&config.context, &config.sites)?),
        Security::HonestButCurious => None,
    };
    let mut clients = BTreeMap::new();
    for input in inputs {
        let mut client = SecAggClient::new(config.clone(), input.id, input.rng_seed)?;
        if let Some(identity) = pki.as_ref().and_then(|p| p.identity(input.id)) {
            client = client.with_identity(identity);
        }
        clients.insert(input.id, (client, input));
    }
    for (client, input) in clients.values_mut() {
        if alive(input, DropPoint::BeforeAdvertise) {
            server.receive_advertise(&client.advertise_keys()?)?;
        }
    }
    for msg in server.close_advertise()? {
        if let Some((client, input)) = clients.get_mut(&msg.recipient)
            && alive(input, DropPoint::BeforeShareKeys)
        {
            server.receive_shares(&client.share_keys(&msg)?)?;
        }
    }
    for msg in server.close_shares()? {
        if let Some((client, input)) = clients.get_mut(&msg.recipient)
            && alive(input, DropPoint::BeforeMaskedInput)
        {
            server.receive_masked(&client.masked_input(&msg, &input.update, input.weight)?)?;
        }
    }
    let requests = match server.close_masked()? {
        SurvivorRequests::Unmask(requests) => requests,
        SurvivorRequests::Consistency(checks) => {
            for msg in checks {
                if let Some((client, input)) = clients.get_mut(&msg.recipient)
                    && alive(input, DropPoint::BeforeUnmasking)
                {
                    server.receive_consistency(&client.consistency(&msg)?)?;
                }
            }
            server.close_consistency()?
        }
    };
    for msg in requests {
        if let Some((client, input)) = clients.get_mut(&msg.recipient)
            && alive(input, DropPoint::BeforeUnmasking)
        {
            server.receive_unmask(&client.unmask(&msg)?)?;
        }
    }
    server.finish()
}
