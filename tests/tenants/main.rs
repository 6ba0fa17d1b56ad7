//! Tenants against the real RabbitMQ and Redis: API keys, isolation,
//! quotas and queue limits (429 with Retry-After, nothing enqueued), input
//! limits (413), erasure and retention.

mod keys;
mod limits;
mod privacy;
mod shares;
mod support;
