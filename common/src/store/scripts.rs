//! The store's Lua scripts, loaded from the `.lua` files beside this one.
//! Each file starts with its contract (KEYS and ARGV); shared functions
//! (`give_back.lua`, `prelude.lua`, `chunk_check.lua`, `parts.lua`, and
//! the bodies shared by a job's and a batch's variant) are put in front of
//! a script's body here. No script builds a key: [`crate::keys::Keys`]
//! does, and callers pass every key in `KEYS[]`.
//!
//! A state script's body runs as a function; when it left work to its
//! caller on other slots (`AFTER`, see `prelude.lua`), its reply comes
//! wrapped as `{'infq:after', reply, AFTER}`, which `after.rs` unwraps.

use super::ttl::OPEN_TTL_MS;
use redis::Script;
use std::sync::LazyLock;

/// The first element of a state script's reply that carries what it left
/// to its caller (`after.rs`).
pub(super) const MARK: &str = "infq:after";

const GIVE_BACK: &str = include_str!("lua/give_back.lua");
const PRELUDE: &str = include_str!("lua/prelude.lua");
const CHUNK_CHECK: &str = include_str!("lua/chunk_check.lua");
const PARTS: &str = include_str!("lua/parts.lua");
const ADMIT_FN: &str = include_str!("lua/admit.lua");

/// A state script: the shared functions, then `parts` in order.
fn state(parts: &[&str]) -> Script {
    let mut src = format!(
        "local OPEN_TTL_MS = {OPEN_TTL_MS}\n{GIVE_BACK}{PRELUDE}{CHUNK_CHECK}{PARTS}local function main()\n"
    );
    for p in parts {
        src.push_str(p);
    }
    src.push_str(&format!(
        "\nend\nlocal r = main()\nif AFTER then return {{'{}', r, AFTER}} end\nreturn r\n",
        MARK
    ));
    Script::new(&src)
}

macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = $build:expr;)*) => {
        $($(#[$doc])* pub(super) static $name: LazyLock<Script> = LazyLock::new(|| $build);)*
        /// Every script, to load them again after Redis lost them.
        pub(super) fn all() -> &'static [&'static Script] {
            static ALL: LazyLock<Vec<&'static Script>> = LazyLock::new(|| vec![$(&*$name),*]);
            &ALL
        }
    };
}

scripts! {
    /// `create.lua`.
    CREATE = state(&[include_str!("lua/create.lua")]);
    /// `create_admitted.lua`.
    CREATE_ADMITTED = state(&[ADMIT_FN, include_str!("lua/create_admitted.lua")]);
    /// `transition_job.lua`.
    TRANSITION_JOB = state(&[
        include_str!("lua/transition.lua"),
        include_str!("lua/transition_job.lua"),
    ]);
    /// `transition_batch.lua`.
    TRANSITION_BATCH = state(&[
        include_str!("lua/transition.lua"),
        include_str!("lua/transition_batch.lua"),
    ]);
    /// `claim.lua`.
    CLAIM = state(&[include_str!("lua/claim.lua")]);
    /// `cancel_job.lua`.
    CANCEL_JOB = state(&[include_str!("lua/cancel.lua"), include_str!("lua/cancel_job.lua")]);
    /// `cancel_batch.lua`.
    CANCEL_BATCH = state(&[
        include_str!("lua/cancel.lua"),
        include_str!("lua/cancel_batch.lua"),
    ]);
    /// `claim_chunk.lua`.
    CLAIM_CHUNK = state(&[include_str!("lua/claim_chunk.lua")]);
    /// `store_chunk.lua`.
    STORE_CHUNK = state(&[include_str!("lua/store_chunk.lua")]);
    /// `dead_chunk.lua`.
    DEAD_CHUNK = state(&[include_str!("lua/dead_chunk.lua")]);
    /// `reopen_job.lua`.
    REOPEN_JOB = state(&[include_str!("lua/reopen_job.lua")]);
    /// `reopen_chunk.lua`.
    REOPEN_CHUNK = state(&[include_str!("lua/reopen_chunk.lua")]);
    /// `erase.lua`.
    ERASE = state(&[include_str!("lua/erase.lua")]);
    /// `quota_admit.lua`.
    QUOTA_ADMIT = Script::new(&format!("{ADMIT_FN}{}", include_str!("lua/quota_admit.lua")));
    /// `quota_release.lua`.
    QUOTA_RELEASE = Script::new(&format!("{GIVE_BACK}{}", include_str!("lua/quota_release.lua")));
}
