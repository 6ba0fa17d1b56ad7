//! Which environment variables are the servers' configuration, and which
//! belong to the command-line client.
//!
//! The servers (and `infq admin`, which reads the deployment's
//! configuration) take `INFQ_<SECTION>__<KEY>` as `section.key` and refuse
//! any other `INFQ_*` name, so a misspelt setting stops start-up instead of
//! being ignored. The client's own settings would then break them if they
//! shared that space (a shell set up for `infq` with `INFQ_URL` stopped
//! every server with "unknown field: found `url`"). So the client's
//! variables live under a prefix of their own, [`CLIENT_ENV_PREFIX`], which
//! no server setting can ever be named after: the servers skip it whole,
//! and still refuse everything else they do not know.

use super::error::ConfigError;
use std::ffi::OsString;

/// Prefix of every infq variable; `INFQ_<SECTION>__<KEY>` sets
/// `section.key` (`__` separates the levels).
pub const ENV_PREFIX: &str = "INFQ_";
/// Prefix reserved for the command-line client's variables. The servers
/// never read a variable under it, and no setting is called `client`.
pub const CLIENT_ENV_PREFIX: &str = "INFQ_CLIENT_";
/// The client's producer URL.
pub const CLIENT_URL_ENV: &str = "INFQ_CLIENT_URL";
/// The client's API key.
pub const CLIENT_API_KEY_ENV: &str = "INFQ_CLIENT_API_KEY";
/// The client's variables before [`CLIENT_ENV_PREFIX`], each with the name
/// that replaces it. The client still reads them (with a warning); the
/// servers skip them, so shells set up by the older instructions keep
/// working.
pub const LEGACY_CLIENT_ENV: [(&str, &str); 2] = [
    ("INFQ_URL", CLIENT_URL_ENV),
    ("INFQ_API_KEY", CLIENT_API_KEY_ENV),
];
/// Names the configuration file; read by each binary's arguments, not as a
/// setting.
pub const CONFIG_ENV: &str = "INFQ_CONFIG";

/// How the servers' configuration reads the variable `name`.
#[derive(Debug, PartialEq, Eq)]
enum Role {
    /// Not an infq variable.
    Foreign,
    /// An infq variable that is not a setting (the client's, the file name).
    Skipped,
    /// A setting: its dotted, lower-case path after the prefix.
    Setting(String),
}

/// Names are compared without regard to case, as the configuration
/// loader matches the prefix.
fn role(name: &str) -> Role {
    let upper = name.trim().to_ascii_uppercase();
    let Some(rest) = upper.strip_prefix(ENV_PREFIX) else {
        return Role::Foreign;
    };
    if upper.starts_with(CLIENT_ENV_PREFIX)
        || upper == CONFIG_ENV
        || LEGACY_CLIENT_ENV.iter().any(|(old, _)| upper == *old)
    {
        return Role::Skipped;
    }
    Role::Setting(rest.to_ascii_lowercase().replace("__", "."))
}

/// Whether the loader takes the variable whose name after [`ENV_PREFIX`]
/// is `rest` as a setting.
pub(super) fn is_setting(rest: &str) -> bool {
    matches!(role(&format!("{ENV_PREFIX}{rest}")), Role::Setting(_))
}

