//! Sending one signed event over HTTP, through the SSRF guard.
//!
//! Host names are resolved by [`GuardedResolver`], which checks every
//! address and hands exactly those to the connector, so the request goes
//! to an address that was checked, with no second lookup. Address literals
//! are checked before the request. No proxy is used, redirects are not
//! followed (a 3xx is a failed attempt), the whole request is bounded by
//! `webhooks.timeout_ms`, and at most `webhooks.max_response_bytes` of the
//! answer are read.

use infq_common::config::WebhooksConfig;
use infq_common::webhooks::event::Event;
use infq_common::webhooks::guard::{Guard, GuardError};
use infq_common::webhooks::sign::Signer;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Bytes of a receiver's answer kept in the delivery log.
pub const LOGGED_RESPONSE_BYTES: usize = 512;

/// Resolves through the guard: a name with any forbidden address fails.
#[derive(Clone)]
pub struct GuardedResolver {
    guard: Guard,
    timeout: Duration,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let timeout = self.timeout;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = guard.resolve(&host, 0, timeout).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// What an attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// Anything else that may pass later: try again on the schedule.
    Retry,
    /// `410 Gone`: disable the endpoint.
    Gone,
    /// The URL may not be reached: give up at once.
    Refused,
}

/// One attempt's result.
#[derive(Debug, Clone)]
pub struct Sent {
    /// What to do next.
    pub verdict: Verdict,
    /// The receiver's status, if it answered.
    pub status_code: Option<u16>,
    /// What went wrong.
    pub error: Option<String>,
    /// The receiver's `Retry-After`, in ms.
    pub retry_after_ms: Option<u64>,
    /// The start of the answer.
    pub response: Option<String>,
    /// How long the attempt took.
    pub duration: Duration,
}

/// Signs and sends events.
pub struct Sender {
    client: reqwest::Client,
    guard: Guard,
    signer: Signer,
    max_response_bytes: usize,
}

/// The error and its causes, in one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
}

fn guard_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a GuardError> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(g) = c.downcast_ref::<GuardError>() {
            return Some(g);
        }
        cur = c.source();
    }
    None
}

/// Parses `Retry-After`: seconds, or an HTTP date.
pub fn retry_after_ms(value: &str, now: SystemTime) -> Option<u64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or_default().as_millis() as u64)
}

impl Sender {
    /// A sender as `cfg` describes.
    pub fn new(cfg: &WebhooksConfig) -> anyhow::Result<Self> {
        let guard = Guard::new(cfg.guard_policy());
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard.clone(),
                timeout,
            }))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(8)
            .user_agent(concat!("infq-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            guard,
            signer: Signer::new(&cfg.secrets).map_err(anyhow::Error::msg)?,
            max_response_bytes: cfg.max_response_bytes,
        })
    }

    /// Makes one attempt, signed by `signer` (a tenant's secrets) or else
    /// by the deployment's secrets.
    pub async fn send(&self, url: &str, event: &Event, signer: Option<&Signer>) -> Sent {
        let started = Instant::now();
        let mut sent = Sent {
            verdict: Verdict::Retry,
            status_code: None,
            error: None,
            retry_after_ms: None,
            response: None,
            duration: Duration::ZERO,
        };
        let target = match self.guard.parse(url) {
            Ok(t) => t,
            Err(e) => {
                sent.verdict = Verdict::Refused;
                sent.error = Some(format!("callback URL refused: {e}"));
                return sent;
            }
        };
        let now = SystemTime::now();
        let ts = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let signature = signer
            .unwrap_or(&self.signer)
            .sign(&event.id, ts, &event.body);
        let request = self
            .client
            .post(target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(event.body.clone());
        match request.send().await {
            Err(e) => match guard_error(&e) {
                Some(g) if !g.is_transient() => {
                    sent.verdict = Verdict::Refused;
                    sent.error = Some(format!("callback URL refused: {g}"));
                }
                // Without the URL: it is logged with the attempt, and
                // its path or query may carry a secret.
                _ => sent.error = Some(chain(&e.without_url())),
            },
            Ok(mut resp) => {
                let status = resp.status();
                sent.status_code = Some(status.as_u16());
                sent.retry_after_ms = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after_ms(v, now));
                let mut body = Vec::new();
                while body.len() < self.max_response_bytes {
                    match resp.chunk().await {
                        Ok(Some(c)) => body.extend_from_slice(&c),
                        Ok(None) => break,
                        Err(e) => {
                            if status.is_success() {
                                // The receiver said yes; a broken body after
                                // the status does not change that.
                                let e = e.without_url();
                                tracing::debug!(error = %e, "reading a webhook answer failed");
                            }
                            break;
                        }
                    }
                }
                body.truncate(self.max_response_bytes.min(LOGGED_RESPONSE_BYTES));
                if !body.is_empty() {
                    sent.response = Some(String::from_utf8_lossy(&body).into_owned());
                }
                sent.verdict = if status.is_success() {
                    Verdict::Delivered
                } else if status == reqwest::StatusCode::GONE {
                    sent.error = Some("410 Gone: the endpoint is disabled".into());
                    Verdict::Gone
                } else if status.is_redirection() {
                    sent.error = Some(format!("{status}: redirects are not followed"));
                    Verdict::Retry
                } else {
                    sent.error = Some(status.to_string());
                    Verdict::Retry
                };
            }
        }
        sent.duration = started.elapsed();
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after_ms("120", now), Some(120_000));
        assert_eq!(retry_after_ms(" 0 ", now), Some(0));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after_ms(&later, now), Some(30_000));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after_ms(&earlier, now), Some(0));
        for junk in ["", "soon", "-5", "1.5", "Wed, 99 Foo 2020"] {
            assert_eq!(retry_after_ms(junk, now), None, "{junk}");
        }
    }
}
