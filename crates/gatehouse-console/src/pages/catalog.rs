//! Sources, routes and destinations as configured, with health counts,
//! and the pause switch on each route (admin).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};

use gatehouse_core::DeliveryState;
use gatehouse_store::DeliveryQuery;

use super::{back_to, done, view, Ctx, PageResult, Posted, Shared, Viewer};
use crate::actions;

/// Held deliveries counted per route, at most (a count past it shows `+`).
const COUNT_CAP: u32 = 1_000;

struct SourceLine {
    name: String,
    provider: String,
    events_globs: String,
    href: String,
    events: u64,
    duplicates: u64,
    verification_failures: u64,
}

struct RouteLine {
    name: String,
    anchor: String,
    source: String,
    destination: String,
    events_globs: String,
    filter: String,
    transform: String,
    approval: String,
    paused: bool,
    dead: u64,
    awaiting: String,
    pause_action: String,
    resume_action: String,
    exceptions_href: String,
}

struct DestinationLine {
    name: String,
    kind: String,
    target: String,
    routes: String,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    ctx: Ctx,
    sources: Vec<SourceLine>,
    routes: Vec<RouteLine>,
    destinations: Vec<DestinationLine>,
}

/// `GET /console/catalog`.
pub(crate) async fn page(State(pages): State<Shared>, viewer: Viewer) -> PageResult {
    let store = &pages.state.store;
    let catalog = &pages.state.catalog;
    let counts: HashMap<String, _> = store
        .source_counts()
        .await?
        .into_iter()
        .map(|c| (c.source.clone(), c))
        .collect();
    let paused = store.paused_routes().await?;
    let mut dead: HashMap<String, u64> = HashMap::new();
    for group in store.exception_groups(1_000).await? {
        *dead.entry(group.route).or_default() += group.count;
    }
    let mut routes = Vec::with_capacity(catalog.routes.len());
    for route in &catalog.routes {
        let awaiting = store
            .list_deliveries(&DeliveryQuery {
                route: Some(route.name.clone()),
                state: Some(DeliveryState::AwaitingApproval),
                last_error: None,
                before: None,
                limit: COUNT_CAP,
            })
            .await?
            .len();
        let segment = view::segment(&route.name);
        routes.push(RouteLine {
            anchor: format!("route-{segment}"),
            name: route.name.clone(),
            source: route.source.clone(),
            destination: route.destination.clone(),
            events_globs: route.events.join(", "),
            filter: route.filter.clone().unwrap_or_default(),
            transform: route.transform.clone().unwrap_or_default(),
            approval: match (&route.approval_when, route.approval) {
                (Some(program), _) => format!("when {program}"),
                (None, true) => "every event".into(),
                (None, false) => String::new(),
            },
            paused: paused.contains(&route.name),
            dead: dead.get(&route.name).copied().unwrap_or(0),
            awaiting: if awaiting >= COUNT_CAP as usize {
                format!("{COUNT_CAP}+")
            } else {
                awaiting.to_string()
            },
            pause_action: format!("/console/routes/{segment}/pause"),
            resume_action: format!("/console/routes/{segment}/resume"),
            exceptions_href: view::link("/console/exceptions", &[]),
        });
    }
    let page = CatalogPage {
        ctx: viewer.ctx("catalog"),
        sources: catalog
            .sources
            .iter()
            .map(|source| {
                let counted = counts.get(&source.name);
                SourceLine {
                    name: source.name.clone(),
                    provider: source.provider.clone(),
                    events_globs: source.events.join(", "),
                    href: view::link("/console/events", &[("source", &source.name)]),
                    events: counted.map_or(0, |c| c.events),
                    duplicates: counted.map_or(0, |c| c.duplicates),
                    verification_failures: counted.map_or(0, |c| c.verification_failures),
                }
            })
            .collect(),
        routes,
        destinations: catalog
            .destinations
            .iter()
            .map(|destination| DestinationLine {
                name: destination.name.clone(),
                kind: destination.kind.clone(),
                target: destination.target.clone(),
                routes: catalog
                    .routes
                    .iter()
                    .filter(|route| route.destination == destination.name)
                    .map(|route| route.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect(),
    };
    Ok(viewer.render(&page))
}

/// `POST /console/routes/{name}/pause` (admin).
pub(crate) async fn pause(State(pages): State<Shared>, Path(name): Path<String>, posted: Posted) -> PageResult {
    actions::set_route_paused(&pages.state, &posted.principal(), &name, true).await?;
    Ok(done(
        &back_to(&posted.form, "/console/catalog"),
        format!("Route {name} is paused: its deliveries wait until it is resumed."),
    ))
}

/// `POST /console/routes/{name}/resume` (admin).
pub(crate) async fn resume(State(pages): State<Shared>, Path(name): Path<String>, posted: Posted) -> PageResult {
    actions::set_route_paused(&pages.state, &posted.principal(), &name, false).await?;
    Ok(done(
        &back_to(&posted.form, "/console/catalog"),
        format!("Route {name} is delivering again."),
    ))
}
