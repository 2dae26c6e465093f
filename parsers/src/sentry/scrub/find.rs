//! Where in a string the content rules of [`super`] may apply, found
//! cheaply: one pass over the bytes that says which rules can apply at all,
//! the query parameters of URLs and query strings, and — for ASCII text —
//! the matches of the card, `Bearer` and URL password patterns, found by
//! hand as their regexes would find them. Nothing here replaces anything.

use std::ops::Range;

// Bytes that the content rules start from, as the bits of [`signs`].
/// `-`: PEM armour.
pub(super) const SIGN_DASH: u8 = 1;
/// `@`: a URL's user info.
pub(super) const SIGN_AT: u8 = 1 << 1;
/// `:`: URLs and IPv6 addresses.
pub(super) const SIGN_COLON: u8 = 1 << 2;
/// `?`: a query string in text.
pub(super) const SIGN_QUERY: u8 = 1 << 3;
/// `=`: query parameters.
pub(super) const SIGN_EQUALS: u8 = 1 << 4;
/// `b` or `B`: a `Bearer` token.
pub(super) const SIGN_B: u8 = 1 << 5;
/// `.`: IPv4 addresses.
pub(super) const SIGN_DOT: u8 = 1 << 6;

/// The sign bits of each byte value, with [`DIGIT`] for digits.
static SIGN_OF: [u8; 256] = {
    let mut table = [0u8; 256];
    table[b'-' as usize] = SIGN_DASH;
    table[b'@' as usize] = SIGN_AT;
    table[b':' as usize] = SIGN_COLON;
    table[b'?' as usize] = SIGN_QUERY;
    table[b'=' as usize] = SIGN_EQUALS;
    table[b'b' as usize] = SIGN_B;
    table[b'B' as usize] = SIGN_B;
    table[b'.' as usize] = SIGN_DOT;
    let mut d = b'0';
    while d <= b'9' {
        table[d as usize] = DIGIT;
        d += 1;
    }
    table
};

/// Marks digits in [`SIGN_OF`]; not a sign of its own.
const DIGIT: u8 = 1 << 7;

/// The sign bits of one byte and whether it is a digit, by comparisons
/// rather than [`SIGN_OF`], so that [`signs`] runs on 16 bytes at a time.
fn sign_of(b: u8) -> (u8, u8) {
    let signs = (u8::from(b == b'-') * SIGN_DASH)
        | (u8::from(b == b'@') * SIGN_AT)
        | (u8::from(b == b':') * SIGN_COLON)
        | (u8::from(b == b'?') * SIGN_QUERY)
        | (u8::from(b == b'=') * SIGN_EQUALS)
        | (u8::from(b | 0x20 == b'b') * SIGN_B)
        | (u8::from(b == b'.') * SIGN_DOT);
    (signs, u8::from(b.wrapping_sub(b'0') < 10))
}

/// What one pass over `text` tells the content rules: which of the bytes
/// they start from it holds, and whether it has at least 13 digits (the
/// fewest a card number has).
pub(super) struct Signs {
    bits: u8,
    /// At least 13 digits.
    pub(super) many_digits: bool,
}

impl Signs {
    /// Whether the text holds all of `bits`.
    pub(super) fn has(&self, bits: u8) -> bool {
        self.bits & bits == bits
    }
}

/// The [`Signs`] of `text`.
pub(super) fn signs(text: &[u8]) -> Signs {
    const LANES: usize = 16;
    let mut chunks = text.chunks_exact(LANES);
    let (mut bits, mut digits) = (0u8, 0usize);
    if text.len() >= LANES {
        // Per-lane sums that the compiler keeps in vector registers; a
        // digit count saturates, as only "13 or more" matters.
        let mut lane_bits = [0u8; LANES];
        let mut lane_digits = [0u8; LANES];
        for chunk in &mut chunks {
            for ((bit, count), &b) in lane_bits.iter_mut().zip(lane_digits.iter_mut()).zip(chunk) {
                let (s, d) = sign_of(b);
                *bit |= s;
                *count = count.saturating_add(d);
            }
        }
        bits = lane_bits.iter().fold(0, |all, bit| all | bit);
        digits = lane_digits.iter().map(|&d| usize::from(d)).sum();
    }
    // The short rest (and most strings are short) one byte at a time.
    for &b in chunks.remainder() {
        let sign = SIGN_OF[usize::from(b)];
        bits |= sign;
        digits += usize::from(sign >> 7);
    }
    Signs {
        bits: bits & !DIGIT,
        many_digits: digits >= 13,
    }
}

/// Whether `text` holds `bearer` in any ASCII case.
pub(super) fn contains_bearer(text: &[u8]) -> bool {
    memchr::memchr2_iter(b'b', b'B', text).any(|i| {
        text.get(i..i + 6)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"bearer"))
    })
}

