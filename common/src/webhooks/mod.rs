//! Webhook callbacks, as the Standard Webhooks specification describes
//! them.
//!
//! When a job (or a whole batch) ends, the worker that stored its result
//! publishes a small [`event::EventMessage`] to the durable queue
//! `<ns>.webhooks`. It only names the job or batch: a dispatcher, a task
//! of its own apart from the model's batching path, takes it, reads the
//! stored record (the truth about the URL, the tenant whose secrets sign
//! and the body), builds the event, signs it ([`sign`]), checks where it
//! is going ([`guard`]) and POSTs it. A
//! failed attempt waits in a delay queue of the retry schedule
//! (`<ns>.webhooks.wait.<delay>ms`) and comes back; every attempt is logged in
//! Redis ([`store`]), where the API reads it.
//!
//! An event has one `webhook-id` for its whole life, across retries,
//! redeliveries and manual redeliveries, so receivers can drop duplicates.

pub mod event;
pub mod guard;
pub mod sign;
pub mod store;
