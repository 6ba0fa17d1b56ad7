//! Messages on the internal queues are untrusted input: against the real
//! RabbitMQ and Redis, hostile messages published straight to the job
//! queues cost only themselves (they are dead-lettered with their reason),
//! and the stored records, not the messages, say what a job is. Also the
//! store's rules that keep every accepted job and batch alive until it
//! ends: records that outlive a short retention while queued, completion
//! derived from stored state, and errors that belong to one state.

mod messages;
mod store_rules;
mod support;
