//! A small typed client of the infq HTTP API.

use serde_json::Value;
use std::time::Duration;

/// A failed call, worded for a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {url}: {source}")]
    Transport {
        /// The URL called.
        url: String,
        /// What went wrong.
        source: reqwest::Error,
    },
    /// The API answered with an error.
    #[error("{status} {code}: {message}{details}")]
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

/// Client of one infq producer.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the producer at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("an HTTP client with default TLS"),
        }
    }

    async fn call(&self, req: reqwest::RequestBuilder, url: String) -> Result<Value, ClientError> {
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|_| ClientError::Protocol(url.clone()))?;
        if status.is_success() {
            return Ok(body);
        }
        let err = &body["error"];
        let details = err["details"]
            .as_array()
            .map(|ds| {
                ds.iter()
                    .map(|d| {
                        let at = d["field"]
                            .as_str()
                            .map(str::to_string)
                            .or_else(|| d["line"].as_u64().map(|l| format!("line {l}")))
                            .unwrap_or_default();
                        format!("; {at}: {}", d["message"].as_str().unwrap_or(""))
                    })
                    .collect::<String>()
            })
            .unwrap_or_default();
        Err(ClientError::Api {
            status: status.as_u16(),
            code: err["code"].as_str().unwrap_or("unknown").to_string(),
            message: err["message"].as_str().unwrap_or("").to_string(),
            details,
        })
    }

    /// `POST /v1/jobs` with a ready-made body.
    pub async fn submit_job(&self, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}/v1/jobs", self.base);
        self.call(self.http.post(&url).json(body), url).await
    }

    /// `GET /v1/jobs/{id}`, waiting up to `wait` seconds for a terminal state.
    pub async fn get_job(&self, id: &str, wait: f64) -> Result<Value, ClientError> {
        let url = format!("{}/v1/jobs/{id}", self.base);
        let req = self.http.get(&url).query(&[("wait", wait.to_string())]);
        self.call(req, url).await
    }
}
