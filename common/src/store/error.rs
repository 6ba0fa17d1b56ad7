//! What a store call fails with.

/// A Redis failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A command failed or timed out.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A reply did not have the expected shape.
    #[error("unexpected redis reply: {0}")]
    Reply(String),
}

impl StoreError {
    /// Whether trying again later may succeed (connection and timeout
    /// problems), as opposed to a bug or a refused command.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Redis(e) => {
                crate::redis_link::connection_lost(e) || crate::redis_link::failover_under_way(e)
            }
            StoreError::Reply(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    fn server(kind: ServerErrorKind, text: &'static str) -> StoreError {
        StoreError::Redis(RedisError::from((ErrorKind::Server(kind), text)))
    }

    #[test]
    fn failovers_and_lost_connections_are_retried_refusals_are_not() {
        // A primary demoted under a connection that still points at it.
        assert!(server(ServerErrorKind::ReadOnly, "READONLY").is_retryable());
        assert!(server(ServerErrorKind::ClusterDown, "CLUSTERDOWN").is_retryable());
        assert!(server(ServerErrorKind::TryAgain, "TRYAGAIN").is_retryable());
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(StoreError::Redis(RedisError::from(reset)).is_retryable());
        assert!(!server(ServerErrorKind::ResponseError, "WRONGTYPE").is_retryable());
        assert!(!server(ServerErrorKind::NoScript, "NOSCRIPT").is_retryable());
        assert!(!StoreError::Reply("three values".into()).is_retryable());
    }
}
