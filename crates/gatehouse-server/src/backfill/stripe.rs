//! Stripe: lists events through the Events API (`GET /v1/events` with
//! `created[gte]`, newest first, `starting_after` pages; with
//! `delivery_success=false` for failed-only runs) and ingests those not
//! stored yet. Each event object is exactly what the webhook would have
//! carried as its body, so routes see the same payload.

use std::collections::HashSet;

use bytes::Bytes;
use serde_json::Value;

use gatehouse_core::Header;
use gatehouse_deliver::enrich::percent_encode;

use super::{ApiClient, Recovered, Run, Window};

/// Runs a Stripe backfill over `window`.
pub(crate) async fn run(
    run: &mut Run<'_>,
    api: &ApiClient,
    window: Window,
    max_pages: u32,
    page_size: u32,
) -> Result<(), String> {
    let since = window.since.0.div_euclid(1000);
    let mut after: Option<String> = None;
    loop {
        if run.summary.pages >= max_pages {
            return Err(format!(
                "stopped after {max_pages} pages: the API kept paginating (raise api.max_pages to read further)"
            ));
        }
        // `created[gte]`, with the brackets encoded.
        let mut path = format!("/v1/events?limit={page_size}&created%5Bgte%5D={since}");
        if window.failed_only {
            path.push_str("&delivery_success=false");
        }
        if let Some(after) = &after {
            path.push_str("&starting_after=");
            path.push_str(&percent_encode(after));
        }
        let url = api.url(&path);
        let (page, _) = api.get_json(&url).await?;
        let garbage = |what: &str| format!("GET {url}: {what}; is api.base_url Stripe's API?");
        let data = page
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| garbage("the answer has no \"data\" list"))?;
        let has_more = page
            .get("has_more")
            .and_then(Value::as_bool)
            .ok_or_else(|| garbage("the answer has no \"has_more\""))?;
        let mut recovered = Vec::with_capacity(data.len());
        let mut last_id = None;
        for item in data {
            let id = item
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| garbage("an event in the list has no id"))?;
            last_id = Some(id.to_string());
            recovered.push(Recovered {
                headers: vec![Header {
                    name: "content-type".into(),
                    value: "application/json; charset=utf-8".into(),
                }],
                body: Bytes::from(item.to_string()),
                verification: format!("backfill: Stripe Events API ({})", api.authority()),
            });
        }
        run.summary.listed += recovered.len() as u64;
        let keys: Vec<String> = recovered.iter().map(|event| run.dedup_key(event)).collect();
        let mut missing: HashSet<String> = run.missing(keys.clone()).await?.into_iter().collect();
        // Stripe lists newest first; store oldest first so routes see
        // them in the order they happened.
        let mut new: Vec<Recovered> = recovered
            .into_iter()
            .zip(keys)
            .filter(|(_, key)| missing.remove(key))
            .map(|(event, _)| event)
            .collect();
        new.reverse();
        run.ingest(new).await?;
        run.page_done();
        if !has_more {
            return Ok(());
        }
        match last_id {
            None => return Err(garbage("the answer says has_more but the page is empty")),
            Some(id) if after.as_deref() == Some(id.as_str()) => {
                return Err(format!(
                    "GET {url}: pagination does not advance (the page ends at {id} again); stopped"
                ))
            }
            Some(id) => after = Some(id),
        }
    }
}
