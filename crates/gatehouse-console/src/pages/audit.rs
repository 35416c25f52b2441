//! The audit log, filterable by actor, action and object.

use askama::Template;
use axum::extract::{RawQuery, State};

use gatehouse_store::AuditQuery;

use super::{view, Ctx, FormData, PageResult, Shared, Viewer};

/// Entries per page.
const PAGE: u32 = 100;

struct EntryLine {
    at: String,
    actor: String,
    action: String,
    object: String,
    object_href: String,
    remote_addr: String,
    note: String,
    details: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    ctx: Ctx,
    actor: String,
    action: String,
    object: String,
    entries: Vec<EntryLine>,
    older: Option<String>,
}

/// Where an audited object can be looked at, if anywhere.
fn object_link(object: &str) -> String {
    if object.starts_with("evt_") {
        format!("/console/events/{object}")
    } else if object.starts_with("route:") {
        "/console/catalog".into()
    } else if object.starts_with("user:") || object.starts_with("tok_") {
        "/console/people".into()
    } else {
        String::new()
    }
}

/// `GET /console/audit`.
pub(crate) async fn page(State(pages): State<Shared>, viewer: Viewer, RawQuery(query): RawQuery) -> PageResult {
    let q = FormData::parse(query.unwrap_or_default().as_bytes());
    let actor = q.text("actor").unwrap_or_default().to_string();
    let action = q.text("action").unwrap_or_default().to_string();
    let object = q.text("object").unwrap_or_default().to_string();
    let before = q.text("before").and_then(|seq| seq.parse::<i64>().ok());
    let entries = pages
        .state
        .store
        .list_audit(&AuditQuery {
            actor: (!actor.is_empty()).then(|| actor.clone()),
            action_prefix: (!action.is_empty()).then(|| action.clone()),
            object: (!object.is_empty()).then(|| object.clone()),
            before,
            limit: PAGE,
        })
        .await?;
    let older = (entries.len() == PAGE as usize)
        .then(|| {
            entries.last().map(|last| {
                view::link(
                    "/console/audit",
                    &[
                        ("actor", &actor),
                        ("action", &action),
                        ("object", &object),
                        ("before", &last.seq.to_string()),
                    ],
                )
            })
        })
        .flatten();
    let page = AuditPage {
        ctx: viewer.ctx("audit"),
        entries: entries
            .into_iter()
            .map(|entry| EntryLine {
                at: view::time(entry.at),
                object_href: object_link(&entry.object),
                actor: entry.actor,
                action: entry.action,
                object: entry.object,
                remote_addr: entry.remote_addr.unwrap_or_default(),
                note: entry.note.unwrap_or_default(),
                details: entry.details,
            })
            .collect(),
        actor,
        action,
        object,
        older,
    };
    Ok(viewer.render(&page))
}
