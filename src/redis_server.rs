//! A Redis server of a test's own, on a free port, with AOF persistence,
//! that the test can stop and start again (the shared Redis on 6379 keeps
//! nothing on disk and must not be restarted under other tests).

use anyhow::Context;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A private `redis-server` process.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    fsync: &'static str,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one with AOF `appendfsync` set to `fsync` (`everysec`,
    /// `always`).
    pub fn start(fsync: &'static str) -> anyhow::Result<Self> {
        let mut s = Self {
            port: crate::procs::free_port(),
            dir: tempfile::tempdir()?,
            fsync,
            child: None,
        };
        s.start_again()?;
        Ok(s)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server (again), on the same port and data.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("redis-server on port {} did not start", self.port)
    }

    /// Stops the server the way an orderly restart does (SIGTERM: it
    /// flushes its AOF and exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
