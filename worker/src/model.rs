//! The model threads: one OS thread per model instance (`instances` per
//! version) owns its TorchScript module, so libtorch work never blocks the
//! async runtime.
//!
//! The instances take batches from one channel of capacity `instances`
//! (the batcher reserves a slot before it takes the next batch), run the
//! forward pass under `no_grad`, and send the outputs to the completion
//! stage. If a
//! batch fails as a whole, its rows are run one by one, so one bad row fails
//! only its own row.

use crate::explain::Explainer;
use crate::pending::Pending;
use crate::stats::WorkerStats;

use crate::outcome::CompletionCommand;
pub use crate::outcome::{InferError, ModelOutcome};
use infq_common::registry::{parse_device, DeviceChoice, ModelSpec, Precision};
use std::sync::{Arc, Mutex};
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
    /// The file is not the one the registry declares (`sha256`).
    #[error("model {model}: the file's SHA-256 is {actual}, the registry declares {declared}")]
    Digest {
        /// `name@version`.
        model: String,
        /// What the registry says.
        declared: String,
        /// What the file has.
        actual: String,
    },
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

/// The batcher's end of a model's threads.
pub struct ModelHandle {
    /// Capacity `instances`: that many batches run or wait at once.
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

/// Loads the model on `spec.instances` threads of its own and returns once
/// every one is ready to run. The threads take batches from one channel in
/// turn, so up to `instances` batches run at once.
pub async fn spawn(
    spec: Arc<ModelSpec>,
    device_override: Option<&str>,
    threads: usize,
    completion: mpsc::Sender<CompletionCommand>,
    stats: Arc<WorkerStats>,
) -> Result<ModelHandle, ModelError> {
    let device = resolve_device(&spec, device_override)?;
    let kind = precision_kind(&spec, device);
    let (tx, rx) = mpsc::channel(spec.instances);
    let rx = Arc::new(Mutex::new(rx));
    let mut ready = Vec::new();
    for instance in 0..spec.instances {
        let (ready_tx, ready_rx) = oneshot::channel();
        ready.push(ready_rx);
        let (spec, rx, completion, stats) =
            (spec.clone(), rx.clone(), completion.clone(), stats.clone());
        std::thread::Builder::new()
            .name(format!("m{instance}-{}", spec.name))
            .spawn(move || {
                tch::set_num_threads(threads as i32);
                let _no_grad = tch::no_grad_guard();
                match load_checked(&spec, device, kind).and_then(|(module, digest)| {
                    Runner::new(module, device, kind, spec.max_batch_size, spec.width())
                        .map(|runner| (runner, digest))
                }) {
                    Ok((runner, digest)) => {
                        let _ = ready_tx.send(Ok(()));
                        model_thread(runner, spec, digest.into(), rx, completion, stats);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| ModelError::Thread(e.to_string()))?;
    }
    for r in ready {
        r.await
            .map_err(|_| ModelError::Thread("died while loading".into()))??;
    }
    tracing::info!(
        model = %spec.id(),
        ?device,
        precision = ?kind,
        instances = spec.instances,
        threads,
        "model loaded"
    );
    Ok(ModelHandle { tx })
}

/// The element type a model computes in: the registry's precision on a
/// GPU, f32 on a CPU.
pub fn precision_kind(spec: &ModelSpec, device: Device) -> Kind {
    match (device.is_cuda(), spec.precision) {
        (true, Precision::F16) => Kind::Half,
        (true, Precision::Bf16) => Kind::BFloat16,
        _ => Kind::Float,
    }
}

/// A device's name in metrics: `cpu` or `cuda:N`.
pub fn device_label(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
        _ => "cpu".into(),
    }
}

/// Loads the module and checks it on one row of zeros: it must return
/// `[1, outputs]` floats.
pub fn load(spec: &ModelSpec, device: Device) -> Result<CModule, ModelError> {
    load_as(spec, device, Kind::Float)
}

/// [`load`], converting the module's floating-point weights to `kind`.
pub fn load_as(spec: &ModelSpec, device: Device, kind: Kind) -> Result<CModule, ModelError> {
    load_checked(spec, device, kind).map(|(module, _)| module)
}

/// [`load_as`], and the SHA-256 of the bytes loaded: the file is read once,
/// hashed and loaded from those bytes, so the digest names exactly what
/// runs. A file whose digest differs from the registry's `sha256` is
/// refused.
pub fn load_checked(
    spec: &ModelSpec,
    device: Device,
    kind: Kind,
) -> Result<(CModule, String), ModelError> {
    let bytes = std::fs::read(&spec.path)
        .map_err(|e| ModelError::Load(format!("{}: {e}", spec.path.display())))?;
    let digest = infq_common::sha256::hex(&bytes);
    if let Some(declared) = &spec.sha256 {
        if *declared != digest {
            return Err(ModelError::Digest {
                model: spec.id(),
                declared: declared.clone(),
                actual: digest,
            });
        }
    }
    // libtorch appends its C++ stack to the message; the first line says it.
    let mut module = CModule::load_data_on_device(&mut bytes.as_slice(), device).map_err(|e| {
        ModelError::Load(e.to_string().lines().next().unwrap_or_default().to_string())
    })?;
    module.set_eval();
    if kind != Kind::Float {
        module.to(device, kind, false);
    }
    let probe = vec![0f32; spec.width()];
    let out = forward_as(&module, device, kind, &probe, 1, spec.width())
        .map_err(|e| ModelError::Schema(format!("a row of {} zeros: {e}", spec.width())))?;
    if out.len() != spec.outputs.len() {
        return Err(ModelError::Schema(format!(
            "one row gave {} outputs, the schema lists {}",
            out.len(),
            spec.outputs.len()
        )));
    }
    // A model that declares `explain` must be differentiable from its
    // inputs to the explained output: tried once, here, on the same row.
    if let Some(x) = Explainer::of(spec) {
        x.attribute(&module, device, kind, &probe, 1, spec.width())
            .map_err(|e| {
                ModelError::Schema(format!(
                    "model {} declares explain, but its output has no gradient path to its inputs: {}",
                    spec.id(),
                    e.to_string().lines().next().unwrap_or_default()
                ))
            })?;
    }
    Ok((module, digest))
}

/// One forward pass: `rows x width` inputs to `rows x outputs` outputs,
/// with one copy to the device and one back.
pub fn forward(
    module: &CModule,
    device: Device,
    inputs: &[f32],
    rows: usize,
    width: usize,
) -> Result<Vec<f32>, InferError> {
    forward_as(module, device, Kind::Float, inputs, rows, width)
}

/// [`forward`] with the inputs converted to `kind` on the device.
pub fn forward_as(
    module: &CModule,
    device: Device,
    kind: Kind,
    inputs: &[f32],
    rows: usize,
    width: usize,
) -> Result<Vec<f32>, InferError> {
    let x = Tensor::from_slice(inputs)
        .f_reshape([rows as i64, width as i64])
        .and_then(|t| t.f_to_device_(device, kind, false, false))?;
    outputs_of(module, x, rows)
}

/// Runs `x` through the module and brings `rows x outputs` f32 back.
fn outputs_of(module: &CModule, x: Tensor, rows: usize) -> Result<Vec<f32>, InferError> {
    let y = module.forward_ts(&[x])?;
    let size = y.size();
    if size.len() != 2 || size[0] != rows as i64 {
        return Err(InferError::Shape { shape: size, rows });
    }
    let y = y
        .f_to_device(Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Float))
        .and_then(|t| t.f_contiguous())
        .and_then(|t| t.f_view([-1]))?;
    Ok(Vec::<f32>::try_from(&y)?)
}

/// One model instance: its module, device and precision, and on a GPU a
/// page-locked staging buffer the size of the largest batch, so a batch's
/// inputs reach the device in one asynchronous copy without pinning memory
/// anew for each batch.
pub struct Runner {
    module: CModule,
    device: Device,
    kind: Kind,
    staging: Option<Tensor>,
}

impl Runner {
    /// A runner; the staging buffer exists only on a CUDA device.
    pub fn new(
        module: CModule,
        device: Device,
        kind: Kind,
        max_rows: usize,
        width: usize,
    ) -> Result<Self, ModelError> {
        let staging = if device.is_cuda() {
            let buf = Tensor::f_zeros([max_rows as i64, width as i64], (Kind::Float, Device::Cpu))
                .and_then(|t| t.f_pin_memory(device))
                .map_err(|e| ModelError::Load(format!("pinned staging buffer: {e}")))?;
            Some(buf)
        } else {
            None
        };
        Ok(Self {
            module,
            device,
            kind,
            staging,
        })
    }

    /// One forward pass of `rows x width` inputs.
    pub fn run(&self, inputs: &[f32], rows: usize, width: usize) -> Result<Vec<f32>, InferError> {
        match &self.staging {
            Some(buf) if rows as i64 <= buf.size()[0] => {
                let host = Tensor::from_slice(inputs).f_reshape([rows as i64, width as i64])?;
                let mut pinned = buf.f_narrow(0, 0, rows as i64)?;
                pinned.f_copy_(&host)?;
                // The copy to the device overlaps nothing else here, but is
                // issued without a host sync; reading the outputs back syncs.
                let x = pinned.f_to_device_(self.device, self.kind, true, false)?;
                outputs_of(&self.module, x, rows)
            }
            _ => forward_as(&self.module, self.device, self.kind, inputs, rows, width),
        }
    }
}

fn model_thread(
    runner: Runner,
    spec: Arc<ModelSpec>,
    model_sha256: Arc<str>,
    rx: Arc<Mutex<mpsc::Receiver<ModelCommand>>>,
    completion: mpsc::Sender<CompletionCommand>,
    stats: Arc<WorkerStats>,
) {
    let width = spec.width();
    let outputs = spec.outputs.len();
    let explainer = Explainer::of(&spec);
    let label = spec.name.clone();
    let device = device_label(runner.device);
    loop {
        // One instance waits for the next batch at a time; the others are
        // busy running theirs or queue on the lock.
        let next = match rx.lock() {
            Ok(mut rx) => rx.blocking_recv(),
            Err(_) => None,
        };
        let Some(ModelCommand::Infer(batch)) = next else {
            break;
        };
        let _enter = batch.span.clone().entered();
        let started = Instant::now();
        let outcome = match runner.run(&batch.inputs, batch.rows, width) {
            Ok(out) if out.len() == batch.rows * outputs => ModelOutcome::Batch(out),
            Ok(out) => {
                let e = InferError::Outputs {
                    values: out.len(),
                    rows: batch.rows,
                };
                ModelOutcome::PerRow(vec![Err(e); batch.rows])
            }
            Err(e) => {
                tracing::warn!(error = %e, "batch failed; running its rows one by one");
                ModelOutcome::PerRow(
                    batch
                        .inputs
                        .chunks(width)
                        .map(|row| {
                            runner.run(row, 1, width).and_then(|out| {
                                if out.len() == outputs {
                                    Ok(out)
                                } else {
                                    Err(InferError::RowOutputs(out.len()))
                                }
                            })
                        })
                        .collect(),
                )
            }
        };
        let explained = explain_jobs(&runner, explainer.as_ref(), &batch, width);
        let elapsed = started.elapsed();
        stats.record_batch(batch.rows);
        metrics::histogram!(infq_common::metrics::INFERENCE_SECONDS, "model" => label.clone(), "device" => device.clone())
            .record(elapsed.as_secs_f64());
        metrics::histogram!(infq_common::metrics::BATCH_SIZE, "model" => label.clone(), "device" => device.clone())
            .record(batch.rows as f64);
        metrics::counter!(infq_common::metrics::ROWS, "model" => label.clone(), "device" => device.clone())
            .increment(batch.rows as u64);
        tracing::debug!(rows = batch.rows, ?elapsed, "batch ran");
        drop(_enter);
        let cmd = CompletionCommand::Store {
            spec: spec.clone(),
            jobs: batch.jobs,
            outcome,
            explained,
            model_sha256: model_sha256.clone(),
        };
        if completion.blocking_send(cmd).is_err() {
            break;
        }
    }
    tracing::debug!(model = %spec.id(), "model thread stopped");
}

/// Attributions of the rows of the jobs whose records asked for them: one
/// entry per job, `None` where none was asked. Every such row of the batch
/// goes through one pass ([`Explainer::attribute`]); if that fails, each
/// job's rows are tried alone, so one job's failure costs only its own
/// explanation.
pub fn explain_jobs(
    runner: &Runner,
    explainer: Option<&Explainer>,
    batch: &Batch,
    width: usize,
) -> Vec<Option<Result<Vec<f32>, InferError>>> {
    let mut out: Vec<Option<Result<Vec<f32>, InferError>>> =
        batch.jobs.iter().map(|_| None).collect();
    let Some(x) = explainer else {
        // Asked for by the record, with no explain section here (a
        // registry being rolled out): said, not silently left out.
        for (slot, job) in out.iter_mut().zip(&batch.jobs) {
            if job.explain {
                *slot = Some(Err(InferError::Torch(
                    "this worker's registry entry for the model has no explain section".into(),
                )));
            }
        }
        return out;
    };
    let mut wanted = Vec::new();
    let mut at = 0;
    for (i, job) in batch.jobs.iter().enumerate() {
        let rows = job.rows(width);
        if job.explain {
            wanted.push((i, at * width..(at + rows) * width, rows));
        }
        at += rows;
    }
    if wanted.is_empty() {
        return out;
    }
    let attribute = |inputs: &[f32], rows| {
        x.attribute(
            &runner.module,
            runner.device,
            runner.kind,
            inputs,
            rows,
            width,
        )
    };
    let rows: usize = wanted.iter().map(|w| w.2).sum();
    let inputs: Vec<f32> = wanted
        .iter()
        .flat_map(|(_, range, _)| batch.inputs[range.clone()].iter().copied())
        .collect();
    match attribute(&inputs, rows) {
        Ok(all) => {
            let mut from = 0;
            for (i, _, rows) in wanted {
                out[i] = Some(Ok(all[from..from + rows * width].to_vec()));
                from += rows * width;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "explaining a batch failed; explaining its jobs one by one");
            for (i, range, rows) in wanted {
                out[i] = Some(attribute(&batch.inputs[range], rows));
            }
        }
    }
    out
}
