//! The Redis key schema, the scripts that guard job state, and the
//! [`JobStore`] both sides use.
//!
//! A job lives in one hash, `<ns>:{<id>}:job`. The braces are a hash tag, so
//! every key a script touches for one job maps to one Redis Cluster slot.
//! State changes go through Lua scripts that apply the rule of
//! [`JobStatus::may_replace`](crate::job::JobStatus::may_replace): terminal
//! states never change and ranks never go down. Every write refreshes the
//! TTL, so records expire after the retention period. Reaching a terminal
//! state publishes the job id on `<ns>:done`, which wakes long-polls.

use crate::config::RedisConfig;
use crate::job::{JobError, JobId, JobStatus, Priority};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Pipeline, Script, Value};
use std::sync::LazyLock;
use std::time::Duration;

/// A Redis failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A command failed or timed out.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A reply did not have the expected shape.
    #[error("unexpected redis reply: {0}")]
    Reply(String),
}

impl StoreError {
    /// Whether trying again later may succeed (connection and timeout
    /// problems), as opposed to a bug or a refused command.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::MasterDown
                                | redis::ServerErrorKind::ClusterDown
                        )
                    )
            }
            StoreError::Reply(_) => false,
        }
    }
}

/// Creates a record unless one exists. KEYS[1] job; ARGV[1] TTL (ms);
/// ARGV[2..] field/value pairs. Returns 1 if created, 0 if it existed.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
",
    )
});

/// Moves a job to a new state if the rules allow. KEYS[1] job; ARGV[1]
/// status; ARGV[2] its rank; ARGV[3] TTL (ms); ARGV[4] channel to publish
/// terminal ids on; ARGV[5] job id; ARGV[6..] more field/value pairs.
/// Returns 'ok', or the stored status that refused the change.
static TRANSITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HMGET', KEYS[1], 'status', 'rank')
local rank = tonumber(ARGV[2])
if cur[1] then
  local cur_rank = tonumber(cur[2]) or 0
  if cur_rank >= 2 or rank < cur_rank then return cur[1] end
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'rank', ARGV[2], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if rank >= 2 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 'ok'
",
    )
});

/// A worker takes a job: unless it is terminal, mark it running and count
/// the attempt. KEYS[1] job; ARGV[1] TTL (ms); ARGV[2..] field/value pairs
/// to write if the record is missing. Returns the attempt number, or the
/// terminal status that means "do not run".
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HMGET', KEYS[1], 'status', 'rank')
if cur[1] and (tonumber(cur[2]) or 0) >= 2 then return cur[1] end
if not cur[1] then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
redis.call('HSET', KEYS[1], 'status', 'running', 'rank', 1)
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
",
    )
});

/// The fields of a new job record.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Job id.
    pub id: JobId,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Lane.
    pub priority: Priority,
    /// Acceptance time (epoch ms).
    pub created_at_ms: u64,
    /// Client metadata (JSON text), kept with the job.
    pub metadata: Option<String>,
}

impl NewJob {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("model", self.model.clone()),
            ("version", self.version.clone()),
            ("priority", self.priority.as_str().to_string()),
            ("created_at", self.created_at_ms.to_string()),
        ];
        if let Some(m) = &self.metadata {
            f.push(("metadata", m.clone()));
        }
        f
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Job id.
    pub id: JobId,
    /// Current state.
    pub status: JobStatus,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Lane.
    pub priority: Priority,
    /// The named outputs, as JSON text, once succeeded.
    pub output: Option<String>,
    /// Why it failed, once failed.
    pub error: Option<JobError>,
    /// Acceptance time (epoch ms).
    pub created_at_ms: u64,
    /// When it reached a terminal state (epoch ms).
    pub finished_at_ms: Option<u64>,
    /// How many times a worker took it.
    pub attempts: u32,
    /// Client metadata (JSON text).
    pub metadata: Option<String>,
}

/// A state change to apply.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The new state.
    pub status: JobStatus,
    /// Output JSON text, for `succeeded`.
    pub output: Option<String>,
    /// Reason, for `failed`.
    pub error: Option<JobError>,
    /// Record fields to (re)write, so a record that expired or was never
    /// created is whole again.
    pub job: Option<NewJob>,
}

impl Transition {
    /// `succeeded` with its output JSON.
    pub fn succeeded(output: String) -> Self {
        Self {
            status: JobStatus::Succeeded,
            output: Some(output),
            error: None,
            job: None,
        }
    }

    /// `failed` with a reason.
    pub fn failed(error: JobError) -> Self {
        Self {
            status: JobStatus::Failed,
            output: None,
            error: Some(error),
            job: None,
        }
    }

    /// Any state without payload.
    pub fn to(status: JobStatus) -> Self {
        Self {
            status,
            output: None,
            error: None,
            job: None,
        }
    }

    /// Also (re)writes the record's identity fields.
    pub fn with_job(mut self, job: NewJob) -> Self {
        self.job = Some(job);
        self
    }
}

/// What a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The new state is stored.
    Yes,
    /// Refused: the stored state (terminal, or of higher rank) stays.
    Refused(JobStatus),
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Run it; this is attempt number n.
    Run(u32),
    /// Already terminal: do not run, just acknowledge.
    Done(JobStatus),
}

/// Typed access to job records in Redis.
#[derive(Clone)]
pub struct JobStore {
    conn: ConnectionManager,
    ns: String,
    ttl_ms: u64,
}

