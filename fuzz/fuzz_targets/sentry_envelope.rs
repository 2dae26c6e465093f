//! Fuzzes Sentry envelope framing. See `cri.rs` for how to run.
//!
//! Checked properties: parsing never panics; every payload is a slice of the
//! input; an accepted envelope written back in canonical form (every item
//! with its length) parses to the same headers and payloads.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::sentry::envelope::{parse, serialize};

fuzz_target!(|data: &[u8]| {
    let Ok(env) = parse(data, 64) else {
        return;
    };
    let range = data.as_ptr_range();
    for item in &env.items {
        let p = item.payload.as_ptr_range();
        assert!(item.payload.is_empty() || (range.start <= p.start && p.end <= range.end));
    }
    let items: Vec<_> = env
        .items
        .iter()
        .map(|i| (i.header.clone(), i.payload))
        .collect();
    let again = serialize(&env.header, &items);
    let back = match parse(&again, 64) {
        Ok(b) => b,
        Err(e) => panic!("canonical form rejected: {e}"),
    };
    assert_eq!(back.header, env.header);
    assert_eq!(back.items.len(), env.items.len());
    for (a, b) in back.items.iter().zip(&env.items) {
        assert_eq!(a.payload, b.payload);
        assert_eq!(a.kind, b.kind);
    }
});
