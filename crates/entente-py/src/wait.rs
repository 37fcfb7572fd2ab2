//! Running Rust work off the interpreter while Python can still be interrupted: the work runs
//! on its own thread, and the caller's thread wakes every 100 ms, detached from the
//! interpreter, to let Python handle Ctrl-C.

use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;

/// How often a waiting call looks for a pending signal.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Runs `work` on a new thread and waits for it with the interpreter released. When a signal
/// handler raises (Ctrl-C's `KeyboardInterrupt`), `stop` is called, the thread is awaited for
/// up to `grace`, and the exception is returned.
pub fn interruptible<T: Send + 'static>(
    py: Python<'_>,
    work: impl FnOnce() -> T + Send + 'static,
    stop: impl FnOnce(),
    grace: Duration,
) -> PyResult<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("entente".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start: {e}")))?;
    let mut rx = rx;
    loop {
        // The receiver moves into the detached closure and back (it is not `Sync`).
        let (received, back) = py.detach(move || (rx.recv_timeout(SIGNAL_POLL), rx));
        rx = back;
        match received {
            Ok(value) => return Ok(value),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "entente's worker thread ended without a result (it panicked; see stderr)",
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Err(e) = py.check_signals() {
            stop();
            let _ = py.detach(move || rx.recv_timeout(grace));
            return Err(e);
        }
    }
}
