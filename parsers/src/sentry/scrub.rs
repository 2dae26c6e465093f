//! PII scrubbing: values that look like secrets, card numbers, private keys,
//! URL passwords and session cookies become `[Filtered]`; IP addresses
//! optionally.
//!
//! Two kinds of rule, as in Sentry's server-side data scrubbing:
//!
//! - **By key.** The whole value of a key that names a secret (a
//!   case-insensitive substring of the key: `password`, `secret`, `passwd`,
//!   `api_key`, `apikey`, `access_token`, `auth`, `credentials`, `token`,
//!   `bearer`, `private_key`, `privatekey`, `mysql_pwd`, plus
//!   [`ScrubOptions::extra_keys`]) is replaced, even an object or a list.
//!   Dashes count as underscores (`X-Api-Key`). Keys are read in objects and
//!   in `[key, value]` pair lists (headers, cookies, tags, query strings).
//!   Sentry matches `auth` anywhere, so it scrubs `author` too; mecha does
//!   not: `auth` followed by `or` is a word about writing, unless it goes on
//!   as `authoriz`/`authoris` (`Authorization`, `authorised_by`).
//! - **By content**, in every string: card numbers (13–19 digits of a card
//!   network's range, spaces or dashes between, Luhn-valid; an integer
//!   whose digits are one is replaced whole), the body of PEM
//!   private keys, the password of `scheme://user:password@host`, `Bearer`
//!   tokens, query parameters with secret names (`?token=...`), session
//!   cookies in `Cookie`/`Set-Cookie` headers and `request.cookies`, and —
//!   with [`ScrubOptions::scrub_ip`] — IPv4 and IPv6 addresses. A string
//!   holding a JSON object or list (a request body, a value Relay-style
//!   normalisation wrote as text) is scrubbed as JSON, so keys inside it
//!   count too.
//!
//! `user.id` is never scrubbed, nor `user.ip_address` unless IP scrubbing is
//! on: they identify the user for "users affected". Keys in
//! [`ScrubOptions::safe_keys`] are left alone entirely, as Sentry's "safe
//! fields" are. The walk holds its own stack, so no nesting depth can
//! exhaust the thread's stack, and scrubbing what was scrubbed changes
//! nothing.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use self::find::{
    PARAMS_IN_FIELD, PARAMS_IN_TEXT, ParamSyntax, SIGN_AT, SIGN_B, SIGN_COLON, SIGN_DASH, SIGN_DOT,
    SIGN_EQUALS, SIGN_QUERY, Signs, ascii_bearer_tokens, ascii_cards, ascii_url_passwords,
    contains_bearer, has_card_run, params, signs,
};
use super::value::{MAX_STRING_CHARS, MAX_TAG_VALUE_CHARS, cap_chars};

mod find;

/// What a scrubbed value becomes.
pub const FILTERED: &str = "[Filtered]";

/// What to scrub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubOptions {
    /// Scrub at all. Default true.
    pub enabled: bool,
    /// Also remove IP addresses (`user.ip_address`, `REMOTE_ADDR`, ...). Default false.
    pub scrub_ip: bool,
    /// Further key names (case-insensitive substrings) whose values are scrubbed.
    pub extra_keys: Vec<String>,
    /// Key names never scrubbed, even when they match.
    pub safe_keys: Vec<String>,
}

impl Default for ScrubOptions {
    fn default() -> Self {
        ScrubOptions {
            enabled: true,
            scrub_ip: false,
            extra_keys: Vec::new(),
            safe_keys: Vec::new(),
        }
    }
}

/// Key substrings whose values are secrets: Sentry's default list (its
/// `@password` rule) and the `access_token`/`bearer` the issue asks for.
const SECRET_KEYS: &[&str] = &[
    "password",
    "secret",
    "passwd",
    "api_key",
    "apikey",
    "access_token",
    "auth",
    "credentials",
    "token",
    "bearer",
    "private_key",
    "privatekey",
    "mysql_pwd",
];

/// Keys holding a client's address, scrubbed with [`ScrubOptions::scrub_ip`].
const IP_KEYS: &[&str] = &[
    "ip_address",
    "remote_addr",
    "x_forwarded_for",
    "x_real_ip",
    "client_ip",
];

/// Event fields that never hold personal data but whose contents could
/// look like it: package names (`oauthlib`, `tokenizers` in `modules`), the
/// SDK's integrations, debug images, and the fields normalisation wrote.
/// Relay marks these not scrubbable (`pii = "false"`) too.
const NOT_PII: &[&str] = &[
    "modules",
    "sdk",
    "debug_meta",
    "errors",
    "event_id",
    "timestamp",
    "start_timestamp",
    "received",
    "platform",
    "level",
    "release",
    "dist",
    "environment",
    "type",
];

/// Scrubs `event` in place; returns how many values were replaced.
pub fn scrub(event: &mut Map<String, Value>, opts: &ScrubOptions) -> usize {
    if !opts.enabled {
        return 0;
    }
    let mut scrubber = Scrubber::new(opts);
    scrubber.scrub_map(event, Ctx::Root);
    scrubber.count
}

/// Where in the event a value sits, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// The event's own fields.
    Root,
    /// The fields of the event's `user`.
    User,
    /// The event's `tags`: values scrubbed stay within the tag length.
    Tags,
    /// Inside `request.cookies` (object or pair list): every key is a
    /// cookie name.
    Cookies,
    /// Anywhere else.
    Plain,
}

/// The options, prepared once per call.
struct Rules {
    scrub_ip: bool,
    /// Folded, as keys are when compared.
    extra_keys: Vec<Vec<u8>>,
    /// Folded, as keys are when compared.
    safe_keys: Vec<Vec<u8>>,
}

