//! Fuzzes what happens to a Sentry event before it leaves the node. See
//! `cri.rs` for how to run.
//!
//! The input is read as a JSON object (the endpoint's parser, with its
//! recursion limit); filter, normalise and scrub must not panic, the event
//! must keep a valid id, and normalising and scrubbing the result again
//! must change nothing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::sentry::filter::{FilterOptions, Filters};
use mecha_parsers::sentry::normalize::{NormalizeContext, normalize, user_key};
use mecha_parsers::sentry::scrub::{ScrubOptions, scrub};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(mut event) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    let opts = FilterOptions {
        localhost: true,
        browser_extensions: true,
        error_messages: vec!["*timeout*".into(), "TypeError: ?*".into()],
    };
    let Ok(filters) = Filters::new(&opts) else {
        unreachable!("the globs above are valid")
    };
    let _ = filters.check(&event);
    let cx = NormalizeContext {
        received_ns: 1_764_578_735_000_000_000,
        sent_at_ns: data.first().map(|b| 1_764_578_735_000_000_000 - i64::from(*b) * 60_000_000_000),
        client_ip: Some(std::net::IpAddr::from([203, 0, 113, 7])),
        fallback_event_id: "0123456789abcdef0123456789abcdef".into(),
        ..NormalizeContext::default()
    };
    let scrub_opts = ScrubOptions {
        scrub_ip: data.len() % 2 == 0,
        ..ScrubOptions::default()
    };
    // As the endpoint does: the user is read as scrubbing left them.
    let mut first = normalize(&mut event, &cx);
    assert_eq!(first.event_id.len(), 32);
    scrub(&mut event, &scrub_opts);
    first.user_key = user_key(&event);
    let once = event.clone();
    let mut second = normalize(&mut event, &cx);
    assert_eq!(scrub(&mut event, &scrub_opts), 0);
    second.user_key = user_key(&event);
    assert_eq!(event, once);
    assert_eq!(first, second);
});
