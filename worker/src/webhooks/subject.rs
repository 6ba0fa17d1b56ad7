//! What an event message names, checked against the stored record.
//!
//! Whoever can publish to the broker can publish an event message, so a
//! message only names work (a job or batch, which of its ends, the chain
//! and attempt); the record is the truth about everything else. The URL
//! the event goes to, the tenant whose secrets sign it and the body all
//! come from Redis. A message that names no record, a record without a
//! callback, a subject that has not ended (or ended without an event, as
//! a cancelled one does), an end the record has not reached, or an
//! attempt past the schedule is refused before anything is written or
//! sent, and the dispatcher dead-letters it with the reason.

use infq_common::job::{now_ms, JobId, JobStatus};
use infq_common::store::BatchRecord;
use infq_common::store::{JobStore, StoreError};
use infq_common::webhooks::event::{
    batch_event, job_event, progress_event, Event, EventMessage, SubjectKind,
};

/// Where and for whom an event that passed the checks goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The record's callback URL.
    pub url: String,
    /// The record's tenant (its secrets sign; the deployment's if none).
    pub tenant: Option<String>,
    /// The end the event announces.
    pub gen: u32,
    /// The event built from the record, when the message names its
    /// current end (which has ended); an older end's event must have been
    /// built and kept before.
    pub built: Option<Event>,
}

/// What a message comes to once checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Go on with this.
    Go(Target),
    /// The subject was erased on its tenant's request: nothing is sent or
    /// kept, and the message is simply dropped.
    Erased,
    /// Refused, with the reason it is dead-lettered with.
    Refused(String),
    /// A progress event that is no longer worth sending (its batch ended,
    /// or a later one is due): dropped, for this reason.
    Outdated(String),
}

/// What the record of a subject says, as far as its event is concerned.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Its state.
    pub status: JobStatus,
    /// Where its events go.
    pub webhook_url: Option<String>,
    /// Its tenant.
    pub tenant: Option<String>,
    /// Its current end.
    pub reopened: u32,
    /// Erased (a tombstone).
    pub erased: bool,
    /// The event of its current end, if it has ended with one.
    pub event: Option<Event>,
}

fn what(kind: SubjectKind) -> &'static str {
    match kind {
        SubjectKind::Job => "job",
        SubjectKind::Batch => "batch",
    }
}

/// Checks `msg` against its subject's record (`None`: there is none),
/// for a dispatcher whose schedule has `schedule_len` attempts.
pub fn check(msg: &EventMessage, facts: Option<Facts>, schedule_len: usize) -> Resolution {
    let (kind, id) = (what(msg.kind), msg.subject);
    if msg.attempt as usize >= schedule_len {
        return Resolution::Refused(format!(
            "attempt {} of the event of {kind} {id} is past the schedule of {schedule_len} attempts",
            msg.attempt
        ));
    }
    let Some(f) = facts else {
        return Resolution::Refused(format!(
            "names no {kind} record: {id} was never recorded, or has expired"
        ));
    };
    if f.erased {
        return Resolution::Erased;
    }
    let Some(url) = f.webhook_url else {
        return Resolution::Refused(format!("{kind} {id} asked for no webhook"));
    };
    let gen = msg.gen.unwrap_or(f.reopened);
    if gen > f.reopened {
        return Resolution::Refused(format!(
            "generation {gen} of {kind} {id} is beyond its record's {}",
            f.reopened
        ));
    }
    let built = if gen == f.reopened {
        match f.event {
            Some(e) => Some(e),
            None => {
                return Resolution::Refused(format!(
                    "{kind} {id} is {}: no event is due",
                    f.status.as_str()
                ))
            }
        }
    } else {
        None
    };
    Resolution::Go(Target {
        url,
        tenant: f.tenant,
        gen,
        built,
    })
}

/// Checks the message of progress event number `n` of a batch against
/// its record (`None`: there is none), built at `now_ms`: only the latest
/// event due of a running batch is sent, built from the record as it is
/// now.
pub fn check_progress(
    msg: &EventMessage,
    n: u32,
    rec: Option<BatchRecord>,
    public_url: Option<&str>,
    now_ms: u64,
) -> Resolution {
    let id = msg.subject;
    let Some(rec) = rec else {
        return Resolution::Refused(format!(
            "names no batch record: {id} was never recorded, or has expired"
        ));
    };
    if rec.erased {
        return Resolution::Erased;
    }
    let Some(url) = rec.webhook_url.clone() else {
        return Resolution::Refused(format!("batch {id} asked for no webhook"));
    };
    if rec.progress_ms.is_none() {
        return Resolution::Refused(format!("batch {id} asked for no progress events"));
    }
    if n > rec.progress_seq {
        return Resolution::Refused(format!(
            "progress event {n} of batch {id} is beyond its record's {}",
            rec.progress_seq
        ));
    }
    if n < rec.progress_seq {
        return Resolution::Outdated(format!(
            "progress event {n} of batch {id}: event {} is due",
            rec.progress_seq
        ));
    }
    let (status, tenant) = (rec.status, rec.tenant.clone());
    match progress_event(rec, n, public_url, now_ms) {
        Some(e) => Resolution::Go(Target {
            url,
            tenant,
            gen: 0,
            built: Some(e),
        }),
        None => Resolution::Outdated(format!("batch {id} is {}", status.as_str())),
    }
}

