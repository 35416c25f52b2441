//! The exception queue (dead deliveries, grouped by route and error) and
//! the approval queue (deliveries held at a route's approval gate).

use std::str::FromStr;

use askama::Template;
use axum::extract::{RawQuery, State};

use gatehouse_core::{DeliveryId, DeliveryState};
use gatehouse_store::{DeliveryQuery, Resolution};

use super::{back_to, done, view, Ctx, FormData, PageError, PageResult, Posted, Shared, Viewer};
use crate::actions::{self, MAX_IDS};

/// Groups listed.
const GROUPS: u32 = 200;
/// Deliveries listed in an opened group, and held deliveries per page.
const LIST: u32 = 100;

/// One line of the exception queue.
struct GroupLine {
    route: String,
    error: String,
    count: u64,
    latest: String,
    href: String,
    open: bool,
}

/// A dead delivery in the opened group.
struct DeadLine {
    id: String,
    event_href: String,
    event_id: String,
    attempts: u32,
    updated: String,
}

#[derive(Template)]
#[template(path = "exceptions.html")]
struct ExceptionsPage {
    ctx: Ctx,
    back: String,
    groups: Vec<GroupLine>,
    open_route: String,
    open_error: String,
    dead: Vec<DeadLine>,
}

/// `GET /console/exceptions`: the groups; `?route=&error=` opens one.
pub(crate) async fn exceptions(State(pages): State<Shared>, viewer: Viewer, RawQuery(query): RawQuery) -> PageResult {
    let raw_query = query.unwrap_or_default();
    let q = FormData::parse(raw_query.as_bytes());
    let open_route = q.get("route").unwrap_or_default().to_string();
    let open_error = q.get("error").unwrap_or_default().to_string();
    let store = &pages.state.store;
    let groups = store.exception_groups(GROUPS).await?;
    let dead = if open_route.is_empty() {
        Vec::new()
    } else {
        store
            .list_deliveries(&DeliveryQuery {
                route: Some(open_route.clone()),
                state: Some(DeliveryState::Dead),
                last_error: (!open_error.is_empty()).then(|| open_error.clone()),
                before: None,
                limit: LIST,
            })
            .await?
    };
    let back = if raw_query.is_empty() {
        "/console/exceptions".to_string()
    } else {
        view::link("/console/exceptions", &[("route", &open_route), ("error", &open_error)])
    };
    let page = ExceptionsPage {
        ctx: viewer.ctx("exceptions"),
        back,
        groups: groups
            .into_iter()
            .map(|g| GroupLine {
                href: view::link("/console/exceptions", &[("route", &g.route), ("error", &g.last_error)]),
                open: g.route == open_route && g.last_error == open_error,
                route: g.route,
                error: g.last_error,
                count: g.count,
                latest: view::time(g.latest_at),
            })
            .collect(),
        open_route,
        open_error,
        dead: dead
            .into_iter()
            .map(|d| DeadLine {
                id: d.id.to_string(),
                event_href: format!("/console/events/{}", d.event_id),
                event_id: d.event_id.to_string(),
                attempts: d.attempts,
                updated: view::time(d.updated_at),
            })
            .collect(),
    };
    Ok(viewer.render(&page))
}

fn delivery_ids(form: &FormData) -> Result<Vec<DeliveryId>, PageError> {
    let ids = form.all("id");
    if ids.is_empty() {
        return Err(PageError::Invalid("Select at least one delivery.".into()));
    }
    if ids.len() > MAX_IDS {
        return Err(PageError::Invalid(format!("At most {MAX_IDS} deliveries at once.")));
    }
    ids.into_iter()
        .map(|id| DeliveryId::from_str(id).map_err(|_| PageError::Invalid(format!("{id:?} is not a delivery id"))))
        .collect()
}

/// `POST /console/exceptions/retry`: retries one group (route and error).
pub(crate) async fn retry_group(State(pages): State<Shared>, posted: Posted) -> PageResult {
    let route = posted
        .form
        .text("route")
        .ok_or_else(|| PageError::Invalid("Which route?".into()))?;
    let error = posted.form.get("error").filter(|e| !e.is_empty());
    let count = actions::retry_dead(&pages.state, &posted.principal(), route, error, false).await?;
    Ok(done(
        &back_to(&posted.form, "/console/exceptions"),
        match count {
            1 => format!("Retried 1 dead delivery on {route}."),
            n => format!("Retried {n} dead deliveries on {route}."),
        },
    ))
}

/// The resolution a form asks for.
fn resolution(form: &FormData) -> Result<Resolution, PageError> {
    match form.get("op") {
        Some("resolve") => Ok(Resolution::Resolved),
        Some("discard") => Ok(Resolution::Discarded),
        _ => Err(PageError::Invalid("Resolve or discard?".into())),
    }
}

/// `POST /console/exceptions/selected`: retries, resolves or discards the
/// ticked deliveries.
pub(crate) async fn selected(State(pages): State<Shared>, posted: Posted) -> PageResult {
    let ids = delivery_ids(&posted.form)?;
    let who = posted.principal();
    let store = &*pages.state.store;
    let back = back_to(&posted.form, "/console/exceptions");
    let notice = match posted.form.get("op") {
        Some("retry") => {
            let count = actions::retry_deliveries(store, &who, &ids).await?;
            format!("Retried {count} of {} selected.", ids.len())
        }
        _ => {
            let resolution = resolution(&posted.form)?;
            let note = posted.form.get("note").unwrap_or_default();
            let changed = actions::resolve(store, &who, &ids, resolution, note).await?;
            let verb = if resolution == Resolution::Resolved {
                "Resolved"
            } else {
                "Discarded"
            };
            format!("{verb} {} of {} selected.", changed.len(), ids.len())
        }
    };
    Ok(done(&back, notice))
}

