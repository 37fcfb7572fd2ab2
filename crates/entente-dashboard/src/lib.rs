//! A live view of a federation: `entente serve --http ADDR` and `entente simulate --http ADDR`
//! serve one page (the run's state, accuracy and loss per round, the sites, the audit chain),
//! a JSON API (`/api/state`) and Prometheus metrics (`/metrics`). Whoever runs the federation
//! feeds a [`Board`]; [`serve`] shows it. Loopback by default; any other address needs a token.

mod board;
mod metrics;
mod page;
mod server;

pub use board::{
    AuditLine, AuditView, Board, Bytes, Counters, RoundLine, RunState, SiteView, Snapshot,
};
pub use server::{
    CONNECTION_TIMEOUT, DashboardError, HEADER_TIMEOUT, MAX_CONNECTIONS, check_exposure, router,
    serve,
};

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
