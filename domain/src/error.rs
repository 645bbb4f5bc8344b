//! The error type shared by domain operations: infrastructure failures carried as-is so the
//! boundary (GraphQL, webhook, worker) can log them once and map them to a stable code.

/// Result of a domain operation.
pub type DomainResult<T> = Result<T, DomainError>;

/// Failures that are not business outcomes: the caller cannot fix them by changing its input.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(diesel::result::Error),
    /// No database connection could be obtained in time.
    #[error("database unavailable: {0}")]
    Pool(String),
    /// Anything else that went wrong inside the service.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What the MySQL driver says when the connection itself is gone (server restarted or killed
/// the session, network cut): the statement may not have run, and the same request on a fresh
/// connection may well succeed.
const CONNECTION_LOST: &[&str] = &[
    "Input/output error",
    "Connection to the server is closed",
    "Packet out of order",
    "Unexpected packet",
    "Server shutdown in progress",
    "Connection was killed",
];

/// True when `e` says the connection to MySQL was lost.
pub fn connection_lost(e: &diesel::result::Error) -> bool {
    match e {
        diesel::result::Error::DatabaseError(_, info) => {
            let message = info.message();
            CONNECTION_LOST.iter().any(|s| message.contains(s))
        }
        diesel::result::Error::BrokenTransactionManager => true,
        _ => false,
    }
}

impl From<diesel::result::Error> for DomainError {
    fn from(e: diesel::result::Error) -> Self {
        if connection_lost(&e) {
            // a result stream that broke while rows were read reports the loss here only
            crate::db::note_connection_lost_in_process();
        }
        DomainError::Database(e)
    }
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
            DomainError::Database(e) if connection_lost(e) => true,
            DomainError::Database(diesel::result::Error::DatabaseError(_, info)) => {
                info.message().contains("Deadlock found")
                    || info.message().contains("Lock wait timeout")
            }
            _ => false,
        }
    }
}