/// Lowercases `key` into `buf` with dashes as underscores, so that one
/// spelling of each secret name matches headers and fields alike. Only
/// ASCII bytes change, so the folded key is bytes: every key of the event
/// passes here, and the names it is compared with are ASCII.
fn fold_key(key: &str, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend(key.bytes().map(|b| FOLDED[usize::from(b)]));
}

/// Each byte as [`fold_key`] writes it. A table, because keys are short:
/// a loop over a few bytes costs more in its branches than in its work.
static FOLDED: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).to_ascii_lowercase();
        b += 1;
    }
    table[b'-' as usize] = b'_';
    table
};

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// Whether `auth` found at the start of `rest` (a folded key from there
/// on) names a secret: it does unless it begins `author...` in the sense
/// of writing.
fn auth_is_secret(rest: &[u8]) -> bool {
    !rest.starts_with(b"author") || rest.starts_with(b"authoriz") || rest.starts_with(b"authoris")
}

/// Where a secret name may start in a folded key: a set of the first two
/// bytes of each of [`SECRET_KEYS`] (five bits of each byte, so 1024
/// bits), built at compile time. Every key of the event is scanned for the
/// names, so the scan must be cheap: one lookup per byte, none depending
/// on the one before, and names compared only where the table says one may
/// start. (An automaton would chain a dependent load per byte.)
static SECRET_STARTS: [u64; 16] = {
    let mut table = [0u64; 16];
    let mut i = 0;
    while i < SECRET_KEYS.len() {
        let name = SECRET_KEYS[i].as_bytes();
        let pair = byte_pair(name[0], name[1]);
        table[pair / 64] |= 1 << (pair % 64);
        i += 1;
    }
    table
};

/// The index of two adjacent bytes in [`SECRET_STARTS`].
const fn byte_pair(a: u8, b: u8) -> usize {
    ((a & 0x1f) as usize) << 5 | (b & 0x1f) as usize
}

/// The letters (and `_`) a folded key holds, as bits: a key that lacks a
/// letter of every secret name holds none of them, and most keys do
/// (`filename`, `lineno`, `context_line`). One cheap pass that spares the
/// closer look.
static LETTER_BIT: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut b = b'a';
    while b <= b'z' {
        table[b as usize] = 1 << (b - b'a');
        b += 1;
    }
    table[b'_' as usize] = 1 << 26;
    table
};

/// The [`LETTER_BIT`]s of each of [`SECRET_KEYS`].
static SECRET_LETTERS: [u32; SECRET_KEYS.len()] = {
    let mut masks = [0u32; SECRET_KEYS.len()];
    let mut i = 0;
    while i < SECRET_KEYS.len() {
        let name = SECRET_KEYS[i].as_bytes();
        let mut j = 0;
        while j < name.len() {
            masks[i] |= LETTER_BIT[name[j] as usize];
            j += 1;
        }
        i += 1;
    }
    masks
};

/// Whether a folded key holds one of [`SECRET_KEYS`] (`auth` only where
/// [`auth_is_secret`] says so).
fn has_secret_name(key: &[u8]) -> bool {
    let letters = key
        .iter()
        .fold(0, |letters, &b| letters | LETTER_BIT[usize::from(b)]);
    if !SECRET_LETTERS.iter().any(|&name| name & !letters == 0) {
        return false;
    }
    key.windows(2).enumerate().any(|(i, pair)| {
        let &[a, b] = pair else { return false };
        let p = byte_pair(a, b);
        if SECRET_STARTS
            .get(p / 64)
            .is_none_or(|bits| bits >> (p % 64) & 1 == 0)
        {
            return false;
        }
        let rest = key.get(i..).unwrap_or_default();
        SECRET_KEYS.iter().any(|name| {
            let name = name.as_bytes();
            name.first() == Some(&a)
                && name.get(1) == Some(&b)
                && rest.starts_with(name)
                && (name != b"auth" || auth_is_secret(rest))
        })
    })
}

/// Whether a cookie name (folded) is a session id: `session`, `sessionid`,
/// `PHPSESSID`, `JSESSIONID`, `ASPSESSIONID...`, `laravel_session`,
/// `_gh_sess`, `connect.sid`, `sid`.
fn is_session_cookie(name: &[u8]) -> bool {
    contains(name, b"session")
        || contains(name, b"sessid")
        || name == b"sess"
        || name.ends_with(b"_sess")
        || name == b"sid"
        || name.ends_with(b".sid")
        || name.ends_with(b"_sid")
}

impl Rules {
    fn new(opts: &ScrubOptions) -> Rules {
        let fold = |keys: &[String]| {
            keys.iter()
                .filter(|k| !k.is_empty())
                .map(|k| {
                    let mut buf = Vec::new();
                    fold_key(k, &mut buf);
                    buf
                })
                .collect()
        };
        Rules {
            scrub_ip: opts.scrub_ip,
            extra_keys: fold(&opts.extra_keys),
            safe_keys: fold(&opts.safe_keys),
        }
    }

    fn is_safe(&self, folded: &[u8]) -> bool {
        self.safe_keys.iter().any(|k| k == folded)
    }

    fn is_secret(&self, folded: &[u8]) -> bool {
        has_secret_name(folded) || self.extra_keys.iter().any(|k| contains(folded, k))
    }

    fn is_ip_key(&self, folded: &[u8]) -> bool {
        self.scrub_ip && IP_KEYS.iter().any(|k| k.as_bytes() == folded)
    }
}

/// The compiled content rules. Every pattern is a constant; a test checks
/// they all compile, and a pattern that did not would only switch its rule
/// off rather than panic.
struct Patterns {
    pem_begin: Option<Regex>,
    pem_end: Option<Regex>,
    url_password: Option<Regex>,
    bearer: Option<Regex>,
    card: Option<Regex>,
    ipv4: Option<Regex>,
    ipv6: Option<Regex>,
}

