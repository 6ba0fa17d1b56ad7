//! Where a model runs: `auto`, `cpu` or `cuda:N`.

/// Where a model runs, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first GPU when one is present, else the CPU.
    Auto,
    /// Always the CPU.
    Cpu,
    /// The given CUDA device.
    Cuda(usize),
}

/// Parses `auto`, `cpu` or `cuda:N`.
pub fn parse_device(s: &str) -> Option<DeviceChoice> {
    match s {
        "auto" => Some(DeviceChoice::Auto),
        "cpu" => Some(DeviceChoice::Cpu),
        "cuda" => Some(DeviceChoice::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceChoice::Cuda),
    }
}
