//! How long records are kept, whatever their retention.

/// How long a job or batch that has not ended is kept at least, whatever
/// its retention: a record must not expire while its work is still
/// queued (a weekend without workers, a long backlog), or its client would
/// be told `404` and its messages would find nothing to run for. Only a
/// record whose message was lost outright (purged by hand) waits this out.
pub const OPEN_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// How long the tombstone of an erased job or batch lasts at least: a
/// message of it still queued within this time is dropped unrun, and a
/// webhook retry of it is dropped unsent.
pub const TOMBSTONE_MS: u64 = 7 * 24 * 3600 * 1000;
