//! entente-simulation: a whole federation in one process, on the same round engine that a
//! network deployment uses. `entente simulate` and the Python package's `entente.simulate`
//! both run it: the sites are either shares of one data set that the manifest partitions
//! (entente's own trainer), or trainers that bring their own records (a Python client per
//! site, or entente's trainer on the site's `[[sites]] data`). It prints a progress bar and one
//! line per round, and writes the run folder (manifest, metrics with each budgeted site's
//! privacy spent, model, summary).

mod baselines;
mod driver;
pub mod out_dir;
mod personalize;
mod privacy;
mod progress;
mod run_dir;
mod shared_body;

pub use driver::{Options, Outcome, Trainers, describe, open_mlflow_run, run};
pub use run_dir::{SiteSummary, Summary};
