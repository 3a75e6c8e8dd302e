//! The admin HTTP port (Kestrel's Ostrich port, 2223): stats as Ostrich
//! served them (`/stats.json`, `/stats.txt`, with `?period=N` windows),
//! Prometheus metrics (`/metrics`), server info, a live dashboard (`/`), and
//! token-protected control (status, reload, shutdown, flush, delete).
//!
//! It sits beside the protocol adapters and, like them, only calls the
//! service: [`report`] shapes the Ostrich stats, [`window`] keeps the
//! periods, [`prometheus`] writes the exposition, [`control`] guards and
//! runs the control endpoints.

mod control;
mod prometheus;
mod report;
mod window;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::service::{QueueServer, QueueService, VERSION};
use crate::status::ServerStatus;
use control::Action;
use report::Report;
use window::{PeriodError, Windows};

/// The dashboard page: one file, its script and styles inline, served from
/// the binary (nothing is fetched from elsewhere when it is viewed).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Where each protocol listens, for `/server_info.json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    pub thrift: Option<u16>,
    pub memcache: Option<u16>,
    pub text: Option<u16>,
    pub admin: Option<u16>,
}

/// What the admin port's handlers share.
pub struct Admin {
    service: Arc<QueueServer>,
    token: Option<Secret>,
    ports: Ports,
    started: SystemTime,
    windows: Windows,
    registry: prometheus_client::registry::Registry,
}

impl Admin {
    pub fn new(service: Arc<QueueServer>, token: Option<Secret>, ports: Ports) -> Admin {
        Admin {
            registry: prometheus::registry(service.clone()),
            service,
            token,
            ports,
            started: SystemTime::now(),
            windows: Windows::default(),
        }
    }

    fn report(&self) -> Report {
        Report::new(&self.service.stats(), self.service.status())
    }
}

/// Serves the admin port until `shutdown`; requests in flight (a
/// `/shutdown` reply, say) finish first.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let ticker = tokio::spawn(latch_windows(admin.clone(), shutdown.clone()));
    let app = router(admin);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "admin port failed");
    }
    ticker.abort();
}

/// Latches the `?period=` windows as they end.
async fn latch_windows(admin: Arc<Admin>, shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = admin.windows.latch(|| admin.report()) => {}
    }
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route(
            "/ping",
            get(|| async { axum::Json(serde_json::json!({"response": "pong"})) }),
        )
        .route("/server_info.json", get(server_info))
        .route("/stats.json", get(stats_json))
        .route("/stats.txt", get(stats_txt))
        .route("/metrics", get(metrics))
        .route("/status/{status}", post(set_status))
        .route("/reload", post(|s, h| control(s, h, Action::Reload)))
        .route("/shutdown", post(|s, h| control(s, h, Action::Shutdown)))
        .route("/flush/{queue}", post(flush))
        .route("/delete/{queue}", post(delete))
        .with_state(admin)
}

/// An error answer: `{"error": message}` with `status`.
fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({"error": message}))).into_response()
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn server_info(State(admin): State<Arc<Admin>>) -> Response {
    let p = admin.ports;
    axum::Json(serde_json::json!({
        "name": "kestrel",
        "version": VERSION,
        "start_time": unix_secs(admin.started),
        "uptime": admin.started.elapsed().map_or(0, |d| d.as_secs()),
        "status": admin.service.status().word(),
        "ports": {"thrift": p.thrift, "memcache": p.memcache, "text": p.text, "admin": p.admin},
    }))
    .into_response()
}

#[derive(Deserialize)]
struct Period {
    period: Option<u64>,
}

/// The report a stats request asks for: now, or over its period.
fn report_for(admin: &Admin, period: Option<u64>) -> Result<Report, PeriodError> {
    let now = admin.report();
    match period {
        None => Ok(now),
        Some(period) => admin.windows.report(period, now),
    }
}

async fn stats_json(State(admin): State<Arc<Admin>>, Query(q): Query<Period>) -> Response {
    match report_for(&admin, q.period) {
        Ok(report) => axum::Json(report.to_json()).into_response(),
        Err(e) => json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn stats_txt(State(admin): State<Arc<Admin>>, Query(q): Query<Period>) -> Response {
    match report_for(&admin, q.period) {
        Ok(report) => report.to_text().into_response(),
        Err(e) => json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let body = prometheus::encode(&admin.registry);
    let kind = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn control(State(admin): State<Arc<Admin>>, headers: HeaderMap, action: Action) -> Response {
    control::run(&admin, &headers, action).await
}

async fn set_status(
    state: State<Arc<Admin>>,
    headers: HeaderMap,
    Path(word): Path<String>,
) -> Response {
    match ServerStatus::parse(&word) {
        Some(status) => control(state, headers, Action::Status(status)).await,
        None => json_error(
            StatusCode::NOT_FOUND,
            "no such status: up, readonly or quiescent",
        ),
    }
}

async fn flush(
    state: State<Arc<Admin>>,
    headers: HeaderMap,
    Path(queue): Path<String>,
) -> Response {
    control(state, headers, Action::Flush(queue)).await
}

async fn delete(
    state: State<Arc<Admin>>,
    headers: HeaderMap,
    Path(queue): Path<String>,
) -> Response {
    control(state, headers, Action::Delete(queue)).await
}
