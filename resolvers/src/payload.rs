//! Typed errors in mutation payloads (`errors { code field message }`): expected failures the
//! user can fix, as opposed to top-level errors (auth, limits, system).

use async_graphql::{Enum, SimpleObject};
use domain::validation;

/// What kind of user error.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserErrorCode {
    /// A field is missing, too long, malformed or out of range.
    InvalidInput,
    /// A per-member limit is reached (e.g. 20 addresses).
    LimitReached,
    /// The thing to change does not exist or belongs to someone else.
    NotFound,
}

/// An expected failure of a mutation, with the input field at fault.
#[derive(SimpleObject, Debug, Clone)]
pub struct UserError {
    /// Machine-readable kind.
    pub code: UserErrorCode,
    /// Path of the input field at fault, e.g. `input.phone`; null when no single field is.
    pub field: Option<String>,
    /// Human-readable explanation.
    pub message: String,
}

impl From<validation::UserError> for UserError {
    fn from(e: validation::UserError) -> Self {
        let code = match e.code {
            validation::UserErrorCode::InvalidInput => UserErrorCode::InvalidInput,
            validation::UserErrorCode::LimitReached => UserErrorCode::LimitReached,
            validation::UserErrorCode::NotFound => UserErrorCode::NotFound,
        };
        Self {
            code,
            field: e.field,
            message: e.message,
        }
    }
}

/// Converts domain user errors for a payload.
pub fn user_errors(errors: Vec<validation::UserError>) -> Vec<UserError> {
    errors.into_iter().map(UserError::from).collect()
}
