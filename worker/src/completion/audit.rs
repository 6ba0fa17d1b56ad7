//! The audit records of the ends a worker stores (see
//! [`infq_common::audit`]): a job's terminal state, with the digests of
//! its inputs and output, and a batch's completion, with the digest of
//! all its results.
//!
//! They are published with a confirm before the deliveries that caused
//! them are acknowledged. One the broker does not confirm is logged and
//! counted (`infq_audit_publish_failures_total`), and the deliveries are
//! acknowledged all the same: the results are stored, and holding them
//! back would not bring the record back. A job whose delivery comes back
//! after its end was stored (a worker stopped before its acknowledgement)
//! is recorded again from its stored record, so a crash between the store
//! and the record loses nothing.

use crate::context::WorkerCtx;
use crate::pending::Pending;
use crate::session::Session;
use infq_common::audit::{inputs_sha256, Event, Record};
use infq_common::job::{JobId, JobStatus};
use infq_common::keys::Subject;
use infq_common::sha256::hex as sha256_hex;
use infq_common::store::{JobStore, StoreError, Transition};
use std::sync::Arc;
use std::time::Duration;

/// Chunks read at once while a batch's results are digested.
const DIGEST_WINDOW: u32 = 64;

/// The record of job `job` ending as `t`, if that is an end to record
/// (a cancellation is recorded by the producer that did it).
pub(super) fn job_end(job: &Pending, t: &Transition) -> Option<Record> {
    if !t.status.is_terminal() || t.status == JobStatus::Cancelled {
        return None;
    }
    let mut r = Record::job(Event::JobCompleted, &job.msg.record().to_string())
        .of_model(&job.msg.model, &job.msg.version);
    r.model_sha256 = t.model_sha256.clone();
    r.inputs_sha256 = Some(inputs_sha256(&job.msg.inputs));
    r.outputs_sha256 = t.output.as_deref().map(|o| sha256_hex(o.as_bytes()));
    r.status = Some(t.status.as_str().to_string());
    Some(r)
}

/// The record of a job whose end was stored before (its delivery came
/// back), read from its record; `None` if it has none or its end is not
/// one to record.
async fn stored_job_end(store: &JobStore, job: &Pending) -> Result<Option<Record>, StoreError> {
    let Some(rec) = store.get(&job.msg.record()).await? else {
        return Ok(None);
    };
    let t = Transition {
        status: rec.status,
        output: rec.output,
        explanation: None,
        model_sha256: rec.model_sha256,
        error: None,
    };
    Ok(job_end(job, &t))
}

/// The record of batch `id`'s completion: its record, and the digest of
/// every stored chunk in order.
pub(super) async fn batch_end(store: &JobStore, id: &JobId) -> Result<Option<Record>, StoreError> {
    let Some(b) = store.get_batch(id).await? else {
        return Ok(None);
    };
    let mut digest = infq_common::sha256::Hasher::default();
    let mut from = 0;
    while from < b.chunks {
        let to = b.chunks.min(from.saturating_add(DIGEST_WINDOW));
        for chunk in store.get_chunks(id, from, to).await?.into_iter().flatten() {
            digest.update(chunk.as_bytes());
        }
        from = to;
    }
    let mut r = Record::batch(Event::BatchCompleted, &id.to_string())
        .of_model(&b.model, &b.version)
        .by(b.tenant.as_deref(), None);
    r.model_sha256 = b.lineage.model_sha256;
    r.outputs_sha256 = Some(digest.finish());
    r.status = Some(b.status.as_str().to_string());
    r.rows = Some(b.total);
    Ok(Some(r))
}

/// Records the ends of `jobs` that a redelivery found stored (`status`
/// known): jobs only; a batch's completion is recorded by the chunk that
/// completed it.
pub(super) async fn stored_ends(ctx: &WorkerCtx, ended: &[(Pending, Option<JobStatus>)]) {
    if !ctx.topology.audits() {
        return;
    }
    let mut records = Vec::new();
    for (job, status) in ended {
        let recordable = status.is_some_and(|s| s != JobStatus::Cancelled);
        if !recordable || job.msg.work.chunk().is_some() {
            continue;
        }
        match stored_job_end(&ctx.store, job).await {
            Ok(Some(r)) => records.push(r),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, job_id = %job.msg.record(), "could not read a job's stored end for its audit record");
            }
        }
    }
    let session = ended
        .iter()
        .find_map(|(j, _)| j.delivery.settler.session().cloned());
    publish(ctx, session.as_ref(), records).await;
}

/// Fills in the tenants of `records` (jobs and batches whose records say
/// whose they are) and publishes them on `session`; a failure is logged
/// and counted.
pub(super) async fn publish(
    ctx: &WorkerCtx,
    session: Option<&Arc<Session>>,
    mut records: Vec<Record>,
) {
    if records.is_empty() || !ctx.topology.audits() {
        return;
    }
    // Jobs made up in tests come from no broker.
    let Some(session) = session else { return };
    let subjects: Vec<(usize, Subject)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.tenant.is_none())
        .filter_map(|(i, r)| {
            let id = r.job.as_deref().or(r.batch.as_deref())?.parse().ok()?;
            Some((
                i,
                if r.job.is_some() {
                    Subject::Job(id)
                } else {
                    Subject::Batch(id)
                },
            ))
        })
        .collect();
    let only: Vec<Subject> = subjects.iter().map(|(_, s)| *s).collect();
    match ctx.store.tenants_of(&only).await {
        Ok(tenants) => {
            for ((i, _), t) in subjects.iter().zip(tenants) {
                records[*i].tenant = t.map(|t| t.to_string());
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the tenants of audit records"),
    }
    let timeout = Duration::from_millis(ctx.settings.amqp.publish_timeout_ms);
    let stream = ctx.topology.audit_stream();
    infq_common::audit::append(session.channels.lease(timeout), &stream, &records, timeout).await;
}
