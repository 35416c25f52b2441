//! Header-value parsing paths: a request built from fuzz input (names from
//! every header the providers read, values arbitrary bytes `HeaderValue`
//! accepts, an arbitrary clock, URL, method and body) is given to
//! `unsigned_handshake`, `verify` and `identify` of every provider
//! `provider_names()` returns. Nothing may panic; see
//! `gatehouse_fuzz::exercise` for the invariants checked on the way.
#![no_main]

use gatehouse_fuzz::{exercise, fleet, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data, false);
    let request = input.request();
    for member in &fleet().members {
        exercise(member, &request, input.now);
    }
});
