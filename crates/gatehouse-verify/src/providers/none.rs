//! `none`: no verification at all. Only allowed with `insecure = true` in the
//! source's `verify` table, and logged loudly at start-up; meant for local
//! experiments and senders that cannot sign.

use gatehouse_core::UnixMillis;

use crate::util::json_id_and_type;
use crate::{Identity, InboundRequest, Provider, Rejection, Verified};

/// Accepts every request. Built only when the source says `insecure = true`.
#[derive(Debug)]
pub struct NoVerification;

impl Provider for NoVerification {
    fn name(&self) -> &'static str {
        "none"
    }

    fn verify(&self, _request: &InboundRequest<'_>, _now: UnixMillis) -> Result<Verified, Rejection> {
        Ok(Verified::unverified_by_configuration())
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        let (id, event_type) = json_id_and_type(request.body, "id", "type");
        Identity::event(id, event_type)
    }
}
