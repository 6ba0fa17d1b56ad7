//! Event messages: replayed dead letters, erased jobs, forged messages,
//! and events no queue takes.

use crate::receiver::*;
use crate::support::*;
use infq::TestEnv;
use infq_common::webhooks::event::{EventMessage, SubjectKind};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_announces_its_new_end_under_a_new_id() {
    let rx = Receiver::start().await;
    let mut env = TestEnv::start_with(settings(), false).await.unwrap();
    // An accepted job the broker dead-lettered (as after too many
    // deliveries): its message, taken off its queue, in `<ns>.dead`.
    let id: uuid::Uuid = submit(&env, &rx.url("replay")).await.parse().unwrap();
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queue = env
        .topology()
        .job_queue("credit-default", infq_common::job::Priority::Interactive);
    let taken = ch
        .basic_get(queue.as_str().into(), Default::default())
        .await
        .unwrap()
        .expect("the job's message");
    let message_id = taken
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.to_string());
    env.publish(
        &env.topology().dead_exchange(),
        "",
        &taken.data,
        message_id.as_deref(),
    )
    .await;
    taken.ack(Default::default()).await.unwrap();
    infq_common::amqp::close(&conn, "done").await;
    env.start_worker().await;

    // Its failure is announced...
    let hits = rx.wait_hits("replay", 1, Duration::from_secs(10)).await;
    let failed: Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(failed["type"], "job.failed");
    assert_eq!(failed["data"]["error"]["code"], "dead_lettered");
    let first_id = hits[0].headers["webhook-id"].to_str().unwrap().to_string();

    // ...and after a replay, its success, as a new event.
    let r = replay(&env, json!({"ids": [id.to_string()]})).await;
    assert_eq!(r["count"], 1, "{r}");
    let hits = rx.wait_hits("replay", 2, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 2);
    let ok: Value = serde_json::from_slice(&hits[1].body).unwrap();
    assert_eq!(ok["type"], "job.succeeded");
    let second_id = hits[1].headers["webhook-id"].to_str().unwrap();
    assert_ne!(second_id, first_id, "a new end is a new event");
    assert_eq!(second_id, format!("{first_id}_1"));
    verify(SECRET_A, &hits[1].headers, &hits[1].body, unix_now()).unwrap();

    let d = env.get_json(&format!("/v1/jobs/{id}/deliveries")).await;
    let events = d["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{d}");
    assert_eq!(events[0]["type"], "job.failed");
    assert_eq!(events[1]["type"], "job.succeeded");
    // Redelivering by type picks the latest event of that type.
    let r = env
        .http
        .post(env.url(&format!("/v1/jobs/{id}/deliveries/job.failed/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let hits = rx.wait_hits("replay", 3, Duration::from_secs(10)).await;
    assert_eq!(hits[2].headers["webhook-id"], first_id.as_str());
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_job_s_pending_webhook_is_dropped_and_not_kept() {
    let rx = Receiver::start().await;
    let mut s = settings();
    s.webhooks.schedule_ms = vec![0, 1_500, 1_500];
    let env = TestEnv::start_with(s, true).await.unwrap();
    rx.script("erased", &[status(500)]);
    let id = submit(&env, &rx.url("erased")).await;
    let hits = rx.wait_hits("erased", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    // The retry waits 1.5 s in a delay queue; the job is erased meanwhile.
    let r = env
        .http
        .delete(env.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        rx.hits("erased").len(),
        1,
        "nothing is sent after the erasure"
    );
    let ns = &env.settings.namespace;
    let keys = env.redis_keys().await.unwrap();
    for k in [
        infq_common::keys::Keys::new(ns).webhook(&id.parse().unwrap(), 0),
        infq_common::keys::Keys::new(ns).deliveries(&id.parse().unwrap()),
    ] {
        assert!(!keys.contains(&k), "{k} was written again: {keys:?}");
    }
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_event_messages_get_nothing_sent_or_signed_and_are_dead_lettered() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    let tenants = infq_common::tenants::TenantStore::new(env.store().connection(), &env.settings);
    let (acme, _, key) = tenants.create_tenant("acme", None, false).await.unwrap();
    let acme_secret = acme.webhook_secrets[0].clone();
    let http = infq::http_builder_with_key(&key).build().unwrap();
    let r = http
        .post(env.url("/v1/jobs"))
        .json(&json!({"model": "credit-default", "inputs": [0, 1500, 40000], "webhook_url": rx.url("acme")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let acme_job = infq::id_of(r).await;
    let hits = rx.wait_hits("acme", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    verify(&acme_secret, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    // A job of another tenant that asked for no callback.
    let plain = finished_job(&env, json!([0, 100, 1000])).await;

    // What an attacker with access to the broker publishes: event
    // messages naming real and made-up subjects...
    let forge = |subject: &str, extra: Value| {
        let mut v = json!({
            "kind": "job",
            "subject": subject,
            "chain": uuid::Uuid::new_v4(),
            "attempt": 0,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::to_vec(&v).unwrap()
    };
    // ...and the URL, the tenant and the body of their choice, in the
    // format of earlier releases that carried them.
    let forged_body = r#"{"type":"job.succeeded","data":{"id":"x","output":{"default":0.0}}}"#;
    let own = json!({
        "url": rx.url("evil"),
        "tenant": "acme",
        "event": {"id": "msg_forged", "type": "job.succeeded", "body": forged_body},
    });
    let hooks = env.topology().webhooks_exchange();
    // ...one without a callback (the attack the issue reproduced),
    env.publish(&hooks, "", &forge(&plain.to_string(), json!({})), None)
        .await;
    // the tenant's own, whose event was sent (a duplicate, dropped),
    env.publish(&hooks, "", &forge(&acme_job, json!({})), None)
        .await;
    // the tenant's own, naming where to send it, for whom and what,
    env.publish(&hooks, "", &forge(&acme_job, own), None).await;
    // one that names no record, a batch that is a job, an end the job
    // has not reached, and an attempt past any schedule.
    let nobody = uuid::Uuid::now_v7().to_string();
    env.publish(&hooks, "", &forge(&nobody, json!({})), None)
        .await;
    env.publish(
        &hooks,
        "",
        &forge(&acme_job, json!({"kind": "batch"})),
        None,
    )
    .await;
    env.publish(&hooks, "", &forge(&acme_job, json!({"gen": 7})), None)
        .await;
    env.publish(&hooks, "", &forge(&acme_job, json!({"attempt": 99})), None)
        .await;
    // A later attempt of a chain never begun: it must not begin one that
    // has a single attempt left.
    let late = finished_job(&env, json!([1, 900, 1000])).await;
    set_webhook_url(&env, &late, &rx.url("late")).await;
    env.publish(
        &hooks,
        "",
        &forge(&late.to_string(), json!({"attempt": 3})),
        None,
    )
    .await;
    // A bundle mixing a forgery with a genuine event: the forgery alone
    // is dead-lettered, the genuine one is sent.
    let mixed = finished_job(&env, json!([1, 2000, 1000])).await;
    set_webhook_url(&env, &mixed, &rx.url("mixed")).await;
    let bundle = infq_common::webhooks::event::encode_all(&[
        EventMessage::new(SubjectKind::Job, mixed),
        EventMessage::new(SubjectKind::Job, uuid::Uuid::now_v7()),
    ]);
    env.publish(&hooks, "", &bundle, None).await;

    env.wait_dead(8).await;
    let hits = rx.wait_hits("mixed", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1, "the genuine event of the bundle is sent");
    verify(SECRET_A, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        rx.hits("evil").is_empty(),
        "a forged message got a request signed for acme: {:?}",
        rx.hits("evil")
    );
    assert!(
        rx.hits("late").is_empty(),
        "a made-up attempt began a chain"
    );
    assert_eq!(rx.hits("acme").len(), 1, "acme's event was not sent again");
    let mut reasons: Vec<String> = env
        .dead_letters()
        .await
        .into_iter()
        .map(|(_, reason)| reason)
        .collect();
    reasons.sort();
    let expect = [
        "asked for no webhook",
        "beyond its record's 0",
        "names no batch record",
        "names no job record",
        "names no job record",
        "never begun",
        "only the record may say",
        "out of range",
    ];
    assert_eq!(reasons.len(), expect.len(), "{reasons:#?}");
    for want in expect {
        let i = reasons
            .iter()
            .position(|r| r.contains(want))
            .unwrap_or_else(|| panic!("no dead letter says `{want}`: {reasons:#?}"));
        reasons.remove(i);
    }
    // The tenant's record and event are untouched.
    let d: Value =
        infq::get_json(&http, &env.url(&format!("/v1/jobs/{acme_job}/deliveries"))).await;
    assert_eq!(d["events"][0]["state"], "delivered", "{d}");
    assert_eq!(d["events"][0]["url"], rx.url("acme").as_str());
    assert_eq!(d["events"][0]["attempts"].as_array().unwrap().len(), 1);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_queue_takes_is_not_published() {
    let env = TestEnv::start_with(settings(), false).await.unwrap();
    let conn = env.amqp().await.unwrap();
    env.topology().declare(&conn, &[]).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let confirms = infq_common::confirms::ConfirmChannels::open(&conn, 1)
        .await
        .unwrap();
    let msgs = [EventMessage::new(SubjectKind::Job, uuid::Uuid::now_v7())];
    // The dispatchers' queue and a delay tier deleted behind their live
    // exchanges: a confirmed publish would vanish; a mandatory one comes
    // back, and that is a failure.
    let main = env.topology().webhooks_exchange();
    let tier = env.topology().webhook_retry_exchange(1).unwrap();
    for q in [&main, &tier] {
        use infq_worker::webhooks::events::publish_on;
        let wait = std::time::Duration::from_secs(5);
        let lease = confirms.lease(wait).await.unwrap();
        publish_on(&lease, q, &msgs, None).await.unwrap();
        drop(lease);
        ch.queue_delete(q.as_str().into(), Default::default())
            .await
            .unwrap();
        let lease = confirms.lease(wait).await.unwrap();
        let r = publish_on(&lease, q, &msgs, Some(200)).await;
        assert!(r.is_err(), "published to {q} with no queue: {r:?}");
        drop(lease);
    }
    // The worker's event publisher says so to the writer, which then
    // does not acknowledge the job.
    let publisher = infq_common::confirms::ConfirmChannels::open(&conn, 1)
        .await
        .unwrap();
    let events = infq_worker::webhooks::events::Events::new(env.topology(), publisher);
    assert!(events.publish(msgs.to_vec()).await.is_err());
    infq_common::amqp::close(&conn, "done").await;
    env.stop().await.unwrap();
}