/// Whether `text` holds 13 digits in a row, single spaces or dashes
/// between them allowed: the least a card number the `card` pattern finds
/// needs. Digit-heavy text that is no card (hex ids, timestamps, versions)
/// rarely has such a run, so the pattern need not run on it. The pattern's
/// `\d` takes any Unicode digit after the first, so a char that is not
/// ASCII continues a run (without counting: [`super::card_len`] counts
/// ASCII digits only).
pub(super) fn has_card_run(text: &[u8]) -> bool {
    let mut digits = 0;
    // Whether the byte before was (part of) a digit: a space or dash may
    // follow one, but not another space or dash.
    let mut after_digit = false;
    for &b in text {
        if b.is_ascii_digit() || !b.is_ascii() {
            digits += usize::from(b.is_ascii_digit());
            if digits >= 13 {
                return true;
            }
            after_digit = true;
        } else if matches!(b, b' ' | b'-') && after_digit {
            after_digit = false;
        } else {
            digits = 0;
            after_digit = false;
        }
    }
    false
}

/// How query parameters are written where [`params`] looks for them: a
/// separator (or the start of the text, where allowed), a name, `=`, and a
/// value. Scanned by hand rather than by a regex: messages and URLs hold
/// many parameters, and one pass over the text finds them all.
pub(super) struct ParamSyntax {
    /// What stands before a parameter (three bytes for `memchr3`, repeated
    /// when fewer); a name cannot hold them.
    seps: [u8; 3],
    /// Whether the text may also start with a parameter.
    at_start: bool,
    /// ASCII chars a name cannot hold, besides `=` which ends it.
    not_in_name: u128,
    /// ASCII chars that end a value.
    ends_value: u128,
    /// Whether white space (Unicode's) also ends names and values.
    white_space_ends: bool,
}

/// The set of the ASCII chars `chars`, as bits.
const fn ascii_set(chars: &[u8]) -> u128 {
    let mut set = 0u128;
    let mut i = 0;
    while i < chars.len() {
        set |= 1 << chars[i];
        i += 1;
    }
    set
}

/// Parameters of URLs in free text (`GET /v1?page=2&token=...`): `?`, `&`
/// or `;`, a name without `&#;?`, quotes or white space, `=`, and a value
/// that also ends at quotes, white space and the brackets around a URL in
/// text (`<>,)}`).
pub(super) const PARAMS_IN_TEXT: ParamSyntax = ParamSyntax {
    seps: *b"?&;",
    at_start: false,
    not_in_name: ascii_set(b"=&#;?\"'"),
    ends_value: ascii_set(b"&#;\"'<>,)}"),
    white_space_ends: true,
};

/// Parameters of a query string field (`a=1&token=...`): the start or `&`
/// or `;`, a name without `&#;`, `=`, and a value up to `&#;`.
pub(super) const PARAMS_IN_FIELD: ParamSyntax = ParamSyntax {
    seps: *b"&;;",
    at_start: true,
    not_in_name: ascii_set(b"=&#;"),
    ends_value: ascii_set(b"&#;"),
    white_space_ends: false,
};

impl ParamSyntax {
    /// Where the run of chars from `from` that are not in `set` (nor white
    /// space, where that ends runs) ends.
    fn run_end(&self, text: &str, from: usize, set: u128) -> usize {
        let rest = text.get(from..).unwrap_or_default();
        let end = rest.char_indices().find(|&(_, c)| {
            let ascii = u32::from(c);
            (ascii < 128 && set >> ascii & 1 == 1) || (self.white_space_ends && c.is_whitespace())
        });
        from + end.map_or(rest.len(), |(i, _)| i)
    }

    /// The parameter whose name starts at `start`: the byte ranges of its
    /// name and value.
    fn param_at(&self, text: &str, start: usize) -> Option<(Range<usize>, Range<usize>)> {
        let name_end = self.run_end(text, start, self.not_in_name);
        if name_end == start || text.as_bytes().get(name_end) != Some(&b'=') {
            return None;
        }
        let value_end = self.run_end(text, name_end + 1, self.ends_value);
        Some((start..name_end, name_end + 1..value_end))
    }
}

/// The parameters of `text` as `syntax` writes them, in order, each found
/// after the one before at the leftmost place one can start (as a regex
/// finds its matches).
pub(super) fn params<'t>(
    text: &'t str,
    syntax: &'t ParamSyntax,
) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + 't {
    let [a, b, c] = syntax.seps;
    let mut from = 0;
    std::iter::from_fn(move || {
        if syntax.at_start
            && from == 0
            && let Some(found) = syntax.param_at(text, 0)
        {
            from = found.1.end;
            return Some(found);
        }
        while let Some(sep) =
            memchr::memchr3(a, b, c, text.as_bytes().get(from..)?).map(|i| from + i)
        {
            // Separators are ASCII: the name starts on the next byte.
            if let Some(found) = syntax.param_at(text, sep + 1) {
                from = found.1.end;
                return Some(found);
            }
            from = sep + 1;
        }
        from = text.len();
        None
    })
}

