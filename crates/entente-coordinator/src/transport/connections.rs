//! Which node connections are open. A node's session is bound to the TLS connection it
//! registered on; while that connection is open and the node is heard from, another node
//! presenting the same site's certificate is refused instead of taking the session over (see
//! [`super::hub::Hub::register`]). A node killed outright loses its connection with its
//! process, so its restarted self is let in at once.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The peer addresses of the open connections (an address names one TCP connection while it
/// is open).
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<SocketAddr, usize>>,
}

impl Connections {
    /// No connection open yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the connection from `peer` is still open.
    pub fn is_open(&self, peer: SocketAddr) -> bool {
        self.lock().contains_key(&peer)
    }

    /// Counts `stream`, from `peer`, as open until the returned wrapper is dropped (when the
    /// gRPC server is done with the connection).
    pub fn track<S>(self: &Arc<Self>, peer: SocketAddr, stream: S) -> Tracked<S> {
        *self.lock().entry(peer).or_insert(0) += 1;
        Tracked {
            stream,
            peer,
            connections: Arc::clone(self),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, usize>> {
        // Every critical section is one map operation: a poisoned lock is still consistent.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection counted as open by [`Connections`] for as long as it lives.
#[derive(Debug)]
pub struct Tracked<S> {
    stream: S,
    peer: SocketAddr,
    connections: Arc<Connections>,
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl<S: Connected> Connected for Tracked<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_open_while_its_stream_lives() {
        let connections = Arc::new(Connections::new());
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let first = connections.track(peer, ());
        let second = connections.track(peer, ());
        assert!(connections.is_open(peer));
        drop(first);
        assert!(connections.is_open(peer));
        drop(second);
        assert!(!connections.is_open(peer));
    }
}
