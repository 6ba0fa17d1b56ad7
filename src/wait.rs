//! Waiting for what a test expects to happen soon.

use std::future::Future;
use std::time::Duration;

/// Polls `f` every 100 ms until it says yes; panics naming `what` after
/// 30 s.
pub async fn wait_until<F: Fn() -> Fut, Fut: Future<Output = bool>>(what: &str, f: F) {
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}