/// Whether `b` is a word byte, as the patterns' `\b` sees ASCII text.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether a word may start at `i` of `text` (`\b` before a word byte).
fn word_starts(text: &[u8], i: usize) -> bool {
    i.checked_sub(1)
        .and_then(|before| text.get(before))
        .is_none_or(|&b| !is_word(b))
}

/// White space as the patterns' `\s` sees ASCII text.
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' | b' ')
}

// The content patterns run on nearly every event (`4111 ...` in a frame,
// `Bearer ...` in a breadcrumb), and a regex search costs far more where
// it is done once among other work than in a loop of its own. So for ASCII
// text (`\b`, `\d` and `\s` are then ASCII too) these scanners find what
// the patterns find, match for match; text that is not ASCII goes to the
// regexes. A property test holds them to the regexes.

/// The matches of the `card` pattern in ASCII `text`:
/// `\b[2-6]\d(?:[ \-]?\d){11,17}\b`, leftmost first, each as long as the
/// end can be (at a word's end), the next searched after it.
pub(super) fn ascii_cards(text: &[u8]) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut start = 0;
    while start < text.len() {
        match card_at(text, start) {
            Some(end) => {
                found.push(start..end);
                start = end;
            }
            None => start += 1,
        }
    }
    found
}

/// Where a match of the `card` pattern that starts at `start` ends.
fn card_at(text: &[u8], start: usize) -> Option<usize> {
    let digit = |i: usize| text.get(i).is_some_and(u8::is_ascii_digit);
    if !matches!(text.get(start), Some(b'2'..=b'6'))
        || !digit(start + 1)
        || !word_starts(text, start)
    {
        return None;
    }
    // Each further digit may follow one space or dash; the pattern takes
    // as many as it can (17 at most) and gives them back until the match
    // ends a word (11 at least).
    let mut end = start + 2;
    let mut longest = None;
    for taken in 1..=17 {
        end = if matches!(text.get(end), Some(b' ' | b'-')) && digit(end + 1) {
            end + 2
        } else if digit(end) {
            end + 1
        } else {
            break;
        };
        if taken >= 11 && !text.get(end).is_some_and(|&b| is_word(b)) {
            longest = Some(end);
        }
    }
    longest
}

/// The tokens of the `bearer` pattern's matches in ASCII `text`:
/// `(?i)\b(bearer\s+)([a-z0-9][a-z0-9\-._~+/]*=*)`, the second group.
pub(super) fn ascii_bearer_tokens(text: &[u8]) -> Vec<Range<usize>> {
    let token_byte =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
    let mut found = Vec::new();
    let mut from = 0;
    for word in memchr::memchr2_iter(b'b', b'B', text) {
        let is_bearer = text
            .get(word..word + 6)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"bearer"));
        if word < from || !is_bearer || !word_starts(text, word) {
            continue;
        }
        let spaces = word + 6;
        let mut token = spaces;
        while text.get(token).is_some_and(|&b| is_space(b)) {
            token += 1;
        }
        if token == spaces || !text.get(token).is_some_and(u8::is_ascii_alphanumeric) {
            continue;
        }
        let mut end = token + 1;
        while text.get(end).is_some_and(|&b| token_byte(b)) {
            end += 1;
        }
        while text.get(end) == Some(&b'=') {
            end += 1;
        }
        found.push(token..end);
        from = end;
    }
    found
}

