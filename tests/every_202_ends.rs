//! The property the README promises, as one test against the real
//! RabbitMQ and Redis with the producer and worker as processes: under a
//! mixed load of single jobs and batches (a narrow and a wide model, two
//! tenants with a 60 s retention, webhooks to a receiver that is slow for
//! one of them), while hostile messages are published straight to every
//! internal queue, every request that got `202` ends in a terminal state
//! with the right output; no tenant's data, quota or signature is touched
//! by the forgeries; every forgery is dead-lettered with its reason; and
//! the producer's memory stays under 200 MB.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use base64::Engine;
use hmac::{Hmac, Mac};
use infq::procs::start_pair;
use infq_common::job::{new_job_id, JobId, Priority};
use infq_common::message::Work;
use infq_common::tenants::TenantStore;
use infq_common::topology::Topology;
use infq_common::webhooks::event::{EventMessage, SubjectKind};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions};
use lapin::BasicProperties;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Each tenant's own signing secret.
const SECRETS: [(&str, &str); 2] = [
    ("slowco", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
    ("fastco", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
];

/// What the receiver got: path, headers, body.
type Hits = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

async fn receive(
    State(hits): State<Hits>,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    if tenant == "slowco" {
        // Slow, but within the webhook timeout: it succeeds, slowly.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    hits.lock()
        .unwrap()
        .push((format!("{tenant}/{name}"), headers, body));
    "ok"
}

/// Whether `headers` carry a Standard Webhooks signature of `body` by
/// `secret` (checked with RustCrypto, not the library infq signs with).
fn signed_by(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(h("webhook-id").as_bytes());
    mac.update(b".");
    mac.update(h("webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(body);
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    h("webhook-signature")
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(want.as_str()))
}

/// Publishes to `exchange` with `key`, as anyone with broker access could.
async fn publish(ch: &lapin::Channel, exchange: &str, key: &str, id: &str, body: &[u8]) {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Work a tenant submitted: single jobs (id, model, row) and batches (id,
/// model, rows); every fourth job of a model, and every batch, asks for a
/// callback.
#[derive(Default)]
struct Submitted {
    jobs: Vec<(String, &'static str, Vec<f32>)>,
    batches: Vec<(String, &'static str, Vec<Vec<f32>>)>,
}

async fn submit_all(
    http: &reqwest::Client,
    base: &str,
    hook: &str,
    narrow: &[Vec<f32>],
    wide: &[Vec<f32>],
) -> Submitted {
    let mut out = Submitted::default();
    for (model, rows, singles) in [("credit-default", narrow, 60), ("txn-risk", wide, 20)] {
        for (i, row) in rows.iter().take(singles).enumerate() {
            // Every fourth job asks for a callback.
            let mut body = json!({"model": model, "inputs": row});
            if i % 4 == 0 {
                body["webhook_url"] = format!("{hook}/job{i}").into();
            }
            let r = http
                .post(format!("{base}/v1/jobs"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202, "{:?}", r.text().await);
            let id = r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            out.jobs.push((id, model, row.clone()));
        }
        let body: String = rows
            .iter()
            .map(|r| format!("{}\n", serde_json::to_string(r).unwrap()))
            .collect();
        let r = http
            .post(format!(
                "{base}/v1/batches?model={model}&format=jsonl&webhook_url={hook}/batch"
            ))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        out.batches.push((id, model, rows.to_vec()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_202_ends_right_whatever_is_published_to_the_queues() {
    let ns = format!("prop{}", uuid::Uuid::new_v4().simple());
    let mut settings = infq::test_settings();
    settings.namespace = ns.clone();
    settings.amqp.retry_delays_ms = vec![300];
    let topology = Topology::of(&settings);
    let registry = settings.registry().unwrap();
    let env = vec![
        ("INFQ_NAMESPACE", ns.clone()),
        ("INFQ_AMQP__QUEUE_EXPIRES_MS", "300000".to_string()),
        ("INFQ_AMQP__RETRY_DELAYS_MS", "[300]".to_string()),
        ("INFQ_WEBHOOKS__ALLOW_HTTP", "true".to_string()),
        ("INFQ_WEBHOOKS__ALLOW_HOSTS", "[\"127.0.0.1\"]".to_string()),
        (
            "INFQ_WEBHOOKS__SCHEDULE_MS",
            "[0, 500, 1000, 2000]".to_string(),
        ),
        ("INFQ_WEBHOOKS__TIMEOUT_MS", "5000".to_string()),
        ("INFQ_LOG__FILTER", "warn".to_string()),
    ];

    // The receiver: /hook/<tenant>/<name>; slow for slowco.
    let hits: Hits = Arc::default();
    let app = axum::Router::new()
        .route("/hook/{tenant}/{name}", axum::routing::post(receive))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_base = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Two tenants with a 60 s retention and their own secrets.
    let conn = infq_common::redis_link::RedisLink::new(&settings.redis).unwrap();
    let tenants = TenantStore::new(conn, &settings);
    let mut clients = HashMap::new();
    for (name, secret) in SECRETS {
        let mut limits = settings.tenants.defaults.clone();
        limits.retention_secs = 60;
        let (_, _, key) = tenants
            .create_tenant(name, Some(limits), false)
            .await
            .unwrap();
        tenants
            .set_webhook_secrets(name, vec![secret.to_string()])
            .await
            .unwrap();
        let http = infq::http_builder_with_key(&key)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        clients.insert(name, http);
    }
    let http = infq::http_builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (mut worker, producer, base) = start_pair(&env, &http).await.unwrap();

    let narrow: Vec<Vec<f32>> = (0..1500)
        .map(|i| vec![(i % 2) as f32, 100.0 + i as f32, 20_000.0 + 7.0 * i as f32])
        .collect();
    let wide = infq::txn_rows(400, 7);
    let version = |m: &str| registry.resolve(m).unwrap().version.clone();

    // The load, and the forgeries published while it runs.
    let amqp = infq_common::amqp::connect(&settings.amqp, "infq-test-hostile")
        .await
        .unwrap();
    let ch = amqp.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let mut forged_to_queues = 0u32;
    let mut submitted = HashMap::new();
    for (name, _) in SECRETS {
        let hook = format!("{hook_base}/{name}");
        let work = submit_all(&clients[name], &base, &hook, &narrow, &wide).await;
        submitted.insert(name, work);
    }
    let jobs_x = topology.jobs_exchange();
    let fast = &submitted["fastco"];
    let slow = &submitted["slowco"];
    // Job queues: garbage, numbers out of range, another tenant's job
    // with other inputs, chunks of a real batch out of place.
    for (model, lane) in [
        ("credit-default", Priority::Interactive),
        ("credit-default", Priority::Bulk),
        ("txn-risk", Priority::Interactive),
        ("txn-risk", Priority::Bulk),
    ] {
        let key = Topology::routing_key(model, lane);
        publish(&ch, &jobs_x, &key, "garbage", b"\x00\x01 not a message").await;
        let mut m = infq::made_up_message(
            model,
            &version(model),
            vec![0.0; registry.resolve(model).unwrap().width()],
        );
        m.priority = lane;
        m.retention_ms = Some(u64::MAX);
        publish(&ch, &jobs_x, &key, &m.record().to_string(), &m.encode()).await;
        m.retention_ms = None;
        m.created_at_ms = u64::MAX;
        publish(&ch, &jobs_x, &key, &m.record().to_string(), &m.encode()).await;
        forged_to_queues += 3;
    }
    for (id, model, row) in fast.jobs.iter().step_by(10) {
        let mut m = infq::made_up_message(
            model,
            &version(model),
            row.iter().map(|v| v + 1.0).collect(),
        );
        m.work = Work::Job {
            id: JobId::parse_str(id).unwrap(),
        };
        m.tenant = Some("slowco".into());
        m.webhook_url = Some(format!("{hook_base}/stolen/job"));
        let key = Topology::routing_key(model, Priority::Interactive);
        publish(&ch, &jobs_x, &key, id, &m.encode()).await;
        forged_to_queues += 1;
    }
    for (id, model, _) in &slow.batches {
        let spec = registry.resolve(model).unwrap();
        let rec = infq_common::store::JobStore::new(&settings.redis, &ns)
            .unwrap()
            .get_batch(&JobId::parse_str(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        for (index, first_row) in [
            (rec.chunks, u64::from(rec.chunks * rec.chunk_rows) + 1),
            (0, 5),
            (1, u64::from(rec.chunk_rows) + 1),
        ] {
            let rows = if index == 1 {
                rec.chunk_rows as usize
            } else {
                1
            };
            let mut m =
                infq::made_up_message(model, &version(model), vec![0.5; spec.width() * rows]);
            m.work = Work::Chunk {
                batch: rec.id,
                index,
                first_row,
            };
            m.priority = Priority::Bulk;
            let key = Topology::routing_key(model, Priority::Bulk);
            publish(&ch, &jobs_x, &key, &m.message_id().to_string(), &m.encode()).await;
            forged_to_queues += 1;
        }
    }
    // A retry tier: it hands what it holds back to the job queues.
    let mut m = infq::made_up_message(
        "credit-default",
        &version("credit-default"),
        vec![1.0, 2.0, 3.0],
    );
    m.retries = 1;
    publish(
        &ch,
        &topology.retry_exchange(0),
        &Topology::routing_key("credit-default", Priority::Interactive),
        &m.record().to_string(),
        &m.encode(),
    )
    .await;
    forged_to_queues += 1;
    // The webhook queue: an event naming its own URL, tenant and body (the
    // earlier format), one naming no subject, one naming a real job with a
    // made-up generation, and garbage.
    let hooks_x = topology.webhooks_exchange();
    let victim = JobId::parse_str(&fast.jobs[0].0).unwrap();
    let own = json!({
        "kind": "job", "subject": victim, "url": format!("{hook_base}/stolen/event"),
        "chain": uuid::Uuid::new_v4(), "attempt": 0, "tenant": "fastco",
        "event": {"id": "msg_x", "type": "job.succeeded", "body": "{\"pay\":\"me\"}"}
    });
    publish(&ch, &hooks_x, "", "own", own.to_string().as_bytes()).await;
    let nobody = EventMessage::new(SubjectKind::Job, new_job_id());
    publish(&ch, &hooks_x, "", "nobody", &nobody.encode()).await;
    let mut wrong_gen = serde_json::to_value(EventMessage::new(SubjectKind::Job, victim)).unwrap();
    wrong_gen["gen"] = json!(7);
    publish(&ch, &hooks_x, "", "gen", wrong_gen.to_string().as_bytes()).await;
    publish(&ch, &hooks_x, "", "garbage", b"[[[").await;
    forged_to_queues += 4;
    // Dead letters nobody dead-lettered: a job's with other inputs, and a
    // chunk out of range. The recorder must change nothing for either.
    let (id, model, row) = &fast.jobs[1];
    let mut m = infq::made_up_message(
        model,
        &version(model),
        row.iter().map(|v| v * 2.0).collect(),
    );
    m.work = Work::Job {
        id: JobId::parse_str(id).unwrap(),
    };
    publish(&ch, &topology.dead_exchange(), "", id, &m.encode()).await;
    let mut m = infq::made_up_message("credit-default", &version("credit-default"), vec![0.5; 3]);
    m.work = Work::Chunk {
        batch: JobId::parse_str(&fast.batches[0].0).unwrap(),
        index: 9_999,
        first_row: 1,
    };
    publish(&ch, &topology.dead_exchange(), "", "chunk", &m.encode()).await;
    let forged_to_dead = 2u32;

    // Every request that got 202 ends, with the right output.
    for (name, work) in &submitted {
        let http = &clients[name];
        for model in ["credit-default", "txn-risk"] {
            let jobs: Vec<_> = work.jobs.iter().filter(|j| j.1 == model).collect();
            let rows: Vec<Vec<f32>> = jobs.iter().map(|j| j.2.clone()).collect();
            let want = infq::model_outputs(&registry, model, &rows).unwrap();
            for ((id, _, _), want) in jobs.iter().zip(want) {
                let v = infq::wait_job(http, &base, id).await;
                assert_eq!(v["status"], "succeeded", "{name} {v}");
                let got: Vec<f32> = v["output"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-5, "{name} {id}: {got:?} vs {want:?}");
                }
            }
        }
        for (id, model, rows) in &work.batches {
            let mut v = Value::Null;
            for _ in 0..10 {
                v = infq::get_json(http, &format!("{base}/v1/batches/{id}?wait=30")).await;
                if v["status"] == "succeeded" {
                    break;
                }
            }
            assert_eq!(v["status"], "succeeded", "{name} {v}");
            assert_eq!(v["succeeded"], rows.len(), "{name} {v}");
            assert_eq!(v["failed"], 0, "{name} {v}");
            let text = infq::batch_results(http, &base, id, "jsonl").await;
            let want = infq::model_outputs(&registry, model, rows).unwrap();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), rows.len());
            for (line, want) in lines.iter().zip(&want) {
                let got: Vec<f32> = line["output"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{line}"))
                    .values()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() < 1e-5, "{name} batch {id}: {line}");
                }
            }
        }
    }

    // No tenant's data touched: records still name their own tenant and
    // callback; quotas all given back.
    let store = infq_common::store::JobStore::new(&settings.redis, &ns).unwrap();
    for (name, work) in &submitted {
        for (id, _, _) in &work.jobs {
            let rec = store
                .get(&JobId::parse_str(id).unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(rec.tenant.as_deref(), Some(*name));
            if let Some(url) = rec.webhook_url {
                assert!(url.contains(&format!("/{name}/")), "{url}");
            }
        }
        assert_eq!(
            tenants.queued(name).await.unwrap(),
            0,
            "{name}'s quota given back"
        );
    }
    // Every event that reached the receiver was for the tenant whose path
    // it came to, signed with that tenant's secret alone; nothing reached
    // a forged URL. Every job and batch was announced.
    let wanted: usize = submitted
        .values()
        .map(|w| w.jobs.len().div_ceil(4) + w.batches.len())
        .sum();
    let mut seen = HashSet::new();
    for _ in 0..600 {
        seen = hits
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, h, _)| h.get("webhook-id").map(|v| v.to_str().unwrap().to_string()))
            .collect();
        if seen.len() >= wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.len(), wanted, "one event per job and batch");
    for (path, headers, body) in hits.lock().unwrap().iter() {
        assert!(
            !path.starts_with("stolen"),
            "a forged URL was called: {path}"
        );
        let tenant = path.split('/').next().unwrap();
        for (name, secret) in SECRETS {
            assert_eq!(
                signed_by(secret, headers, body),
                name == tenant,
                "{path} signed by {name}'s secret?"
            );
        }
    }
    // Every forgery is a dead letter, with the reason it was refused.
    let dead_queue = topology.dead_queue();
    let want_dead = forged_to_queues + forged_to_dead;
    let mut dead = Vec::new();
    for _ in 0..300 {
        while let Some(m) = ch
            .basic_get(dead_queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            dead.push(m.properties.clone());
            m.ack(BasicAckOptions::default()).await.unwrap();
        }
        if dead.len() as u32 >= want_dead {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let with_reason = dead
        .iter()
        .filter(|p| infq_common::dead::reason_of(p).is_some())
        .count() as u32;
    let ids: Vec<String> = dead
        .iter()
        .map(|p| {
            let id = p
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            format!("{id}: {}", infq_common::topology::death_reason(p))
        })
        .collect();
    assert_eq!(
        dead.len() as u32,
        want_dead,
        "every forgery is a dead letter: {ids:#?}"
    );
    assert_eq!(
        with_reason, forged_to_queues,
        "each refused one with its reason"
    );
    // The producer's memory stayed flat.
    let (_, peak) = producer.rss().unwrap();
    let accepted: usize = submitted
        .values()
        .map(|w| w.jobs.len() + w.batches.iter().map(|b| b.2.len()).sum::<usize>())
        .sum();
    eprintln!(
        "every_202_ends: {accepted} jobs and batch rows accepted, all ended right; \
         {} events signed by their tenant only; {want_dead} forgeries dead-lettered \
         ({forged_to_queues} with their reason); producer peak RSS {} MB",
        seen.len(),
        peak >> 20
    );
    assert!(peak < 200 << 20, "producer peak RSS {} MB", peak >> 20);
    let _ = worker.terminate(Duration::from_secs(30));
    infq_common::amqp::close(&amqp, "done").await;
    infq::delete_namespace_named(&ns).await;
}
