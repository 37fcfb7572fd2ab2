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
    },
}

/// Runs `entente keys`.
pub fn run(args: KeysArgs) -> Result<()> {
    match args.command {
        KeysCommand::Init { federation, dir } => {
            let keys = KeyDir::new(dir);
            tls::init_ca(&keys, &federation)?;
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
        } => {
            let keys = KeyDir::new(dir);
            match site {
                Some(site) => {
                    tls::issue_site(&keys, &site, overwrite)?;
                    println!(
                        "site `{site}`: certificate {}, key {} (send both, with {}, to the site)",
                        keys.site_cert(&site).display(),
                        keys.site_key(&site).display(),
                        keys.ca_cert().display()
                    );
                }
                None => {
                    tls::issue_coordinator(&keys, &coordinator, overwrite)?;
                    println!(
                        "coordinator for {}: certificate {}, key {}",
                        coordinator.join(", "),
                        keys.coordinator_cert().display(),
                        keys.coordinator_key().display()
                    );
                }
            }
        }
    }
    Ok(())
}
