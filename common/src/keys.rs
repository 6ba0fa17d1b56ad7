//! The Redis key schema: the one place a key or channel name is built.
//!
//! [`Keys`] is made from the deployment's namespace and has one method per
//! kind of key. Callers name what they mean (a [`Subject`], a tenant, a
//! URL) and get its key; nothing else in the workspace formats a key, and
//! no Lua script builds or derives one: every key a script touches is
//! computed here and passed in its `KEYS[]`.
//!
//! The schema (`<ns>` is the namespace):
//!
//! | key | type | what |
//! |-----|------|------|
//! | `<ns>:{<id>}:job` | hash | a job's record |
//! | `<ns>:{<id>}:batch` | hash | a bulk batch's record |
//! | `<ns>:{<id>}:chunks` | hash | a batch's chunk results, chunk index -> JSON array of rows |
//! | `<ns>:{<id>}:chunks:dead` | hash | a batch's dead-lettered chunks, index -> rows |
//! | `<ns>:{<id>}:digests` | hash | a batch's chunk digests, index -> digest |
//! | `<ns>:{<id>}:webhook`, `...:webhook:<n>` | hash | the event of a subject's first end, and of its end after the n-th reopening |
//! | `<ns>:{<id>}:deliveries` | list | a subject's webhook delivery log |
//! | `<ns>:quota:{<tenant>}` (`:open`, `:due`) | hash (hash, zset) | a tenant's quota |
//! | `<ns>:tenants`, `<ns>:keys` | hash | tenants by name, API keys by hash |
//! | `<ns>:shares` | set | the tenants' shares of bulk lanes, `<model>/<tenant>` ([`crate::shares`]) |
//! | `<ns>:idem:{<sha256>}` | hash | an idempotency key |
//! | `<ns>:webhooks:disabled:<sha256 of URL>` | string | an endpoint disabled by `410 Gone` |
//! | `<ns>:done` | channel | ids of jobs and batches that reached a terminal state |
//! | `<ns>:done:{<n>}` | sharded channel | the same in a Redis Cluster, one of 16 by id |
//! | `<ns>:registry:reload` | channel | registry reload requests |
//!
//! The braces are a hash tag: the keys of one job or batch share a Redis
//! Cluster slot, as do a tenant's quota keys. No script touches two slots:
//! in a cluster, what a script's end means for its tenant's quota or for
//! the `done` channels is done by the store after the script (see
//! `store/after.rs`).
//!
//! Upgrade note: before this layout a batch kept each chunk's results in a
//! key of its own, `<ns>:{<id>}:chunk:<n>` (and `...:chunk:<n>:dead`). The
//! results of batches stored that way are still read (see
//! [`Keys::legacy_chunk`]) and erased, but a batch must not be *open*
//! across the upgrade: let bulk work drain (or cancel open batches) before
//! the workers are upgraded, since a chunk stored under the old layout and
//! delivered again would be run and counted again.

use crate::job::JobId;
use crate::sha256::hex as sha256_hex;

/// How many sharded channels subjects' ends are published on in a Redis
/// Cluster ([`Keys::done_shard`]): enough to spread them over the nodes.
pub const DONE_SHARDS: usize = 16;

/// What a record key names: a single job or a bulk batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A single job.
    Job(JobId),
    /// A bulk batch.
    Batch(JobId),
}

impl Subject {
    /// The id of the job or batch.
    pub fn id(&self) -> &JobId {
        match self {
            Subject::Job(id) | Subject::Batch(id) => id,
        }
    }
}

/// The keys of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    ns: String,
}

