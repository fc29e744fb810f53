//! Errors of the HTTP adapter. API routes answer `{"error": {"code", "message"}}`; pages
//! answer the error page. 5xx bodies stay generic; the detail is logged once, in the
//! request's span.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{BytesRejection, FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::LoginError;
use crate::auth::users::UserError;
use crate::auth::vault::VaultError;
use crate::chat::ChatError;
use crate::jobs::JobError;
use crate::prompts::PromptError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{1}")]
    TooManyRequests(Duration, String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Rejected { status, .. } => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Unprocessable(_) => "invalid",
            Self::TooManyRequests(..) => "too_many_requests",
            Self::PayloadTooLarge(_) => "too_large",
            Self::Unavailable(_) => "unavailable",
            Self::Rejected { .. } => "bad_request",
            Self::Internal(_) => "internal",
        }
    }

    /// The message a client may see: internal details stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                "internal error; see the server log".into()
            }
            other => other.to_string(),
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.public_message();
        let mut response =
            (status, Json(Body { error: Detail { code: self.code(), message: &message } })).into_response();
        if let Self::TooManyRequests(wait, _) = self {
            response.headers_mut().insert(header::RETRY_AFTER, retry_after(wait));
        }
        response
    }
}

/// Whole seconds, rounded up, at least 1.
pub fn retry_after(wait: Duration) -> HeaderValue {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::Rejected { status: rejection.status(), message: rejection.body_text() }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        Self::Rejected { status: rejection.status(), message: rejection.body_text() }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::Rejected { status: rejection.status(), message: rejection.body_text() }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Rejected { status: rejection.status(), message: rejection.body_text() }
    }
}

impl From<FormRejection> for ApiError {
    fn from(rejection: FormRejection) -> Self {
        Self::Rejected { status: rejection.status(), message: rejection.body_text() }
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::NotFound => Self::NotFound("no such conversation or message"),
            ChatError::Invalid(message) => Self::Unprocessable(message),
            ChatError::TooLarge(message) => Self::PayloadTooLarge(message),
            ChatError::RateLimited(wait) => Self::TooManyRequests(wait, e.to_string()),
            ChatError::TooManyGenerations(_) => Self::TooManyRequests(Duration::from_secs(1), e.to_string()),
            ChatError::NoConfig => Self::Unavailable(e.to_string()),
            ChatError::NotPending => Self::Conflict(e.to_string()),
            ChatError::Prompt(PromptError::Db(_)) | ChatError::Db(_) => Self::Internal(e.into()),
            // A prompt named in a message is part of the message.
            ChatError::Prompt(_) => Self::Unprocessable(e.to_string()),
        }
    }
}

impl From<PromptError> for ApiError {
    fn from(e: PromptError) -> Self {
        match e {
            PromptError::NotFound(_) => Self::NotFound("no such prompt of yours"),
            PromptError::Invalid(_) | PromptError::Problems(_) => Self::Unprocessable(e.to_string()),
            PromptError::Exists(_) => Self::Conflict(e.to_string()),
            PromptError::Db(_) => Self::Internal(e.into()),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound => Self::NotFound("no such job or run"),
            JobError::Invalid(message) => Self::Unprocessable(message),
            JobError::Managed => Self::Conflict(e.to_string()),
            JobError::Forbidden => Self::Forbidden("only an admin may run a job managed by Kubernetes from here"),
            JobError::Queue(_) => {
                tracing::error!(error = %e, "cannot queue a run");
                Self::Unavailable("the run queue is unavailable; try again later".into())
            }
            JobError::Db(_) => Self::Internal(e.into()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid(message) => Self::Unprocessable(message),
            UserError::Exists => Self::Conflict(e.to_string()),
            UserError::NotFound => Self::NotFound("no such user"),
            UserError::LastAdmin => Self::Conflict(e.to_string()),
            UserError::WrongPassword => Self::Forbidden("the current password is wrong"),
            UserError::NoPassword => Self::Unprocessable(e.to_string()),
            UserError::Hash(_) | UserError::Db(_) => Self::Internal(e.into()),
        }
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Invalid(message) => Self::Unprocessable(message),
            VaultError::Open(_) | VaultError::Db(_) => Self::Internal(e.into()),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Invalid => Self::Unauthorized("wrong user name or password"),
            e @ LoginError::NameTooLong => Self::Unprocessable(e.to_string()),
            LoginError::Throttled(wait) => {
                Self::TooManyRequests(wait, "too many failed attempts; try again later".into())
            }
            LoginError::LocalOff => Self::Forbidden("local sign-in is turned off; use single sign-on"),
            LoginError::AdminOnly => Self::Forbidden("local sign-in is for administrators only; use single sign-on"),
            LoginError::Users(e) => e.into(),
            LoginError::Db(e) => e.into(),
        }
    }
}

/// JSON body extractor whose rejections are JSON errors with the reason.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path parameters whose rejections (not a number, not UTF-8) are JSON errors.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// A query string whose rejections are JSON errors with the reason.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}
