//! The connection to Redis, whatever its deployment ([`RedisMode`]): one
//! server, a primary watched by Sentinel, or a Redis Cluster. Every Redis
//! call in the workspace goes through a [`RedisLink`]; what differs
//! between the modes is here and nowhere else:
//!
//! - **standalone**: the `redis` crate's `ConnectionManager` (reconnects
//!   by itself);
//! - **sentinel**: [`sentinel::SentinelLink`], which asks the sentinels
//!   for the primary and asks again once the connection to it fails or it
//!   answers as a replica;
//! - **cluster**: the `redis` crate's cluster connection (`cluster-async`),
//!   which routes each command to the node of its key's slot and follows
//!   the cluster through failovers and resharding. A pipeline must stay
//!   within one slot there, so [`RedisLink::query`] splits a pipeline by
//!   slot, runs the parts at once and puts the replies back in order.
//!
//! Pub/sub in every mode is [`subscribe`].

pub mod sentinel;
pub mod subscribe;

use crate::config::{RedisConfig, RedisMode};
use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SlotAddr};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Script, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use sentinel::SentinelLink;

/// Whether `e` means the connection to the server is gone or never came
/// up: trying again, on a new connection where the mode has one, may
/// succeed.
pub fn connection_lost(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// Whether `e` is what a failover under way answers: the sentinels name
/// no primary yet, no cluster node serves a slot, or the server is
/// loading, lost its primary, was demoted (`READONLY`) or asks to try
/// again. Each passes once the deployment settles.
pub fn failover_under_way(e: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        e.kind(),
        ErrorKind::MasterNameNotFoundBySentinel
            | ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Server(
                ServerErrorKind::TryAgain
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::ReadOnly
            )
    )
}

/// A connection to Redis in any mode; cheap to clone (clones share it).
#[derive(Clone)]
pub struct RedisLink {
    conn: Conn,
    /// With `redis.min_replicas_ack`: connections of their own for the
    /// writes followed by `WAIT`, which holds its connection until the
    /// replicas answer (up to `wait_ms`); on the shared one it would hold
    /// up every other call.
    durable: Option<Arc<Durable>>,
    /// `redis.min_replicas_ack`, and how long `WAIT` may take.
    replicas: u32,
    wait_ms: u64,
}

struct Durable {
    conns: Vec<Conn>,
    next: AtomicUsize,
}

/// Connections for writes that wait for replicas: as many `WAIT`s at once.
const DURABLE_CONNECTIONS: usize = 8;

#[derive(Clone)]
enum Conn {
    /// One server.
    Standalone(ConnectionManager),
    /// The primary the sentinels name.
    Sentinel(SentinelLink),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl Conn {
    fn open(cfg: &RedisConfig) -> RedisResult<Self> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        Ok(match cfg.mode {
            RedisMode::Standalone => {
                let mgr_cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Conn::Standalone(ConnectionManager::new_lazy_with_config(
                    cfg.client()?,
                    mgr_cfg,
                )?)
            }
            RedisMode::Sentinel => Conn::Sentinel(SentinelLink::new(cfg)?),
            RedisMode::Cluster => {
                let client = cluster_client(cfg, None)?;
                let conf = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Conn::Cluster(client.get_pending_async_connection_with_config(conf))
            }
        })
    }
}

impl RedisLink {
    /// A connection as configured, opened lazily: nothing is contacted
    /// until the first command, and every connect attempt and command is
    /// bounded by `redis.timeout_ms`.
    pub fn new(cfg: &RedisConfig) -> RedisResult<Self> {
        let durable = if cfg.min_replicas_ack > 0 {
            let conns = (0..DURABLE_CONNECTIONS)
                .map(|_| Conn::open(cfg))
                .collect::<RedisResult<Vec<_>>>()?;
            Some(Arc::new(Durable {
                conns,
                next: AtomicUsize::new(0),
            }))
        } else {
            None
        };
        Ok(Self {
            conn: Conn::open(cfg)?,
            durable,
            replicas: cfg.min_replicas_ack,
            // Within the command timeout, so WAIT's own answer comes in
            // time.
            wait_ms: (cfg.timeout_ms / 2).max(1),
        })
    }

    /// A link over one of the connections for writes that wait for
    /// replicas (this one without them).
    fn for_waiting(&self) -> RedisLink {
        match &self.durable {
            None => self.clone(),
            Some(d) => {
                let i = d.next.fetch_add(1, Ordering::Relaxed) % d.conns.len();
                RedisLink {
                    conn: d.conns[i].clone(),
                    durable: None,
                    replicas: self.replicas,
                    wait_ms: self.wait_ms,
                }
            }
        }
    }

    /// The deployment this connection talks to.
    pub fn mode(&self) -> RedisMode {
        match self.conn {
            Conn::Standalone(_) => RedisMode::Standalone,
            Conn::Sentinel(_) => RedisMode::Sentinel,
            Conn::Cluster(_) => RedisMode::Cluster,
        }
    }

