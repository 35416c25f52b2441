//! Polling sources against a fake API on 127.0.0.1: exactly the new and
//! changed items become events, ETags are honoured, errors (garbage, 401,
//! timeouts) never crash or duplicate, and a restart polls on from where
//! it was without storing anything twice.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpListener;

use gatehouse_core::EventOrigin;
use gatehouse_store::{EventQuery, Store};

use crate::harness::*;

on_both_backends!(poll_stores_new_and_changed_items_across_a_restart);

const TOKEN: &str = "poll-test-token";
const LIMIT: Duration = Duration::from_secs(30);

/// How the fake API answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The list, with an ETag; 304 when If-None-Match matches.
    Normal,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 401.
    Unauthorized,
    /// Answers after 3 s (the poll times out first).
    Slow,
}

#[derive(Debug)]
struct ApiState {
    mode: Mode,
    /// Bumped on every change of `items`; the ETag is `"r<revision>"`.
    revision: u32,
    items: Vec<serde_json::Value>,
    /// Per request: (authorization, if-none-match, status answered).
    requests: Vec<(Option<String>, Option<String>, u16)>,
}

/// A list API on 127.0.0.1 whose items the test changes between polls.
#[derive(Clone)]
struct FakeApi {
    url: String,
    state: Arc<Mutex<ApiState>>,
    _task: Arc<tokio::task::JoinHandle<()>>,
}

impl FakeApi {
    async fn start(items: Vec<serde_json::Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let url = format!("http://{}/v1/tickets?limit=100", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(ApiState {
            mode: Mode::Normal,
            revision: 1,
            items,
            requests: Vec::new(),
        }));
        let serving = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let header = |name: &str| {
                                request
                                    .headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string)
                            };
                            let (auth, if_none_match) = (header("authorization"), header("if-none-match"));
                            let (mode, status, etag, body) = {
                                let mut state = state.lock().expect("lock");
                                let etag = format!("\"r{}\"", state.revision);
                                let (status, body) = match state.mode {
                                    Mode::Normal if if_none_match.as_deref() == Some(etag.as_str()) => {
                                        (304, String::new())
                                    }
                                    Mode::Normal | Mode::Slow => {
                                        (200, serde_json::json!({ "data": state.items }).to_string())
                                    }
                                    Mode::Garbage => (200, "<html>oops</html>".to_string()),
                                    Mode::Unauthorized => (401, r#"{"error":"unauthorized"}"#.to_string()),
                                };
                                state.requests.push((auth, if_none_match, status));
                                (state.mode, status, etag, body)
                            };
                            if mode == Mode::Slow {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                            }
                            let response = hyper::Response::builder()
                                .status(status)
                                .header("etag", etag)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .expect("response");
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            state,
            _task: Arc::new(task),
        }
    }

    fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }

    fn set_items(&self, items: Vec<serde_json::Value>) {
        let mut state = self.state.lock().expect("lock");
        state.items = items;
        state.revision += 1;
    }

    fn requests(&self) -> Vec<(Option<String>, Option<String>, u16)> {
        self.state.lock().expect("lock").requests.clone()
    }

    /// Waits until `count` more requests than `seen` arrived.
    async fn wait_for_requests(&self, seen: usize, count: usize) {
        eventually(&format!("the API got {count} more requests"), LIMIT, || async {
            (self.requests().len() >= seen + count).then_some(())
        })
        .await;
    }
}

fn ticket(id: &str, version: u32) -> serde_json::Value {
    serde_json::json!({ "id": id, "updated_at": version, "subject": format!("ticket {id}") })
}

fn poll_sources(api: &FakeApi, sink: &Sink) -> String {
    format!(
        r#"
[[sources]]
name = "tickets"
provider = "poll"
poll = {{ url = "{url}", interval = "1s", timeout = "1s", auth = "bearer env:GATEHOUSE_IT_POLL_TOKEN", items = ".data[]", id = ".id", version = ".updated_at" }}

[[destinations]]
name = "sink"
type = "http"
url = "{sink}"

[[routes]]
name = "tickets-to-sink"
source = "tickets"
destination = "sink"

[delivery]
poll_interval = "200ms"
"#,
        url = api.url,
        sink = sink.url,
    )
}

