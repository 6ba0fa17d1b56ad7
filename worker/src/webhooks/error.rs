//! Why a webhook attempt, or the settling of one, must be made again.

use crate::webhooks::events::EventsError;
use infq_common::store::StoreError;

/// A webhook attempt or its settling could not be done now; nothing was
/// lost, it is made again.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// Redis did not answer or refused a command.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The next attempt could not be queued on the broker.
    #[error(transparent)]
    Publish(#[from] EventsError),
    /// A tenant's secrets do not make a signer.
    #[error("{0}")]
    Secrets(String),
    /// The dispatcher's request slots are closed (shutting down).
    #[error(transparent)]
    Closed(#[from] tokio::sync::AcquireError),
}
