//! Webhook delivery in the worker: [`events`] publishes an event message
//! once a result is stored (before the job's delivery is acknowledged, so a
//! crash in between republishes it); [`dispatch`] consumes them apart from
//! the batching path, checks each against its record ([`subject`]), and
//! sends it with [`client`], within its host's share ([`breaker`]).

pub mod breaker;
pub mod client;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod signers;
pub mod subject;
