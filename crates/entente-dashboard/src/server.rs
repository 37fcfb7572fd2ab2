//! The dashboard's HTTP server: the page, its panel, the JSON API and the Prometheus
//! endpoint, behind an optional bearer token, with limits that keep a slow or greedy client
//! from holding the coordinator up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::board::Board;
use crate::{metrics, page};

/// Connections served at once; more wait in the kernel's queue until one ends.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one connection may stay open.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// The address could not be read.
    #[error("could not read the dashboard's listening address: {0}")]
    Address(#[source] std::io::Error),
}

#[derive(Clone)]
struct App {
    board: Board,
    token: Option<Arc<str>>,
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The dashboard's routes over `board`; with `token`, every request must carry it.
pub fn router(board: Board, token: Option<String>) -> Router {
    let app = App {
        board,
        token: token.map(Arc::from),
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

/// Checks `listener`'s address against `token`: any address but loopback needs one.
pub fn check_exposure(listener: &TcpListener, token: Option<&str>) -> Result<(), DashboardError> {
    let addr = listener.local_addr().map_err(DashboardError::Address)?;
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(DashboardError::Unprotected(addr));
    }
    Ok(())
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
        return next.run(request).await;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = bearer.or(query.token.as_deref()).unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
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

async fn panel(State(app): State<App>) -> Html<String> {
    Html(page::panel(&app.board.snapshot()))
}

async fn state(State(app): State<App>) -> Json<crate::board::Snapshot> {
    Json(app.board.snapshot())
}

async fn prometheus(State(app): State<App>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&app.board.snapshot()),
    )
}
