//! Multiline joining: turns the lines of a stack trace, panic dump or
//! traceback back into the one record the application meant to write.
//!
//! Hand-written rules, one per runtime (Java, Python, Go, Node.js), learned
//! from how each prints its errors, plus a custom "this regex starts a record"
//! rule. A [`Joiner`] is a small state machine over the lines of ONE stream: it
//! holds at most one pending record, bounded by `max_bytes` and `max_lines`,
//! and knows nothing of files, timers or offsets — the caller decides when a
//! pending record has waited long enough ([`Joiner::flush`]) and carries its own
//! per-line metadata `M` (offsets, timestamps) through.

use std::fmt;
use std::str::FromStr;

use regex::Regex;

use crate::ParseError;
use crate::util::{preview_str, truncate_str};

const FORMAT: &str = "multiline";

/// Which lines continue a record.
#[derive(Debug, Clone)]
pub enum MultilineRule {
    /// Java/JVM stack traces: `at` frames, `Caused by:`, `Suppressed:`,
    /// `... N more`, and an exception header right after a log line.
    Java,
    /// Python tracebacks as `logging.exception` prints them, chained ones too.
    Python,
    /// Go panics: `panic:`/`fatal error:` and the goroutine dump after it.
    Go,
    /// Node.js errors: indented `at` frames and the `Node.js vN` trailer.
    Node,
    /// All four built-in rules at once.
    Builtin,
    /// A line matching the regex starts a new record; other lines continue it.
    Custom(Regex),
}

impl MultilineRule {
    /// A custom rule: lines matching `pattern` start a record.
    pub fn custom(pattern: &str) -> Result<Self, ParseError> {
        regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map(MultilineRule::Custom)
            .map_err(|e| {
                ParseError::malformed(
                    FORMAT,
                    format!(
                        "expected a regular expression, found {} ({e})",
                        preview_str(pattern)
                    ),
                )
            })
    }

    /// The configuration name (`custom` for a custom rule).
    pub fn as_str(&self) -> &'static str {
        match self {
            MultilineRule::Java => "java",
            MultilineRule::Python => "python",
            MultilineRule::Go => "go",
            MultilineRule::Node => "nodejs",
            MultilineRule::Builtin => "builtin",
            MultilineRule::Custom(_) => "custom",
        }
    }

    fn flags(&self) -> Langs {
        let all = Langs {
            java: true,
            python: true,
            go: true,
            node: true,
        };
        let none = Langs {
            java: false,
            python: false,
            go: false,
            node: false,
        };
        match self {
            MultilineRule::Java => Langs { java: true, ..none },
            MultilineRule::Python => Langs {
                python: true,
                ..none
            },
            MultilineRule::Go => Langs { go: true, ..none },
            MultilineRule::Node => Langs { node: true, ..none },
            MultilineRule::Builtin => all,
            MultilineRule::Custom(_) => none,
        }
    }
}

impl fmt::Display for MultilineRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MultilineRule {
    type Err = ParseError;

    /// Reads `java`, `python`, `go`, `nodejs` (or `node`), `builtin` (or `auto`).
    /// Custom rules are built with [`MultilineRule::custom`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "java" => MultilineRule::Java,
            "python" => MultilineRule::Python,
            "go" => MultilineRule::Go,
            "nodejs" | "node" => MultilineRule::Node,
            "builtin" | "auto" => MultilineRule::Builtin,
            other => {
                return Err(ParseError::malformed(
                    FORMAT,
                    format!(
                        "expected one of java, python, go, nodejs, builtin, found {}",
                        preview_str(other)
                    ),
                ));
            }
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Langs {
    java: bool,
    python: bool,
    go: bool,
    node: bool,
}

/// Where in a traceback the pending Python record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Py {
    #[default]
    Outside,
    /// After `Traceback (most recent call last):`, before the exception line.
    InTraceback,
    /// After the final `ValueError: ...` line: chained tracebacks may follow.
    AfterException,
}

/// What is known about the pending record beyond its text.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    py: Py,
    go_panic: bool,
}

