//! The client's settings from the environment: `INFQ_CLIENT_URL` and
//! `INFQ_CLIENT_API_KEY`.
//!
//! They live under a prefix the servers never read (see
//! `infq_common::config::env`), so a shell set up for the client starts
//! `infq-producer`, `infq-worker` and `infq admin` unchanged. The names
//! used before that prefix, `INFQ_URL` and `INFQ_API_KEY`, are still read
//! when the new one is unset, with a warning, so existing scripts keep
//! working while they move.

use infq_common::config::LEGACY_CLIENT_ENV;
use std::ffi::OsString;

/// A client variable that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name} is not valid UTF-8")]
pub struct EnvError {
    /// The variable.
    pub name: String,
}

/// The value of the client variable `name` as `lookup` finds it, else of
/// the older name it replaced, with a warning for `warn`. An empty value
/// counts as unset, the way a shell's `VAR=` is usually meant.
pub fn client_var(
    name: &str,
    lookup: impl Fn(&str) -> Option<OsString>,
    warn: impl FnOnce(String),
) -> Result<Option<String>, EnvError> {
    if let Some(v) = text(name, lookup(name))? {
        return Ok(Some(v));
    }
    let Some((old, _)) = LEGACY_CLIENT_ENV.iter().find(|(_, new)| *new == name) else {
        return Ok(None);
    };
    let v = text(old, lookup(old))?;
    if v.is_some() {
        warn(format!(
            "infq: {old} is deprecated and will stop being read; set {name} instead"
        ));
    }
    Ok(v)
}

/// [`client_var`] on the process's environment, warning on stderr.
pub fn from_process(name: &str) -> Result<Option<String>, EnvError> {
    client_var(name, |k: &str| std::env::var_os(k), |w| eprintln!("{w}"))
}

fn text(name: &str, v: Option<OsString>) -> Result<Option<String>, EnvError> {
    match v {
        None => Ok(None),
        Some(v) => match v.into_string() {
            Ok(s) if s.is_empty() => Ok(None),
            Ok(s) => Ok(Some(s)),
            Err(_) => Err(EnvError { name: name.into() }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infq_common::config::{CLIENT_API_KEY_ENV, CLIENT_URL_ENV};
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn run(env: &[(&str, &str)], name: &str) -> (Result<Option<String>, EnvError>, Vec<String>) {
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        let warned = Mutex::new(Vec::new());
        let got = client_var(
            name,
            |k| env.get(k).cloned(),
            |w| warned.lock().unwrap().push(w),
        );
        (got, warned.into_inner().unwrap())
    }

    #[test]
    fn the_new_name_wins_and_the_old_one_is_read_with_a_warning() {
        let (v, w) = run(
            &[
                ("INFQ_CLIENT_URL", "http://new"),
                ("INFQ_URL", "http://old"),
            ],
            CLIENT_URL_ENV,
        );
        assert_eq!(v.unwrap().as_deref(), Some("http://new"));
        assert!(w.is_empty());
        let (v, w) = run(&[("INFQ_API_KEY", "k")], CLIENT_API_KEY_ENV);
        assert_eq!(v.unwrap().as_deref(), Some("k"));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("INFQ_API_KEY") && w[0].contains(CLIENT_API_KEY_ENV));
    }

    #[test]
    fn empty_counts_as_unset() {
        let (v, w) = run(&[("INFQ_CLIENT_URL", ""), ("INFQ_URL", "")], CLIENT_URL_ENV);
        assert_eq!(v.unwrap(), None);
        assert!(w.is_empty());
        let (v, _) = run(
            &[("INFQ_CLIENT_URL", ""), ("INFQ_URL", "http://old")],
            CLIENT_URL_ENV,
        );
        assert_eq!(v.unwrap().as_deref(), Some("http://old"));
    }

    #[cfg(unix)]
    #[test]
    fn a_value_that_is_not_utf8_is_named() {
        use std::os::unix::ffi::OsStringExt;
        let got = client_var(
            CLIENT_API_KEY_ENV,
            |k| (k == CLIENT_API_KEY_ENV).then(|| OsString::from_vec(vec![0x6b, 0xff])),
            |_| {},
        );
        assert_eq!(
            got.unwrap_err().to_string(),
            "INFQ_CLIENT_API_KEY is not valid UTF-8"
        );
    }
}
