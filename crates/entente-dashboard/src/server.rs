//! The dashboard's HTTP server: the page, its panel, the JSON API and the Prometheus
//! endpoint, behind an optional bearer token, with limits that keep a slow or greedy client
//! from holding the coordinator up.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::board::{Board, Snapshot};
use crate::{metrics, page};

/// Connections served at once; more wait in the kernel's queue until one ends.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one connection may stay open.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Shortest token accepted: 16 characters of a random token are out of reach of guessing.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Why the dashboard cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// A non-loopback address without a token.
    #[error(
        "the dashboard would listen on {0}, reachable from other machines, without a token: \
         pass --http-token TOKEN (clients then send `Authorization: Bearer TOKEN` or open \
         /?token=TOKEN), or listen on 127.0.0.1"
    )]
    Unprotected(SocketAddr),
    /// A token too short to keep anyone out.
    #[error(
        "--http-token is {0} characters; give at least {MIN_TOKEN_CHARS} (for example the \
         output of `openssl rand -hex 16`)"
    )]
    WeakToken(usize),
    /// The address could not be read.
    #[error("could not read the dashboard's listening address: {0}")]
    Address(#[source] std::io::Error),
}

#[derive(Clone)]
struct App {
    board: Board,
    token: Option<Arc<str>>,
    panel: Arc<Rendered>,
    state: Arc<Rendered>,
    metrics: Arc<Rendered>,
}

/// One route's last answer, kept while the board has not changed and the clock's second has
/// not turned (the panel says "N s ago"): a client polling every 100 ms mostly gets a copy
/// of it instead of a new rendering.
#[derive(Default)]
struct Rendered(Mutex<Option<((u64, u64), Bytes)>>);

impl Rendered {
    /// The board rendered by `render`, or the kept answer if it is still current.
    fn get(
        &self,
        board: &Board,
        render: impl FnOnce(&Snapshot) -> Result<Vec<u8>, serde_json::Error>,
    ) -> Result<Bytes, serde_json::Error> {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // The version is read before the snapshot: a change in between makes the kept answer
        // newer than its key, and the next request renders again. It is never older.
        let key = (board.version(), second);
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, body)) = kept.as_ref().filter(|(at, _)| *at == key) {
            return Ok(body.clone());
        }
        let body = Bytes::from(render(&board.snapshot())?);
        *kept = Some((key, body.clone()));
        Ok(body)
    }
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The dashboard's routes over `board`; with `token`, every request must carry it.
pub fn router(board: Board, token: Option<String>) -> Router {
    // An empty token is no token: loopback only, and the Host check applies.
    let app = App {
        board,
        token: token.filter(|t| !t.is_empty()).map(Arc::from),
        panel: Arc::default(),
        state: Arc::default(),
        metrics: Arc::default(),
    };
    Router::new()
        .route("/", get(index))
        .route("/panel", get(panel))
        .route("/api/state", get(state))
        .route("/metrics", get(prometheus))
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .layer(middleware::from_fn(no_store))
        .with_state(app)
}

/// Checks `listener`'s address against `token`: any address but loopback needs one, and a
/// token has at least [`MIN_TOKEN_CHARS`] characters.
pub fn check_exposure(listener: &TcpListener, token: Option<&str>) -> Result<(), DashboardError> {
    let addr = listener.local_addr().map_err(DashboardError::Address)?;
    match token.filter(|t| !t.is_empty()) {
        None if !addr.ip().is_loopback() => Err(DashboardError::Unprotected(addr)),
        Some(t) if t.chars().count() < MIN_TOKEN_CHARS => {
            Err(DashboardError::WeakToken(t.chars().count()))
        }
        _ => Ok(()),
    }
}

/// Serves the dashboard on `listener` until the task is dropped (see [`check_exposure`]).
pub async fn serve(
    listener: TcpListener,
    board: Board,
    token: Option<String>,
) -> Result<(), DashboardError> {
    check_exposure(&listener, token.as_deref())?;
    let router = router(board, token);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return Ok(());
        };
        let Ok((stream, _)) = listener.accept().await else {
            // A transient accept error (out of descriptors): wait a moment, go on.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(permit);
        });
    }
}

async fn authorize(
    State(app): State<App>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &app.token else {
        // Without a token only loopback is served, and only to pages of a loopback origin:
        // a web page whose name was rebound to 127.0.0.1 sends its own name as the Host.
        if headers.get(header::HOST).is_some_and(|h| !loopback_host(h)) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this dashboard answers requests to localhost or a loopback address only; \
                 open it as http://127.0.0.1:PORT/ or give it --http-token\n",
            )
                .into_response();
        }
        return next.run(request).await;
    };
    // The scheme is case-insensitive (RFC 7235); the token is taken as bytes, UTF-8 or not.
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| {
        let v = v.as_bytes();
        (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &v[7..])
    });
    let given = bearer
        .or(query.token.as_deref().map(str::as_bytes))
        .unwrap_or(b"");
    // Digests of equal length, compared in constant time: neither the token nor its length
    // shows in the time an answer takes.
    let digest = |t: &[u8]| Sha256::digest(t);
    if bool::from(digest(given).ct_eq(&digest(expected.as_bytes()))) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this dashboard needs its token: send `Authorization: Bearer TOKEN` or open /?token=TOKEN\n",
        )
            .into_response()
    }
}

/// Whether a `Host` header names this machine's loopback: `localhost` or a loopback IP, with
/// or without a port.
fn loopback_host(host: &HeaderValue) -> bool {
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Every answer is current state: no cache may keep it, and no page may frame it.
async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn index(State(app): State<App>, Query(query): Query<TokenQuery>) -> Html<String> {
    let token = app.token.as_ref().and(query.token.as_deref());
    Html(page::page(&app.board.snapshot(), token))
}

async fn panel(State(app): State<App>) -> Response {
    let body = app
        .panel
        .get(&app.board, |s| Ok(page::panel(s).into_bytes()));
    answer(body, "text/html; charset=utf-8")
}

async fn state(State(app): State<App>) -> Response {
    let body = app.state.get(&app.board, serde_json::to_vec);
    answer(body, "application/json")
}

async fn prometheus(State(app): State<App>) -> Response {
    let body = app
        .metrics
        .get(&app.board, |s| Ok(metrics::render(s).into_bytes()));
    answer(body, "text/plain; version=0.0.4; charset=utf-8")
}

/// A rendered body with its type, or a 500 naming what failed.
fn answer(body: Result<Bytes, serde_json::Error>, content_type: &'static str) -> Response {
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not render the dashboard's state: {e}\n"),
        )
            .into_response(),
    }
}
