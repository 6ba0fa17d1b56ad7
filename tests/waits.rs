//! Long-polls (`?wait=`) against the real RabbitMQ and Redis: a job the
//! broker holds is answered `202` with its id whatever Redis does during
//! the wait, and a wait stops reading Redis once its client has gone.

use infq::redis_server::RedisServer;
use infq::{delete_namespace, http_builder, submit_job, test_settings, TestEnv};
use infq_common::job::Priority;
use infq_common::shutdown::CancellationToken;
use infq_common::tenants::DEV_API_KEY;
use infq_common::topology::Topology;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn job() -> Value {
    json!({"model": "credit-default", "inputs": [0, 729.5, 44361.6]})
}

/// Waits until the interactive queue holds `n` messages: the broker has
/// confirmed the publish.
async fn until_queued(env: &TestEnv, n: u32) {
    let queue = Topology::of(&env.settings).job_queue("credit-default", Priority::Interactive);
    for _ in 0..100 {
        if env.queue_depth(&queue).await.unwrap() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{queue} never held {n} messages");
}

/// `POST /v1/jobs?wait=30` in the background.
fn submit_waiting(env: &TestEnv) -> tokio::task::JoinHandle<(u16, Value)> {
    let http = env.http.clone();
    let url = env.url("/v1/jobs?wait=30");
    tokio::spawn(async move {
        let r = http.post(url).json(&job()).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_job_gets_202_whatever_redis_does_during_the_wait() {
    // Redis goes away during the wait.
    let mut redis = RedisServer::start("everysec").unwrap();
    let mut settings = test_settings();
    settings.redis.url = redis.url();
    let env = TestEnv::start_with(settings, false).await.unwrap();
    let waiting = submit_waiting(&env);
    until_queued(&env, 1).await;
    redis.stop();
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("an answer before the wait ends")
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued", "{body}");
    assert!(body["id"].is_string(), "{body}");
    redis.start_again().unwrap();
    env.stop().await.unwrap();

    // The job's record goes away during the wait.
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let waiting = submit_waiting(&env);
    until_queued(&env, 1).await;
    let keys: Vec<String> = env
        .redis_keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| infq_common::keys::Keys::new(&env.settings.namespace).is_job_record(k))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let client = env.settings.redis.client().unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("DEL")
        .arg(&keys[0])
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("an answer before the wait ends")
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert!(keys[0].contains(body["id"].as_str().unwrap()), "{body}");
    env.stop().await.unwrap();
}

/// Sends `request` on a connection of its own, waits until the producer
/// waits for something, then closes the connection; says whether the
/// producer stopped waiting within 3 s.
async fn hang_up_during_wait(state: &infq_producer::AppState, addr: &str, request: String) -> bool {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut waiting = false;
    for _ in 0..100 {
        if !state.waiters.is_empty() {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting, "the request never waited: {request}");
    drop(conn);
    for _ in 0..60 {
        if state.waiters.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn request(method: &str, addr: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {DEV_API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_stops_when_its_client_goes() {
    // A producer of the test's own, to see its waiters; no worker, so
    // nothing ends by itself.
    let settings = test_settings();
    let state = Arc::new(
        infq_producer::AppState::new(settings.clone(), settings.registry().unwrap(), None).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind(settings.producer.listen)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let base = format!("http://{addr}");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(infq_producer::serve(
        state.clone(),
        listener,
        shutdown.clone(),
    ));
    let http = http_builder().build().unwrap();
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job_id = submit_job(&http, &base, &job()).await;
    let r = http
        .post(format!("{base}/v1/batches?model=credit-default"))
        .body("student,balance,income\n0,1,2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let batch_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let cases = [
        request("POST", &addr, "/v1/jobs?wait=30", &job().to_string()),
        request("GET", &addr, &format!("/v1/jobs/{job_id}?wait=30"), ""),
        request("GET", &addr, &format!("/v1/batches/{batch_id}?wait=30"), ""),
    ];
    for req in cases {
        let first_line = req.lines().next().unwrap().to_string();
        assert!(
            hang_up_during_wait(&state, &addr, req).await,
            "{first_line}: still waiting (and reading Redis) after its client left"
        );
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
    delete_namespace(&settings).await.unwrap();
}
