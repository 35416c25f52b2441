//! Turning stored values into the strings pages show: times, durations,
//! bodies, links with query strings. Templates escape whatever these
//! return; nothing here produces markup.

use std::time::{Duration, UNIX_EPOCH};

use gatehouse_core::UnixMillis;

/// A time as `2026-11-27 09:00:11Z` (UTC, to the second).
pub fn time(at: UnixMillis) -> String {
    let Ok(millis) = u64::try_from(at.0) else {
        return "—".into();
    };
    let system = UNIX_EPOCH + Duration::from_millis(millis);
    humantime::format_rfc3339_seconds(system)
        .to_string()
        .replacen('T', " ", 1)
}

/// An optional time, or a dash.
pub fn time_opt(at: Option<UnixMillis>) -> String {
    at.map(time).unwrap_or_else(|| "—".into())
}

/// A duration, roughly: `850 ms`, `12 s`, `5 min`, `3 h`, `2 d`.
pub fn span(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => format!("{} ms", duration.as_millis()),
        1..=119 => format!("{secs} s"),
        120..=7_199 => format!("{} min", secs / 60),
        7_200..=172_799 => format!("{} h", secs / 3_600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// Parses a time typed into a search form: `2026-11-27T09:00` (what a
/// `datetime-local` input sends), with or without seconds, `T` or a space,
/// taken as UTC.
pub fn parse_time(text: &str) -> Option<UnixMillis> {
    let text = text.trim().trim_end_matches(['Z', 'z']);
    let text = if text.len() == 16 {
        format!("{text}:00")
    } else {
        text.to_string()
    };
    let system = humantime::parse_rfc3339_weak(&text).ok()?;
    let millis = system.duration_since(UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(millis).ok().map(UnixMillis)
}

/// A body for reading: pretty-printed when it is JSON, else the text
/// (invalid UTF-8 replaced). Capped so a huge payload cannot stall the page.
pub fn body(bytes: &[u8]) -> (String, bool) {
    const MAX: usize = 256 * 1024;
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if let Ok(pretty) = serde_json::to_string_pretty(&value) {
            return (cap(pretty, MAX), true);
        }
    }
    (cap(String::from_utf8_lossy(bytes).into_owned(), MAX), false)
}

fn cap(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n… (cut: the body is larger than the console shows)");
    }
    text
}

/// A console link with a query string built from non-empty pairs.
pub fn link(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (name, value) in pairs {
        if !value.is_empty() {
            query.append_pair(name, value);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", query.finish())
    } else {
        path.to_string()
    }
}

/// Percent-encodes one path segment (route and user names).
pub fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_times() {
        let at = UnixMillis(1_795_770_011_000);
        assert_eq!(time(at), "2026-11-27 09:00:11Z");
        assert_eq!(parse_time("2026-11-27T09:00"), Some(UnixMillis(1_795_770_000_000)));
        assert_eq!(parse_time("2026-11-27 09:00:11"), Some(at));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn bodies_are_pretty_when_json() {
        let (text, json) = body(br#"{"a":[1,2],"b":"<x>"}"#);
        assert!(json);
        assert!(text.contains("\n  \"a\": ["));
        let (text, json) = body(b"a=1&b=\xff");
        assert!(!json);
        assert_eq!(text, "a=1&b=\u{fffd}");
    }

    #[test]
    fn links_skip_empty_values_and_encode() {
        assert_eq!(
            link("/console/events", &[("source", ""), ("type", "a b&c")]),
            "/console/events?type=a+b%26c"
        );
        assert_eq!(link("/console/events", &[]), "/console/events");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn spans_read_well() {
        assert_eq!(span(Duration::from_millis(850)), "850 ms");
        assert_eq!(span(Duration::from_secs(90)), "90 s");
        assert_eq!(span(Duration::from_secs(600)), "10 min");
        assert_eq!(span(Duration::from_secs(4 * 86_400)), "4 d");
    }
}
