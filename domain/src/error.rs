//! The error type shared by domain operations: infrastructure failures carried as-is so the
//! boundary (GraphQL, webhook, worker) can log them once and map them to a stable code.

/// Result of a domain operation.
pub type DomainResult<T> = Result<T, DomainError>;

/// Failures that are not business outcomes: the caller cannot fix them by changing its input.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// No database connection could be obtained in time.
    #[error("database unavailable: {0}")]
    Pool(String),
    /// Anything else that went wrong inside the service.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for DomainError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        DomainError::Pool(e.to_string())
    }
}

impl DomainError {
    /// True when retrying the same request later may succeed (database briefly unreachable).
    pub fn is_retryable(&self) -> bool {
        match self {
            DomainError::Pool(_) => true,
            DomainError::Database(diesel::result::Error::DatabaseError(_, info)) => {
                info.message().contains("Deadlock found")
                    || info.message().contains("Lock wait timeout")
            }
            _ => false,
        }
    }
}
