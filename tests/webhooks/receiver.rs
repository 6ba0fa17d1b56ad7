//! The test's receivers: an independent signature verifier (RustCrypto's
//! HMAC-SHA256, not the `standardwebhooks` crate infq signs with) and a
//! scripted HTTP receiver.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------
// An independent verifier: RustCrypto's HMAC-SHA256, not the
// `standardwebhooks` crate infq signs with.

pub(crate) fn expected_signature(secret: &str, id: &str, ts: &str, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Verifies like a receiver: the timestamp within 5 minutes of `now`, and
/// one of the `v1,` signatures matching.
pub(crate) fn verify(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {n}"))
    };
    let (id, ts, sigs) = (
        h("webhook-id")?,
        h("webhook-timestamp")?,
        h("webhook-signature")?,
    );
    let t: i64 = ts.parse().map_err(|_| "bad timestamp")?;
    if (now - t).abs() > 300 {
        return Err("timestamp outside the tolerance".into());
    }
    let want = expected_signature(secret, id, ts, body);
    sigs.split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == want)
        .then_some(())
        .ok_or_else(|| "no signature matches".into())
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------
// A scripted receiver.

#[derive(Clone, Debug)]
pub(crate) struct Hit {
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) at: Instant,
    pub(crate) answered: u16,
}

#[derive(Clone, Copy)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<&'static str>,
}

#[derive(Default)]
struct Script {
    hits: Vec<Hit>,
    replies: HashMap<String, VecDeque<Reply>>,
    /// How long every answer takes.
    delay: Duration,
}

#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) base: String,
    script: Arc<Mutex<Script>>,
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let delay = script.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let mut s = script.lock().unwrap();
    let reply = s
        .replies
        .get_mut(&path)
        .and_then(|q| q.pop_front())
        .unwrap_or(Reply {
            status: 200,
            retry_after: None,
        });
    s.hits.push(Hit {
        path,
        headers,
        body,
        at: Instant::now(),
        answered: reply.status,
    });
    let mut h = HeaderMap::new();
    if let Some(ra) = reply.retry_after {
        h.insert("retry-after", ra.parse().unwrap());
    }
    (StatusCode::from_u16(reply.status).unwrap(), h, "thanks")
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        Self::start_slow(Duration::ZERO).await
    }

    /// A receiver that takes `delay` to answer every request.
    pub(crate) async fn start_slow(delay: Duration) -> Self {
        let script = Arc::new(Mutex::new(Script {
            delay,
            ..Script::default()
        }));
        let app = axum::Router::new()
            .route("/hook/{path}", axum::routing::post(receive))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, script }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/hook/{path}", self.base)
    }

    pub(crate) fn script(&self, path: &str, replies: &[Reply]) {
        self.script
            .lock()
            .unwrap()
            .replies
            .insert(path.into(), replies.iter().copied().collect());
    }

    pub(crate) fn hits(&self, path: &str) -> Vec<Hit> {
        let s = self.script.lock().unwrap();
        s.hits.iter().filter(|h| h.path == path).cloned().collect()
    }

    pub(crate) async fn wait_hits(&self, path: &str, n: usize, within: Duration) -> Vec<Hit> {
        let until = Instant::now() + within;
        loop {
            let hits = self.hits(path);
            if hits.len() >= n || Instant::now() > until {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub(crate) const fn status(s: u16) -> Reply {
    Reply {
        status: s,
        retry_after: None,
    }
}
