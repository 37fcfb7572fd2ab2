//! The first connection to a PostgreSQL server, made alone and under a short timeout before the
//! pool is built. The pool retries a refused connection until its own timeout (30 s) and then
//! says only "pool timed out"; this says at once what the server, or the network, answered.

use std::time::Duration;

use sqlx::{AnyConnection, Connection};

use super::StoreError;
use super::location::Location;

/// How long the first connection may take before the server counts as unreachable.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects once to `location` and closes the connection again.
pub(crate) async fn probe(location: &Location) -> Result<(), StoreError> {
    sqlx::any::install_default_drivers();
    match tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(&location.url)).await {
        Ok(Ok(connection)) => {
            // Only the answer mattered; a failure to say goodbye changes nothing.
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(StoreError::Connect {
            url: location.redacted(),
            error,
        }),
        Err(_) => Err(StoreError::ConnectTimeout {
            url: location.redacted(),
            seconds: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::store::Store;

    #[tokio::test]
    async fn a_server_that_refuses_is_named_at_once() {
        // Nothing listens on a port the kernel just handed out and took back.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://entente:s3cret@127.0.0.1:{port}/entente");
        let started = Instant::now();
        let err = Store::open(&url).await.unwrap_err().to_string();
        assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
        assert!(err.to_lowercase().contains("connection refused"), "{err}");
        assert!(
            !err.contains("pool timed out") && !err.contains("s3cret"),
            "{err}"
        );
    }
}