    /// Whether keys of different slots live on different nodes, so no
    /// script or pipeline may span two slots.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// Runs `pipe` and returns one reply per command, in order. In a
    /// cluster the commands are grouped by the slot of their first key
    /// (commands without a key go with the first group) and the groups run
    /// at once, one round trip each. A group refused with `NOSCRIPT` (the
    /// server lost its scripts: a restart, or a failover to a node that
    /// never ran them) has `reload` loaded, on every primary, and is sent
    /// again: `NOSCRIPT` means none of the group ran. (Its commands must
    /// not be `ignore()`d: each gets its reply back in place.)
    ///
    /// `durable`: with `redis.min_replicas_ack` set, each group is
    /// followed by a `WAIT` on its node, and fewer replicas than asked
    /// holding the writes in time is an error (a retryable one: the writes
    /// are on the primary, and writing them again is safe for the state
    /// scripts).
    pub async fn query(
        &self,
        pipe: &Pipeline,
        reload: &[&Script],
        durable: bool,
    ) -> RedisResult<Vec<Value>> {
        let wait = (durable && self.replicas > 0).then_some((self.replicas, self.wait_ms));
        if !self.is_cluster() || pipe.len() <= 1 {
            return self.query_group(pipe, reload, wait).await;
        }
        let groups = group_by_slot(pipe.cmd_iter());
        if groups.len() == 1 {
            return self.query_group(pipe, reload, wait).await;
        }
        let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
        let parts = try_join_all(groups.iter().map(|(_, idx)| {
            let mut part = redis::pipe();
            for &i in idx {
                part.add_command(cmds[i].clone());
            }
            async move { self.query_group(&part, reload, wait).await }
        }))
        .await?;
        let mut out = vec![Value::Nil; pipe.len()];
        for ((_, idx), replies) in groups.iter().zip(parts) {
            for (&i, v) in idx.iter().zip(replies) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    async fn query_group(
        &self,
        pipe: &Pipeline,
        reload: &[&Script],
        wait: Option<(u32, u64)>,
    ) -> RedisResult<Vec<Value>> {
        let waited;
        let (pipe, mut conn) = match wait {
            None => (pipe, self.clone()),
            Some((n, ms)) => {
                let mut p = pipe.clone();
                p.cmd("WAIT").arg(n).arg(ms);
                waited = p;
                (&waited, self.for_waiting())
            }
        };
        let mut replies = match pipe.query_async::<Vec<Value>>(&mut conn).await {
            Err(e)
                if !reload.is_empty()
                    && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                for s in reload {
                    s.prepare_invoke().load_async(&mut conn).await?;
                }
                pipe.query_async(&mut conn).await?
            }
            r => r?,
        };
        if let Some((n, _)) = wait {
            let got = match replies.pop() {
                Some(Value::Int(got)) => got,
                other => {
                    return Err(RedisError::from((
                        redis::ErrorKind::Parse,
                        "WAIT answered",
                        format!("{other:?}"),
                    )))
                }
            };
            if got < i64::from(n) {
                return Err(RedisError::from((
                    redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
                    "fewer replicas than redis.min_replicas_ack hold the write",
                    format!("{got} of {n}"),
                )));
            }
        }
        Ok(replies)
    }
}

/// The slot route of a command's first key, if it has one: a script's
/// first key, else the first argument of commands that take keys.
fn route_of(cmd: &Cmd) -> Option<Route> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let n: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if n == 0 {
                return None;
            }
            args.get(3)?
        }
        b"PING" | b"SCRIPT" | b"INFO" | b"WAIT" | b"CLUSTER" | b"CONFIG" | b"CLIENT" | b"ROLE"
        | b"TIME" => return None,
        _ => args.get(1)?,
    };
    Some(Route::with_key(key, SlotAddr::Master))
}

/// The indices of `cmds` grouped by slot, groups in order of first
/// appearance; commands without a key join the first group.
fn group_by_slot<'a>(cmds: impl Iterator<Item = &'a Cmd>) -> Vec<(Option<Route>, Vec<usize>)> {
    let mut groups: Vec<(Option<Route>, Vec<usize>)> = Vec::new();
    let mut keyless = Vec::new();
    for (i, cmd) in cmds.enumerate() {
        match route_of(cmd) {
            None => keyless.push(i),
            Some(r) => match groups.iter_mut().find(|(g, _)| *g == Some(r)) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((Some(r), vec![i])),
            },
        }
    }
    match groups.first_mut() {
        Some((_, idx)) => {
            idx.extend(keyless);
            idx.sort_unstable();
        }
        None => groups.push((None, keyless)),
    }
    groups
}

/// A cluster client for `cfg.nodes`, with a push sender when the caller
/// subscribes (RESP3).
pub(crate) fn cluster_client(
    cfg: &RedisConfig,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> RedisResult<redis::cluster::ClusterClient> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let mut b = redis::cluster::ClusterClientBuilder::new(cfg.nodes.clone())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(3)
        .max_retry_wait(1_000);
    if let Some(certs) = cfg.ca_certificates()? {
        b = b.certs(certs);
    }
    if let Some(tx) = push {
        b = b
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx);
    }
    b.build()
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.conn {
            Conn::Standalone(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.conn {
            Conn::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.conn {
            Conn::Standalone(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_split_by_slot_and_keep_keyless_commands_with_the_first_group() {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg("a:{x}:1");
        pipe.cmd("GET").arg("b:{y}:1");
        pipe.cmd("PING");
        pipe.cmd("GET").arg("c:{x}:2");
        let groups = group_by_slot(pipe.cmd_iter());
        let idx: Vec<Vec<usize>> = groups.into_iter().map(|(_, i)| i).collect();
        assert_eq!(idx, vec![vec![0, 2, 3], vec![1]]);
        let mut keyless = redis::pipe();
        keyless.cmd("PING");
        let groups = group_by_slot(keyless.cmd_iter());
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].1, vec![0]);
    }

    #[test]
    fn scripts_are_grouped_by_their_first_key() {
        let script = redis::Script::new("return 1");
        let mut pipe = redis::pipe();
        pipe.invoke_script(script.key("ns:{a}:job").arg(1));
        pipe.invoke_script(script.key("ns:{a}:batch").arg(1));
        pipe.invoke_script(script.key("ns:quota:{t}").arg(1));
        let groups = group_by_slot(pipe.cmd_iter());
        let idx: Vec<Vec<usize>> = groups.into_iter().map(|(_, i)| i).collect();
        assert_eq!(idx, vec![vec![0, 1], vec![2]]);
    }
}
