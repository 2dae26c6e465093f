//! Fuzzes the timestamp readers every codec shares (`time.rs`): RFC 3339,
//! epoch numbers of guessed unit and clocks. See `cri.rs` for how to run.
//!
//! The readers are crate-private, so their source is compiled into this
//! target as it stands in the parsers crate. Checked against chrono: every
//! canonical RFC 3339 timestamp chrono reads (and that fits in nanoseconds)
//! is read to the same instant, and nothing is read that chrono disagrees
//! with; the lenient reader accepts whatever the strict one does, with the
//! same result; an epoch of a positive number is never negative.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../parsers/src/time.rs"]
mod time;

fuzz_target!(|data: &[u8]| {
    let strict = time::parse_rfc3339(data, false);
    let lenient = time::parse_rfc3339(data, true);
    if strict.is_some() {
        assert_eq!(lenient, strict);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        against_chrono(text, strict);
        let any = time::parse_any_text(text);
        if let Some(ns) = any {
            let t = text.trim();
            assert!(
                time::parse_rfc3339(t.as_bytes(), true) == Some(ns)
                    || time::parse_epoch_text(t) == Some(ns)
            );
        }
        if let Some(ns) = time::parse_epoch_text(text) {
            // `0.0000000001` is positive and rounds to 0 ns.
            assert!(ns >= 0);
        }
    }
    if let Some((h, m, s, n)) = time::parse_clock_exact(data) {
        assert!(h < 100 && m < 100 && s < 100 && n < 1_000_000_000);
    }
    if let Some(bytes) = data.first_chunk::<8>() {
        let i = i64::from_le_bytes(*bytes);
        if let Some(ns) = time::epoch_int_to_nanos(i) {
            assert!(i > 0 && ns >= i);
        }
        let f = f64::from_le_bytes(*bytes);
        if let Some(ns) = time::epoch_to_nanos(f) {
            assert!(f > 0.0 && ns >= 0);
        }
    }
});

/// Compares the strict reader with chrono's RFC 3339 parser on the forms both
/// define the same way. Ours is wider in two ways (a `,` before the fraction,
/// an offset without `:`) and narrower in one: chrono also takes a space
/// between date and time, which CRI and docker never write.
fn against_chrono(text: &str, ours: Option<i64>) {
    let theirs = chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt());
    let spaced = text.as_bytes().get(10) == Some(&b' ');
    if spaced {
        assert_eq!(ours, None, "{text:?}");
        return;
    }
    let canonical = !text.contains(',') && offset_has_colon(text);
    if canonical {
        assert_eq!(ours, theirs, "{text:?}");
    } else if let Some(ns) = theirs {
        assert_eq!(ours, Some(ns), "{text:?}");
    }
}

/// Whether the text ends in `Z`/`z` or a `±hh:mm` offset.
fn offset_has_colon(text: &str) -> bool {
    let b = text.as_bytes();
    matches!(b.last(), Some(b'Z' | b'z')) || b.len() >= 6 && b[b.len() - 3] == b':'
}