fn compile(pattern: &str) -> Option<Regex> {
    let re = Regex::new(pattern);
    debug_assert!(re.is_ok(), "scrub pattern {pattern:?} does not compile");
    re.ok()
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| Patterns {
    pem_begin: compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----"),
    pem_end: compile(r"-----END[A-Z0-9 ]*PRIVATE KEY-----"),
    url_password: compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:@/?#\[\]]+:)([^\s@/?#]+)@"),
    // The token must start with a letter or digit, so `Bearer ...` (a cut
    // string) and `Bearer [Filtered]` are not tokens.
    bearer: compile(r"(?i)\b(bearer\s+)([a-z0-9][a-z0-9\-._~+/]*=*)"),
    // Card networks' ranges start with 2 (Mastercard) to 6 (Discover,
    // UnionPay); 1 is left out so that millisecond timestamps, which are
    // 13 digits starting with 1 until 2033, are not taken for cards.
    card: compile(r"\b[2-6]\d(?:[ \-]?\d){11,17}\b"),
    ipv4: compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
    ipv6: compile(r"(?i)[0-9a-f:.]*:[0-9a-f:.]*:[0-9a-f:.]*(?:%[0-9a-z_.\-]+)?"),
});

/// Strings whose scrubbing as JSON may nest this deep (JSON text inside JSON
/// text ...); deeper ones get only the content rules.
const MAX_JSON_NESTING: u8 = 2;

struct Scrubber<'o> {
    rules: Rules,
    opts: &'o ScrubOptions,
    /// The folded key being decided, kept to reuse its allocation.
    key: Vec<u8>,
    count: usize,
    json_nesting: u8,
}

type Stack<'a> = Vec<(&'a mut Value, Ctx)>;

impl<'o> Scrubber<'o> {
    fn new(opts: &'o ScrubOptions) -> Scrubber<'o> {
        Scrubber {
            rules: Rules::new(opts),
            opts,
            key: Vec::new(),
            count: 0,
            json_nesting: 0,
        }
    }

    fn scrub_map(&mut self, map: &mut Map<String, Value>, ctx: Ctx) {
        // Room for the containers a typical event has open at once.
        let mut stack: Stack<'_> = Vec::with_capacity(64);
        for (k, v) in map.iter_mut() {
            self.entry(k, v, ctx, &mut stack);
        }
        self.drain(stack);
    }

    fn scrub_value(&mut self, value: &mut Value) {
        self.drain(vec![(value, Ctx::Plain)]);
    }

    fn drain<'a>(&mut self, mut stack: Stack<'a>) {
        while let Some((value, ctx)) = stack.pop() {
            match value {
                Value::String(s) => self.text(s),
                Value::Object(o) => {
                    for (k, v) in o.iter_mut() {
                        self.entry(k, v, ctx, &mut stack);
                    }
                }
                Value::Array(items) => {
                    for item in items.iter_mut() {
                        if is_pair(item) {
                            if let Value::Array(pair) = item
                                && let [Value::String(k), v] = pair.as_mut_slice()
                            {
                                self.entry(k, v, ctx, &mut stack);
                            }
                        } else {
                            let inner = if ctx == Ctx::Cookies {
                                Ctx::Cookies
                            } else {
                                Ctx::Plain
                            };
                            stack.push((item, inner));
                        }
                    }
                }
                Value::Number(n) => {
                    if is_card_number(n) {
                        self.replace(value);
                    }
                }
                Value::Null | Value::Bool(_) => {}
            }
        }
    }

