//! Message normalisation for grouping: the first two non-empty lines of a
//! message, with event-specific values (numbers, hex, UUIDs, IPs, emails,
//! URLs, dates, ...) replaced by `<placeholder>`s, so that `charge 3 failed`
//! and `charge 17 failed` group together the way Sentry's parameterisation
//! does. Pure functions of the text; must not look at anything else.
//!
//! The patterns follow the kinds, order and placeholder names of Sentry's
//! parameterizer (`sentry/grouping/parameterization.py`), rewritten for the
//! `regex` crate, which has no look-around: the few look-arounds become checks
//! on the match in [`replacement`].

use std::sync::LazyLock;

use regex::{Captures, Regex};

/// Kinds of values, in the order they are tried at each position (the first
/// that matches wins, as in one alternation); each becomes `<kind>`.
const KINDS: [(&str, &str); 17] = [
    (
        "email",
        r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*",
    ),
    ("url", r"\b(?:wss?|https?|ftp)://[^\s/$.?#].[^\s]*"),
    (
        "hostname",
        r"(?i:\b(?:[a-z0-9\-]{1,63}\.)+?(?:com|net|org|jp|de|uk|fr|br|it|ru|es|me|gov|pl|ca|au|cn|co|in|nl|edu|info|eu|ch|id|at|kr|cz|mx|be|tv|se|tr|tw|al|ua|ir|vn|cl|sk|ly|cc|to|no|fi|us|pt|dk|ar|hu|tk|gr|il|news|ro|my|biz|ie|za|nz|sg|ee|th|io|xyz|pe|bg|hk|rs|lt|link|ph|club|si|site|mobi|by|cat|wiki|la|ga|xxx|cf|hr|ng|jobs|online|kz|ug|gq|ae|is|lv|pro|fm|tips|ms|sa|app)\b)",
    ),
    (
        "ip",
        // IPv6 (full, compressed, IPv4-mapped) then IPv4; the neighbours of an
        // IPv6 match are checked in `replacement` (Sentry uses look-arounds so
        // that `Foo::bar()` is not an address).
        r"(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|(?:[0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,5}|::(?:ffff(?::0{1,4})?:)?(?:(?:25[0-5]|(?:2[0-4]|1?[0-9])?[0-9])\.){3}(?:25[0-5]|(?:2[0-4]|1?[0-9])?[0-9])|\b(?:(?:25[0-5]|(?:2[0-4]|1?[0-9])?[0-9])\.){3}(?:25[0-5]|(?:2[0-4]|1?[0-9])?[0-9])\b",
    ),
    (
        "traceparent",
        r"\b00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]\b|\b1-[0-9a-f]{8}-[0-9a-f]{24}\b",
    ),
    (
        "uuid",
        r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
    ),
    ("sha1", r"\b[0-9a-fA-F]{40}\b"),
    ("md5", r"\b[0-9a-fA-F]{32}\b"),
    (
        "date",
        concat!(
            // RFC 822/1123
            r"(?:Sun|Mon|Tue|Wed|Thu|Fri|Sat),\s\d{1,2}\s(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s\d{2,4}\s\d{1,2}:\d{1,2}(?::\d{1,2})?\s(?:[-+]\d{2}[0-5]\d|UT|GMT|[ECMP][SD]T|[A-IK-Z])",
            // "Mon Jan 02, 1999", "Jan 02, 1999"
            r"|(?:(?:Sun|Mon|Tue|Wed|Thu|Fri|Sat)\s)?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s[0-3]\d,\s\d{2,4}",
            // RFC 850
            r"|(?:Sun|Sunday|Mon|Monday|Tue|Tuesday|Wed|Wednesday|Thu|Thursday|Fri|Friday|Sat|Saturday),\s\d{2}-(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-\d{2}\s\d{2}:\d{2}:\d{2}\s(?:UT|GMT|[ECMP][SD]T|[A-IK-Z])",
            // RFC 3339
            r"|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z?(?:[+-]?\d{2}:\d{2})?",
            // JavaScript's Date#toString
            r"|(?:Sun|Mon|Tue|Wed|Thu|Fri|Sat)\s(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s\d{2}\s\d{4}\s\d{2}:\d{2}:\d{2}\sGMT[+-]\d{4}(?:\s\([^)]+\))?",
            // date-times with and without an offset
            r"|\d{4}-?[01]\d-?[0-3]\d[\sT][0-2]\d:?[0-5]\d(?::?[0-5]\d(?:\.\d+)?)?(?:[+-][0-2]\d:?[0-5]\d|Z)?",
            // clock times, 12 and 24 hours
            r"|\b(?:[1-9]|1[0-2]):[0-5]\d(?::[0-5]\d)?\b(?:\s?[aApP][mM])?",
            r"|\b(?:0?\d|1\d|2[0-3]):[0-5]\d(?::[0-5]\d)?\b",
            // plain dates and times
            r"|\d{4}-[01]\d-[0-3]\d|[0-2]\d:[0-5]\d:[0-5]\d",
            // older formats
            r"|\b(?:(?:Sun|Mon|Tue|Wed|Thu|Fri|Sat)\s+)?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{1,2}\s+\d{2}:\d{2}:\d{2}\s+\d{4}",
            r"|datetime\.datetime\(.*?\)",
        ),
    ),
    ("duration", r"\b\d+ms|\d+(?:\.\d+)?s\b"),
    ("swift_txn_id", r"\btx[0-9a-f]{21}-[0-9a-f]{10}\S*"),
    // Unprefixed hex must hold a digit: checked in `replacement`.
    (
        "hex",
        r"\b0[xX][0-9a-fA-F]+\b|\b[0-9a-f]{8,128}\b|\b[0-9A-F]{8,128}\b",
    ),
    // Seven lowercase hex digits with a digit and a letter: checked in `replacement`.
    ("git_sha", r"\b[0-9a-f]{7}\b"),
    ("float", r"-\d+\.\d+\b|\b\d+\.\d+\b"),
    // A dash is a minus sign only when no word character precedes it:
    // checked in `replacement`.
    ("int", r"-\d{1,7}\b|\b\d{1,7}\b"),
    // The value half of `key='...'` / `key="..."` only.
    ("quoted_str", r#"='[^']+'|="[^"]+""#),
    ("bool", r"=(?:True|true|False|false)\b"),
];

/// All kinds as one alternation, each kind a named group.
static COMBINED: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let pattern = KINDS
        .iter()
        .map(|(name, p)| format!("(?P<{name}>{p})"))
        .collect::<Vec<_>>()
        .join("|");
    Regex::new(&pattern).ok()
});