/// `POST /console/exceptions/resolve`: resolves or discards a whole group
/// with a note.
pub(crate) async fn resolve(State(pages): State<Shared>, posted: Posted) -> PageResult {
    let route = posted
        .form
        .text("route")
        .ok_or_else(|| PageError::Invalid("Which route?".into()))?;
    let error = posted.form.get("error").unwrap_or_default();
    let resolution = resolution(&posted.form)?;
    let note = posted.form.get("note").unwrap_or_default();
    // Up to MAX_IDS at a time: a larger group takes a second click, which
    // is fine for something this final.
    let ids: Vec<DeliveryId> = pages
        .state
        .store
        .list_deliveries(&DeliveryQuery {
            route: Some(route.to_string()),
            state: Some(DeliveryState::Dead),
            last_error: (!error.is_empty()).then(|| error.to_string()),
            before: None,
            limit: MAX_IDS as u32,
        })
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect();
    if ids.is_empty() {
        return Err(PageError::Conflict("No dead deliveries left in this group.".into()));
    }
    let changed = actions::resolve(&*pages.state.store, &posted.principal(), &ids, resolution, note).await?;
    let verb = if resolution == Resolution::Resolved {
        "Resolved"
    } else {
        "Discarded"
    };
    Ok(done(
        &back_to(&posted.form, "/console/exceptions"),
        format!("{verb} {} on {route}.", changed.len()),
    ))
}

/// One held delivery with its event.
struct HeldLine {
    id: String,
    route: String,
    rule: String,
    held_since: String,
    event_href: String,
    event_id: String,
    source: String,
    event_type: String,
    provider_event_id: String,
    body: String,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    ctx: Ctx,
    held: Vec<HeldLine>,
    older: Option<String>,
}

/// `GET /console/approvals`: each held delivery's payload beside the rule
/// that held it.
pub(crate) async fn approvals(State(pages): State<Shared>, viewer: Viewer, RawQuery(query): RawQuery) -> PageResult {
    let q = FormData::parse(query.unwrap_or_default().as_bytes());
    let before = q.text("before").and_then(|id| DeliveryId::from_str(id).ok());
    let store = &pages.state.store;
    let deliveries = store
        .list_deliveries(&DeliveryQuery {
            route: None,
            state: Some(DeliveryState::AwaitingApproval),
            last_error: None,
            before,
            limit: LIST,
        })
        .await?;
    let older = (deliveries.len() == LIST as usize)
        .then(|| {
            deliveries
                .last()
                .map(|d| view::link("/console/approvals", &[("before", &d.id.to_string())]))
        })
        .flatten();
    let mut held = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let event = store.event(delivery.event_id).await?;
        let (source, event_type, provider_event_id, body) = match &event {
            Some(event) => (
                event.summary.source.clone(),
                event.summary.event_type.clone().unwrap_or_default(),
                event.summary.provider_event_id.clone().unwrap_or_default(),
                view::body(&event.body).0,
            ),
            None => Default::default(),
        };
        held.push(HeldLine {
            id: delivery.id.to_string(),
            route: delivery.route,
            rule: delivery.last_error.unwrap_or_default(),
            held_since: view::time(delivery.created_at),
            event_href: format!("/console/events/{}", delivery.event_id),
            event_id: delivery.event_id.to_string(),
            source,
            event_type,
            provider_event_id,
            body,
        });
    }
    let page = ApprovalsPage {
        ctx: viewer.ctx("approvals"),
        held,
        older,
    };
    Ok(viewer.render(&page))
}

/// `POST /console/approvals/decide`: approves, or rejects with a reason,
/// one or more held deliveries.
pub(crate) async fn decide(State(pages): State<Shared>, posted: Posted) -> PageResult {
    let ids = delivery_ids(&posted.form)?;
    let who = posted.principal();
    let store = &*pages.state.store;
    let back = back_to(&posted.form, "/console/approvals");
    let notice = match (posted.form.get("decision"), ids.as_slice()) {
        (Some("approve"), [id]) => {
            let delivery = actions::approve_delivery(store, &who, *id).await?;
            format!("Approved {id} on {}: it will be delivered now.", delivery.route)
        }
        (Some("approve"), _) => {
            let changed = actions::approve(store, &who, &ids).await?;
            format!("Approved {} of {}.", changed.len(), ids.len())
        }
        (Some("reject"), [id]) => {
            let reason = posted.form.get("reason").unwrap_or_default();
            let delivery = actions::reject_delivery(store, &who, *id, reason).await?;
            format!("Rejected {id} on {}.", delivery.route)
        }
        (Some("reject"), _) => {
            let reason = posted.form.get("reason").unwrap_or_default();
            let changed = actions::reject(store, &who, &ids, reason).await?;
            format!("Rejected {} of {}.", changed.len(), ids.len())
        }
        _ => return Err(PageError::Invalid("Approve or reject?".into())),
    };
    Ok(done(&back, notice))
}