    /// Applies the key rules to one `key: value` entry; a value no key rule
    /// replaces is pushed for the walk.
    fn entry<'a>(&mut self, key: &str, value: &'a mut Value, parent: Ctx, stack: &mut Stack<'a>) {
        let mut folded = std::mem::take(&mut self.key);
        fold_key(key, &mut folded);
        let action = self.decide(&folded, value, parent);
        match action {
            Action::Skip => {}
            Action::Replace => self.replace(value),
            Action::Cookies | Action::Query => {
                if let Value::String(s) = value {
                    if matches!(action, Action::Cookies) {
                        self.cookie_text(s);
                    } else {
                        self.query_field(s);
                    }
                    if parent == Ctx::Tags {
                        cap_chars(s, MAX_TAG_VALUE_CHARS);
                    }
                }
            }
            Action::Walk(_) if parent == Ctx::Tags && value.is_string() => {
                if let Value::String(s) = value {
                    self.tag_text(s);
                }
            }
            Action::Walk(ctx) => stack.push((value, ctx)),
        }
        self.key = folded;
    }

    fn decide(&self, folded: &[u8], value: &Value, parent: Ctx) -> Action {
        if self.rules.is_safe(folded) || value.is_null() {
            return Action::Skip;
        }
        if parent == Ctx::Root && NOT_PII.iter().any(|k| k.as_bytes() == folded) {
            return Action::Skip;
        }
        if parent == Ctx::User
            && (folded == b"id" || (folded == b"ip_address" && !self.rules.scrub_ip))
        {
            return Action::Skip;
        }
        if self.rules.is_secret(folded)
            || (parent == Ctx::Cookies && is_session_cookie(folded))
            || self.rules.is_ip_key(folded)
        {
            return Action::Replace;
        }
        match (folded, value) {
            // JSON text under a cookie key is scrubbed as JSON, not split.
            (b"cookie" | b"set_cookie" | b"cookies", Value::String(s))
                if !s.trim_start().starts_with(['{', '[']) =>
            {
                Action::Cookies
            }
            (b"query_string", Value::String(_)) => Action::Query,
            (b"cookies", _) => Action::Walk(Ctx::Cookies),
            (b"user", _) if parent == Ctx::Root => Action::Walk(Ctx::User),
            (b"tags", _) if parent == Ctx::Root => Action::Walk(Ctx::Tags),
            _ => Action::Walk(Ctx::Plain),
        }
    }

    fn replace(&mut self, value: &mut Value) {
        if value.as_str() != Some(FILTERED) {
            *value = Value::String(FILTERED.to_owned());
            self.count += 1;
        }
    }

    /// Whether a cookie or query parameter name (not folded) is a secret.
    fn secret_name(&mut self, name: &str, cookie: bool) -> bool {
        let mut folded = std::mem::take(&mut self.key);
        fold_key(name.trim(), &mut folded);
        let secret = !self.rules.is_safe(&folded)
            && (self.rules.is_secret(&folded) || (cookie && is_session_cookie(&folded)));
        self.key = folded;
        secret
    }

    /// Scrubs the values of session and secret cookies in a `Cookie` or
    /// `Set-Cookie` header (`a=1; sessionid=...`), keeping the rest.
    fn cookie_text(&mut self, text: &mut String) {
        let mut out = String::with_capacity(text.len());
        let mut changed = 0;
        for (i, part) in text.split(';').enumerate() {
            if i > 0 {
                out.push(';');
            }
            match part.split_once('=') {
                Some((name, value))
                    if !value.trim().is_empty()
                        && value.trim() != FILTERED
                        && self.secret_name(name, true) =>
                {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(FILTERED);
                    changed += 1;
                }
                _ => out.push_str(part),
            }
        }
        if changed > 0 {
            *text = out;
            self.count += changed;
        }
        // The cookies that stay may still hold card numbers and the like.
        self.text(text);
    }

    /// Scrubs secret parameters of a query string field (`a=1&token=...`).
    fn query_field(&mut self, text: &mut String) {
        self.count += self.query_params(&PARAMS_IN_FIELD, text);
        self.text(text);
    }

    /// Replaces the values of secret parameters, found as `syntax` writes
    /// them; returns how many it replaced.
    fn query_params(&mut self, syntax: &ParamSyntax, text: &mut String) -> usize {
        if !text.contains('=') {
            return 0;
        }
        let mut secrets = Vec::new();
        for (name, value) in params(text, syntax) {
            let (Some(n), Some(v)) = (text.get(name), text.get(value.clone())) else {
                continue;
            };
            if !v.is_empty() && v != FILTERED && self.secret_name(n, false) {
                secrets.push(value);
            }
        }
        filter_spans(text, &secrets)
    }

    /// The content rules for one string.
    fn text(&mut self, text: &mut String) {
        let before = self.count;
        if self.json_text(text) {
            return;
        }
        // Most strings hold none of the bytes the rules start from, so one
        // pass over the bytes decides which rules (and regexes) run. Each
        // rule asks about the text as the rules before it left it, so the
        // pass is made again after a change.
        let mut seen = signs(text.as_bytes());
        if seen.has(SIGN_DASH) {
            let n = scrub_pem(text);
            self.changed(n, text, &mut seen);
        }
        if seen.has(SIGN_AT | SIGN_COLON) && text.contains("://") {
            let n = filter_secrets(text, &URL_PASSWORDS.find(text));
            self.changed(n, text, &mut seen);
        }
        if seen.has(SIGN_B) && contains_bearer(text.as_bytes()) {
            let n = filter_secrets(text, &BEARER_TOKENS.find(text));
            self.changed(n, text, &mut seen);
        }
        if seen.has(SIGN_QUERY | SIGN_EQUALS) {
            let n = self.query_params(&PARAMS_IN_TEXT, text);
            self.changed(n, text, &mut seen);
        }
        if seen.many_digits && has_card_run(text.as_bytes()) {
            let n = scrub_cards(text);
            self.changed(n, text, &mut seen);
        }
        if self.opts.scrub_ip {
            self.count += scrub_ips(text, &seen);
        }
        if self.count > before {
            cap_chars(text, MAX_STRING_CHARS);
        }
    }

    /// Scrubs a tag value and keeps it within the tag length. A replacement
    /// can be longer than what it replaced, so the value may have to be cut;
    /// and a cut can leave what a rule takes for a secret (the first digits
    /// of a long number are a Luhn-valid card one time in ten; JSON text,
    /// scrubbed as JSON, is plain text once cut). So the cut value is
    /// scrubbed again, as the next pass would scrub it, until nothing
    /// changes: scrubbing what was scrubbed must change nothing.
    fn tag_text(&mut self, text: &mut String) {
        self.text(text);
        // Each round only filters more; four are more than any value needs.
        for _ in 0..4 {
            if !cap_chars(text, MAX_TAG_VALUE_CHARS) {
                break;
            }
            let before = self.count;
            self.text(text);
            if self.count == before {
                break;
            }
        }
    }

    /// Counts `n` replacements a content rule made in `text`, and reads the
    /// text's signs again when there were any.
    fn changed(&mut self, n: usize, text: &str, seen: &mut Signs) {
        if n > 0 {
            self.count += n;
            *seen = signs(text.as_bytes());
        }
    }

    /// Scrubs a string that holds a JSON object or list as JSON; tells
    /// whether it did (the text is then final).
    fn json_text(&mut self, text: &mut String) -> bool {
        // Most strings start with a char that is neither white space nor a
        // bracket: they are no JSON, and trimming them would not change that.
        let plain =
            |b: &u8| !matches!(b, b'{' | b'[') && b.is_ascii() && !char::from(*b).is_whitespace();
        if text.as_bytes().first().is_none_or(plain) {
            return false;
        }
        let t = text.trim();
        let container =
            (t.starts_with('{') && t.ends_with('}')) || (t.starts_with('[') && t.ends_with(']'));
        if !container || self.json_nesting >= MAX_JSON_NESTING {
            return false;
        }
        let Ok(mut parsed) = serde_json::from_str::<Value>(t) else {
            return false;
        };
        let before = self.count;
        self.json_nesting += 1;
        self.scrub_value(&mut parsed);
        self.json_nesting -= 1;
        if self.count > before
            && let Ok(mut scrubbed) = serde_json::to_string(&parsed)
        {
            cap_chars(&mut scrubbed, MAX_STRING_CHARS);
            *text = scrubbed;
        }
        true
    }
}

