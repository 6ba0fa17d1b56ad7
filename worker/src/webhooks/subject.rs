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
use infq_common::store::{JobStore, StoreError};
use infq_common::webhooks::event::{batch_event, job_event, Event, EventMessage, SubjectKind};

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
