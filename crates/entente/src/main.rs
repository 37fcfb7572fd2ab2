//! The `entente` command line.

mod audit;
mod join;
mod keys;
mod manifest;
mod privacy;
mod report;
mod serve;
mod simulate;
mod split;
mod tracking;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Federated learning across institutions: train one model on everyone's data while every
/// record stays where it is.
#[derive(Parser)]
#[command(name = "entente", version, about, long_about = None)]
struct Cli {
    /// Log detail (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole federation in this process: every site, the coordinator, every round.
    Simulate(simulate::SimulateArgs),
    /// Give each site of a manifest its own records, divided as `simulate` divides them (to try
    /// a deployment on one machine).
    Split(split::SplitArgs),
    /// Coordinate a real federation: nodes connect over gRPC with mutual TLS; state and audit
    /// log in a durable store; resumes after a crash.
    Serve(serve::ServeArgs),
    /// Run an institution's node: connect to the coordinator and train on local data.
    Join(join::JoinArgs),
    /// Create the federation's certificate authority and issue site and coordinator
    /// certificates.
    Keys(keys::KeysArgs),
    /// Sign a manifest's agreement terms with a site's key, or verify who signed it.
    Manifest(manifest::ManifestArgs),
    /// Verify or list the coordinator's hash-chained audit log.
    Audit(audit::AuditArgs),
    /// Show each site's privacy budget: spent and remaining epsilon, from the sites' ledgers.
    Privacy(privacy::PrivacyArgs),
    /// Write a self-contained HTML report of a simulation's run folder, with charts.
    Report(report::ReportArgs),
}

/// Lets the process end quietly when its output is closed early (`entente ... | head`), as
/// command-line tools do, instead of panicking on the next write to stdout.
#[cfg(unix)]
#[allow(unsafe_code)] // one of the binary's two documented unsafe calls
fn restore_default_sigpipe() {
    // SAFETY: called once at start-up, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_default_sigpipe() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Network services keep Rust's default (SIGPIPE ignored): a peer that closes its
    // connection must give a write error, never end the process.
    if !matches!(cli.command, Command::Serve(_) | Command::Join(_)) {
        restore_default_sigpipe();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    // Colour codes only for a person at a terminal: never in a redirected log, nor with
    // NO_COLOR set (https://no-color.org).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(args),
        Command::Split(args) => split::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Join(args) => join::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Manifest(args) => manifest::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Report(args) => report::run(args),
        Command::Privacy(args) => privacy::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