/// Whether `v` is a `[key, value]` pair, as headers, cookies and tags come
/// in list form.
fn is_pair(v: &Value) -> bool {
    matches!(v, Value::Array(p) if p.len() == 2 && p.first().is_some_and(Value::is_string))
}

/// What the key rules do with an entry.
enum Action {
    /// Leave it alone, content included.
    Skip,
    /// Replace the whole value.
    Replace,
    /// A cookie header or cookie string.
    Cookies,
    /// A query string field.
    Query,
    /// Walk into it.
    Walk(Ctx),
}

/// Replaces the byte ranges `spans` of `text` (ascending, not overlapping:
/// matches of one regex) by [`FILTERED`]; returns how many it replaced.
fn filter_spans(text: &mut String, spans: &[Range<usize>]) -> usize {
    let mut replaced = 0;
    // From the end, so that the ranges still ahead keep their offsets.
    for span in spans.iter().rev() {
        if span.start <= span.end
            && text.is_char_boundary(span.start)
            && text.is_char_boundary(span.end)
        {
            text.replace_range(span.clone(), FILTERED);
            replaced += 1;
        }
    }
    replaced
}

/// Replaces the secrets at `spans` of `text` (as [`filter_spans`] does)
/// unless they are filtered already; returns how many it replaced.
fn filter_secrets(text: &mut String, spans: &[Range<usize>]) -> usize {
    let secrets: Vec<Range<usize>> = spans
        .iter()
        .filter(|span| text.get((*span).clone()) != Some(FILTERED))
        .cloned()
        .collect();
    filter_spans(text, &secrets)
}

/// A content pattern, found by its scanner in ASCII text (see [`find`])
/// and by its regex in other text.
struct Finder {
    ascii: fn(&[u8]) -> Vec<Range<usize>>,
    regex: fn(&Patterns) -> Option<&Regex>,
    /// The part of a regex match that the rule replaces.
    part: fn(&str) -> Option<Range<usize>>,
}

impl Finder {
    /// The parts of `text` the rule replaces, in order.
    fn find(&self, text: &str) -> Vec<Range<usize>> {
        if text.is_ascii() {
            (self.ascii)(text.as_bytes())
        } else {
            regex_parts((self.regex)(&PATTERNS), text, self.part)
        }
    }
}

/// Card numbers: whole matches, for [`card_len`] to measure.
const CARDS: Finder = Finder {
    ascii: ascii_cards,
    regex: |p| p.card.as_ref(),
    part: |m| Some(0..m.len()),
};

const URL_PASSWORDS: Finder = Finder {
    ascii: ascii_url_passwords,
    regex: |p| p.url_password.as_ref(),
    part: url_password,
};

const BEARER_TOKENS: Finder = Finder {
    ascii: ascii_bearer_tokens,
    regex: |p| p.bearer.as_ref(),
    part: bearer_token,
};

/// The secret part of every match of `re` in `text`, as `part` finds it in
/// the match's text. Reading the part from the match rather than from a
/// capture group keeps the search to the regex's fast engine.
fn regex_parts(
    re: Option<&Regex>,
    text: &str,
    part: fn(&str) -> Option<Range<usize>>,
) -> Vec<Range<usize>> {
    re.map_or_else(Vec::new, |re| {
        re.find_iter(text)
            .filter_map(|m| {
                let part = part(m.as_str())?;
                Some(m.start() + part.start..m.start() + part.end)
            })
            .collect()
    })
}

/// The password in a match of the `url_password` pattern
/// (`scheme://user:password@`): from the first `:` past `://` (neither
/// the scheme nor the user holds one) to the final `@`.
fn url_password(m: &str) -> Option<Range<usize>> {
    let user = m.find("://")? + 3;
    let start = user + m.get(user..)?.find(':')? + 1;
    let end = m.strip_suffix('@')?.len();
    (start <= end).then_some(start..end)
}

/// The token in a match of the `bearer` pattern (`Bearer <token>`): what
/// follows the word and the white space after it (the token starts with a
/// letter or digit, so the split is where the pattern's groups split).
fn bearer_token(m: &str) -> Option<Range<usize>> {
    let rest = m.get("bearer".len()..)?;
    Some(m.len() - rest.trim_start().len()..m.len())
}

