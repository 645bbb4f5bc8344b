//! Error codes at the GraphQL boundary: every top-level error carries `extensions.code`, and
//! internal failures are logged once here and never leak their details to clients.
//!
//! `UNAUTHENTICATED` means "who are you?" (no, invalid, expired or revoked credentials);
//! `FORBIDDEN` means "I know who you are, and you may not do this".

use async_graphql::{Enum, ErrorExtensions as _};
use domain::DomainError;

/// Codes of top-level GraphQL errors (`errors[].extensions.code`).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Credentials are missing where required, or present but invalid, expired or revoked.
    Unauthenticated,
    /// The caller is known but not allowed to do this.
    Forbidden,
    /// An argument is malformed or out of range (bad id or cursor, page too large, …).
    BadUserInput,
    /// The thing asked for does not exist (or is not visible to the caller).
    NotFound,
    /// Too many requests; retry after the time in `extensions.retryAfterSeconds`.
    RateLimited,
    /// A dependency is briefly unavailable; the same request may succeed if retried.
    ServiceUnavailable,
    /// Something failed inside the service; details are in the server log under the request id.
    Internal,
}

impl ErrorCode {
    /// The `extensions.code` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::BadUserInput => "BAD_USER_INPUT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// A GraphQL error with this code.
    pub fn error(self, message: impl Into<String>) -> async_graphql::Error {
        async_graphql::Error::new(message).extend_with(|_, e| e.set("code", self.as_str()))
    }
}

/// `BAD_USER_INPUT` naming the argument at fault.
pub fn bad_input(argument: &str, message: impl std::fmt::Display) -> async_graphql::Error {
    async_graphql::Error::new(format!("{argument}: {message}")).extend_with(|_, e| {
        e.set("code", ErrorCode::BadUserInput.as_str());
        e.set("argument", argument);
    })
}

/// Maps an infrastructure failure to a client-safe error, logging it (once, here).
pub fn internal(err: &DomainError) -> async_graphql::Error {
    if err.is_retryable() {
        tracing::warn!(error = %err, "dependency unavailable");
        ErrorCode::ServiceUnavailable.error("a dependency is briefly unavailable; retry shortly")
    } else {
        tracing::error!(error = %err, "internal error");
        ErrorCode::Internal.error("internal error")
    }
}

/// An invariant the service relies on does not hold (a bug or bad data): logged, `INTERNAL`.
pub fn broken(what: &str) -> async_graphql::Error {
    tracing::error!(what, "broken invariant");
    ErrorCode::Internal.error("internal error")
}

impl From<ErrorCode> for async_graphql::Error {
    fn from(code: ErrorCode) -> Self {
        code.error(code.as_str().to_lowercase().replace('_', " "))
    }
}
