//! Running infq's binaries as child processes, for tests and benchmarks
//! that need real processes: to measure their memory, kill them, or run
//! several workers side by side.

use anyhow::Context;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where cargo put the binaries of `profile` (`debug` or `release`).
pub fn bin_dir(profile: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"));
    target.join(profile)
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running infq binary; killed when dropped.
pub struct Service {
    /// The process.
    pub child: Child,
    /// Its HTTP address (`127.0.0.1:port`).
    pub addr: String,
    /// Its log file.
    pub log: PathBuf,
}

impl Service {
    /// Starts `bin` from `profile`'s folder with `config/default.toml`, the
    /// given `INFQ_*` variables, and its HTTP listener on a free port.
    pub fn spawn(profile: &str, bin: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let path = bin_dir(profile).join(bin);
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("{bin}-{port}.log"));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&path);
        cmd.current_dir(crate::root())
            .arg("--config")
            .arg(crate::root().join("config/default.toml"))
            .arg("--listen")
            .arg(&addr)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} (build it first)", path.display()))?;
        Ok(Self { child, addr, log })
    }

    /// Waits until `GET /readyz` answers 200.
    pub async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                anyhow::bail!("exited with {status}: {log}");
            }
            if let Ok(r) = http
                .get(format!("http://{}/readyz", self.addr))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "{} did not become ready; log: {}",
            self.addr,
            self.log.display()
        )
    }

    /// Resident memory now and at its peak, in bytes (Linux `/proc`).
    pub fn rss(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit.
    pub fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(st) = self.child.try_wait()? {
                return Ok(Some(st));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a worker, then a producer, as processes of the debug build with
/// `env`, and waits until both are ready; returns them and the producer's
/// base URL.
pub async fn start_pair(
    env: &[(&str, String)],
    http: &reqwest::Client,
) -> anyhow::Result<(Service, Service, String)> {
    let mut worker = Service::spawn("debug", "infq-worker", env)?;
    worker.wait_ready(http).await.context("worker")?;
    let mut producer = Service::spawn("debug", "infq-producer", env)?;
    producer.wait_ready(http).await.context("producer")?;
    let base = format!("http://{}", producer.addr);
    Ok((worker, producer, base))
}