/// Replaces the bodies of PEM private keys, keeping the BEGIN and END lines
/// so that the reader sees what was there. A key without its END line (a cut
/// string) loses everything after BEGIN.
fn scrub_pem(text: &mut String) -> usize {
    let (Some(begin), Some(end)) = (PATTERNS.pem_begin.as_ref(), PATTERNS.pem_end.as_ref()) else {
        return 0;
    };
    if !text.contains("-----BEGIN") {
        return 0;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    let mut changed = 0;
    while let Some(b) = begin.find(rest) {
        out.push_str(rest.get(..b.end()).unwrap_or_default());
        let after = rest.get(b.end()..).unwrap_or_default();
        let (body, tail) = match end.find(after) {
            Some(e) => (
                after.get(..e.start()).unwrap_or_default(),
                after.get(e.start()..).unwrap_or_default(),
            ),
            None => (after, ""),
        };
        if body.trim().is_empty() || body == FILTERED {
            out.push_str(body);
        } else {
            out.push_str(FILTERED);
            changed += 1;
        }
        // Copy the END line as it is and go on after it.
        match end.find(tail) {
            Some(e) if e.start() == 0 => {
                out.push_str(tail.get(..e.end()).unwrap_or_default());
                rest = tail.get(e.end()..).unwrap_or_default();
            }
            _ => rest = tail,
        }
        if rest.is_empty() {
            break;
        }
    }
    out.push_str(rest);
    if changed > 0 {
        *text = out;
    }
    changed
}

/// Whether `digits` pass the Luhn check.
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The byte length of the card number at the start of `candidate` (digits
/// with single spaces or dashes between): the longest prefix of 13 to 19
/// digits that ends between groups and passes Luhn.
fn card_len(candidate: &str) -> Option<usize> {
    // The first 19 digits (no card has more) and where each is, without
    // allocating: every card-like string of an event comes here.
    let (mut values, mut ends) = ([0u8; 19], [0usize; 19]);
    let mut count = 0;
    for (i, c) in candidate
        .bytes()
        .enumerate()
        .filter(|(_, c)| c.is_ascii_digit())
    {
        if let (Some(value), Some(end)) = (values.get_mut(count), ends.get_mut(count)) {
            (*value, *end) = (c - b'0', i + 1);
        }
        count += 1;
    }
    (13..=count.min(19)).rev().find_map(|n| {
        let end = *ends.get(n - 1)?;
        let ends_group = n == count || !candidate.as_bytes().get(end)?.is_ascii_digit();
        (ends_group && luhn(values.get(..n)?)).then_some(end)
    })
}

/// Whether an integer is, in its digits, a card number: what the content
/// rule takes for one in a string. Cards sent as JSON numbers are cards
/// too, and a number inside JSON text scrubbed as JSON must go as it would
/// go in the text (else a second pass, over the text cut to a tag's length
/// and no longer JSON, would find what the first left).
fn is_card_number(n: &serde_json::Number) -> bool {
    let Some(digits) = n.as_u64().or_else(|| n.as_i64().map(i64::unsigned_abs)) else {
        return false;
    };
    // Fewer than 13 digits is no card.
    if digits < 1_000_000_000_000 {
        return false;
    }
    let mut text = digits.to_string();
    scrub_cards(&mut text) > 0 && text == FILTERED
}

fn scrub_cards(text: &mut String) -> usize {
    let cards: Vec<Range<usize>> = CARDS
        .find(text)
        .into_iter()
        // Digits after a decimal point are a fraction (`sample_rand=0.59...`).
        .filter(|m| !text.get(..m.start).is_some_and(|t| t.ends_with('.')))
        .filter_map(|m| card_len(text.get(m.clone())?).map(|len| m.start..m.start + len))
        .collect();
    filter_spans(text, &cards)
}

/// Whether the char before `start` and the one at `end` of `text` leave the
/// match standing alone (not part of a word, a version or a path).
fn stands_alone(text: &str, start: usize, end: usize) -> bool {
    let word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | ':');
    let before = text.get(..start).and_then(|t| t.chars().next_back());
    let after = text.get(end..).and_then(|t| t.chars().next());
    !before.is_some_and(word) && !after.is_some_and(word)
}

/// Replaces IPv4 and then IPv6 addresses; `signs` are the text's (an
/// IPv4 address holds no `:`, so replacing one leaves them right for IPv6).
fn scrub_ips(text: &mut String, signs: &Signs) -> usize {
    let mut changed = 0;
    if let Some(re) = PATTERNS.ipv4.as_ref()
        && signs.has(SIGN_DOT)
    {
        let v4: Vec<Range<usize>> = re
            .find_iter(text)
            .filter(|m| m.as_str().parse::<Ipv4Addr>().is_ok())
            .map(|m| m.range())
            .collect();
        changed += filter_spans(text, &v4);
    }
    if let Some(re) = PATTERNS.ipv6.as_ref()
        && signs.has(SIGN_COLON)
    {
        let v6: Vec<Range<usize>> = re
            .find_iter(text)
            .filter(|m| {
                // A zone (`fe80::1%eth0`) is not part of the address.
                let addr = m.as_str().split('%').next().unwrap_or_default();
                addr.bytes().any(|c| c.is_ascii_hexdigit())
                    && addr.parse::<Ipv6Addr>().is_ok()
                    && stands_alone(text, m.start(), m.end())
            })
            .map(|m| m.range())
            .collect();
        changed += filter_spans(text, &v6);
    }
    changed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sentry::value::drop_flat;

    fn run_with(event: Value, opts: &ScrubOptions) -> (Value, usize) {
        let Value::Object(mut map) = event else {
            panic!("test events are objects")
        };
        let n = scrub(&mut map, opts);
        (Value::Object(map), n)
    }

    fn run(event: Value) -> (Value, usize) {
        run_with(event, &ScrubOptions::default())
    }

    fn text(s: &str) -> String {
        let (e, _) = run(json!({ "extra": { "note": s } }));
        e["extra"]["note"].as_str().unwrap_or_default().to_owned()
    }

    fn ip_text(s: &str) -> String {
        let opts = ScrubOptions {
            scrub_ip: true,
            ..ScrubOptions::default()
        };
        let (e, _) = run_with(json!({ "extra": { "note": s } }), &opts);
        e["extra"]["note"].as_str().unwrap_or_default().to_owned()
    }

    #[test]
    fn every_pattern_compiles() {
        let p = &*PATTERNS;
        for re in [
            &p.pem_begin,
            &p.pem_end,
            &p.url_password,
            &p.bearer,
            &p.card,
            &p.ipv4,
            &p.ipv6,
        ] {
            assert!(re.is_some());
        }
    }

    #[test]
    fn secret_keys_scrub_the_whole_value_even_objects() {
        let (e, n) = run(
            json!({"extra": {"db_password": "x", "API-Key": 1, "credentials": {"user": "u", "pw": "p"}, "name": "n"}}),
        );
        assert_eq!(
            e["extra"],
            json!({"db_password": FILTERED, "API-Key": FILTERED, "credentials": FILTERED, "name": "n"})
        );
        assert_eq!(n, 3);
    }

    #[test]
    fn author_is_not_auth_but_authorization_is() {
        let (e, n) = run(
            json!({"extra": {"author": "ana", "co_author_id": 3, "authority": "x", "Authorization": "Basic x", "oauth_state": "s", "authorised_by": "b"}}),
        );
        assert_eq!(e["extra"]["author"], "ana");
        assert_eq!(e["extra"]["co_author_id"], 3);
        assert_eq!(e["extra"]["authority"], "x");
        assert_eq!(e["extra"]["Authorization"], FILTERED);
        assert_eq!(e["extra"]["oauth_state"], FILTERED);
        assert_eq!(e["extra"]["authorised_by"], FILTERED);
        assert_eq!(n, 3);
    }

    #[test]
    fn extra_and_safe_keys_are_honoured() {
        let opts = ScrubOptions {
            extra_keys: vec!["SSN".into()],
            safe_keys: vec!["csrf_token".into()],
            ..ScrubOptions::default()
        };
        let (e, n) = run_with(
            json!({"extra": {"user_ssn": "1", "csrf_token": "4111111111111111"}}),
            &opts,
        );
        assert_eq!(
            e["extra"],
            json!({"user_ssn": FILTERED, "csrf_token": "4111111111111111"})
        );
        assert_eq!(n, 1);
    }

    #[test]
    fn disabled_scrubbing_changes_nothing() {
        let opts = ScrubOptions {
            enabled: false,
            ..ScrubOptions::default()
        };
        let event = json!({"extra": {"password": "x"}});
        assert_eq!(run_with(event.clone(), &opts), (event, 0));
    }

    #[test]
    fn pair_lists_are_read_by_key() {
        let (e, n) = run(
            json!({"request": {"headers": [["Authorization", "Bearer abc"], ["Accept", "*/*"]]}, "tags": [["api_token", "t"]]}),
        );
        assert_eq!(
            e["request"]["headers"],
            json!([["Authorization", FILTERED], ["Accept", "*/*"]])
        );
        assert_eq!(e["tags"], json!([["api_token", FILTERED]]));
        assert_eq!(n, 2);
    }

    #[test]
    fn user_id_and_ip_stay_unless_ips_are_scrubbed() {
        let event = json!({"user": {"id": "4111111111111111", "ip_address": "198.51.100.1", "password": "p"}});
        let (e, n) = run(event.clone());
        assert_eq!(
            e["user"],
            json!({"id": "4111111111111111", "ip_address": "198.51.100.1", "password": FILTERED})
        );
        assert_eq!(n, 1);
        let opts = ScrubOptions {
            scrub_ip: true,
            ..ScrubOptions::default()
        };
        let (e, _) = run_with(event, &opts);
        assert_eq!(e["user"]["ip_address"], FILTERED);
        assert_eq!(e["user"]["id"], "4111111111111111");
    }

    #[test]
    fn card_numbers_are_luhn_checked() {
        assert_eq!(
            text("paid with 4111 1111 1111 1111 today"),
            "paid with [Filtered] today"
        );
        assert_eq!(text("4111-1111-1111-1111"), FILTERED);
        assert_eq!(text("amex 378282246310005"), "amex [Filtered]");
        // Not Luhn-valid, a millisecond timestamp, too short, part of a word.
        for kept in [
            "4111 1111 1111 1112",
            "ts 1705314030123",
            "4111 1111 1111",
            "id_4111111111111111x",
        ] {
            assert_eq!(text(kept), kept);
        }
        // A card followed by more digits is still found.
        assert_eq!(text("4111 1111 1111 1111 2024"), "[Filtered] 2024");
    }

    #[test]
    fn integers_that_are_card_numbers_are_scrubbed_whole() {
        let (e, n) = run(json!({"extra": {
            "card": 4111111111111111u64,
            "negative": -4111111111111111i64,
            "not_luhn": 4111111111111112u64,
            "millis": 1705314030123u64,
            "short": 411111111111u64,
            "float": 4.111111111111111e15,
        }}));
        assert_eq!(e["extra"]["card"], FILTERED);
        assert_eq!(e["extra"]["negative"], FILTERED);
        assert_eq!(e["extra"]["not_luhn"], 4111111111111112u64);
        assert_eq!(e["extra"]["millis"], 1705314030123u64);
        assert_eq!(e["extra"]["short"], 411111111111u64);
        assert_eq!(e["extra"]["float"], 4.111111111111111e15);
        assert_eq!(n, 2);
    }

    #[test]
    fn a_card_number_in_a_tag_of_json_text_goes_in_one_pass() {
        // A tag normalisation wrote as JSON text, long enough that scrubbing
        // it as JSON and cutting it to a tag's length leaves no JSON behind:
        // the second pass reads it as plain text and must find nothing new.
        let pem = "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----";
        let tag = format!(
            r#"{{"headers":"{pem}","nested":{{"formatted":622430668037360000,"pad":"{}"}}}}"#,
            "x".repeat(150)
        );
        let (once, n) = run(json!({"tags": {"k": tag}}));
        assert!(n >= 2, "{once}");
        let text = once["tags"]["k"].as_str().unwrap_or_default();
        assert!(!text.contains("622430668037360000"), "{text}");
        let (twice, m) = run(once.clone());
        assert_eq!((twice, m), (once, 0));
    }

    #[test]
    fn pem_private_key_bodies_are_scrubbed() {
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY-----";
        assert_eq!(
            text(&format!("key: {key} done")),
            "key: -----BEGIN RSA PRIVATE KEY-----[Filtered]-----END RSA PRIVATE KEY----- done"
        );
        assert_eq!(
            text("-----BEGIN PRIVATE KEY-----\nMIIE cut"),
            "-----BEGIN PRIVATE KEY-----[Filtered]"
        );
        let public = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----";
        assert_eq!(text(public), public);
    }

    #[test]
    fn url_passwords_are_scrubbed() {
        assert_eq!(
            text("connect postgres://shop:s3cr3t@db:5432/shop failed"),
            "connect postgres://shop:[Filtered]@db:5432/shop failed"
        );
        assert_eq!(text("https://user@host/x"), "https://user@host/x");
        assert_eq!(text("mail ana@example.com"), "mail ana@example.com");
    }

    #[test]
    fn bearer_tokens_and_secret_query_parameters_are_scrubbed() {
        assert_eq!(
            text("sent Bearer eyJhbGciOi.x-y_z= ok"),
            "sent Bearer [Filtered] ok"
        );
        assert_eq!(
            text("GET https://api.example.com/v1?page=2&access_token=abc&x=1"),
            "GET https://api.example.com/v1?page=2&access_token=[Filtered]&x=1"
        );
        assert_eq!(
            text(r#"get("/v1?token=abc", 2)"#),
            r#"get("/v1?token=[Filtered]", 2)"#
        );
        let (e, n) = run(json!({"request": {"query_string": "order=8812&api_key=k1;token=t"}}));
        assert_eq!(
            e["request"]["query_string"],
            "order=8812&api_key=[Filtered];token=[Filtered]"
        );
        assert_eq!(n, 2);
    }

    #[test]
    fn session_cookies_are_scrubbed_in_every_form() {
        let (e, n) = run(json!({"request": {
            "cookies": {"sessionid": "s1", "PHPSESSID": "s2", "connect.sid": "s3", "theme": "dark", "laravel_session": "s4"},
            "headers": {"Cookie": "JSESSIONID=s5; lang=en; csrftoken=c", "Set-Cookie": "_app_session=s6; Path=/; HttpOnly"},
        }}));
        assert_eq!(
            e["request"]["cookies"],
            json!({"sessionid": FILTERED, "PHPSESSID": FILTERED, "connect.sid": FILTERED, "theme": "dark", "laravel_session": FILTERED})
        );
        assert_eq!(
            e["request"]["headers"]["Cookie"],
            "JSESSIONID=[Filtered]; lang=en; csrftoken=[Filtered]"
        );
        assert_eq!(
            e["request"]["headers"]["Set-Cookie"],
            "_app_session=[Filtered]; Path=/; HttpOnly"
        );
        assert_eq!(n, 7);
        let (e, _) = run(json!({"request": {"cookies": "sid=1; a=b"}}));
        assert_eq!(e["request"]["cookies"], "sid=[Filtered]; a=b");
        let (e, _) = run(json!({"request": {"cookies": [["sessionid", "1"], ["a", "b"]]}}));
        assert_eq!(
            e["request"]["cookies"],
            json!([["sessionid", FILTERED], ["a", "b"]])
        );
    }

    #[test]
    fn json_text_is_scrubbed_as_json() {
        let (e, n) = run(json!({"request": {"data": "{\"password\": \"hunter2\", \"item\": 3}"}}));
        assert_eq!(
            e["request"]["data"],
            r#"{"item":3,"password":"[Filtered]"}"#
        );
        assert_eq!(n, 1);
        // Unchanged JSON text keeps its spelling.
        let (e, n) = run(json!({"request": {"data": "{\"item\": 3}"}}));
        assert_eq!(
            (e["request"]["data"].as_str(), n),
            (Some("{\"item\": 3}"), 0)
        );
    }

    #[test]
    fn ip_addresses_are_scrubbed_only_when_asked() {
        assert_eq!(text("from 198.51.100.7"), "from 198.51.100.7");
        assert_eq!(
            ip_text("from 198.51.100.7 via [2001:db8::1]:443"),
            "from [Filtered] via [[Filtered]]:443"
        );
        assert_eq!(ip_text("fe80::1%eth0 up"), "[Filtered] up");
        for kept in [
            "at 10:20:30.5",
            "std::vec::Vec",
            "version 1.2.3",
            "999.1.1.1",
            "a :: b",
        ] {
            assert_eq!(ip_text(kept), kept);
        }
        let opts = ScrubOptions {
            scrub_ip: true,
            ..ScrubOptions::default()
        };
        let (e, n) = run_with(
            json!({"request": {"env": {"REMOTE_ADDR": "10.0.0.1"}, "headers": {"X-Forwarded-For": "1.2.3.4, 10.0.0.1", "X-Real-IP": "1.2.3.4"}}}),
            &opts,
        );
        assert_eq!(e["request"]["env"]["REMOTE_ADDR"], FILTERED);
        assert_eq!(e["request"]["headers"]["X-Forwarded-For"], FILTERED);
        assert_eq!(e["request"]["headers"]["X-Real-IP"], FILTERED);
        assert_eq!(n, 3);
    }

    #[test]
    fn package_names_and_sdk_fields_are_not_secrets() {
        let event = json!({"modules": {"oauthlib": "3.2", "tokenizers": "0.15"}, "sdk": {"integrations": ["auth"]}});
        assert_eq!(run(event.clone()), (event, 0));
    }

    #[test]
    fn scrubbing_twice_changes_nothing_and_counts_nothing() {
        let (once, n) = run(json!({
            "extra": {"password": "p", "s": "Bearer abc 4111111111111111 postgres://u:p@h/d?token=t"},
            "request": {"cookies": "sessionid=1", "data": "[{\"secret\": 1}]"},
        }));
        assert_eq!(n, 7);
        let (twice, m) = run(once.clone());
        assert_eq!((twice, m), (once, 0));
    }

    #[test]
    fn deep_nesting_is_walked_without_recursion() {
        // Built by hand: `json!` would serialise the value, recursively.
        let mut deep = Value::Object(Map::from_iter([("password".to_owned(), Value::from("p"))]));
        for _ in 0..200_000 {
            deep = Value::Array(vec![deep]);
        }
        let mut event = Map::new();
        event.insert("extra".into(), deep);
        assert_eq!(scrub(&mut event, &ScrubOptions::default()), 1);
        drop_flat(Value::Object(event));
    }
}
