//! How a delivery ends on the broker, written once: [`settle`] and
//! [`ack_all`] are the only calls that acknowledge or reject a job's
//! delivery, and they are called only once its end is stored (or, for
//! its webhook event, published: [`announce`]).

use crate::pending::{Pending, Settle};
use crate::settle::Settler;
use futures_util::future::join_all;
use infq_common::webhooks::event::EventMessage;
use std::sync::Arc;

/// Publishes the events `due` (one per job, in order) on the session each
/// job came from, and returns the jobs to settle: all, or, where the
/// events could not be published, those without an event (the others go
/// back to their queue, and their redelivery publishes again; jobs going
/// to a retry tier have no event yet).
pub(super) async fn announce<T>(
    jobs: Vec<(Pending, T)>,
    due: Vec<Option<EventMessage>>,
    has_event: impl Fn(&T) -> bool,
) -> Vec<(Pending, T)> {
    if due.iter().all(Option::is_none) {
        return jobs;
    }
    // One publish per broker session; nearly always there is one.
    let mut groups: Vec<(&Arc<Settler>, Vec<EventMessage>)> = Vec::new();
    for ((job, _), event) in jobs.iter().zip(&due) {
        let Some(event) = event else { continue };
        let settler = &job.delivery.settler;
        match groups.iter_mut().find(|(s, _)| same_session(s, settler)) {
            Some((_, events)) => events.push(event.clone()),
            None => groups.push((settler, vec![event.clone()])),
        }
    }
    let published = join_all(
        groups
            .iter()
            .map(|(s, events)| publish_events(s, events.clone())),
    )
    .await;
    let failed: Vec<Arc<Settler>> = groups
        .iter()
        .zip(published)
        .filter(|(_, ok)| !ok)
        .map(|((s, _), _)| Arc::clone(s))
        .collect();
    if failed.is_empty() {
        return jobs;
    }
    let mut keep = Vec::with_capacity(jobs.len());
    for (j, t) in jobs {
        let in_failed = failed.iter().any(|s| same_session(s, &j.delivery.settler));
        if in_failed && j.webhook && has_event(&t) {
            settle(&j.delivery, Verdict::Requeue).await;
        } else {
            keep.push((j, t));
        }
    }
    keep
}

/// Publishes `events` on the broker session of the channel `settler`
/// settles, and waits for the confirm; `false` if they may not have been
/// taken. Nothing to publish is a success.
pub(super) async fn publish_events(settler: &Settler, events: Vec<EventMessage>) -> bool {
    if events.is_empty() {
        return true;
    }
    let n = events.len();
    let Some(session) = settler.session() else {
        tracing::warn!("no broker session for webhook events; the jobs will be redelivered");
        return false;
    };
    match session.events.publish(events).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, events = n, "could not publish webhook events; the jobs will be redelivered");
            false
        }
    }
}

/// Whether two channels' settlers belong to one broker session (or are
/// both detached).
fn same_session(a: &Settler, b: &Settler) -> bool {
    match (a.session(), b.session()) {
        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
        (None, None) => true,
        _ => false,
    }
}

/// How a delivery ends on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done with: acknowledged.
    Ack,
    /// Returned to its queue for another try.
    Requeue,
    /// Rejected without requeue: the broker dead-letters it.
    Reject,
}

/// Settles one delivery. A failure means the channel is gone: the broker
/// redelivers, and the claim step settles the redelivery.
pub(super) async fn settle(delivery: &Settle, verdict: Verdict) {
    let r = match verdict {
        Verdict::Ack => delivery.settler.ack(&[delivery.tag]).await,
        Verdict::Requeue => delivery.settler.reject(delivery.tag, true).await,
        Verdict::Reject => delivery.settler.reject(delivery.tag, false).await,
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, ?verdict, "settling a delivery failed; it will be redelivered");
    }
}

/// Acknowledges jobs whose end is stored: one call per channel, whose
/// settler sends one multiple ack.
pub(super) async fn ack_all(jobs: &[Pending]) {
    let mut by_channel: Vec<(&Arc<Settler>, Vec<u64>)> = Vec::new();
    for j in jobs {
        match by_channel
            .iter_mut()
            .find(|(s, _)| Arc::ptr_eq(s, &j.delivery.settler))
        {
            Some((_, tags)) => tags.push(j.delivery.tag),
            None => by_channel.push((&j.delivery.settler, vec![j.delivery.tag])),
        }
    }
    let results = join_all(by_channel.iter().map(|(s, tags)| s.ack(tags))).await;
    for r in results {
        if let Err(e) = r {
            // The channel is gone; the broker redelivers and the claim step
            // acknowledges without running again.
            tracing::debug!(error = %e, "acknowledgement failed");
        }
    }
}