/// Reads the batch a progress message names and checks the message
/// against it ([`check_progress`]). `Err` only when Redis may answer
/// later.
pub async fn resolve_progress(
    jobs: &JobStore,
    public_url: Option<&str>,
    msg: &EventMessage,
    n: u32,
) -> Result<Resolution, StoreError> {
    match jobs.get_batch(&msg.subject).await {
        Ok(rec) => Ok(check_progress(msg, n, rec, public_url, now_ms())),
        Err(e) if e.is_retryable() => Err(e),
        Err(e) => Ok(Resolution::Refused(format!(
            "the record of batch {} cannot be read: {e}",
            msg.subject
        ))),
    }
}

/// The reason an event message of an older end whose event was never
/// built is refused.
pub fn superseded(msg: &EventMessage, gen: u32) -> String {
    format!(
        "generation {gen} of {} {} ended again before its event was built",
        what(msg.kind),
        msg.subject
    )
}

/// Reads the record `msg` names and checks the message against it. `Err`
/// only when Redis may answer later; a record that cannot be read at all
/// refuses the message.
pub async fn resolve(
    jobs: &JobStore,
    public_url: Option<&str>,
    msg: &EventMessage,
    schedule_len: usize,
) -> Result<Resolution, StoreError> {
    if msg.attempt as usize >= schedule_len {
        return Ok(check(msg, None, schedule_len));
    }
    let facts = match read(jobs, public_url, msg.kind, &msg.subject).await {
        Ok(f) => f,
        Err(e) if e.is_retryable() => return Err(e),
        Err(e) => {
            return Ok(Resolution::Refused(format!(
                "the record of {} {} cannot be read: {e}",
                what(msg.kind),
                msg.subject
            )))
        }
    };
    Ok(check(msg, facts, schedule_len))
}