/// The passwords of the `url_password` pattern's matches in ASCII `text`:
/// `(?i)\b([a-z][a-z0-9+.\-]*://[^\s:@/?#\[\]]+:)([^\s@/?#]+)@`, the
/// second group. Each match holds the first `://` after its start (the
/// scheme holds no `:`), so the search goes from one `://` to the next.
pub(super) fn ascii_url_passwords(text: &[u8]) -> Vec<Range<usize>> {
    let scheme_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-');
    // The run of bytes from `at` that are not white space nor in `stops`.
    let run_end = |at: usize, stops: &[u8]| {
        let mut end = at;
        while text
            .get(end)
            .is_some_and(|&b| !is_space(b) && !stops.contains(&b))
        {
            end += 1;
        }
        end
    };
    let mut found = Vec::new();
    let mut from = 0;
    for colon in memchr::memmem::find_iter(text, b"://") {
        if colon < from {
            continue;
        }
        // A scheme ends here if a letter that starts a word begins a run of
        // scheme bytes up to it (after the last match).
        let mut first = colon;
        while first > from && text.get(first - 1).is_some_and(|&b| scheme_byte(b)) {
            first -= 1;
        }
        let scheme = (first..colon)
            .any(|i| text.get(i).is_some_and(u8::is_ascii_alphabetic) && word_starts(text, i));
        let user = colon + 3;
        let user_end = run_end(user, b":@/?#[]");
        if !scheme || user_end == user || text.get(user_end) != Some(&b':') {
            continue;
        }
        let password = user_end + 1;
        let password_end = run_end(password, b"@/?#");
        if password_end == password || text.get(password_end) != Some(&b'@') {
            continue;
        }
        found.push(password..password_end);
        from = password_end + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{PATTERNS, bearer_token, regex_parts, url_password};
    use super::*;

    fn piece(text: &'static str) -> BoxedStrategy<String> {
        Just(text.to_owned()).boxed()
    }

    /// ASCII text made of what the patterns look for, its near misses, and
    /// anything printable between them.
    fn ascii_text() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            piece("4111 1111 1111 1111"),
            piece("5555-5555-5555-4444"),
            piece("4222222222222"),
            "[0-9]{1,20}".boxed(),
            "[2-6][0-9 -]{12,30}".boxed(),
            piece("Bearer "),
            piece("bearer\t"),
            piece("BEARER"),
            "[a-zA-Z0-9._~+/=-]{0,12}".boxed(),
            piece("://"),
            piece("postgres://u:p@h"),
            piece("svn+ssh://"),
            piece("x://u:p?w@h/"),
            piece("x://u:p#w@h/"),
            piece("@"),
            piece(":"),
            piece("["),
            piece("]"),
            "[ -~]{0,8}".boxed(),
            "[ \t\n\x0b\x0c\r_.:@/?#=-]{0,3}".boxed(),
        ];
        prop::collection::vec(pieces, 0..12).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn card_scanner_finds_what_the_card_pattern_finds(text in ascii_text()) {
            let by_regex = regex_parts(PATTERNS.card.as_ref(), &text, |m| Some(0..m.len()));
            prop_assert_eq!(ascii_cards(text.as_bytes()), by_regex);
        }

        #[test]
        fn bearer_scanner_finds_what_the_bearer_pattern_finds(text in ascii_text()) {
            let by_regex = regex_parts(PATTERNS.bearer.as_ref(), &text, bearer_token);
            prop_assert_eq!(ascii_bearer_tokens(text.as_bytes()), by_regex);
        }

        #[test]
        fn url_scanner_finds_what_the_url_password_pattern_finds(text in ascii_text()) {
            let by_regex = regex_parts(PATTERNS.url_password.as_ref(), &text, url_password);
            prop_assert_eq!(ascii_url_passwords(text.as_bytes()), by_regex);
        }
    }

    #[test]
    fn scanners_agree_with_the_patterns_on_the_cases_that_decide() {
        for text in [
            "4111 1111 1111 1111 2024",
            "x4111111111111111 _4111111111111111 (4111111111111111)",
            "4111  1111 1111 1111 4111-1111-1111-1111-",
            "Bearer  abc.def== bearer\u{b}x xBearer y Bearer [Filtered]",
            "a.b://u:p@h _http://u:p@h x://[u]:p@h x://u:p:q@h/?x",
        ] {
            assert_eq!(
                ascii_cards(text.as_bytes()),
                regex_parts(PATTERNS.card.as_ref(), text, |m| Some(0..m.len())),
                "{text}"
            );
            assert_eq!(
                ascii_bearer_tokens(text.as_bytes()),
                regex_parts(PATTERNS.bearer.as_ref(), text, bearer_token),
                "{text}"
            );
            assert_eq!(
                ascii_url_passwords(text.as_bytes()),
                regex_parts(PATTERNS.url_password.as_ref(), text, url_password),
                "{text}"
            );
        }
    }

    #[test]
    fn a_card_run_may_hold_any_digit_after_the_first() {
        assert!(has_card_run(b"4111 1111 1111 1"));
        assert!(!has_card_run(b"4111  1111 1111 1"));
        assert!(!has_card_run(b"0x7f3b6d24a200, 139893239733"));
        // The pattern's `\d` takes Arabic-Indic digits too.
        assert!(has_card_run(
            "4111\u{661}1111\u{661}1111\u{661}1".as_bytes()
        ));
    }

    #[test]
    fn signs_tell_which_bytes_a_text_holds() {
        let seen = signs(b"GET /v1?token=abc 4111111111111");
        assert!(seen.has(SIGN_QUERY | SIGN_EQUALS));
        assert!(!seen.has(SIGN_AT));
        assert!(seen.many_digits);
        let long = "-".repeat(40) + "b";
        assert!(signs(long.as_bytes()).has(SIGN_DASH | SIGN_B));
        assert!(!signs(b"short").many_digits);
    }
}
