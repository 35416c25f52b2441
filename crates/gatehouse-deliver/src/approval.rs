//! The approval gate: a route with `approval = true`, or an
//! `approval_when` jq program that is truthy for the event, creates its
//! deliveries as awaiting approval; an operator approves (the delivery
//! proceeds) or rejects (with a reason) them.
//!
//! The gate is decided when the delivery is created (at ingest, or on
//! replay), so the approval queue shows the rule that held each delivery
//! and nothing reaches a destination before a person said yes. It fails
//! closed: a body that is not JSON, or a program that errors, holds the
//! delivery rather than letting it through.

use std::sync::Arc;

use gatehouse_core::{DeliveryState, NewDelivery};

use crate::config::{ConfigIssue, RouteConfig};
use crate::jq::{Input, Program};

/// When a route's deliveries wait for a person.
#[derive(Debug)]
pub enum ApprovalGate {
    /// Every delivery (`approval = true`).
    Always,
    /// Deliveries of events for which the program's first output is truthy.
    When(Program),
}

/// The event a gate looks at: its body parsed once for every route that
/// needs it.
#[derive(Debug)]
pub struct GateInput<'a> {
    body: &'a [u8],
    parsed: Option<Result<Input, String>>,
}

impl<'a> GateInput<'a> {
    /// An event's raw body.
    pub fn new(body: &'a [u8]) -> Self {
        Self { body, parsed: None }
    }

    fn parsed(&mut self) -> &Result<Input, String> {
        let body = self.body;
        self.parsed.get_or_insert_with(|| Input::parse(body))
    }
}

impl ApprovalGate {
    /// The route's gate, if it has one; the error names the key at fault.
    pub fn from_config(route: &RouteConfig) -> Result<Option<Self>, ConfigIssue> {
        match (route.approval, &route.approval_when) {
            (true, Some(_)) => Err(ConfigIssue::new(
                "approval_when",
                "set either approval = true (hold every delivery) or approval_when (hold some), not both",
            )),
            (true, None) => Ok(Some(ApprovalGate::Always)),
            (false, Some(text)) => crate::jq::compile(text)
                .map(|program| Some(ApprovalGate::When(program)))
                .map_err(|message| ConfigIssue::new("approval_when", message)),
            (false, None) => Ok(None),
        }
    }

    /// Whether the gate needs the event's body (replay loads it only then).
    pub fn needs_body(&self) -> bool {
        matches!(self, ApprovalGate::When(_))
    }

    /// Why this event's delivery must wait, or `None` to let it through.
    pub fn holds(&self, input: &mut GateInput<'_>) -> Option<String> {
        match self {
            ApprovalGate::Always => Some("approval = true".into()),
            ApprovalGate::When(program) => match input.parsed() {
                Err(reason) => Some(format!(
                    "approval_when = {:?}; held because the body is not JSON: {reason}",
                    program.text()
                )),
                Ok(parsed) => match program.first(parsed) {
                    Ok(Some(output)) if output.is_truthy() => Some(format!("approval_when = {:?}", program.text())),
                    Ok(_) => None,
                    Err(error) => Some(format!(
                        "approval_when = {:?}; held because the program failed: {error}",
                        program.text()
                    )),
                },
            },
        }
    }

    /// A new delivery on `route` for this event: pending, or awaiting
    /// approval with the rule that held it.
    pub fn delivery(gate: Option<&Self>, route: Arc<str>, input: &mut GateInput<'_>) -> NewDelivery {
        let mut delivery = NewDelivery::pending(route);
        if let Some(reason) = gate.and_then(|gate| gate.holds(input)) {
            delivery.state = DeliveryState::AwaitingApproval;
            delivery.held_by = Some(reason);
        }
        delivery
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(extra: &str) -> RouteConfig {
        toml::from_str(&format!("name = \"r\"\nsource = \"s\"\ndestination = \"d\"\n{extra}")).expect("route")
    }

    fn decide(extra: &str, body: &str) -> NewDelivery {
        let gate = ApprovalGate::from_config(&route(extra)).expect("gate");
        ApprovalGate::delivery(gate.as_ref(), Arc::from("r"), &mut GateInput::new(body.as_bytes()))
    }

    #[test]
    fn no_gate_lets_everything_through() {
        let delivery = decide("", "{}");
        assert_eq!(delivery.state, DeliveryState::Pending);
        assert_eq!(delivery.held_by, None);
    }

    #[test]
    fn approval_true_holds_everything() {
        let delivery = decide("approval = true", "not even json");
        assert_eq!(delivery.state, DeliveryState::AwaitingApproval);
        assert_eq!(delivery.held_by.as_deref(), Some("approval = true"));
    }

    #[test]
    fn approval_when_holds_only_matching_events() {
        let rule = "approval_when = '.data.object.amount > 10000'";
        let big = decide(rule, r#"{"data":{"object":{"amount":25000}}}"#);
        assert_eq!(big.state, DeliveryState::AwaitingApproval);
        assert!(big
            .held_by
            .as_deref()
            .is_some_and(|r| r.contains(".data.object.amount > 10000")));
        let small = decide(rule, r#"{"data":{"object":{"amount":500}}}"#);
        assert_eq!(small.state, DeliveryState::Pending);
    }

    #[test]
    fn approval_when_fails_closed() {
        let rule = "approval_when = '.data.object.amount > 10000'";
        let not_json = decide(rule, "amount=25000");
        assert_eq!(not_json.state, DeliveryState::AwaitingApproval);
        assert!(not_json.held_by.as_deref().is_some_and(|r| r.contains("not JSON")));
        let failing = decide("approval_when = '.a | error(\"boom\")'", r#"{"a":1}"#);
        assert_eq!(failing.state, DeliveryState::AwaitingApproval);
        assert!(failing.held_by.as_deref().is_some_and(|r| r.contains("failed")));
    }

    #[test]
    fn config_errors_name_the_key() {
        let both = ApprovalGate::from_config(&route("approval = true\napproval_when = '.x'")).expect_err("both");
        assert_eq!(both.key, "approval_when");
        let bad = ApprovalGate::from_config(&route("approval_when = '.x |'")).expect_err("bad jq");
        assert_eq!(bad.key, "approval_when");
    }
}
