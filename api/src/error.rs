//! One error type for the whole API, rendered as OpenAI-style `{"error": {...}}` bodies with a
//! stable machine-readable `code`.

use moetune_types::{ErrorCode, InvalidId};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use moetune_types::LineError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong and what to fix.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found_error`,
    /// `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request parameter at fault, if any.
    pub param: Option<String>,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// For dataset errors: the offending lines (the first 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<LineError>>,
}

/// Longest error message sent, in characters.
const MAX_MESSAGE_CHARS: usize = 2000;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: ErrorDetail,
    /// Seconds for a `Retry-After` header (rate limits).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// Every error passes through here, its status and type decided by the code's row in
    /// [`ErrorCode`]. Messages quote what the caller sent (ids from the path, form field names, option
    /// values), so control characters are escaped and the length bounded before the message is logged,
    /// stored (idempotent replays) or sent.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let message = moetune_types::text::message(&message.into(), MAX_MESSAGE_CHARS);
        let status = StatusCode::from_u16(code.http_status()).expect("error codes carry valid HTTP statuses");
        let detail = ErrorDetail { message, kind: code.error_type().as_str(), param: None, code: code.as_str(), lines: None };
        Self { status, detail, retry_after: None }
    }

    /// An error about one request parameter, which the body names.
    pub fn invalid(code: ErrorCode, param: &str, message: impl Into<String>) -> Self {
        Self::new(code, message).with_param(param)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidApiKey, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InsufficientScope, message)
    }

    pub fn quota_exceeded(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::QuotaExceeded, message)
    }

    /// 429 for a rate limit, with the seconds to wait in `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, retry_after_seconds: u64) -> Self {
        let mut error = Self::new(ErrorCode::RateLimited, message);
        error.retry_after = Some(retry_after_seconds);
        error
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        let id = moetune_types::text::echo(id, moetune_types::text::MAX_ECHO_CHARS);
        Self::new(ErrorCode::NotFound, format!("No {what} found with id '{id}'."))
    }

    /// A path segment that is no id of the kind its route names: it names nothing (404, like an
    /// unknown id of that kind), with the segment echoed escaped.
    pub fn no_such(invalid: InvalidId) -> Self {
        Self::not_found(invalid.kind, &invalid.value)
    }

    /// No route matches the method and path (after authentication). The path is not echoed.
    pub fn unknown_route() -> Self {
        Self::new(ErrorCode::UnknownRoute, "No API route matches this method and path; /docs lists the routes.")
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotReady, message)
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(ErrorCode::InternalError, "The server had an error processing your request.")
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.detail.param = Some(moetune_types::text::echo(param, moetune_types::text::MAX_ECHO_CHARS));
        self
    }

    pub fn with_lines(mut self, lines: Vec<LineError>) -> Self {
        self.detail.lines = Some(lines);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail.message, self.detail.code)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header(("retry-after", seconds.to_string()));
        }
        response.json(ErrorBody { error: self.detail.clone() })
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // Postgres text cannot hold NUL (22021) and refuses some conversions (22P05): that is the
        // caller's input reaching a query, not a server failure.
        if let sqlx::Error::Database(db) = &e {
            if matches!(db.code().as_deref(), Some("22021" | "22P05")) {
                return Self::new(ErrorCode::InvalidCharacters, "Text values must not contain NUL (\\u0000) characters.");
            }
        }
        Self::internal(e)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(e)
    }
}

/// Malformed JSON bodies and query strings get the same error shape as everything else.
pub fn json_config() -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default().error_handler(|err, _| {
        ApiError::invalid(ErrorCode::InvalidRequestBody, "body", format!("Invalid request body: {err}")).into()
    })
}

pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default().error_handler(|err, _| {
        ApiError::invalid(ErrorCode::InvalidQuery, "query", format!("Invalid query string: {err}")).into()
    })
}