/// One joined record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined<M> {
    /// The lines joined with `\n` (trailing blank lines removed).
    pub text: String,
    /// Metadata of the first line.
    pub first: M,
    /// Metadata of the last line consumed (dropped lines included), so a
    /// checkpoint taken from it covers the whole record.
    pub last: M,
    /// How many lines the record consumed, dropped ones included.
    pub lines: usize,
    /// `true` when lines were dropped or cut to respect `max_bytes`/`max_lines`.
    pub truncated: bool,
}

#[derive(Debug)]
struct Pending<M> {
    joined: Joined<M>,
    kept_lines: usize,
    state: State,
}

/// Joins continuation lines onto the record they belong to.
///
/// ```
/// use mecha_parsers::multiline::{Joiner, MultilineRule};
///
/// let mut joiner = Joiner::new(MultilineRule::Java, 64 * 1024, 500);
/// assert!(joiner.push("ERROR failed".to_string(), 1).is_none());
/// assert!(joiner.push("\tat A.b(A.java:1)".to_string(), 2).is_none());
/// let record = joiner.push("INFO next".to_string(), 3).ok_or("no record")?;
/// assert_eq!(record.text, "ERROR failed\n\tat A.b(A.java:1)");
/// assert_eq!((record.first, record.last, record.lines), (1, 2, 2));
/// # Ok::<(), &str>(())
/// ```
#[derive(Debug)]
pub struct Joiner<M> {
    rule: MultilineRule,
    langs: Langs,
    max_bytes: usize,
    max_lines: usize,
    pending: Option<Pending<M>>,
}

impl<M: Clone> Joiner<M> {
    /// A joiner keeping at most `max_bytes` of text and `max_lines` lines per
    /// record (at least one line is always kept).
    pub fn new(rule: MultilineRule, max_bytes: usize, max_lines: usize) -> Self {
        Joiner {
            langs: rule.flags(),
            rule,
            max_bytes,
            max_lines: max_lines.max(1),
            pending: None,
        }
    }

    /// Adds one line (without its newline). Returns the previous record when
    /// `text` starts a new one.
    pub fn push(&mut self, mut text: String, meta: M) -> Option<Joined<M>> {
        if let Some(p) = &mut self.pending
            && let Some(state) = continuation(&self.rule, self.langs, p, &text)
        {
            p.state = state;
            p.joined.lines += 1;
            p.joined.last = meta;
            let fits = p.joined.text.len() + 1 + text.len() <= self.max_bytes;
            if p.joined.truncated || p.kept_lines >= self.max_lines || !fits {
                // Dropped until the next start line, so that a record never
                // ends with a cut frame in the middle of the trace.
                p.joined.truncated = true;
            } else {
                p.joined.text.push('\n');
                p.joined.text.push_str(&text);
                p.kept_lines += 1;
            }
            return None;
        }
        let state = start_state(self.langs, &text);
        let truncated = text.len() > self.max_bytes;
        truncate_str(&mut text, self.max_bytes);
        let previous = self.flush();
        self.pending = Some(Pending {
            joined: Joined {
                text,
                first: meta.clone(),
                last: meta,
                lines: 1,
                truncated,
            },
            kept_lines: 1,
            state,
        });
        previous
    }

    /// Emits the pending record, if any (on a flush timeout, or at end of input).
    pub fn flush(&mut self) -> Option<Joined<M>> {
        let mut joined = self.pending.take()?.joined;
        trim_trailing_blank_lines(&mut joined.text);
        Some(joined)
    }

