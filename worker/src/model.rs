//! The model thread: one OS thread per model version owns its TorchScript
//! module, so libtorch work never blocks the async runtime.
//!
//! It receives one batch at a time through a channel of capacity 1 (the
//! batcher reserves that slot before it takes the next batch), runs the
//! forward pass under `no_grad`, and sends the outputs to the writer. If a
//! batch fails as a whole, its rows are run one by one, so one bad row fails
//! only its own row.

use crate::pending::Pending;
use crate::stats::WorkerStats;
use crate::writer::WriterCommand;
use infq_common::registry::{parse_device, DeviceChoice, ModelSpec};
use std::sync::Arc;
use std::time::Instant;
use tch::{CModule, Device, Kind, Tensor};
use tokio::sync::{mpsc, oneshot};

/// A model could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The configured device does not exist here.
    #[error("device `{0}` is not available on this machine")]
    Device(String),
    /// libtorch could not load the file.
    #[error("cannot load TorchScript module: {0}")]
    Load(String),
    /// The module loaded but does not compute what the schema says.
    #[error("the module does not fit its schema: {0}")]
    Schema(String),
    /// The thread could not be started or died while loading.
    #[error("model thread: {0}")]
    Thread(String),
}

/// Work for the model thread.
pub enum ModelCommand {
    /// Run one batch.
    Infer(Batch),
}

/// Jobs whose rows are run in one forward pass.
pub struct Batch {
    /// The jobs, in row order.
    pub jobs: Vec<Pending>,
    /// Their inputs, row-major, `rows x width`.
    pub inputs: Vec<f32>,
    /// Rows in the batch.
    pub rows: usize,
    /// The batch's span; job ids are logged inside it.
    pub span: tracing::Span,
    /// When the batch was formed, for timing.
    pub formed: Instant,
}

/// The result of a forward pass.
#[derive(Debug)]
pub enum ModelOutcome {
    /// The whole batch ran: `rows x outputs` values, row-major.
    Batch(Vec<f32>),
    /// The batch failed and its rows were run one by one; one entry per
    /// row, each the row's outputs or its error.
    PerRow(Vec<Result<Vec<f32>, String>>),
}

/// The batcher's end of a model thread.
pub struct ModelHandle {
    /// Capacity 1: at most one batch waits while the model runs another.
    pub tx: mpsc::Sender<ModelCommand>,
}

/// The device a model runs on: the worker's override if set, else the
/// model's own setting.
pub fn resolve_device(spec: &ModelSpec, override_: Option<&str>) -> Result<Device, ModelError> {
    let choice = override_.unwrap_or(&spec.device);
    match parse_device(choice) {
        Some(DeviceChoice::Auto) => Ok(Device::cuda_if_available()),
        Some(DeviceChoice::Cpu) => Ok(Device::Cpu),
        Some(DeviceChoice::Cuda(n))
            if tch::Cuda::is_available() && n < tch::Cuda::device_count() as usize =>
        {
            Ok(Device::Cuda(n))
        }
        _ => Err(ModelError::Device(choice.to_string())),
    }
}

