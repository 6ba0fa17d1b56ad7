//! Micro-benchmarks of the worker's hot in-process steps, per batch of 64
//! single jobs: decoding deliveries, assembling the batch, building the
//! input tensor, running the reference model, and encoding the results.
//!
//!   cargo bench --bench hot_path
//!
//! Under `cargo test` each runs once, as a check that it works.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use infq_common::job::Priority;
use infq_common::message::JobMessage;
use infq_worker::batcher::BatchBuilder;
use infq_worker::model::ModelOutcome;
use infq_worker::pending::{Pending, Settle};
use std::hint::black_box;
use std::time::Instant;

const BATCH: usize = 64;

fn messages() -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|i| {
            JobMessage {
                work: infq_common::message::Work::Job {
                    id: infq_common::job::new_job_id(),
                },
                model: "credit-default".into(),
                version: "1".into(),
                priority: Priority::Interactive,
                inputs: vec![(i % 2) as f32, 500.0 + i as f32 * 3.7, 40_000.0 - i as f32],
                created_at_ms: 1,
                deadline_at_ms: None,
                retries: 0,
                webhook_url: None,
                tenant: Some("dev".into()),
                retention_ms: None,
                passthrough: Vec::new(),
            }
            .encode()
        })
        .collect()
}

fn pending(bodies: &[Vec<u8>]) -> Vec<Pending> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let msg = JobMessage::decode(b).expect("valid");
            Pending {
                span: Pending::span_of(&msg, None),
                msg,
                delivery: Settle::detached(i as u64 + 1),
                lane: Priority::Interactive,
                received: Instant::now(),
                webhook: false,
                explain: false,
            }
        })
        .collect()
}

fn hot_path(c: &mut Criterion) {
    let registry =
        infq_common::config::Settings::load(Some(&infq::root().join("config/default.toml")), &[])
            .expect("config")
            .registry()
            .expect("registry");
    let spec = registry.resolve("credit-default").expect("model").clone();
    let bodies = messages();
    let mut g = c.benchmark_group("batch of 64 jobs");
    g.throughput(Throughput::Elements(BATCH as u64));

    g.bench_function("decode deliveries", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(JobMessage::decode(body).expect("valid"));
            }
        })
    });

    g.bench_function("assemble the batch", |b| {
        b.iter_batched(
            || pending(&bodies),
            |jobs| {
                let mut builder = BatchBuilder::new(BATCH);
                for j in jobs {
                    let _ = builder.push(j, 1);
                }
                black_box(builder.take())
            },
            BatchSize::SmallInput,
        )
    });

    let jobs = pending(&bodies);
    g.bench_function("build the input tensor", |b| {
        b.iter(|| {
            let mut inputs = Vec::with_capacity(BATCH * 3);
            for j in &jobs {
                inputs.extend_from_slice(&j.msg.inputs);
            }
            black_box(tch::Tensor::from_slice(&inputs).reshape([BATCH as i64, 3]))
        })
    });

    tch::set_num_threads(1);
    let module = infq_worker::model::load(&spec, tch::Device::Cpu).expect("model");
    let _g = tch::no_grad_guard();
    let inputs: Vec<f32> = jobs.iter().flat_map(|j| j.msg.inputs.clone()).collect();
    g.bench_function("run the model", |b| {
        b.iter(|| {
            black_box(infq_worker::model::forward(
                &module,
                tch::Device::Cpu,
                &inputs,
                BATCH,
                3,
            ))
        })
    });

    let out =
        infq_worker::model::forward(&module, tch::Device::Cpu, &inputs, BATCH, 3).expect("forward");
    let outcome = ModelOutcome::Batch(out);
    g.bench_function("encode the results", |b| {
        b.iter(|| {
            black_box(infq_worker::writer::outcomes(
                &spec,
                &jobs,
                &outcome,
                &[],
                "",
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
