//! The console pages over real HTTP, on SQLite and on PostgreSQL: a login
//! is needed, hostile payloads and headers render inert, form posts need
//! the session's CSRF token, viewers cannot act, and failed logins are
//! throttled. The browser suite (`tests/browser`) drives the same pages in
//! Chromium; these checks run with `cargo test`.

use std::time::Duration;

use gatehouse_console::actions;
use gatehouse_console::auth::Principal;
use gatehouse_core::{DeliveryState, Role};

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(15);
const ADMIN_PASSWORD: &str = "admin-password-123";
const OPERATOR_PASSWORD: &str = "operator-password-123";
const VIEWER_PASSWORD: &str = "viewer-password-123";
const HOSTILE: &str = r#"<script>alert("xss")</script>"><img src=x onerror=alert(1)>{{7*7}}"#;

on_both_backends!(
    pages_need_a_login,
    hostile_payloads_and_headers_render_inert,
    posts_need_the_csrf_token_and_the_role,
    failed_logins_are_throttled,
);

/// A stripe source, the sink as destination, a `payments` route with one
/// attempt (a 500 makes it dead at once) and a `refunds` route that holds
/// every delivery for approval; users `root` (admin), `olga` (operator)
/// and `vic` (viewer).
async fn start(db: &Database, sink: &Sink) -> Server {
    let store = db.open_store().await;
    let cli = Principal::cli();
    for (name, role, password) in [
        ("root", Role::Admin, ADMIN_PASSWORD),
        ("olga", Role::Operator, OPERATOR_PASSWORD),
        ("vic", Role::Viewer, VIEWER_PASSWORD),
    ] {
        actions::create_user(&*store, &cli, name, role, password)
            .await
            .expect("create user");
    }
    drop(store);
    let config = format!(
        r#"{sources}
[[destinations]]
name = "sink"
type = "http"
url = "{url}"

[[routes]]
name = "payments"
source = "stripe"
destination = "sink"
retry = {{ max_attempts = 1 }}

[[routes]]
name = "refunds"
source = "github"
destination = "sink"
approval = true

[delivery]
poll_interval = "200ms"
"#,
        sources = standard_sources(),
        url = sink.url,
    );
    Server::start(db, &config)
}

/// Logs in; returns the `Cookie` header value.
async fn login(server: &Server, username: &str, password: &str) -> String {
    let answer = try_login(server, username, password).await;
    assert_eq!(answer.status, 303, "login as {username}: {}", answer.body);
    let set_cookie = answer
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute} in {set_cookie}");
    }
    set_cookie.split(';').next().expect("cookie pair").to_string()
}

async fn try_login(server: &Server, username: &str, password: &str) -> Answer {
    let form = form_urlencoded_pairs(&[("username", username), ("password", password), ("next", "/console")]);
    send(
        "POST",
        &server.url("/console/login"),
        &[("content-type", "application/x-www-form-urlencoded".into())],
        form,
    )
    .await
}

fn form_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn get(server: &Server, path: &str, cookie: &str) -> Answer {
    send("GET", &server.url(path), &[("cookie", cookie.to_string())], "").await
}

async fn post(server: &Server, path: &str, cookie: &str, pairs: &[(&str, &str)]) -> Answer {
    send(
        "POST",
        &server.url(path),
        &[
            ("cookie", cookie.to_string()),
            ("content-type", "application/x-www-form-urlencoded".into()),
        ],
        form_urlencoded_pairs(pairs),
    )
    .await
}

/// The session's CSRF token, from the logout form every page carries.
fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("a csrf field") + marker.len();
    html[start..].split('"').next().expect("csrf value").to_string()
}

