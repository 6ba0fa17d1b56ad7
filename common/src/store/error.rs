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
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    // A failover under way: the sentinels name no
                    // primary yet, or no cluster node serves a slot.
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::MasterNameNotFoundBySentinel
                            | redis::ErrorKind::ClusterConnectionNotFound
                    )
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::MasterDown
                                | redis::ServerErrorKind::ClusterDown
                        )
                    )
            }
            StoreError::Reply(_) => false,
        }
    }
}
