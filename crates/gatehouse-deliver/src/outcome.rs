//! Judging an attempt: *whether* to retry ([`classify`], one exhaustive
//! match over everything an attempt can end with) is separate from *when*
//! ([`decide`], which asks the route's [`RetryPolicy`]).

use std::fmt;
use std::time::Duration;

use gatehouse_core::{AttemptOutcome, RetryPolicy, UnixMillis};

/// Which jq program of a route was running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JqStage {
    /// The route's `filter`.
    Filter,
    /// The route's `transform`.
    Transform,
}

impl fmt::Display for JqStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JqStage::Filter => "filter",
            JqStage::Transform => "transform",
        })
    }
}

/// How an attempt ended, as observed, before anyone judged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// An HTTP destination answered with a status.
    Response {
        /// The status code.
        status: u16,
        /// The answer's `Retry-After`, already turned into a wait.
        retry_after: Option<Duration>,
        /// The body was longer than the excerpt kept (not a failure: only
        /// the status counts).
        body_truncated: bool,
    },
    /// No connection, or it broke before a status arrived.
    ConnectionFailed(String),
    /// No answer (status and excerpt) within the destination's timeout.
    TimedOut(Duration),
    /// The command ran and exited with this code.
    Exited(i32),
    /// The command was ended by a signal it did not get from gatehouse.
    Signalled(Option<i32>),
    /// The command did not finish within the timeout and was killed.
    ExecTimedOut(Duration),
    /// The command could not be started (not found, not executable…).
    SpawnFailed(String),
    /// The route's jq program failed on this event (or the transform
    /// yielded nothing).
    Jq {
        /// Which program.
        stage: JqStage,
        /// jq's message.
        message: String,
    },
    /// The route has a filter or transform but the body is not JSON.
    NotJson {
        /// Which program could not run.
        stage: JqStage,
    },
    /// The filter excluded the event: its first output was `false` or
    /// `null`, or it had none.
    FilteredOut {
        /// What the filter yielded, in words.
        yielded: &'static str,
    },
    /// The delivery's route is not in this process's config (removed, or
    /// added on a newer gatehouse during a rolling deploy).
    RouteNotConfigured,
    /// The route's enrichment fetch failed; nothing was sent.
    Enrichment(crate::enrich::EnrichFailure),
    /// Retention removed the event's body (a retry or replay of a pruned
    /// event): sending an empty body would be worse than not sending.
    EventPruned,
}

/// What an attempt's result calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Succeeded,
    /// Not delivered, by design (the filter).
    Skipped,
    /// Failed; may succeed later. A destination's own wait request is kept.
    Retry {
        /// The destination asked for at least this wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Failed in a way that trying again cannot fix.
    Dead,
}

/// The part of a route's retry config that decides *whether*.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryRules {
    /// Retry 3xx and 4xx answers other than 408 and 429 too.
    pub retry_client_errors: bool,
}

/// Classifies an attempt's result: a verdict and, for anything but a
/// success, the reason stored with the attempt.
pub fn classify(result: &AttemptResult, rules: RetryRules) -> (Verdict, Option<String>) {
    let retry = |reason: String| (Verdict::Retry { retry_after: None }, Some(reason));
    match result {
        AttemptResult::Response {
            status,
            retry_after,
            // A long body is fine: only the first 4 KiB are kept, and the
            // status alone decides.
            body_truncated: _,
        } => classify_status(*status, *retry_after, rules),
        AttemptResult::ConnectionFailed(message) => retry(format!("connection failed: {message}")),
        AttemptResult::TimedOut(limit) => retry(format!("no answer within {}", seconds(*limit))),
        AttemptResult::Exited(0) => (Verdict::Succeeded, None),
        AttemptResult::Exited(code) => retry(format!("the command exited with status {code}")),
        AttemptResult::Signalled(Some(signal)) => retry(format!("the command was killed by signal {signal}")),
        AttemptResult::Signalled(None) => retry("the command ended without an exit status".into()),
        AttemptResult::ExecTimedOut(limit) => retry(format!(
            "the command did not finish within {} and was killed",
            seconds(*limit)
        )),
        AttemptResult::SpawnFailed(message) => retry(format!("cannot start the command: {message}")),
        AttemptResult::Jq { stage, message } => (Verdict::Dead, Some(format!("jq {stage} error: {message}"))),
        AttemptResult::NotJson { stage } => (
            Verdict::Dead,
            Some(format!("the body is not JSON, so the route's jq {stage} cannot run")),
        ),
        AttemptResult::FilteredOut { yielded } => (
            Verdict::Skipped,
            Some(format!("skipped: the route's filter yielded {yielded}")),
        ),
        AttemptResult::RouteNotConfigured => retry("the route is not configured on this gatehouse".into()),
        AttemptResult::EventPruned => (
            Verdict::Dead,
            Some("the event's body was removed by retention, so there is nothing to send".into()),
        ),
        AttemptResult::Enrichment(failure) => {
            let (verdict, reason) = failure.verdict(rules);
            (verdict, Some(reason))
        }
    }
}

