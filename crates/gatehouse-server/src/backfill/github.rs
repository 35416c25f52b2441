//! GitHub: lists the hook's recent deliveries (`GET /{hook}/deliveries`,
//! newest first, `Link: rel="next"` pages), finds those whose GUID is not
//! stored, and either asks GitHub to redeliver them (`POST
//! /{hook}/deliveries/{id}/attempts`; they then arrive through the signed
//! webhook like any other) or, with `api.recover = "fetch"`, reads each
//! payload (`GET /{hook}/deliveries/{id}`) and stores it marked `backfill`.
//!
//! The dedup key is the delivery GUID (`X-GitHub-Delivery`), as for live
//! deliveries. A redelivery keeps its GUID, so GitHub lists it again under
//! the same one: each GUID is handled once per run.

use std::collections::HashSet;

use bytes::Bytes;
use serde_json::Value;

use gatehouse_core::{Header, UnixMillis};

use super::{ApiClient, GithubRecovery, Recovered, Run, Window};

/// One listed delivery.
struct Listed {
    id: u64,
    guid: String,
    event: Option<String>,
}

/// Runs a GitHub backfill of `hook` over `window`.
pub(crate) async fn run(
    run: &mut Run<'_>,
    api: &ApiClient,
    hook: &str,
    recover: GithubRecovery,
    window: Window,
    max_pages: u32,
    page_size: u32,
) -> Result<(), String> {
    let mut url = api.url(&format!("/{hook}/deliveries?per_page={page_size}"));
    let mut listed_guids = HashSet::new();
    loop {
        if run.summary.pages >= max_pages {
            return Err(format!(
                "stopped after {max_pages} pages: the API kept paginating (raise api.max_pages to read further)"
            ));
        }
        let (page, headers) = api.get_json(&url).await?;
        let garbage = |what: &str| format!("GET {url}: {what}; is api.base_url GitHub's API and api.hook right?");
        let items = page
            .as_array()
            .ok_or_else(|| garbage("the answer is not a list of deliveries"))?;
        let mut reached_window_start = false;
        let mut page_items = Vec::new();
        for item in items {
            let guid = item
                .get("guid")
                .and_then(Value::as_str)
                .filter(|guid| !guid.is_empty())
                .ok_or_else(|| garbage("a delivery has no guid"))?;
            let id = item
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| garbage("a delivery has no numeric id"))?;
            let delivered_at = item
                .get("delivered_at")
                .and_then(Value::as_str)
                .and_then(parse_time)
                .ok_or_else(|| garbage("a delivery has no valid delivered_at"))?;
            if delivered_at < window.since {
                // Newest first: everything after this is older still.
                reached_window_start = true;
                continue;
            }
            if listed_guids.insert(guid.to_string()) {
                run.summary.listed += 1;
            }
            let succeeded = item
                .get("status_code")
                .and_then(Value::as_u64)
                .is_some_and(|status| (200..300).contains(&status));
            if window.failed_only && succeeded {
                continue;
            }
            page_items.push(Listed {
                id,
                guid: guid.to_string(),
                event: item.get("event").and_then(Value::as_str).map(str::to_string),
            });
        }
        let missing: HashSet<String> = run
            .missing(page_items.iter().map(|item| item.guid.clone()).collect())
            .await?
            .into_iter()
            .collect();
        let mut handled = HashSet::new();
        let todo: Vec<Listed> = page_items
            .into_iter()
            .filter(|item| missing.contains(&item.guid) && handled.insert(item.guid.clone()))
            .collect();
        let mut fetched = Vec::new();
        for (index, item) in todo.iter().enumerate() {
            let result = match recover {
                GithubRecovery::Redeliver => api
                    .post(&api.url(&format!("/{hook}/deliveries/{}/attempts", item.id)))
                    .await
                    .map(|_| run.summary.redelivered += 1),
                GithubRecovery::Fetch => fetch(api, hook, item).await.map(|event| fetched.push(event)),
            };
            if let Err(message) = result {
                // This one and every one not reached were not recovered;
                // those fetched so far are still stored.
                run.summary.failed += (todo.len() - index) as u64;
                fetched.reverse();
                run.ingest(fetched).await?;
                return Err(message);
            }
        }
        // Listed newest first; store oldest first.
        fetched.reverse();
        run.ingest(fetched).await?;
        run.page_done();
        if reached_window_start {
            return Ok(());
        }
        let Some(next) = next_link(&headers) else {
            return Ok(());
        };
        if !api.same_origin(&next) {
            return Err(format!(
                "GET {url}: the next page link points away from {} ({next}); stopped",
                api.authority()
            ));
        }
        if next == url {
            return Err(format!(
                "GET {url}: pagination does not advance (the next page is this page); stopped"
            ));
        }
        url = next;
    }
}

/// Reads one delivery's payload and headers as GitHub sent them.
async fn fetch(api: &ApiClient, hook: &str, item: &Listed) -> Result<Recovered, String> {
    let url = api.url(&format!("/{hook}/deliveries/{}", item.id));
    let (delivery, _) = api.get_json(&url).await?;
    let request = delivery
        .get("request")
        .ok_or_else(|| format!("GET {url}: the delivery has no request"))?;
    let payload = request
        .get("payload")
        .filter(|payload| !payload.is_null())
        .ok_or_else(|| format!("GET {url}: the delivery has no payload"))?;
    let mut headers: Vec<Header> = request
        .get("headers")
        .and_then(Value::as_object)
        .map(|headers| {
            headers
                .iter()
                .filter_map(|(name, value)| {
                    let name = name.to_ascii_lowercase();
                    // The body is stored as JSON whatever the hook's content
                    // type was, and the signature was over other bytes.
                    let dropped = matches!(
                        name.as_str(),
                        "content-type" | "content-length" | "x-hub-signature" | "x-hub-signature-256"
                    );
                    (!dropped).then(|| {
                        value.as_str().map(|value| Header {
                            name,
                            value: value.to_string(),
                        })
                    })?
                })
                .collect()
        })
        .unwrap_or_default();
    headers.retain(|h| h.name != "x-github-delivery");
    headers.push(Header {
        name: "x-github-delivery".into(),
        value: item.guid.clone(),
    });
    if !headers.iter().any(|h| h.name == "x-github-event") {
        if let Some(event) = &item.event {
            headers.push(Header {
                name: "x-github-event".into(),
                value: event.clone(),
            });
        }
    }
    headers.push(Header {
        name: "content-type".into(),
        value: "application/json".into(),
    });
    Ok(Recovered {
        headers,
        body: Bytes::from(payload.to_string()),
        verification: format!("backfill: GitHub deliveries API ({})", api.authority()),
    })
}

/// `delivered_at` (RFC 3339) in milliseconds.
fn parse_time(text: &str) -> Option<UnixMillis> {
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    let since_epoch = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(UnixMillis(i64::try_from(since_epoch.as_millis()).ok()?))
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|link| {
            let (target, params) = link.split_once(';')?;
            let is_next = params
                .split(';')
                .any(|param| param.trim().replace(' ', "") == "rel=\"next\"");
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| target.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_and_times() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::LINK,
            http::HeaderValue::from_static(
                "<https://api.github.com/x?cursor=a>; rel=\"prev\", <https://api.github.com/x?cursor=b>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://api.github.com/x?cursor=b")
        );
        assert_eq!(next_link(&http::HeaderMap::new()), None);
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(UnixMillis(1000)));
        assert_eq!(parse_time("yesterday"), None);
    }
}