/// Message normalisation as Sentry applies it before grouping by a message or
/// an exception value: at most the first two non-empty lines (`...` appended
/// when anything was cut), then every parameter replaced by its placeholder.
pub fn normalize_for_grouping(message: &str) -> String {
    let mut lines = message
        .split(is_line_break)
        .filter(|l| !l.trim().is_empty());
    let mut trimmed = String::with_capacity(message.len().min(1024));
    for (i, line) in lines.by_ref().take(2).enumerate() {
        if i > 0 {
            trimmed.push('\n');
        }
        trimmed.push_str(line);
    }
    if trimmed != message {
        trimmed.push_str("...");
    }
    parameterize(&trimmed)
}

/// Replaces every parameter in `text` by its placeholder (`<int>`, `<uuid>`, ...).
pub fn parameterize(text: &str) -> String {
    match COMBINED.as_ref() {
        Some(re) => re
            .replace_all(text, |c: &Captures| replacement(c, text))
            .into_owned(),
        // Unreachable (the patterns are constants, compiled in every test), but
        // a message left as is still groups, just less well.
        None => text.to_string(),
    }
}

/// The placeholder for one match, or the matched text back where a
/// look-around of Sentry's patterns would have refused it.
fn replacement(c: &Captures, text: &str) -> String {
    let Some((name, m)) = KINDS
        .iter()
        .find_map(|(name, _)| c.name(name).map(|m| (*name, m)))
    else {
        return String::new();
    };
    let s = m.as_str();
    let before = text.get(..m.start()).and_then(|t| t.chars().next_back());
    let after = text.get(m.end()..).and_then(|t| t.chars().next());
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    match name {
        "ip" if s.contains(':') && (word(before) || word(after)) => s.to_string(),
        "hex" if !s.starts_with("0x") && !s.starts_with("0X") => {
            if s.bytes().any(|b| b.is_ascii_digit()) {
                "<hex>".to_string()
            } else {
                s.to_string()
            }
        }
        "git_sha" => {
            let digit = s.bytes().any(|b| b.is_ascii_digit());
            let letter = s.bytes().any(|b| b.is_ascii_alphabetic());
            match (digit, letter) {
                (true, true) => "<git_sha>".to_string(),
                (true, false) => "<int>".to_string(),
                _ => s.to_string(),
            }
        }
        "int" if s.starts_with('-') && word(before) => "-<int>".to_string(),
        "quoted_str" => "=<quoted_str>".to_string(),
        "bool" => "=<bool>".to_string(),
        _ => format!("<{name}>"),
    }
}