fn classify_status(status: u16, retry_after: Option<Duration>, rules: RetryRules) -> (Verdict, Option<String>) {
    let name = crate::destination::http::status_text(status);
    let waited = match retry_after {
        Some(wait) => format!("{name} (Retry-After {})", seconds(wait)),
        None => name.clone(),
    };
    let retry = (Verdict::Retry { retry_after }, Some(waited));
    let client_error = |why: &str| {
        if rules.retry_client_errors {
            (Verdict::Retry { retry_after }, Some(name.clone()))
        } else {
            (Verdict::Dead, Some(format!("{name}: {why}")))
        }
    };
    match status {
        200..=299 => (Verdict::Succeeded, None),
        408 | 429 | 500..=599 => retry,
        300..=399 => client_error("redirects are not followed"),
        400..=499 => client_error("the destination refused the request (client errors are not retried)"),
        0..=199 | 600..=u16::MAX => (Verdict::Dead, Some(format!("{name}: not a final HTTP status"))),
    }
}

/// `1.5s`, `30s`, `2m`: a short human duration.
fn seconds(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if duration.subsec_millis() == 0 {
        format!("{}s", millis / 1000)
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

/// What to record for an attempt: its outcome, when to try again, and the
/// reason (the error text stored with the attempt and the delivery).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// How the attempt ended.
    pub outcome: AttemptOutcome,
    /// For a retry: when.
    pub next_attempt_at: Option<UnixMillis>,
    /// Why it did not succeed.
    pub reason: Option<String>,
}

/// Turns a verdict into what is recorded: *when* to retry comes from
/// `policy`, given `attempts_made` (this one included) and `random`
/// uniform in `[0, 1)`; a retry past the last attempt is dead.
pub fn decide(
    verdict: Verdict,
    reason: Option<String>,
    attempts_made: u32,
    policy: &RetryPolicy,
    random: f64,
    now: UnixMillis,
) -> Decision {
    match verdict {
        Verdict::Succeeded => Decision {
            outcome: AttemptOutcome::Succeeded,
            next_attempt_at: None,
            reason,
        },
        Verdict::Skipped => Decision {
            outcome: AttemptOutcome::Skipped,
            next_attempt_at: None,
            reason,
        },
        Verdict::Dead => Decision {
            outcome: AttemptOutcome::Dead,
            next_attempt_at: None,
            reason,
        },
        Verdict::Retry { retry_after } => match policy.next_delay(attempts_made, random, retry_after) {
            Some(delay) => Decision {
                outcome: AttemptOutcome::Retry,
                next_attempt_at: Some(UnixMillis(
                    now.0
                        .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                )),
                reason,
            },
            None => Decision {
                outcome: AttemptOutcome::Dead,
                next_attempt_at: None,
                reason: Some(format!(
                    "gave up after {attempts_made} attempt{}: {}",
                    if attempts_made == 1 { "" } else { "s" },
                    reason.as_deref().unwrap_or("failed")
                )),
            },
        },
    }
}

/// A `Retry-After` header value as a wait: delay-seconds, or an HTTP date
/// (a date in the past means no wait). `None` for anything else.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: RetryRules = RetryRules {
        retry_client_errors: false,
    };
    const LENIENT: RetryRules = RetryRules {
        retry_client_errors: true,
    };

    fn response(status: u16) -> AttemptResult {
        AttemptResult::Response {
            status,
            retry_after: None,
            body_truncated: false,
        }
    }

    fn verdict(result: AttemptResult, rules: RetryRules) -> Verdict {
        classify(&result, rules).0
    }

    const RETRY: Verdict = Verdict::Retry { retry_after: None };

    #[test]
    fn http_status_classes() {
        for status in [200, 201, 204, 299] {
            assert_eq!(classify(&response(status), STRICT), (Verdict::Succeeded, None));
        }
        for status in [408, 429, 500, 502, 503, 599] {
            assert_eq!(verdict(response(status), STRICT), RETRY, "{status}");
        }
        for status in [400, 401, 403, 404, 409, 410, 422, 499, 301, 302, 307, 308] {
            assert_eq!(verdict(response(status), STRICT), Verdict::Dead, "{status}");
            assert_eq!(
                verdict(response(status), LENIENT),
                RETRY,
                "{status} with retry_client_errors"
            );
        }
        for status in [100, 101, 600, 999] {
            assert_eq!(verdict(response(status), LENIENT), Verdict::Dead, "{status}");
        }
    }

    #[test]
    fn reasons_name_the_status_and_why() {
        let (_, reason) = classify(&response(404), STRICT);
        let reason = reason.expect("reason");
        assert!(reason.starts_with("HTTP 404 Not Found: "), "{reason}");
        let (_, reason) = classify(&response(302), STRICT);
        assert!(reason.expect("reason").contains("redirects are not followed"));
        let (_, reason) = classify(&response(503), STRICT);
        assert_eq!(reason.as_deref(), Some("HTTP 503 Service Unavailable"));
    }

    #[test]
    fn retry_after_is_carried_and_a_long_body_is_fine() {
        let wait = Some(Duration::from_secs(7));
        let result = AttemptResult::Response {
            status: 429,
            retry_after: wait,
            body_truncated: true,
        };
        let (verdict, reason) = classify(&result, STRICT);
        assert_eq!(verdict, Verdict::Retry { retry_after: wait });
        assert_eq!(reason.as_deref(), Some("HTTP 429 Too Many Requests (Retry-After 7s)"));
        let ok = AttemptResult::Response {
            status: 200,
            retry_after: None,
            body_truncated: true,
        };
        assert_eq!(classify(&ok, STRICT), (Verdict::Succeeded, None));
    }

    #[test]
    fn transport_exec_and_jq_results() {
        assert_eq!(
            verdict(AttemptResult::ConnectionFailed("refused".into()), STRICT),
            RETRY
        );
        assert_eq!(verdict(AttemptResult::TimedOut(Duration::from_secs(30)), STRICT), RETRY);
        assert_eq!(classify(&AttemptResult::Exited(0), STRICT), (Verdict::Succeeded, None));
        assert_eq!(verdict(AttemptResult::Exited(1), STRICT), RETRY);
        assert_eq!(verdict(AttemptResult::Signalled(Some(9)), STRICT), RETRY);
        assert_eq!(verdict(AttemptResult::Signalled(None), STRICT), RETRY);
        assert_eq!(
            verdict(AttemptResult::ExecTimedOut(Duration::from_millis(1500)), STRICT),
            RETRY
        );
        assert_eq!(verdict(AttemptResult::SpawnFailed("not found".into()), STRICT), RETRY);
        assert_eq!(verdict(AttemptResult::RouteNotConfigured, STRICT), RETRY);
        assert_eq!(verdict(AttemptResult::EventPruned, STRICT), Verdict::Dead);
        let jq = AttemptResult::Jq {
            stage: JqStage::Filter,
            message: "cannot index string".into(),
        };
        assert_eq!(
            classify(&jq, LENIENT),
            (Verdict::Dead, Some("jq filter error: cannot index string".into()))
        );
        let not_json = AttemptResult::NotJson {
            stage: JqStage::Transform,
        };
        let (verdict_, reason) = classify(&not_json, LENIENT);
        assert_eq!(verdict_, Verdict::Dead);
        assert!(reason.expect("reason").contains("not JSON"));
        let skipped = AttemptResult::FilteredOut { yielded: "false" };
        assert_eq!(verdict(skipped, STRICT), Verdict::Skipped);
        let (_, reason) = classify(&AttemptResult::ExecTimedOut(Duration::from_millis(1500)), STRICT);
        assert!(reason.expect("reason").contains("1.5s"));
    }

    #[test]
    fn decide_schedules_retries_and_gives_up() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base: Duration::from_secs(10),
            cap: Duration::from_secs(60),
        };
        let now = UnixMillis(1_000_000);
        let retry = decide(RETRY, Some("HTTP 500".into()), 1, &policy, 0.5, now);
        assert_eq!(retry.outcome, AttemptOutcome::Retry);
        assert_eq!(retry.next_attempt_at, Some(UnixMillis(1_005_000)));
        assert_eq!(retry.reason.as_deref(), Some("HTTP 500"));

        let asked = Verdict::Retry {
            retry_after: Some(Duration::from_secs(40)),
        };
        let honoured = decide(asked, None, 1, &policy, 0.0, now);
        assert_eq!(
            honoured.next_attempt_at,
            Some(UnixMillis(1_040_000)),
            "Retry-After beats jitter"
        );

        let last = decide(RETRY, Some("HTTP 500".into()), 3, &policy, 0.5, now);
        assert_eq!(last.outcome, AttemptOutcome::Dead);
        assert_eq!(last.next_attempt_at, None);
        assert_eq!(last.reason.as_deref(), Some("gave up after 3 attempts: HTTP 500"));

        let done = decide(Verdict::Succeeded, None, 3, &policy, 0.5, now);
        assert_eq!((done.outcome, done.next_attempt_at), (AttemptOutcome::Succeeded, None));
        let dead = decide(Verdict::Dead, Some("HTTP 400".into()), 1, &policy, 0.5, now);
        assert_eq!(dead.outcome, AttemptOutcome::Dead);
        let skipped = decide(Verdict::Skipped, Some("filtered".into()), 1, &policy, 0.5, now);
        assert_eq!(skipped.outcome, AttemptOutcome::Skipped);

        let one = RetryPolicy {
            max_attempts: 1,
            ..policy
        };
        let reason = decide(RETRY, None, 1, &one, 0.5, now).reason.expect("reason");
        assert_eq!(reason, "gave up after 1 attempt: failed");
    }

    #[test]
    fn retry_after_values() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
