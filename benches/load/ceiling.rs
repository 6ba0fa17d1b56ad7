//! The ceiling: jobs per second of the bare durable path on this machine,
//! with no HTTP and no model. Confirmed persistent publishes to a quorum
//! queue, consumed with a prefetch of 512, each result stored with a
//! pipelined Redis `SET`, deliveries acknowledged 64 at a time with
//! `multiple`. Whatever infq adds on top is measured against this.

use futures_util::stream::{FuturesUnordered, StreamExt};
use infq_common::config::Settings;
use infq_common::job::Priority;
use infq_common::message::JobMessage;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the bare path did: jobs per second consumed, stored and
/// acknowledged, and the CPU each cost, summed over RabbitMQ, Redis and
/// this process (the publisher and consumer both live here).
pub struct Ceiling {
    pub rate: f64,
    pub cpu_us_per_job: f64,
}

/// Runs the bare path for `secs` seconds (after one second of warm-up).
pub async fn ceiling(settings: &Settings, secs: f64) -> anyhow::Result<Ceiling> {
    let queue = format!("ceiling{}", uuid::Uuid::new_v4().simple());
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args.insert("x-expires".into(), AMQPValue::LongLongInt(60_000));
    let pub_conn = infq_common::amqp::connect(&settings.amqp, "infq-ceiling-pub").await?;
    let con_conn = infq_common::amqp::connect(&settings.amqp, "infq-ceiling-con").await?;
    let pch = pub_conn.create_channel().await?;
    pch.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
        .await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let cch = con_conn.create_channel().await?;
    cch.basic_qos(512, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            queue.as_str().into(),
            "ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let redis = redis::Client::open(settings.redis.url.as_str())?;
    let mut rc = redis.get_multiplexed_async_connection().await?;

    let consumed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counter = consumed.clone();
    let stop = done.clone();
    // Job records of a namespace of its own, as the writer stores them.
    let ceiling_keys = infq_common::keys::Keys::new("ceiling");
    let consume = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64);
        while !stop.load(Ordering::Relaxed) {
            let next = tokio::time::timeout(Duration::from_millis(5), consumer.next()).await;
            if let Ok(Some(Ok(d))) = next {
                batch.push(d);
                if batch.len() < 64 {
                    continue;
                }
            }
            if batch.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for d in &batch {
                let msg = JobMessage::decode(&d.data)?;
                pipe.set_ex(ceiling_keys.job(&msg.record()), r#"{"p":0.5}"#, 60)
                    .ignore();
            }
            pipe.query_async::<()>(&mut rc).await?;
            let last = batch.last().expect("non-empty");
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
            counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
        }
        Ok::<_, anyhow::Error>(())
    });

    let start = Instant::now();
    let warm = Duration::from_secs(1);
    let end = warm + Duration::from_secs_f64(secs);
    let mut in_flight = FuturesUnordered::new();
    let mut base = None;
    while start.elapsed() < end {
        if base.is_none() && start.elapsed() >= warm {
            base = Some((Instant::now(), consumed.load(Ordering::Relaxed), cpu()));
        }
        while in_flight.len() < 1024 {
            let msg = JobMessage {
                work: infq_common::message::Work::Job {
                    id: infq_common::job::new_job_id(),
                },
                model: "credit-default".into(),
                version: "1".into(),
                priority: Priority::Interactive,
                inputs: vec![0.0, 1500.0, 40000.0],
                created_at_ms: infq_common::job::now_ms(),
                deadline_at_ms: None,
                retries: 0,
                webhook_url: None,
                tenant: None,
                retention_ms: None,
                passthrough: Vec::new(),
            };
            let confirm = pch
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &msg.encode(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            in_flight.push(confirm);
        }
        if let Some(c) = in_flight.next().await {
            c?;
        }
    }
    let (t0, n0, c0) = base.unwrap_or((start, 0, cpu()));
    let jobs = (consumed.load(Ordering::Relaxed) - n0) as f64;
    let rate = jobs / t0.elapsed().as_secs_f64();
    let cpu_us_per_job = (cpu() - c0) * 1e6 / jobs.max(1.0);
    done.store(true, Ordering::Relaxed);
    while in_flight.next().await.is_some() {}
    consume.await??;
    pch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    infq_common::amqp::close(&pub_conn, "done").await;
    infq_common::amqp::close(&con_conn, "done").await;
    Ok(Ceiling {
        rate,
        cpu_us_per_job,
    })
}

/// CPU seconds so far of RabbitMQ, Redis and this process.
fn cpu() -> f64 {
    let me = std::process::id();
    crate::stack::cpu_seconds(|pid, comm| pid == me || comm == "beam.smp" || comm == "redis-server")
}
