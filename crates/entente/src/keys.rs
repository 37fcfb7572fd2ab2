//! `entente keys`: the federation's certificate authority and the certificates it issues.
//! Key files are written readable by their owner only (mode 0600).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use entente_proto::tls::{self, KeyDir};

/// Arguments of `entente keys`.
#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the federation's certificate authority (ca.pem, ca.key) in --dir.
    Init {
        /// The federation's name, written into the CA certificate.
        #[arg(long)]
        federation: String,
        /// Folder for the keys.
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
        /// Days the CA certificate is valid (every certificate it issued stops being accepted
        /// when it expires).
        #[arg(long, default_value_t = tls::Validity::CA_DEFAULT.in_days(), value_name = "N")]
        days: u32,
    },
    /// Issue a site's certificate (sites/SITE.pem, sites/SITE.key), or with --coordinator the
    /// coordinator's (coordinator.pem, coordinator.key) for the given host names or addresses.
    Issue {
        /// The site's name, as the manifest lists it.
        #[arg(
            required_unless_present = "coordinator",
            conflicts_with = "coordinator"
        )]
        site: Option<String>,
        /// Host name or IP address the coordinator is reached at (repeat for several).
        #[arg(long, value_name = "HOST")]
        coordinator: Vec<String>,
        /// Folder holding the CA.
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
        /// Replace an existing certificate and key.
        #[arg(long)]
        overwrite: bool,
        /// Days the certificate is valid; an expired one is refused at the handshake, and a
        /// node or coordinator holding one refuses to start, saying so.
        #[arg(long, default_value_t = tls::Validity::LEAF_DEFAULT.in_days(), value_name = "N")]
        days: u32,
    },
    /// Revoke a site's certificate (or with --coordinator the coordinator's): adds it to the
    /// revocation list revoked.crl in --dir, signed by the CA. A running coordinator reads the
    /// list again within a second and refuses the site from then on; give the new list to the
    /// coordinator and every site.
    Revoke {
        /// The site whose certificate (sites/SITE.pem) is revoked.
        #[arg(
            required_unless_present = "coordinator",
            conflicts_with = "coordinator"
        )]
        site: Option<String>,
        /// Revoke the coordinator's certificate (coordinator.pem) instead.
        #[arg(long)]
        coordinator: bool,
        /// Folder holding the CA.
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
    },
}

/// Runs `entente keys`.
pub fn run(args: KeysArgs) -> Result<()> {
    match args.command {
        KeysCommand::Init {
            federation,
            dir,
            days,
        } => {
            let keys = KeyDir::new(dir);
            tls::init_ca_valid_for(&keys, &federation, tls::Validity::days(days)?)?;
            println!(
                "federation CA for `{federation}`: certificate {} (give it to every site), key {} \
                 (keep it offline: whoever holds it can admit sites)",
                keys.ca_cert().display(),
                keys.ca_key().display()
            );
        }
        KeysCommand::Issue {
            site,
            coordinator,
            dir,
            overwrite,
            days,
        } => {
            let keys = KeyDir::new(dir);
            let validity = tls::Validity::days(days)?;
            match site {
                Some(site) => {
                    tls::issue_site_valid_for(&keys, &site, overwrite, validity)?;
                    println!(
                        "site `{site}`: certificate {}, key {} (send both, with {}, to the site)",
                        keys.site_cert(&site).display(),
                        keys.site_key(&site).display(),
                        keys.ca_cert().display()
                    );
                }
                None => {
                    tls::issue_coordinator_valid_for(&keys, &coordinator, overwrite, validity)?;
                    println!(
                        "coordinator for {}: certificate {}, key {}",
                        coordinator.join(", "),
                        keys.coordinator_cert().display(),
                        keys.coordinator_key().display()
                    );
                }
            }
        }
        KeysCommand::Revoke {
            site,
            coordinator: _,
            dir,
        } => {
            let keys = KeyDir::new(dir);
            let whom = match site {
                Some(site) => tls::Revokee::Site(site),
                None => tls::Revokee::Coordinator,
            };
            let revoked = tls::revoke(&keys, &whom)?;
            println!(
                "revoked the certificate in {} (serial {}): revocation list {} is number {}, \
                 revoking {} certificate(s); copy it to the coordinator's key folder and to every \
                 site",
                revoked.cert.display(),
                revoked.serial,
                revoked.list.display(),
                revoked.number,
                revoked.revoked
            );
        }
    }
    Ok(())
}
