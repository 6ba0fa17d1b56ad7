//! What a state script leaves to the store on other slots.
//!
//! Every key a script touches is in one Redis Cluster slot: the subject's
//! (`{<id>}`). Two things its end means live elsewhere: its tenant's quota
//! (`quota:{<tenant>}`) and the channel its end is announced on. In a
//! cluster the store gives the scripts neither, and each script says what
//! is left to do (`AFTER` in `prelude.lua`): the store does it right after,
//! one pipelined round trip per slot. The rule of *when* quota is given
//! back or an end announced stays in the scripts, written once; only where
//! it runs differs.
//!
//! The two steps are not atomic. A crash between them leaves the quota
//! held until the subject's horizon passes (the admission script's
//! expiry sweep gives it back then: [`super::QUOTA_HORIZON_MS`]), and a
//! long-poll unwoken until its next re-read (once a second); nothing else
//! depends on them.

use super::error::StoreError;
use super::scripts::{MARK, QUOTA_RELEASE};
use crate::job::JobId;
use crate::keys::Keys;
use redis::Value;

/// One thing a script left to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum After {
    /// Give `rows` (all when `None`) of subject `id` back to `tenant`'s
    /// quota.
    Release {
        tenant: String,
        id: JobId,
        rows: Option<u64>,
    },
    /// Announce that `id` has ended.
    Done(JobId),
}

/// Splits a script's reply into the reply proper and what it left to do.
pub(super) fn unwrap(v: Value) -> Result<(Value, Vec<After>), StoreError> {
    let Value::Array(mut items) = v else {
        return Ok((v, Vec::new()));
    };
    let wrapped = items.len() == 3
        && matches!(&items[0], Value::BulkString(b) if b.as_slice() == MARK.as_bytes());
    if !wrapped {
        return Ok((Value::Array(items), Vec::new()));
    }
    let list = items.pop().expect("three items");
    let reply = items.pop().expect("three items");
    Ok((reply, parse(list)?))
}

fn parse(list: Value) -> Result<Vec<After>, StoreError> {
    let bad = |what: &str| StoreError::Reply(format!("script's after-list: {what}"));
    let items: Vec<String> = redis::from_redis_value(list).map_err(|e| bad(&e.to_string()))?;
    let id = |s: &str| JobId::parse_str(s).map_err(|_| bad("an id that is not a UUID"));
    let mut out = Vec::new();
    let mut it = items.iter();
    while let Some(kind) = it.next() {
        match kind.as_str() {
            "release" => {
                let (Some(tenant), Some(subject), Some(rows)) = (it.next(), it.next(), it.next())
                else {
                    return Err(bad("a release cut short"));
                };
                let rows: i64 = rows.parse().map_err(|_| bad("rows not a number"))?;
                out.push(After::Release {
                    tenant: tenant.clone(),
                    id: id(subject)?,
                    rows: u64::try_from(rows).ok(),
                });
            }
            "done" => out.push(After::Done(id(it
                .next()
                .ok_or_else(|| bad("done without id"))?)?)),
            other => return Err(bad(&format!("unknown entry {other:?}"))),
        }
    }
    Ok(out)
}

/// The one round trip (per slot) that does `work`: the quota releases
/// (`quota_release.lua`) and the announcements (`SPUBLISH` on the sharded
/// done channels in a cluster, else `PUBLISH` on the done channel).
pub(super) fn pipeline(work: &[After], keys: &Keys, cluster: bool) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for w in work {
        match w {
            After::Release { tenant, id, rows } => {
                let [q, open, due] = keys.quota(tenant);
                let mut inv = QUOTA_RELEASE.key(q);
                inv.key(open)
                    .key(due)
                    .arg(id.to_string())
                    .arg(rows.map_or(-1, |r| r as i64));
                pipe.invoke_script(&inv);
            }
            After::Done(id) => {
                if cluster {
                    pipe.cmd("SPUBLISH").arg(keys.done_shard(id));
                } else {
                    pipe.cmd("PUBLISH").arg(keys.done_channel());
                }
                pipe.arg(id.to_string());
            }
        }
    }
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn replies_without_a_list_pass_through() {
        for v in [
            bulk("ok"),
            Value::Array(vec![bulk("run"), Value::Int(1), Value::Int(1), bulk("")]),
            Value::Nil,
        ] {
            let (r, after) = unwrap(v.clone()).unwrap();
            assert_eq!(r, v);
            assert!(after.is_empty());
        }
    }

    #[test]
    fn a_wrapped_reply_names_what_is_left() {
        let id = crate::job::new_job_id();
        let v = Value::Array(vec![
            bulk(MARK),
            bulk("ok"),
            Value::Array(vec![
                bulk("release"),
                bulk("acme"),
                bulk(&id.to_string()),
                bulk("-1"),
                bulk("done"),
                bulk(&id.to_string()),
                bulk("release"),
                bulk("acme"),
                bulk(&id.to_string()),
                bulk("7"),
            ]),
        ]);
        let (r, after) = unwrap(v).unwrap();
        assert_eq!(r, bulk("ok"));
        assert_eq!(
            after,
            vec![
                After::Release {
                    tenant: "acme".into(),
                    id,
                    rows: None
                },
                After::Done(id),
                After::Release {
                    tenant: "acme".into(),
                    id,
                    rows: Some(7)
                },
            ]
        );
    }

    #[test]
    fn the_follow_up_goes_to_the_tenant_and_the_sharded_channel() {
        let keys = Keys::new("ns");
        let id = crate::job::new_job_id();
        let work = [
            After::Release {
                tenant: "acme".into(),
                id,
                rows: Some(3),
            },
            After::Done(id),
        ];
        let cmds = |cluster| {
            let p = pipeline(&work, &keys, cluster);
            p.cmd_iter()
                .map(|c| {
                    c.args_iter()
                        .map(|a| match a {
                            redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                            _ => String::new(),
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        let c = cmds(true);
        assert_eq!(c[0][0], "EVALSHA");
        assert_eq!(&c[0][3..6], &keys.quota("acme")[..]);
        assert_eq!(&c[0][6..], [id.to_string(), "3".to_string()]);
        assert_eq!(
            c[1],
            ["SPUBLISH".to_string(), keys.done_shard(&id), id.to_string()]
        );
        assert_eq!(cmds(false)[1][1], keys.done_channel());
    }

    #[test]
    fn malformed_lists_are_errors() {
        for list in [
            vec![bulk("release"), bulk("acme")],
            vec![bulk("done"), bulk("not-a-uuid")],
            vec![bulk("launch")],
            vec![
                bulk("release"),
                bulk("t"),
                bulk(&crate::job::new_job_id().to_string()),
                bulk("x"),
            ],
        ] {
            let v = Value::Array(vec![bulk(MARK), bulk("ok"), Value::Array(list)]);
            assert!(unwrap(v).is_err());
        }
    }
}