/// Checks every infq variable among `vars` that is a setting: its name must
/// be valid UTF-8 and name a section and key that exist in `known` (the
/// defaults, serialised), and its value must be valid UTF-8 (the loader
/// would otherwise read it with replacement characters). Deeper levels and
/// values are checked when the configuration is extracted.
pub(super) fn check(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    known: &serde_json::Value,
) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    for (name, value) in vars {
        let lossy = name.to_string_lossy();
        let Role::Setting(path) = role(&lossy) else {
            continue;
        };
        if name.to_str().is_none() {
            problems.push(format!("{lossy}: the variable's name is not valid UTF-8"));
            continue;
        }
        if let Err(why) = exists(&path, known) {
            problems.push(format!("{}: {why}", lossy.trim()));
        } else if value.to_str().is_none() {
            problems.push(format!("{}: the value is not valid UTF-8", lossy.trim()));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort();
    problems.push(format!(
        "server settings are {ENV_PREFIX}<SECTION>__<KEY> (e.g. INFQ_REDIS__URL); \
         the infq client's are {CLIENT_URL_ENV} and {CLIENT_API_KEY_ENV}"
    ));
    Err(ConfigError::Invalid(problems))
}

/// Whether the top two levels of `path` exist in `known`. A level whose
/// default is not a table with fields (a value, a list, an empty map) ends
/// the walk: what may go under it is checked on extraction.
fn exists(path: &str, known: &serde_json::Value) -> Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("not a setting (an empty level between `__`)".into());
    }
    let mut node = known;
    for (depth, part) in parts.iter().take(2).enumerate() {
        let serde_json::Value::Object(fields) = node else {
            return Ok(());
        };
        if fields.is_empty() {
            return Ok(());
        }
        match fields.get(*part) {
            Some(next) => node = next,
            None => {
                let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
                names.sort_unstable();
                let at = if depth == 0 {
                    "top-level settings and sections".to_string()
                } else {
                    format!("keys of `{}`", parts[..depth].join("."))
                };
                return Err(format!(
                    "`{}` is not a setting ({at}: {})",
                    parts[..=depth].join("."),
                    names.join(", ")
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn known() -> serde_json::Value {
        json!({
            "namespace": "infq",
            "redis": {"url": "redis://127.0.0.1:6379/"},
            "producer": {"listen": "127.0.0.1:8080", "max_wait_secs": 60},
            "worker": {"device": null, "models": []},
            "tenants": {"defaults": {"burst": 1}},
        })
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn client_variables_and_the_file_name_are_not_settings() {
        for name in [
            "INFQ_CLIENT_URL",
            "INFQ_CLIENT_API_KEY",
            "INFQ_CLIENT_ANYTHING_LATER",
            "infq_client_url",
            "INFQ_URL",
            "INFQ_API_KEY",
            "INFQ_CONFIG",
        ] {
            assert_eq!(role(name), Role::Skipped, "{name}");
        }
        assert_eq!(role("PATH"), Role::Foreign);
        assert_eq!(role("INFQX"), Role::Foreign);
        assert_eq!(role("INFQ_REDIS__URL"), Role::Setting("redis.url".into()));
        assert!(is_setting("PRODUCER__LISTEN"));
        assert!(!is_setting("CLIENT_URL"));
        assert!(!is_setting("url"));
    }

    #[test]
    fn the_client_variables_pass_whatever_their_values() {
        let ok = vars(&[
            ("INFQ_CLIENT_URL", "http://127.0.0.1:8080"),
            ("INFQ_CLIENT_API_KEY", ""),
            ("INFQ_URL", "not a url at all"),
            ("INFQ_API_KEY", "x"),
            ("INFQ_PRODUCER__MAX_WAIT_SECS", "5"),
            ("INFQ_WORKER__MODELS", "[\"a\"]"),
            ("INFQ_WORKER__DEVICE", ""),
            ("INFQ_TENANTS__DEFAULTS__BURST", "3"),
            ("HOME", "/root"),
        ]);
        check(ok, &known()).unwrap();
    }

    #[test]
    fn misspelt_settings_are_refused_naming_the_variable() {
        let err = check(
            vars(&[
                ("INFQ_PRODUCR__PORT", "1"),
                ("INFQ_PRODUCER__PORT", "1"),
                ("INFQ_NAMESPAC", "x"),
                ("INFQ_", "x"),
                ("INFQ_REDIS__", "x"),
                ("INFQ_PRODUCER___LISTEN", "x"),
            ]),
            &known(),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "INFQ_PRODUCR__PORT: `producr` is not a setting",
            "INFQ_PRODUCER__PORT: `producer.port` is not a setting (keys of `producer`: listen, max_wait_secs)",
            "INFQ_NAMESPAC: `namespac` is not a setting",
            "INFQ_: not a setting",
            "INFQ_REDIS__: not a setting",
            "INFQ_PRODUCER___LISTEN: `producer._listen` is not a setting",
            "INFQ_CLIENT_URL",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn names_and_values_that_are_not_utf8_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        let bad = || OsString::from_vec(b"redis://\xff/".to_vec());
        let err = check(
            vec![
                (OsString::from("INFQ_REDIS__URL"), bad()),
                (
                    OsString::from_vec(b"INFQ_RED\xffIS__URL".to_vec()),
                    "x".into(),
                ),
                // The client's variables are the client's business.
                (OsString::from("INFQ_CLIENT_API_KEY"), bad()),
                (OsString::from("INFQ_API_KEY"), bad()),
            ],
            &known(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("INFQ_REDIS__URL: the value is not valid UTF-8"),
            "{err}"
        );
        assert!(err.contains("name is not valid UTF-8"), "{err}");
        assert!(!err.contains("INFQ_CLIENT_API_KEY:"), "{err}");
        assert!(!err.contains("INFQ_API_KEY:"), "{err}");
    }
}