async fn read(
    jobs: &JobStore,
    public_url: Option<&str>,
    kind: SubjectKind,
    id: &JobId,
) -> Result<Option<Facts>, StoreError> {
    let now = now_ms();
    Ok(match kind {
        SubjectKind::Job => jobs.get(id).await?.map(|r| Facts {
            status: r.status,
            webhook_url: r.webhook_url.clone(),
            tenant: r.tenant.clone(),
            reopened: r.reopened,
            erased: r.erased,
            event: job_event(r, now),
        }),
        SubjectKind::Batch => jobs.get_batch(id).await?.map(|r| Facts {
            status: r.status,
            webhook_url: r.webhook_url.clone(),
            tenant: r.tenant.clone(),
            reopened: r.reopened,
            erased: r.erased,
            event: batch_event(r, public_url, now),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use infq_common::job::new_job_id;

    fn ended(reopened: u32) -> Facts {
        Facts {
            status: JobStatus::Succeeded,
            webhook_url: Some("https://hooks.acme.example/x".into()),
            tenant: Some("acme".into()),
            reopened,
            erased: false,
            event: Some(Event {
                id: "msg_x".into(),
                kind: "job.succeeded".into(),
                body: "{}".into(),
                gen: reopened,
            }),
        }
    }

    fn refused(r: Resolution) -> String {
        match r {
            Resolution::Refused(why) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn the_record_says_where_for_whom_and_what() {
        let m = EventMessage::new(SubjectKind::Job, new_job_id());
        let Resolution::Go(t) = check(&m, Some(ended(0)), 5) else {
            panic!("refused")
        };
        assert_eq!(t.url, "https://hooks.acme.example/x");
        assert_eq!(t.tenant.as_deref(), Some("acme"));
        assert_eq!((t.gen, t.built.unwrap().id.as_str()), (0, "msg_x"));
        // The first message announces the current end, whatever it is.
        let Resolution::Go(t) = check(&m, Some(ended(3)), 5) else {
            panic!("refused")
        };
        assert_eq!(t.gen, 3);
        // A later one of an older end goes on with the event kept for it.
        let old = EventMessage {
            gen: Some(1),
            attempt: 2,
            ..m.clone()
        };
        let Resolution::Go(t) = check(&old, Some(ended(3)), 5) else {
            panic!("refused")
        };
        assert_eq!((t.gen, t.built), (1, None));
    }

    fn running(seq: u32) -> BatchRecord {
        BatchRecord {
            id: new_job_id(),
            status: JobStatus::Running,
            model: "m".into(),
            version: "1".into(),
            total: 1000,
            chunks: 10,
            chunk_rows: 100,
            done_chunks: 4,
            succeeded: 390,
            failed: 10,
            created_at_ms: 1_000,
            started_at_ms: Some(2_000),
            finished_at_ms: None,
            error: None,
            webhook_url: Some("https://hooks.acme.example/p".into()),
            progress_ms: Some(5_000),
            progress_seq: seq,
            reopened: 0,
            tenant: Some("acme".into()),
            erased: false,
            outputs: vec!["p".into()],
            explain: None,
            passthrough: Vec::new(),
            lineage: Default::default(),
        }
    }

    #[test]
    fn a_progress_event_is_built_from_the_record_when_it_is_sent() {
        let rec = running(3);
        let m = EventMessage::progress(rec.id, 3);
        let Resolution::Go(t) = check_progress(&m, 3, Some(rec.clone()), None, 12_000) else {
            panic!("not sent")
        };
        assert_eq!(
            (t.url.as_str(), t.tenant.as_deref()),
            ("https://hooks.acme.example/p", Some("acme"))
        );
        let e = t.built.unwrap();
        assert_eq!(e.id, format!("msg_{}_p3", rec.id.simple()));
        assert_eq!(e.kind, "batch.progress");
        let body: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(body["type"], "batch.progress");
        assert_eq!(body["data"]["sequence"], 3);
        assert_eq!(body["data"]["succeeded"], 390);
        assert_eq!(body["data"]["failed"], 10);
        assert_eq!(body["data"]["chunks_done"], 4);
        assert_eq!(body["data"]["status"], "running");
    }

    #[test]
    fn progress_messages_the_record_does_not_back_are_refused_or_dropped() {
        let rec = running(3);
        let m = |n| EventMessage::progress(rec.id, n);
        let check = |n, r: Option<BatchRecord>| check_progress(&m(n), n, r, None, 12_000);
        assert!(refused(check(3, None)).contains("names no batch record"));
        assert!(refused(check(4, Some(rec.clone()))).contains("beyond its record's 3"));
        let mut quiet = rec.clone();
        quiet.progress_ms = None;
        assert!(refused(check(3, Some(quiet))).contains("no progress events"));
        let mut silent = rec.clone();
        silent.webhook_url = None;
        assert!(refused(check(3, Some(silent))).contains("no webhook"));
        // A later one is due: this one says less.
        assert!(matches!(
            check(2, Some(rec.clone())),
            Resolution::Outdated(_)
        ));
        for st in [
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            let mut ended = rec.clone();
            ended.status = st;
            assert!(
                matches!(check(3, Some(ended)), Resolution::Outdated(w) if w.contains(st.as_str()))
            );
        }
        let mut gone = rec.clone();
        gone.erased = true;
        assert_eq!(check(3, Some(gone)), Resolution::Erased);
    }

    #[test]
    fn messages_the_record_does_not_back_are_refused_with_a_reason() {
        let m = EventMessage::new(SubjectKind::Batch, new_job_id());
        assert!(refused(check(&m, None, 5)).contains("names no batch record"));
        let mut f = ended(0);
        f.webhook_url = None;
        assert!(refused(check(&m, Some(f), 5)).contains("asked for no webhook"));
        for status in [JobStatus::Running, JobStatus::Queued, JobStatus::Cancelled] {
            let mut f = ended(0);
            f.status = status;
            f.event = None;
            let why = refused(check(&m, Some(f), 5));
            assert!(why.contains(status.as_str()), "{why}");
        }
        let ahead = EventMessage {
            gen: Some(2),
            ..m.clone()
        };
        assert!(refused(check(&ahead, Some(ended(1)), 5)).contains("beyond"));
        let late = EventMessage {
            attempt: 5,
            ..m.clone()
        };
        assert!(refused(check(&late, Some(ended(0)), 5)).contains("past the schedule"));
        assert!(refused(check(&late, None, 5)).contains("past the schedule"));
        let mut gone = ended(0);
        gone.erased = true;
        assert_eq!(check(&m, Some(gone), 5), Resolution::Erased);
    }
}
