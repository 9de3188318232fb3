//! What a request can fail with, each mapped once to RabbitMQ's status code and JSON body
//! `{"error": ..., "reason": ...}`; a [`BrokerError`] from the command path maps here too.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lepus_broker::BrokerError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No credentials: 401 with an empty body and a `WWW-Authenticate` challenge.
    #[error("no credentials")]
    NoCredentials,
    /// Wrong name or password, or a loopback-only user from elsewhere.
    #[error("login failed")]
    LoginFailed,
    /// Logged in, but the user's tags or permissions do not allow this.
    #[error("not authorised: {0}")]
    NotAuthorised(&'static str),
    /// RabbitMQ's 404 `Object Not Found`.
    #[error("not found")]
    NotFound,
    /// 400 with `bad_request` and a reason.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 400 with another error code (pagination's).
    #[error("{error}: {reason}")]
    BadRequestCode { error: &'static str, reason: String },
    /// 405: the path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 501: an operation Lepus does not have yet.
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// 500: storage failed, or a broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> ApiError {
        match e {
            BrokerError::NotFound { .. } | BrokerError::Absent { .. } => ApiError::NotFound,
            BrokerError::AccessRefused(_) => ApiError::NotAuthorised("Access refused."),
            BrokerError::PreconditionFailed(text)
            | BrokerError::ResourceLocked(text)
            | BrokerError::CommandInvalid(text)
            | BrokerError::NotAllowed(text) => ApiError::BadRequest(text),
            BrokerError::NotImplemented(text) => ApiError::NotImplemented(text),
            e @ (BrokerError::Storage(_) | BrokerError::Internal(_)) => ApiError::Internal(e.to_string()),
        }
    }
}

impl ApiError {
    fn status_and_body(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::NoCredentials => (StatusCode::UNAUTHORIZED, "", String::new()),
            ApiError::LoginFailed => (StatusCode::UNAUTHORIZED, "not_authorized", "Login failed".into()),
            ApiError::NotAuthorised(reason) => (StatusCode::UNAUTHORIZED, "not_authorised", (*reason).into()),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "Object Not Found", "Not Found".into()),
            ApiError::BadRequest(reason) => (StatusCode::BAD_REQUEST, "bad_request", reason.clone()),
            ApiError::BadRequestCode { error, reason } => (StatusCode::BAD_REQUEST, error, reason.clone()),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "", String::new()),
            ApiError::NotImplemented(reason) => (StatusCode::NOT_IMPLEMENTED, "not_implemented", reason.clone()),
            ApiError::Internal(reason) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_server_error", reason.clone()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, reason) = self.status_and_body();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(reason = %reason.escape_debug(), "management request failed");
        }
        let mut response = if error.is_empty() {
            status.into_response()
        } else {
            (status, axum::Json(serde_json::json!({ "error": error, "reason": reason }))).into_response()
        };
        if status == StatusCode::UNAUTHORIZED && matches!(self, ApiError::NoCredentials | ApiError::LoginFailed) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""));
        }
        if self == ApiError::LoginFailed {
            response.extensions_mut().insert(crate::auth::LoginRefused);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
