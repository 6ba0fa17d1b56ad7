//! Redis and RabbitMQ servers of a test's own that speak only TLS, with
//! certificates from a throwaway certificate authority (made with the
//! `openssl` command). The shared servers are never touched: Redis runs
//! on a free port, RabbitMQ as a second node with its own name, ports and
//! data folder.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A certificate authority and a server certificate it signed, for
/// `localhost` and `127.0.0.1`.
pub struct Certs {
    /// The folder holding them.
    pub dir: tempfile::TempDir,
}

impl Certs {
    /// Makes a CA and a server certificate with `openssl`.
    pub fn make() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )?;
        let run = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .context("running openssl")?;
            anyhow::ensure!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=infq test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ])?;
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ])?;
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ])?;
        // The broker runs as its own user when started as root.
        for f in ["server.key", "server.crt", "ca.crt"] {
            let mut p = std::fs::metadata(d.join(f))?.permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o644);
            std::fs::set_permissions(d.join(f), p)?;
        }
        Ok(Self { dir })
    }

    /// A file of the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `redis-server` listening only for TLS on a free port.
pub struct TlsRedis {
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl TlsRedis {
    /// Starts it with the server certificate of `certs`.
    pub fn start(certs: &Certs) -> anyhow::Result<Self> {
        let port = crate::procs::free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(certs.path("server.crt"))
            .arg("--tls-key-file")
            .arg(certs.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(certs.path("ca.crt"))
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(certs.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server with TLS")?;
        wait_port(port, Duration::from_secs(10))?;
        Ok(Self { port, child })
    }

    /// `rediss://localhost:<port>/`.
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}/", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A second RabbitMQ node with only a TLS listener.
pub struct TlsRabbit {
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    node: String,
    base: tempfile::TempDir,
    child: Child,
}

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

impl TlsRabbit {
    /// Starts a node named after this process, waiting until it runs
    /// (about 10 s).
    pub fn start(certs: &Certs) -> anyhow::Result<Self> {
        let base = tempfile::tempdir()?;
        let port = crate::procs::free_port();
        let dist = crate::procs::free_port();
        let node = format!("infq_tls_{}@localhost", std::process::id());
        let b = base.path();
        std::fs::create_dir_all(b.join("home"))?;
        std::fs::write(b.join("rabbitmq-env.conf"), "")?;
        std::fs::write(b.join("enabled_plugins"), "[].\n")?;
        std::fs::write(
            b.join("rabbitmq.conf"),
            format!(
                "listeners.tcp = none\n\
                 listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                certs.path("ca.crt").display(),
                certs.path("server.crt").display(),
                certs.path("server.key").display(),
            ),
        )?;
        let child = Self::command(b, &node, dist, "rabbitmq-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a RabbitMQ node")?;
        let me = Self {
            port,
            node,
            base,
            child,
        };
        let ok = Self::command(me.base.path(), &me.node, dist, "rabbitmqctl")
            .args(["wait", "--timeout", "60"])
            .arg(me.base.path().join("node.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(ok.success(), "the RabbitMQ node {} did not start", me.node);
        wait_port(port, Duration::from_secs(30))?;
        Ok(me)
    }

    fn command(base: &Path, node: &str, dist: u16, bin: &str) -> Command {
        let mut c = Command::new(Path::new(RABBIT_BIN).join(bin));
        c.env("HOME", base.join("home"))
            .env("RABBITMQ_CONF_ENV_FILE", base.join("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", node)
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_CONFIG_FILE", base.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                base.join("enabled_plugins"),
            )
            .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", base.join("log"))
            .env("RABBITMQ_PID_FILE", base.join("node.pid"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", base.join("plugins-expand"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_FLAGS", "-kernel inet_dist_use_interface {127,0,0,1}");
        c
    }

    /// `amqps://guest:guest@localhost:<port>/%2f?heartbeat=10`.
    pub fn url(&self) -> String {
        format!(
            "amqps://guest:guest@localhost:{}/%2f?heartbeat=10",
            self.port
        )
    }
}

impl Drop for TlsRabbit {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(RABBIT_BIN).join("rabbitmqctl"))
            .env("HOME", self.base.path().join("home"))
            .env(
                "RABBITMQ_CONF_ENV_FILE",
                self.base.path().join("rabbitmq-env.conf"),
            )
            .args(["-n", &self.node, "shutdown"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn wait_port(port: u16, within: Duration) -> anyhow::Result<()> {
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("nothing listens on port {port}")
}
