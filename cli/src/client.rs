//! A small typed client of the infq HTTP API.

use serde_json::Value;
use std::time::Duration;

/// A failed call, worded for a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {url}: {}", root_cause(.error))]
    Transport {
        /// The URL called.
        url: String,
        /// What went wrong.
        error: reqwest::Error,
    },
    /// The API key cannot be sent in a header.
    #[error("the API key has characters a header cannot carry")]
    BadKey,
    /// The API answered with an error.
    #[error("{status} {code}: {message}{details}{}", if *.status == 401 { " (set INFQ_CLIENT_API_KEY or pass --api-key)" } else { "" })]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's error code.
        code: String,
        /// The API's message.
        message: String,
        /// Located problems, pre-formatted.
        details: String,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from {0}")]
    Protocol(String),
}

/// The innermost cause of a transport error ("Connection refused (os error
/// 111)"), which says more than the layers wrapped around it.
fn root_cause(e: &reqwest::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    if e.is_timeout() {
        return "timed out".into();
    }
    cur.to_string()
}

/// Words an API error body `{"error": {"code", "message", "details"}}`.
fn api_error(status: u16, body: &Value) -> ClientError {
    let err = &body["error"];
    let details = err["details"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    let at = match (d["line"].as_u64(), d["field"].as_str()) {
                        (Some(l), Some(f)) => format!("line {l}, {f}"),
                        (Some(l), None) => format!("line {l}"),
                        (None, Some(f)) => f.to_string(),
                        (None, None) => String::new(),
                    };
                    format!("; {at}: {}", d["message"].as_str().unwrap_or(""))
                })
                .collect::<String>()
        })
        .unwrap_or_default();
    ClientError::Api {
        status,
        code: err["code"].as_str().unwrap_or("unknown").to_string(),
        message: err["message"].as_str().unwrap_or("").to_string(),
        details,
    }
}

/// Client of one infq producer.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the producer at `base` (e.g. `http://127.0.0.1:8080`)
    /// acting with `api_key`.
    pub fn new(base: &str, api_key: Option<&str>) -> Result<Self, ClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| ClientError::BadKey)?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .default_headers(headers)
                .build()
                .expect("an HTTP client with default TLS"),
        })
    }

    async fn call(&self, req: reqwest::RequestBuilder, url: String) -> Result<Value, ClientError> {
        let resp = req.send().await.map_err(|error| ClientError::Transport {
            url: url.clone(),
            error,
        })?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|_| ClientError::Protocol(url.clone()))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(api_error(status.as_u16(), &body))
    }

    /// `POST /v1/jobs` with a ready-made body.
    pub async fn submit_job(&self, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}/v1/jobs", self.base);
        self.call(self.http.post(&url).json(body), url).await
    }

    /// `POST /v1/batches?model=...&format=...[&webhook_url=...]` with a
    /// streamed body.
    pub async fn submit_batch(
        &self,
        model: &str,
        format: &str,
        webhook_url: Option<&str>,
        body: reqwest::Body,
    ) -> Result<Value, ClientError> {
        let url = format!("{}/v1/batches", self.base);
        let mut query = vec![("model", model), ("format", format)];
        if let Some(w) = webhook_url {
            query.push(("webhook_url", w));
        }
        let req = self
            .http
            .post(&url)
            .query(&query)
            .timeout(Duration::from_secs(24 * 3600))
            .body(body);
        self.call(req, url).await
    }

    /// `GET /v1/batches/{id}`, waiting up to `wait` seconds for a terminal state.
    pub async fn get_batch(&self, id: &str, wait: f64) -> Result<Value, ClientError> {
        let url = format!("{}/v1/batches/{id}", self.base);
        let req = self.http.get(&url).query(&[("wait", wait.to_string())]);
        self.call(req, url).await
    }

    /// `POST /v1/batches/{id}/cancel`.
    pub async fn cancel_batch(&self, id: &str) -> Result<Value, ClientError> {
        let url = format!("{}/v1/batches/{id}/cancel", self.base);
        self.call(self.http.post(&url), url).await
    }

    /// `DELETE /v1/jobs/{id}` or `/v1/batches/{id}` (`what`: `jobs` or
    /// `batches`): erases it.
    pub async fn erase(&self, what: &str, id: &str) -> Result<(), ClientError> {
        let url = format!("{}/v1/{what}/{id}", self.base);
        let resp = self
            .http
            .delete(&url)
            .send()
            .await
            .map_err(|error| ClientError::Transport {
                url: url.clone(),
                error,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body: Value = resp.json().await.map_err(|_| ClientError::Protocol(url))?;
        Err(api_error(status.as_u16(), &body))
    }

    /// `GET /v1/batches/{id}/results`, streamed into `out`; returns bytes written.
    pub async fn download_results<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        id: &str,
        format: &str,
        out: &mut W,
    ) -> Result<u64, ClientError> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let url = format!("{}/v1/batches/{id}/results", self.base);
        let req = self
            .http
            .get(&url)
            .query(&[("format", format)])
            .timeout(Duration::from_secs(24 * 3600));
        let transport = |error| ClientError::Transport {
            url: url.clone(),
            error,
        };
        let resp = req.send().await.map_err(transport)?;
        if !resp.status().is_success() {
            // Error bodies are small JSON; reuse the common decoding.
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or_default();
            return Err(api_error(status.as_u16(), &body));
        }
        let mut stream = resp.bytes_stream();
        let mut written = 0u64;
        while let Some(part) = stream.next().await {
            let bytes = part.map_err(transport)?;
            out.write_all(&bytes)
                .await
                .map_err(|e| ClientError::Protocol(format!("writing results: {e}")))?;
            written += bytes.len() as u64;
        }
        out.flush()
            .await
            .map_err(|e| ClientError::Protocol(format!("writing results: {e}")))?;
        Ok(written)
    }

    /// `GET /v1/admin/dead-letters?limit=N`.
    pub async fn dead_letters(&self, limit: usize) -> Result<Value, ClientError> {
        let url = format!("{}/v1/admin/dead-letters", self.base);
        let req = self.http.get(&url).query(&[("limit", limit)]);
        self.call(req, url).await
    }

    /// `POST /v1/admin/dead-letters/replay`.
    pub async fn replay_dead_letters(
        &self,
        ids: &[String],
        all: bool,
    ) -> Result<Value, ClientError> {
        let url = format!("{}/v1/admin/dead-letters/replay", self.base);
        let req = self
            .http
            .post(&url)
            .json(&serde_json::json!({"ids": ids, "all": all}));
        self.call(req, url).await
    }

    /// `GET /v1/{jobs|batches}/{id}/deliveries`.
    pub async fn deliveries(&self, what: &str, id: &str) -> Result<Value, ClientError> {
        let url = format!("{}/v1/{what}/{id}/deliveries", self.base);
        self.call(self.http.get(&url), url).await
    }

    /// `POST /v1/{jobs|batches}/{id}/deliveries/{event}/retry`.
    pub async fn redeliver(&self, what: &str, id: &str, event: &str) -> Result<Value, ClientError> {
        let url = format!("{}/v1/{what}/{id}/deliveries/{event}/retry", self.base);
        self.call(self.http.post(&url), url).await
    }

    /// `GET /v1/jobs/{id}`, waiting up to `wait` seconds for a terminal state.
    pub async fn get_job(&self, id: &str, wait: f64) -> Result<Value, ClientError> {
        let url = format!("{}/v1/jobs/{id}", self.base);
        let req = self.http.get(&url).query(&[("wait", wait.to_string())]);
        self.call(req, url).await
    }
}