/// (dedup key, event type) of every stored tickets event, and checks each
/// is a poll event with no duplicate arrivals.
async fn stored(store: &Arc<dyn Store>) -> BTreeSet<(String, String)> {
    let events = store
        .list_events(&EventQuery {
            source: Some("tickets".into()),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .expect("list");
    for event in &events {
        assert_eq!(event.origin, EventOrigin::Poll, "{event:?}");
        assert_eq!(event.duplicates, 0, "nothing arrives twice: {event:?}");
    }
    events
        .into_iter()
        .map(|e| (e.dedup_key, e.event_type.unwrap_or_default()))
        .collect()
}

async fn wait_for_stored(store: &Arc<dyn Store>, count: usize) -> BTreeSet<(String, String)> {
    eventually(&format!("{count} tickets events are stored"), LIMIT, || async {
        let events = stored(store).await;
        (events.len() >= count).then_some(events)
    })
    .await
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items.iter().map(|(k, t)| (k.to_string(), t.to_string())).collect()
}

async fn poll_stores_new_and_changed_items_across_a_restart(db: Database) {
    let api = FakeApi::start(vec![ticket("t1", 1), ticket("t2", 1)]).await;
    let sink = Sink::start().await;
    let env = [("GATEHOUSE_IT_POLL_TOKEN", TOKEN)];
    let mut server = Server::start_with_env(&db, &poll_sources(&api, &sink), &env);
    let store = db.open_store().await;

    // The first poll stores both items, each delivered once.
    let first = wait_for_stored(&store, 2).await;
    assert_eq!(first, set(&[("t1@1", "item.created"), ("t2@1", "item.created")]));
    let requests = api.requests();
    assert_eq!(requests[0].0.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(requests[0].1, None, "the first poll has no ETag to send");
    let event = store
        .event_by_dedup_key("tickets", "t1@1")
        .await
        .expect("lookup")
        .expect("stored");
    let body: serde_json::Value = serde_json::from_slice(&event.body).expect("the item as JSON");
    assert_eq!(body, ticket("t1", 1));
    assert_eq!(event.summary.provider_event_id.as_deref(), Some("t1"));
    sink.wait_for(2, LIMIT).await;

    // Nothing changed: the ETag comes back and the API answers 304.
    let seen = api.requests().len();
    api.wait_for_requests(seen, 2).await;
    let requests = api.requests();
    assert!(
        requests[seen..]
            .iter()
            .all(|(_, etag, status)| etag.as_deref() == Some("\"r1\"") && *status == 304),
        "{requests:?}"
    );
    assert_eq!(stored(&store).await.len(), 2);

    // One item changes, one is new: exactly two more events.
    api.set_items(vec![ticket("t1", 2), ticket("t2", 1), ticket("t3", 1)]);
    let second = wait_for_stored(&store, 4).await;
    assert_eq!(
        second,
        set(&[
            ("t1@1", "item.created"),
            ("t2@1", "item.created"),
            ("t1@2", "item.updated"),
            ("t3@1", "item.created"),
        ])
    );

    // Garbage, 401 and timeouts: logged and retried, never a crash, never
    // an event. The server keeps answering meanwhile.
    for mode in [Mode::Garbage, Mode::Unauthorized, Mode::Slow] {
        api.set_mode(mode);
        let seen = api.requests().len();
        api.wait_for_requests(seen, 1).await;
        let health = send("GET", &server.url("/healthz"), &[], "").await;
        assert_eq!(health.status, 200, "{mode:?}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        server.child.try_wait().expect("status").is_none(),
        "the server is still running"
    );
    assert_eq!(stored(&store).await.len(), 4);
    // Nothing can be pushed to a poll source.
    let pushed = send("POST", &server.url("/in/tickets"), &[], r#"{"id":"t9"}"#).await;
    assert!(matches!(pushed.status, 404 | 405), "{pushed:?}");

    // Back to normal, then killed; the list changes while it is down.
    api.set_mode(Mode::Normal);
    let seen = api.requests().len();
    api.wait_for_requests(seen, 1).await;
    server.kill();
    // The list was changed once: revision 2 is what the poller saw last.
    let etag_before = "\"r2\"";
    api.set_items(vec![ticket("t1", 2), ticket("t2", 2), ticket("t3", 1), ticket("t4", 1)]);

    // The restarted server sends the ETag it saved, stores exactly what is
    // new since, and nothing twice.
    let seen = api.requests().len();
    let _server = Server::start_with_env(&db, &poll_sources(&api, &sink), &env);
    let third = wait_for_stored(&store, 6).await;
    assert_eq!(api.requests()[seen].1.as_deref(), Some(etag_before));
    assert_eq!(
        third,
        set(&[
            ("t1@1", "item.created"),
            ("t2@1", "item.created"),
            ("t1@2", "item.updated"),
            ("t3@1", "item.created"),
            ("t2@2", "item.updated"),
            ("t4@1", "item.created"),
        ])
    );
    let seen = api.requests().len();
    api.wait_for_requests(seen, 2).await;
    assert_eq!(stored(&store).await.len(), 6, "later polls add nothing");
    sink.wait_for(6, LIMIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 6, "each event delivered once");
}