/// Line breaks as Python's `str.splitlines` knows them.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{0b}'
            | '\u{0c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_combined_pattern_compiles() {
        assert!(COMBINED.is_some());
    }

    #[test]
    fn each_kind_of_parameter_gets_its_placeholder() {
        // Cases in the spirit of Sentry's parameterizer tests
        // (tests/sentry/grouping/test_parameterization.py), rewritten.
        for (input, expected) in [
            ("mail ann@example.com now", "mail <email> now"),
            (
                "GET http://shop.example.com/a?b=1 failed",
                "GET <url> failed",
            ),
            ("resolve www.example.net", "resolve <hostname>"),
            ("connect 10.0.0.12 refused", "connect <ip> refused"),
            ("peer fe80::1:2 left", "peer <ip> left"),
            ("Foo::bar() failed", "Foo::bar() failed"),
            (
                "order 2c7d3e60-3a4b-4c8e-9f6a-0b1c2d3e4f50 lost",
                "order <uuid> lost",
            ),
            (
                "commit 0123456789abcdef0123456789abcdef01234567",
                "commit <sha1>",
            ),
            ("hash 0123456789abcdef0123456789abcdef", "hash <md5>"),
            ("at 2024-01-15T10:00:00.123Z", "at <date>"),
            ("at 2024-01-15 10:00:00", "at <date>"),
            ("at 10:30:59", "at <date>"),
            ("on Mon, 15 Jan 2024 10:00:00 GMT", "on <date>"),
            ("took 250ms", "took <duration>"),
            ("pointer 0x7ffe1234 bad", "pointer <hex> bad"),
            ("token deadbeef42 bad", "token <hex> bad"),
            ("word deadbeefcafe stays", "word deadbeefcafe stays"),
            ("build 1a2b3c4 broke", "build <git_sha> broke"),
            ("ratio 0.75 low", "ratio <float> low"),
            ("charge 17 failed", "charge <int> failed"),
            ("delta -5 and a-5", "delta <int> and a-<int>"),
            ("name='bob' ok=true", "name=<quoted_str> ok=<bool>"),
            ("'quoted' alone stays", "'quoted' alone stays"),
        ] {
            assert_eq!(parameterize(input), expected, "{input:?}");
        }
    }

    #[test]
    fn only_the_first_two_non_empty_lines_count() {
        assert_eq!(normalize_for_grouping("one\n\n two\nthree"), "one\n two...");
        assert_eq!(normalize_for_grouping("one line"), "one line");
        assert_eq!(normalize_for_grouping("a\r\nb"), "a\nb...");
        assert_eq!(normalize_for_grouping(""), "");
    }

    proptest::proptest! {
        #[test]
        fn parameterizing_never_panics(s in "\\PC{0,200}") {
            let _ = normalize_for_grouping(&s);
        }

        #[test]
        fn text_without_parameters_is_left_alone(s in "[g-z ]{0,80}") {
            proptest::prop_assert_eq!(parameterize(&s), s);
        }
    }
}