async fn pages_need_a_login(db: Database) {
    let sink = Sink::start().await;
    let server = start(&db, &sink).await;
    for path in [
        "/console",
        "/console/events",
        "/console/audit",
        "/console/people",
        "/console/tail/stream",
    ] {
        let answer = get(&server, path, "gatehouse_session=not-a-session").await;
        assert_eq!(answer.status, 303, "{path}");
        let location = answer
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(location.starts_with("/console/login?next="), "{path} -> {location}");
    }
    let cookie = login(&server, "vic", VIEWER_PASSWORD).await;
    let page = get(&server, "/console", &cookie).await;
    assert_eq!(page.status, 200);
    let csp = page
        .headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    // An open redirect through `next` is refused.
    let answer = send(
        "POST",
        &server.url("/console/login"),
        &[("content-type", "application/x-www-form-urlencoded".into())],
        form_urlencoded_pairs(&[
            ("username", "vic"),
            ("password", VIEWER_PASSWORD),
            ("next", "//evil.test/"),
        ]),
    )
    .await;
    assert_eq!(
        answer.headers.get("location").and_then(|v| v.to_str().ok()),
        Some("/console")
    );
    // A login form posted from another site is refused (no CSRF token
    // exists before a session does).
    let cross_site = send(
        "POST",
        &server.url("/console/login"),
        &[
            ("content-type", "application/x-www-form-urlencoded".into()),
            ("origin", "https://evil.test".into()),
        ],
        form_urlencoded_pairs(&[("username", "vic"), ("password", VIEWER_PASSWORD)]),
    )
    .await;
    assert_eq!(cross_site.status, 403);
    assert!(cross_site.headers.get("set-cookie").is_none());
    // Logging out ends the session server side, not just in the browser.
    let csrf = csrf_of(&page.body);
    assert_eq!(
        post(&server, "/console/logout", &cookie, &[("csrf", &csrf)])
            .await
            .status,
        303
    );
    assert_eq!(get(&server, "/console", &cookie).await.status, 303);
}