impl JobStore {
    /// A store over a lazily connected, self-reconnecting connection; every
    /// command and connect attempt is bounded by the configured timeout.
    pub fn new(cfg: &RedisConfig, ns: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, mgr_cfg)?;
        Ok(Self {
            conn,
            ns: ns.to_string(),
            ttl_ms: cfg.result_ttl_secs * 1000,
        })
    }

    /// The key of a job's record.
    pub fn job_key(&self, id: &JobId) -> String {
        format!("{}:{{{id}}}:job", self.ns)
    }

    /// The channel terminal job ids are published on.
    pub fn done_channel(&self) -> String {
        format!("{}:done", self.ns)
    }

    /// A clone of the underlying connection, for callers with needs of
    /// their own (readiness checks, tests).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Round trip to Redis.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Records a new `queued` job; `false` if the id already exists.
    pub async fn create(&self, job: &NewJob) -> Result<bool, StoreError> {
        let mut inv = CREATE.key(self.job_key(&job.id));
        inv.arg(self.ttl_ms)
            .arg("status")
            .arg("queued")
            .arg("rank")
            .arg(0);
        inv.arg("attempts").arg(0);
        for (k, v) in job.fields() {
            inv.arg(k).arg(v);
        }
        let mut c = self.conn.clone();
        let created: i64 = inv.invoke_async(&mut c).await?;
        Ok(created == 1)
    }

    /// Reads a job; `None` if unknown or expired.
    pub async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let mut c = self.conn.clone();
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.job_key(id))
            .query_async(&mut c)
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_record(*id, fields).map(Some)
    }

    /// Applies one transition.
    pub async fn transition(&self, id: &JobId, t: &Transition) -> Result<Applied, StoreError> {
        let mut out = self.transition_many(&[(*id, t)]).await?;
        out.pop()
            .ok_or_else(|| StoreError::Reply("empty pipeline reply".into()))
    }

    /// Applies many transitions in one round trip.
    pub async fn transition_many(
        &self,
        updates: &[(JobId, &Transition)],
    ) -> Result<Vec<Applied>, StoreError> {
        let mut pipe = redis::pipe();
        let channel = self.done_channel();
        for (id, t) in updates {
            let mut inv = TRANSITION.key(self.job_key(id));
            inv.arg(t.status.as_str())
                .arg(t.status.rank())
                .arg(self.ttl_ms)
                .arg(&channel)
                .arg(id.to_string());
            if t.status.is_terminal() {
                inv.arg("finished_at").arg(crate::job::now_ms());
            }
            if let Some(o) = &t.output {
                inv.arg("output").arg(o);
            }
            if let Some(e) = &t.error {
                inv.arg("error")
                    .arg(serde_json::to_string(e).expect("error serialises"));
            }
            if let Some(job) = &t.job {
                for (k, v) in job.fields() {
                    inv.arg(k).arg(v);
                }
            }
            pipe.invoke_script(&inv);
        }
        let values = self.run(&pipe).await?;
        values
            .into_iter()
            .map(|v| match v {
                Value::SimpleString(s) if s == "ok" => Ok(Applied::Yes),
                Value::BulkString(b) if b == b"ok" => Ok(Applied::Yes),
                other => status_of(&other).map(Applied::Refused),
            })
            .collect()
    }

    /// Claims many jobs in one round trip (see [`Claim`]).
    pub async fn claim_many(&self, jobs: &[&NewJob]) -> Result<Vec<Claim>, StoreError> {
        let mut pipe = redis::pipe();
        for job in jobs {
            let mut inv = CLAIM.key(self.job_key(&job.id));
            inv.arg(self.ttl_ms).arg("attempts").arg(0);
            for (k, v) in job.fields() {
                inv.arg(k).arg(v);
            }
            pipe.invoke_script(&inv);
        }
        let values = self.run(&pipe).await?;
        values
            .into_iter()
            .map(|v| match v {
                Value::Int(n) => Ok(Claim::Run(n.clamp(0, i64::from(u32::MAX)) as u32)),
                other => status_of(&other).map(Claim::Done),
            })
            .collect()
    }

    /// Runs a pipeline of script calls; after a Redis restart the scripts
    /// are gone (NOSCRIPT), so they are loaded and the pipeline sent again.
    /// Every script is idempotent, so the second send is safe.
    async fn run(&self, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut c = self.conn.clone();
        match pipe.query_async::<Vec<Value>>(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                for s in [&*CREATE, &*TRANSITION, &*CLAIM] {
                    s.prepare_invoke().load_async(&mut c).await?;
                }
                Ok(pipe.query_async::<Vec<Value>>(&mut c).await?)
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn status_of(v: &Value) -> Result<JobStatus, StoreError> {
    let s = match v {
        Value::SimpleString(s) => s.clone(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => return Err(StoreError::Reply(format!("{other:?}"))),
    };
    JobStatus::parse(&s).ok_or(StoreError::Reply(s))
}

fn parse_record(
    id: JobId,
    mut f: std::collections::HashMap<String, String>,
) -> Result<JobRecord, StoreError> {
    let status = f
        .get("status")
        .and_then(|s| JobStatus::parse(s))
        .ok_or_else(|| StoreError::Reply(format!("job {id} has no valid status")))?;
    let num = |f: &std::collections::HashMap<String, String>, k: &str| {
        f.get(k).and_then(|v| v.parse::<u64>().ok())
    };
    Ok(JobRecord {
        id,
        status,
        priority: match f.get("priority").map(String::as_str) {
            Some("bulk") => Priority::Bulk,
            _ => Priority::Interactive,
        },
        created_at_ms: num(&f, "created_at").unwrap_or(0),
        finished_at_ms: num(&f, "finished_at"),
        attempts: num(&f, "attempts").unwrap_or(0) as u32,
        error: f.get("error").and_then(|e| serde_json::from_str(e).ok()),
        model: f.remove("model").unwrap_or_default(),
        version: f.remove("version").unwrap_or_default(),
        output: f.remove("output"),
        metadata: f.remove("metadata"),
    })
}
