//! Fuzzes Sentry envelope framing. See `cri.rs` for how to run.
//!
//! Checked properties: parsing never panics; every payload is a slice of the
//! input; an accepted envelope written back in canonical form (every item
//! with its length) parses to the same header keys, item types and
//! payloads. Header values are compared by key only: serde_json may read a
//! float it wrote back one ulp apart, which is not framing's business.

#![no_main]

use std::collections::BTreeSet;

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
    assert!(back.header.keys().eq(env.header.keys()));
    assert_eq!(back.items.len(), env.items.len());
    for (a, b) in back.items.iter().zip(&env.items) {
        assert_eq!(a.payload, b.payload);
        assert_eq!(a.kind, b.kind);
        // The canonical form adds `length` where it was missing.
        let mut want: BTreeSet<&str> = b.header.keys().map(String::as_str).collect();
        want.insert("length");
        let got: BTreeSet<&str> = a.header.keys().map(String::as_str).collect();
        assert_eq!(got, want);
    }
});