/// Loads the model on its own thread and returns once it is ready to run.
pub async fn spawn(
    spec: Arc<ModelSpec>,
    device_override: Option<&str>,
    threads: usize,
    writer: mpsc::Sender<WriterCommand>,
    stats: Arc<WorkerStats>,
) -> Result<ModelHandle, ModelError> {
    let device = resolve_device(&spec, device_override)?;
    let (tx, rx) = mpsc::channel(1);
    let (ready_tx, ready_rx) = oneshot::channel();
    let thread_spec = spec.clone();
    std::thread::Builder::new()
        .name(format!("model-{}", spec.name))
        .spawn(move || {
            tch::set_num_threads(threads as i32);
            let _no_grad = tch::no_grad_guard();
            match load(&thread_spec, device) {
                Ok(module) => {
                    let _ = ready_tx.send(Ok(()));
                    model_thread(module, device, thread_spec, rx, writer, stats);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| ModelError::Thread(e.to_string()))?;
    ready_rx
        .await
        .map_err(|_| ModelError::Thread("died while loading".into()))??;
    tracing::info!(model = %spec.id(), ?device, threads, "model loaded");
    Ok(ModelHandle { tx })
}

/// Loads the module and checks it on one row of zeros: it must return
/// `[1, outputs]` floats.
pub fn load(spec: &ModelSpec, device: Device) -> Result<CModule, ModelError> {
    let mut module =
        CModule::load_on_device(&spec.path, device).map_err(|e| ModelError::Load(e.to_string()))?;
    module.set_eval();
    let probe = vec![0f32; spec.width()];
    let out = forward(&module, device, &probe, 1, spec.width())
        .map_err(|e| ModelError::Schema(format!("a row of {} zeros: {e}", spec.width())))?;
    if out.len() != spec.outputs.len() {
        return Err(ModelError::Schema(format!(
            "one row gave {} outputs, the schema lists {}",
            out.len(),
            spec.outputs.len()
        )));
    }
    Ok(module)
}

/// One forward pass: `rows x width` inputs to `rows x outputs` outputs,
/// with one copy to the device and one back.
pub fn forward(
    module: &CModule,
    device: Device,
    inputs: &[f32],
    rows: usize,
    width: usize,
) -> Result<Vec<f32>, String> {
    let x = Tensor::from_slice(inputs)
        .f_reshape([rows as i64, width as i64])
        .and_then(|t| t.f_to_device(device))
        .map_err(|e| e.to_string())?;
    let y = module.forward_ts(&[x]).map_err(|e| e.to_string())?;
    let size = y.size();
    if size.len() != 2 || size[0] != rows as i64 {
        return Err(format!("output shape {size:?}, expected [{rows}, outputs]"));
    }
    let y = y
        .f_to_device(Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Float))
        .and_then(|t| t.f_contiguous())
        .and_then(|t| t.f_view([-1]))
        .map_err(|e| e.to_string())?;
    Vec::<f32>::try_from(&y).map_err(|e| e.to_string())
}

fn model_thread(
    module: CModule,
    device: Device,
    spec: Arc<ModelSpec>,
    mut rx: mpsc::Receiver<ModelCommand>,
    writer: mpsc::Sender<WriterCommand>,
    stats: Arc<WorkerStats>,
) {
    let width = spec.width();
    let outputs = spec.outputs.len();
    let label = spec.name.clone();
    while let Some(ModelCommand::Infer(batch)) = rx.blocking_recv() {
        let _enter = batch.span.clone().entered();
        let started = Instant::now();
        let outcome = match forward(&module, device, &batch.inputs, batch.rows, width) {
            Ok(out) if out.len() == batch.rows * outputs => ModelOutcome::Batch(out),
            Ok(out) => {
                let msg = format!("{} outputs for {} rows", out.len(), batch.rows);
                ModelOutcome::PerRow(vec![Err(msg); batch.rows])
            }
            Err(e) => {
                tracing::warn!(error = %e, "batch failed; running its rows one by one");
                ModelOutcome::PerRow(
                    batch
                        .inputs
                        .chunks(width)
                        .map(|row| {
                            forward(&module, device, row, 1, width).and_then(|out| {
                                if out.len() == outputs {
                                    Ok(out)
                                } else {
                                    Err(format!("{} outputs for one row", out.len()))
                                }
                            })
                        })
                        .collect(),
                )
            }
        };
        let elapsed = started.elapsed();
        stats.record_batch(batch.rows);
        metrics::histogram!(infq_common::metrics::INFERENCE_SECONDS, "model" => label.clone())
            .record(elapsed.as_secs_f64());
        metrics::histogram!(infq_common::metrics::BATCH_SIZE, "model" => label.clone())
            .record(batch.rows as f64);
        metrics::counter!(infq_common::metrics::ROWS, "model" => label.clone())
            .increment(batch.rows as u64);
        tracing::debug!(rows = batch.rows, ?elapsed, "batch ran");
        drop(_enter);
        let cmd = WriterCommand::Store {
            spec: spec.clone(),
            jobs: batch.jobs,
            outcome,
        };
        if writer.blocking_send(cmd).is_err() {
            break;
        }
    }
    tracing::debug!(model = %spec.id(), "model thread stopped");
}
