//! The control endpoints: status changes, reload, shutdown, flush and
//! delete, refused unless the server has an admin token and the request
//! carries it as `Authorization: Bearer <token>`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{Admin, json_error};
use crate::config::Secret;
use crate::service::{QueueService, ServiceError};
use crate::status::ServerStatus;

/// What a control request asks for.
pub enum Action {
    Status(ServerStatus),
    Reload,
    Shutdown,
    Flush(String),
    Delete(String),
}

/// Why a control request was refused before it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    /// The server has no token: control is off.
    NoToken,
    /// The request carries no token, or another one.
    BadToken,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::NoToken => json_error(
                StatusCode::FORBIDDEN,
                "control is off: the server has no admin_token (or admin_token_file)",
            ),
            Denied::BadToken => {
                let mut refused = json_error(
                    StatusCode::UNAUTHORIZED,
                    "a valid `Authorization: Bearer <admin_token>` header is required",
                );
                refused
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                refused
            }
        }
    }
}

/// Checks the request's bearer token against the server's, in time that
/// does not depend on how much of it matched.
fn authorize(token: Option<&Secret>, headers: &HeaderMap) -> Result<(), Denied> {
    let token = token.ok_or(Denied::NoToken)?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match given {
        Some(given) if bool::from(given.ct_eq(token.as_bytes())) => Ok(()),
        _ => Err(Denied::BadToken),
    }
}

/// The HTTP status a refused call answers with.
fn refusal(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::BadName(_) => StatusCode::BAD_REQUEST,
        ServiceError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::StatusChange(_)
        | ServiceError::OpenReadPending
        | ServiceError::TooManyOpenReads { .. }
        | ServiceError::NotEnoughOpen { .. }
        | ServiceError::AdminCommandsOff => StatusCode::CONFLICT,
        ServiceError::Queue(_) | ServiceError::Journal(_) | ServiceError::Config(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// Runs `action` for an authorized request.
pub async fn run(admin: &Admin, headers: &HeaderMap, action: Action) -> Response {
    if let Err(denied) = authorize(admin.token.as_ref(), headers) {
        return denied.into_response();
    }
    let service = &admin.service;
    let done = match action {
        Action::Status(status) => service.set_status(status).await,
        Action::Reload => service.reload(),
        Action::Shutdown => {
            tracing::info!("shutdown requested over the admin port");
            service.shutdown();
            Ok(())
        }
        Action::Flush(queue) => service.flush(&queue).await,
        Action::Delete(queue) => service.delete(&queue).await,
    };
    match done {
        Ok(()) => axum::Json(serde_json::json!({"response": "ok"})).into_response(),
        Err(e) => json_error(refusal(&e), &e.to_string()),
    }
}