    /// Whether a record is waiting for more lines.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// Removes blank lines at the end: the blank line after a Python traceback or
/// Go dump belongs to the record only if more of it follows.
fn trim_trailing_blank_lines(text: &mut String) {
    while let Some(i) = text.rfind('\n') {
        let last = text.get(i + 1..).unwrap_or_default();
        if !last.trim().is_empty() {
            break;
        }
        text.truncate(i);
    }
}

/// The state a record starts in.
fn start_state(langs: Langs, line: &str) -> State {
    State {
        py: if langs.python && line.starts_with("Traceback (most recent call last):") {
            Py::InTraceback
        } else {
            Py::Outside
        },
        go_panic: langs.go && (line.starts_with("panic: ") || line.starts_with("fatal error: ")),
    }
}

/// `Some(new state)` when `line` continues the pending record.
fn continuation<M>(
    rule: &MultilineRule,
    langs: Langs,
    p: &Pending<M>,
    line: &str,
) -> Option<State> {
    let mut state = p.state;
    if let MultilineRule::Custom(re) = rule {
        return (!re.is_match(line)).then_some(state);
    }
    let blank = line.trim().is_empty();
    let indented = line.starts_with([' ', '\t']);

    if langs.go {
        if state.go_panic {
            let dump_line = blank
                || indented
                || line.starts_with("[signal ")
                || line.starts_with("goroutine ")
                || line.starts_with("created by ")
                || line.starts_with("exit status ")
                || line.starts_with("panic: ")
                || line.starts_with("...additional frames elided...")
                || is_go_call(line);
            // Nothing else belongs to a panic dump, whatever other rules say.
            return dump_line.then_some(state);
        }
        if line.starts_with("panic: ") || line.starts_with("fatal error: ") {
            return None;
        }
    }

    if langs.python {
        if line.starts_with("Traceback (most recent call last):") {
            state.py = Py::InTraceback;
            return Some(state);
        }
        match state.py {
            Py::InTraceback if indented || blank => return Some(state),
            Py::InTraceback if is_exception_line(line, |_| true) => {
                state.py = Py::AfterException;
                return Some(state);
            }
            Py::InTraceback => {}
            Py::AfterException
                if blank
                    || line.starts_with("During handling of the above exception")
                    || line.starts_with("The above exception was the direct cause") =>
            {
                return Some(state);
            }
            Py::AfterException | Py::Outside => {}
        }
    }

    if blank || indented {
        return Some(state);
    }

    if langs.java {
        let ellipsis =
            line.starts_with("... ") && (line.ends_with(" more") || line.ends_with(" omitted"));
        if line.starts_with("Caused by:") || line.starts_with("Suppressed:") || ellipsis {
            return Some(state);
        }
        // logback/log4j print the exception header on the line after the message.
        if p.joined.lines == 1
            && is_exception_line(line, |name| {
                name.ends_with("Exception")
                    || name.ends_with("Error")
                    || name.ends_with("Throwable")
            })
        {
            return Some(state);
        }
    }

    if langs.node && line.starts_with("Node.js v") {
        return Some(state);
    }
    None
}

/// `name` or `name: message`, where `name` is a dotted identifier accepted by
/// `accept` (`java.lang.IllegalStateException: boom`, `KeyError: 'id'`).
fn is_exception_line(line: &str, accept: impl Fn(&str) -> bool) -> bool {
    let name = match line.split_once(": ") {
        Some((name, _)) => name,
        None => line.strip_suffix(':').unwrap_or(line),
    };
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    starts_well
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'))
        && accept(name)
}

/// A Go stack frame function line: `main.main()`,
/// `net/http.(*conn).serve(0xc0001b2000, {0x8a3c58, 0xc000123450})`.
fn is_go_call(line: &str) -> bool {
    let Some(open) = line.find('(') else {
        return false;
    };
    let head = line.get(..open).unwrap_or_default();
    line.ends_with(')') && !head.is_empty() && !head.contains(' ')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` line by line (meta = line number) and flushes at the end.
    fn join(rule: MultilineRule, input: &str) -> Vec<Joined<usize>> {
        join_limited(rule, input, 1 << 20, 1000)
    }

    fn join_limited(
        rule: MultilineRule,
        input: &str,
        max_bytes: usize,
        max_lines: usize,
    ) -> Vec<Joined<usize>> {
        let mut j = Joiner::new(rule, max_bytes, max_lines);
        let mut out: Vec<_> = input
            .lines()
            .enumerate()
            .filter_map(|(n, l)| j.push(l.to_string(), n))
            .collect();
        out.extend(j.flush());
        assert!(!j.is_pending());
        out
    }

    fn texts(records: &[Joined<usize>]) -> Vec<&str> {
        records.iter().map(|r| r.text.as_str()).collect()
    }

    const SPRING_BOOT: &str = "\
2024-01-15T10:20:30.120Z  INFO 1 --- [nio-8080-exec-1] c.e.shop.OrderController : GET /orders/42
2024-01-15T10:20:30.123Z ERROR 1 --- [nio-8080-exec-1] o.a.c.c.C.[.[.[/].[dispatcherServlet]    : Servlet.service() for servlet [dispatcherServlet] threw exception
java.lang.IllegalStateException: order 42 has no lines
\tat com.example.shop.OrderService.total(OrderService.java:57) ~[classes/:na]
\tat com.example.shop.OrderController.get(OrderController.java:31) ~[classes/:na]
\tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103) ~[na:na]
Caused by: java.lang.NullPointerException: Cannot invoke \"java.util.List.size()\" because \"lines\" is null
\tat com.example.shop.Order.lineCount(Order.java:22) ~[classes/:na]
\t... 48 common frames omitted
2024-01-15T10:20:31.001Z  INFO 1 --- [nio-8080-exec-2] c.e.shop.OrderController : GET /orders/43";

    #[test]
    fn spring_boot_error_with_caused_by_chain_is_one_record() {
        for rule in [MultilineRule::Java, MultilineRule::Builtin] {
            let out = join(rule, SPRING_BOOT);
            assert_eq!(out.len(), 3);
            let lines: Vec<&str> = SPRING_BOOT.lines().collect();
            assert_eq!(out[0].text, lines[0]);
            assert_eq!(out[1].text, lines[1..9].join("\n"));
            assert_eq!(
                (out[1].first, out[1].last, out[1].lines, out[1].truncated),
                (1, 8, 8, false)
            );
            assert_eq!(out[2].text, lines[9]);
        }
    }

    #[test]
    fn java_exception_header_after_a_trace_starts_a_new_record() {
        let input = "java.lang.RuntimeException: a\n\tat A.a(A.java:1)\njava.lang.RuntimeException: b\n\tat B.b(B.java:2)";
        assert_eq!(
            texts(&join(MultilineRule::Java, input)),
            [
                "java.lang.RuntimeException: a\n\tat A.a(A.java:1)",
                "java.lang.RuntimeException: b\n\tat B.b(B.java:2)",
            ]
        );
    }

    const PYTHON: &str = "\
2024-01-15 10:20:30,123 ERROR [app.views] failed to handle request id=7
Traceback (most recent call last):
  File \"/app/app/views.py\", line 41, in handle
    payload = json.loads(body)
  File \"/usr/local/lib/python3.12/json/__init__.py\", line 346, in loads
    return _default_decoder.decode(s)
json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File \"/app/app/views.py\", line 43, in handle
    raise BadRequest(\"invalid json\")
app.errors.BadRequest: invalid json
2024-01-15 10:20:30,200 INFO [app.views] GET /health 200";

    #[test]
    fn python_logger_exception_with_chained_traceback_is_one_record() {
        for rule in [MultilineRule::Python, MultilineRule::Builtin] {
            let out = join(rule, PYTHON);
            let lines: Vec<&str> = PYTHON.lines().collect();
            assert_eq!(texts(&out), [lines[..14].join("\n").as_str(), lines[14]]);
        }
    }

    #[test]
    fn python_bare_traceback_and_blank_line_before_next_log() {
        let input = "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nKeyError: 'id'\n\nINFO next";
        let out = join(MultilineRule::Python, input);
        assert_eq!(
            texts(&out),
            [
                "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nKeyError: 'id'",
                "INFO next"
            ]
        );
        assert_eq!(out[0].lines, 4); // the blank line is consumed, then trimmed
    }

    const GO_PANIC: &str = "\
2024/01/15 10:20:30 listening on :8080
panic: runtime error: invalid memory address or nil pointer dereference
[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x6a1b2c]

goroutine 34 [running]:
main.(*Server).handle(0x0, {0x7f1e20, 0xc0001a2000})
\t/app/server.go:88 +0x2c
net/http.HandlerFunc.ServeHTTP(0xc000012345?, {0x7f1e20?, 0xc0001a2000?}, 0x0?)
\t/usr/local/go/src/net/http/server.go:2166 +0x29
created by net/http.(*Server).Serve in goroutine 1
\t/usr/local/go/src/net/http/server.go:3285 +0x4b4

goroutine 1 [IO wait]:
internal/poll.runtime_pollWait(0x7f3c2a1b0e28, 0x72)
\t/usr/local/go/src/runtime/netpoll.go:345 +0x85
main.main()
\t/app/main.go:20 +0x1d
exit status 2
2024/01/15 10:20:31 restarting";

    #[test]
    fn go_panic_with_two_goroutines_is_one_record() {
        for rule in [MultilineRule::Go, MultilineRule::Builtin] {
            let out = join(rule, GO_PANIC);
            let lines: Vec<&str> = GO_PANIC.lines().collect();
            assert_eq!(
                texts(&out),
                [lines[0], lines[1..18].join("\n").as_str(), lines[18]]
            );
        }
    }

    const NODE: &str = "\
Server listening on port 3000
/app/src/users.js:12
  return user.id;
              ^

TypeError: Cannot read properties of undefined (reading 'id')
    at getUser (/app/src/users.js:12:15)
    at /app/src/server.js:30:5
    at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)
    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)

Node.js v20.11.0";

    #[test]
    fn node_unhandled_type_error_keeps_frames_with_the_error() {
        for rule in [MultilineRule::Node, MultilineRule::Builtin] {
            let out = join(rule, NODE);
            let lines: Vec<&str> = NODE.lines().collect();
            // The code frame before the error is a record of its own (out of scope).
            assert_eq!(
                texts(&out),
                [
                    lines[0],
                    lines[1..4].join("\n").as_str(),
                    lines[5..].join("\n").as_str()
                ]
            );
        }
    }

    #[test]
    fn custom_rule_starts_records_on_matching_lines() {
        let rule = MultilineRule::custom(r"^\d{4}-\d{2}-\d{2}").unwrap();
        let input = "2024-01-15 a\nmore\nstill more\n2024-01-15 b\n2024-01-15 c\nx";
        assert_eq!(
            texts(&join(rule, input)),
            [
                "2024-01-15 a\nmore\nstill more",
                "2024-01-15 b",
                "2024-01-15 c\nx"
            ]
        );
        let err = MultilineRule::custom("(unclosed").unwrap_err().to_string();
        assert!(
            err.starts_with("multiline: expected a regular expression, found \"(unclosed\""),
            "{err}"
        );
    }

    #[test]
    fn max_lines_drops_continuations_until_the_next_start() {
        let out = join_limited(MultilineRule::Java, SPRING_BOOT, 1 << 20, 3);
        assert_eq!(out.len(), 3);
        let lines: Vec<&str> = SPRING_BOOT.lines().collect();
        assert_eq!(out[1].text, lines[1..4].join("\n"));
        assert!(out[1].truncated);
        assert_eq!((out[1].lines, out[1].last), (8, 8));
        assert!(!out[2].truncated);
    }

    #[test]
    fn max_bytes_drops_whole_lines_and_cuts_a_long_first_line() {
        let out = join_limited(
            MultilineRule::Java,
            "start\n\tat a\n\tat bbbbbbbbbbbb\n\tat c",
            12,
            100,
        );
        assert_eq!(texts(&out), ["start\n\tat a"]);
        assert!(out[0].truncated);
        let out = join_limited(MultilineRule::Java, "ééééé", 5, 100);
        assert_eq!((out[0].text.as_str(), out[0].truncated), ("éé", true));
    }

    #[test]
    fn rule_names() {
        for (name, want) in [
            ("java", "java"),
            ("python", "python"),
            ("go", "go"),
            ("nodejs", "nodejs"),
            ("node", "nodejs"),
            ("builtin", "builtin"),
            ("auto", "builtin"),
        ] {
            assert_eq!(name.parse::<MultilineRule>().unwrap().as_str(), want);
        }
        assert!("ruby".parse::<MultilineRule>().is_err());
    }

    proptest! {
        #[test]
        fn never_panics_and_conserves_lines(
            lines in proptest::collection::vec("\\PC{0,30}|[ \\t]{0,2}(at |Caused by: |panic: |Traceback |goroutine )[a-z.()]{0,10}", 0..40),
            max_bytes in 0usize..200,
            max_lines in 0usize..10,
        ) {
            let mut j = Joiner::new(MultilineRule::Builtin, max_bytes, max_lines);
            let mut consumed = 0;
            for (n, l) in lines.iter().enumerate() {
                if let Some(r) = j.push(l.clone(), n) {
                    prop_assert!(r.text.len() <= max_bytes);
                    consumed += r.lines;
                }
            }
            if let Some(r) = j.flush() {
                consumed += r.lines;
            }
            prop_assert_eq!(consumed, lines.len());
        }
    }
}