async fn hostile_payloads_and_headers_render_inert(db: Database) {
    let sink = Sink::start().await;
    let server = start(&db, &sink).await;
    let body = serde_json::json!({
        "id": "evt_hostile",
        "object": "event",
        "type": format!("payment_intent.{HOSTILE}"),
        "data": { "object": { "note": HOSTILE } },
    })
    .to_string();
    let answer = send(
        "POST",
        &server.url("/in/stripe"),
        &[
            ("stripe-signature", stripe_signature(STRIPE_SECRET, &body)),
            ("content-type", "application/json".into()),
            ("x-evil", HOSTILE.into()),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let store = db.open_store().await;
    let event = store
        .event_by_dedup_key("stripe", "evt_hostile")
        .await
        .expect("read")
        .expect("stored");
    let cookie = login(&server, "root", ADMIN_PASSWORD).await;
    for path in [
        format!("/console/events/{}", event.summary.id),
        "/console/events?provider_id=evt_hostile".to_string(),
        "/console/tail".to_string(),
        "/console".to_string(),
    ] {
        let page = get(&server, &path, &cookie).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(!page.body.contains("<script>alert"), "{path}: a live script tag");
        assert!(!page.body.contains("<img src=x"), "{path}: a live img tag");
        assert!(
            !page.body.contains("onerror=alert(1)>"),
            "{path}: an unescaped attribute"
        );
        assert!(!page.body.contains(">49<"), "{path}: template syntax evaluated");
    }
    let detail = get(&server, &format!("/console/events/{}", event.summary.id), &cookie).await;
    assert!(
        detail.body.contains("&#60;script&#62;alert("),
        "the payload is shown, escaped"
    );
    assert!(
        detail.body.contains("&#60;img src=x onerror=alert(1)&#62;"),
        "the header is shown, escaped"
    );
    assert!(detail.body.contains("{{7*7}}"));
    // The signature is neither shown nor in the copy-as-curl text.
    let signature = event
        .headers
        .iter()
        .find(|h| h.name == "stripe-signature")
        .expect("signature header kept")
        .value
        .clone();
    let v1 = signature.split("v1=").nth(1).expect("v1");
    assert!(!detail.body.contains(v1), "the signature never reaches the page");
    assert!(detail.body.contains("# stripe-signature: &#60;removed"));
}

async fn posts_need_the_csrf_token_and_the_role(db: Database) {
    let sink = Sink::start().await;
    sink.answer_by_default(Reply::status(500));
    let server = start(&db, &sink).await;
    assert_eq!(
        send_stripe(&server, "evt_doomed", "payment_intent.succeeded")
            .await
            .status,
        200
    );
    let store = db.open_store().await;
    let event = store
        .event_by_dedup_key("stripe", "evt_doomed")
        .await
        .expect("read")
        .expect("stored");
    let delivery = eventually("the delivery is dead", LIMIT, || {
        let store = store.clone();
        async move {
            let deliveries = store.deliveries_for_event(event.summary.id).await.ok()?;
            deliveries.into_iter().find(|d| d.state == DeliveryState::Dead)
        }
    })
    .await;
    let retry = format!("/console/deliveries/{}/retry", delivery.id);

    let viewer = login(&server, "vic", VIEWER_PASSWORD).await;
    let viewer_csrf = csrf_of(&get(&server, "/console", &viewer).await.body);
    let operator = login(&server, "olga", OPERATOR_PASSWORD).await;
    let operator_csrf = csrf_of(&get(&server, "/console", &operator).await.body);
    assert_ne!(viewer_csrf, operator_csrf, "one token per session");

    // No token, a wrong token, another session's token: 403, nothing done.
    assert_eq!(post(&server, &retry, &operator, &[]).await.status, 403);
    assert_eq!(
        post(&server, &retry, &operator, &[("csrf", "forged")]).await.status,
        403
    );
    assert_eq!(
        post(&server, &retry, &operator, &[("csrf", &viewer_csrf)]).await.status,
        403
    );
    // A viewer with a valid token: 403 by role.
    let refused = post(&server, &retry, &viewer, &[("csrf", &viewer_csrf)]).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("operator"), "{}", refused.body);
    // The viewer's page offers no button either.
    let page = get(&server, &format!("/console/events/{}", event.summary.id), &viewer).await;
    assert!(!page.body.contains("/retry\""), "no retry form for a viewer");
    assert_eq!(
        store.delivery(delivery.id).await.expect("read").expect("exists").state,
        DeliveryState::Dead,
        "nothing was retried"
    );

    // The operator with the token: done, audited, delivered.
    sink.answer_by_default(Reply::status(200));
    let done = post(&server, &retry, &operator, &[("csrf", &operator_csrf)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    eventually("the retried delivery succeeded", LIMIT, || {
        let store = store.clone();
        async move {
            let now = store.delivery(delivery.id).await.ok()??;
            (now.state == DeliveryState::Succeeded).then_some(())
        }
    })
    .await;
    let audit = get(&server, "/console/audit?action=delivery.retry", &operator).await;
    assert!(audit.body.contains("user:olga"), "audited");
    assert!(audit.body.contains(&delivery.id.to_string()));

    // Only an admin pauses routes.
    let pause = "/console/routes/payments/pause";
    assert_eq!(
        post(&server, pause, &operator, &[("csrf", &operator_csrf)])
            .await
            .status,
        403
    );
    let admin = login(&server, "root", ADMIN_PASSWORD).await;
    let admin_csrf = csrf_of(&get(&server, "/console", &admin).await.body);
    assert_eq!(post(&server, pause, &admin, &[("csrf", &admin_csrf)]).await.status, 303);
    assert_eq!(
        store.paused_routes().await.expect("paused"),
        vec!["payments".to_string()]
    );
}

async fn failed_logins_are_throttled(db: Database) {
    let sink = Sink::start().await;
    let server = start(&db, &sink).await;
    let unknown = try_login(&server, "nobody", "whatever-password").await;
    assert_eq!(unknown.status, 401);
    let wrong = try_login(&server, "olga", "not-her-password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        unknown.body.contains("Wrong username or password"),
        wrong.body.contains("Wrong username or password"),
        "the same answer whether or not the user exists"
    );
    for _ in 0..4 {
        assert_eq!(try_login(&server, "olga", "not-her-password").await.status, 401);
    }
    let throttled = try_login(&server, "olga", OPERATOR_PASSWORD).await;
    assert_eq!(throttled.status, 429, "throttled even with the right password");
    let retry_after: u64 = throttled
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!(retry_after >= 1);
    // Another user from the same address is not locked out.
    login(&server, "vic", VIEWER_PASSWORD).await;
}