impl Keys {
    /// The keys of namespace `ns`.
    pub fn new(ns: &str) -> Self {
        Self { ns: ns.to_string() }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The prefix shared by the keys of one job or batch.
    fn tagged(&self, id: &JobId) -> String {
        format!("{}:{{{id}}}", self.ns)
    }

    /// The record of a job or batch.
    pub fn record(&self, s: &Subject) -> String {
        match s {
            Subject::Job(id) => self.job(id),
            Subject::Batch(id) => self.batch(id),
        }
    }

    /// A job's record.
    pub fn job(&self, id: &JobId) -> String {
        format!("{}:job", self.tagged(id))
    }

    /// A batch's record.
    pub fn batch(&self, id: &JobId) -> String {
        format!("{}:batch", self.tagged(id))
    }

    /// A batch's chunk results: one hash, chunk index -> its rows' JSON.
    pub fn chunk_results(&self, batch: &JobId) -> String {
        format!("{}:chunks", self.tagged(batch))
    }

    /// A batch's dead-lettered chunks: one hash, chunk index -> rows.
    pub fn chunk_dead(&self, batch: &JobId) -> String {
        format!("{}:chunks:dead", self.tagged(batch))
    }

    /// The key one chunk's results had before they were kept in
    /// [`Self::chunk_results`]: read and erased, never written.
    pub fn legacy_chunk(&self, batch: &JobId, index: u32) -> String {
        format!("{}:chunk:{index}", self.tagged(batch))
    }

    /// The dead-letter mark of one chunk under the earlier layout (see
    /// [`Self::legacy_chunk`]).
    pub fn legacy_chunk_dead(&self, batch: &JobId, index: u32) -> String {
        format!("{}:dead", self.legacy_chunk(batch, index))
    }

    /// A batch's chunk digests (chunk index -> digest of the message the
    /// producer published for it).
    pub fn chunk_digests(&self, batch: &JobId) -> String {
        format!("{}:digests", self.tagged(batch))
    }

    /// The event record of a subject's `gen`-th end (0: its first).
    pub fn webhook(&self, id: &JobId, gen: u32) -> String {
        match gen {
            0 => format!("{}:webhook", self.tagged(id)),
            n => format!("{}:webhook:{n}", self.tagged(id)),
        }
    }

    /// A subject's webhook delivery log.
    pub fn deliveries(&self, id: &JobId) -> String {
        format!("{}:deliveries", self.tagged(id))
    }

    /// A tenant's quota keys: the hash (`sum`, `tat_us`, `prune_at`), its
    /// open subjects (id -> rows) and their expiry (zset).
    pub fn quota(&self, tenant: &str) -> [String; 3] {
        let q = format!("{}{{{tenant}}}", self.quota_prefix());
        [q.clone(), format!("{q}:open"), format!("{q}:due")]
    }

    /// What every tenant's quota key starts with.
    pub fn quota_prefix(&self) -> String {
        format!("{}:quota:", self.ns)
    }

    /// Tenants by name (JSON).
    pub fn tenants(&self) -> String {
        format!("{}:tenants", self.ns)
    }

    /// The set of fair shares of bulk lanes (see [`crate::shares`]).
    pub fn shares(&self) -> String {
        format!("{}:shares", self.ns)
    }

    /// API keys by their SHA-256 (JSON).
    pub fn api_keys(&self) -> String {
        format!("{}:keys", self.ns)
    }

    /// A client's idempotency key within `scope` (hashed: clients choose
    /// its bytes).
    pub fn idempotency(&self, scope: &str, key: &str) -> String {
        format!(
            "{}:idem:{{{}}}",
            self.ns,
            sha256_hex(format!("{scope}\n{key}").as_bytes())
        )
    }

    /// The mark of an endpoint disabled by a `410 Gone`.
    pub fn webhook_disabled(&self, url: &str) -> String {
        format!(
            "{}:webhooks:disabled:{}",
            self.ns,
            sha256_hex(url.as_bytes())
        )
    }

    /// The one hash (URL -> time) disabled endpoints were kept in before
    /// they had keys of their own; only read to move them.
    pub fn webhooks_disabled_legacy(&self) -> String {
        format!("{}:webhooks:disabled", self.ns)
    }

    /// The channel ids of jobs and batches that reached a terminal state
    /// are published on (it wakes long-polls).
    pub fn done_channel(&self) -> String {
        format!("{}:done", self.ns)
    }

    /// In a Redis Cluster, the sharded channel (`SPUBLISH`) a subject's
    /// end is published on instead of [`Self::done_channel`]: one of
    /// [`DONE_SHARDS`], picked by the id's last byte (random in a UUIDv7).
    /// A plain channel is broadcast to every node of a cluster; a sharded
    /// one stays on the node of its slot.
    pub fn done_shard(&self, id: &JobId) -> String {
        let shard = id.as_bytes()[15] as usize % DONE_SHARDS;
        format!("{}:done:{{{shard}}}", self.ns)
    }

    /// Every [`Self::done_shard`] channel.
    pub fn done_shards(&self) -> Vec<String> {
        (0..DONE_SHARDS)
            .map(|s| format!("{}:done:{{{s}}}", self.ns))
            .collect()
    }

    /// The channel registry reload requests are published on.
    pub fn registry_reload(&self) -> String {
        format!("{}:registry:reload", self.ns)
    }

    /// The pattern (`SCAN MATCH`, `KEYS`) of every key of the namespace.
    pub fn everything(&self) -> String {
        format!("{}:*", self.ns)
    }

    /// Whether `key` is the mark of a disabled endpoint (see
    /// [`Self::webhook_disabled`]).
    pub fn is_webhook_disabled(&self, key: &str) -> bool {
        key.strip_prefix(&self.webhooks_disabled_legacy())
            .and_then(|k| k.strip_prefix(':'))
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Whether `key` is the record of a job (of this namespace).
    pub fn is_job_record(&self, key: &str) -> bool {
        key.strip_prefix(&self.ns)
            .and_then(|k| k.strip_prefix(":{"))
            .and_then(|k| k.strip_suffix("}:job"))
            .is_some_and(|id| id.parse::<JobId>().is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> JobId {
        "0191d3a0-7a6e-7c41-9b9e-3f1c2d4e5f60".parse().unwrap()
    }

    #[test]
    fn subject_keys_share_a_hash_tag() {
        let k = Keys::new("infq");
        let i = id();
        let tag = format!("{{{i}}}");
        for key in [
            k.job(&i),
            k.batch(&i),
            k.chunk_results(&i),
            k.chunk_dead(&i),
            k.chunk_digests(&i),
            k.webhook(&i, 0),
            k.webhook(&i, 3),
            k.deliveries(&i),
            k.legacy_chunk(&i, 7),
        ] {
            assert!(key.starts_with("infq:"), "{key}");
            assert_eq!(key.matches(&tag).count(), 1, "{key}");
        }
        assert_eq!(k.job(&i), format!("infq:{{{i}}}:job"));
        assert_eq!(k.batch(&i), format!("infq:{{{i}}}:batch"));
        assert_eq!(k.record(&Subject::Job(i)), k.job(&i));
        assert_eq!(k.record(&Subject::Batch(i)), k.batch(&i));
        assert_eq!(k.chunk_results(&i), format!("infq:{{{i}}}:chunks"));
        assert_eq!(k.chunk_dead(&i), format!("infq:{{{i}}}:chunks:dead"));
        assert_eq!(k.chunk_digests(&i), format!("infq:{{{i}}}:digests"));
        assert_eq!(k.webhook(&i, 0), format!("infq:{{{i}}}:webhook"));
        assert_eq!(k.webhook(&i, 2), format!("infq:{{{i}}}:webhook:2"));
        assert_eq!(k.deliveries(&i), format!("infq:{{{i}}}:deliveries"));
        assert_eq!(k.legacy_chunk(&i, 4), format!("infq:{{{i}}}:chunk:4"));
        assert_eq!(
            k.legacy_chunk_dead(&i, 4),
            format!("infq:{{{i}}}:chunk:4:dead")
        );
        assert_eq!(Subject::Batch(i).id(), &i);
    }

    #[test]
    fn quota_keys_share_the_tenants_hash_tag() {
        let k = Keys::new("t1");
        let [q, open, due] = k.quota("acme");
        assert_eq!(q, "t1:quota:{acme}");
        assert_eq!(open, "t1:quota:{acme}:open");
        assert_eq!(due, "t1:quota:{acme}:due");
        assert!(q.starts_with(&k.quota_prefix()));
    }

    #[test]
    fn deployment_keys_and_channels() {
        let k = Keys::new("ns");
        assert_eq!(k.namespace(), "ns");
        assert_eq!(k.tenants(), "ns:tenants");
        assert_eq!(k.api_keys(), "ns:keys");
        assert_eq!(k.done_channel(), "ns:done");
        assert_eq!(k.registry_reload(), "ns:registry:reload");
        assert_eq!(k.everything(), "ns:*");
        assert_eq!(k.webhooks_disabled_legacy(), "ns:webhooks:disabled");
    }

    #[test]
    fn hashed_keys_hide_what_clients_chose() {
        let k = Keys::new("ns");
        let idem = k.idempotency("tenant-a", "my key");
        assert!(idem.starts_with("ns:idem:{") && idem.ends_with('}'));
        assert!(!idem.contains("my key"));
        assert_eq!(idem.len(), "ns:idem:{}".len() + 64);
        assert_ne!(idem, k.idempotency("tenant-b", "my key"));
        assert_eq!(idem, k.idempotency("tenant-a", "my key"));
        let off = k.webhook_disabled("https://example.com/hook");
        assert!(off.starts_with("ns:webhooks:disabled:"));
        assert!(!off.contains("example.com"));
    }

    #[test]
    fn job_records_are_recognised() {
        let k = Keys::new("ns");
        let i = id();
        assert!(k.is_job_record(&k.job(&i)));
        assert!(!k.is_job_record(&k.batch(&i)));
        assert!(!k.is_job_record(&Keys::new("other").job(&i)));
        assert!(!k.is_job_record(&k.quota("acme")[0]));
        assert!(k.is_webhook_disabled(&k.webhook_disabled("https://x.example")));
        assert!(!k.is_webhook_disabled(&k.webhooks_disabled_legacy()));
        assert!(!k.is_webhook_disabled(&k.job(&i)));
    }
}
