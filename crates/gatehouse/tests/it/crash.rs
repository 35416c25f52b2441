//! The durability contract under a crash: a real `gatehouse serve` receives
//! signed events from concurrent clients, is killed with SIGKILL mid-load,
//! and restarts; every event that got a 2xx is in the database exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_acknowledged_event_survives_sigkill() {
    let db = Database::fresh(Backend::Sqlite, "crash").await.expect("sqlite");
    every_acknowledged_event_survives_sigkill(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_acknowledged_event_survives_sigkill() {
    let Some(db) = Database::fresh(Backend::Postgres, "crash").await else {
        return;
    };
    every_acknowledged_event_survives_sigkill(db).await;
}

async fn every_acknowledged_event_survives_sigkill(db: Database) {
    let sources = standard_sources().replace("body_limit = \"1KiB\"", "");
    let mut server = Server::start(&db, &sources);
    let url = server.url("/in/stripe");
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));

    let mut clients = Vec::new();
    for client in 0..16 {
        let (url, acknowledged, stop) = (url.clone(), acknowledged.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("evt_crash_{client}_{n}");
                let body = stripe_body(&id, "payment_intent.succeeded");
                let signature = stripe_signature(STRIPE_SECRET, &body);
                let result = tokio::time::timeout(
                    Duration::from_secs(5),
                    try_send(&url, &[("stripe-signature", signature)], body),
                )
                .await;
                match result {
                    Ok(Some(200)) => acknowledged.lock().expect("lock").push(id),
                    // Connection refused or reset: the server is gone.
                    Ok(None) | Err(_) => break,
                    Ok(Some(_)) => {}
                }
            }
        }));
    }

    // Let the load build up, then pull the plug mid-stream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() > 50,
        "the load should have been acknowledged many times before the kill, got {}",
        acknowledged.len()
    );

    // Restart on the same database (recovery runs on open), then check.
    let restarted = Server::spawn(server.config_path.clone(), tempfile::tempdir().expect("dir"));
    assert_eq!(send("GET", &restarted.url("/readyz"), &[], "").await.status, 200);
    let store = db.open_store().await;
    let mut missing = Vec::new();
    for id in &acknowledged {
        match store.event_by_dedup_key("stripe", id).await.expect("read") {
            Some(event) => assert_eq!(event.summary.duplicates, 0, "{id} stored once, never doubled"),
            None => missing.push(id.clone()),
        }
    }
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let counts = store.source_counts().await.expect("counts");
    let stored = counts
        .iter()
        .find(|c| c.source == "stripe")
        .map(|c| c.events)
        .unwrap_or(0);
    assert!(
        stored >= acknowledged.len() as u64,
        "stored {stored} < acknowledged {}",
        acknowledged.len()
    );
    eprintln!(
        "crash test ({:?}): {} acknowledged before SIGKILL, all present; {} stored in all",
        db.backend,
        acknowledged.len(),
        stored
    );
}

/// Sends a request; `None` when the connection failed (server gone).
async fn try_send(url: &str, headers: &[(&str, String)], body: String) -> Option<u16> {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut request = hyper::Request::builder().method("POST").uri(url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request.body(Full::new(bytes::Bytes::from(body))).ok()?;
    client.request(request).await.ok().map(|r| r.status().as_u16())
}
