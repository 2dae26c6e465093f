//! `mecha parse --format FORMAT [FILE]`: run a parser over lines from a file or
//! stdin and print one JSON event per record, so users can try a parser on their
//! own logs before deploying it. A strict format that rejects a line makes the
//! command exit non-zero, naming the line.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use clap::Args;
use mecha_parsers::body::{BodyFormat, parse_body};
use mecha_parsers::container::{ContainerFormat, PartialMerger, parse_line};
use mecha_parsers::multiline::{Joiner, MultilineRule};
use serde_json::{Map, Value, json};

/// Arguments of `mecha parse`.
#[derive(Args, Debug)]
pub struct ParseArgs {
    /// A container envelope (`cri`, `docker`, `plain`) or a body format (`auto`,
    /// `raw`, `json`, `logfmt`, `nginx`, `apache_error`, `syslog`,
    /// `syslog_rfc3164`, `syslog_rfc5424`).
    #[arg(long, short)]
    format: String,
    /// Body format applied inside a container envelope. Default `auto`.
    #[arg(long, default_value = "auto")]
    body: String,
    /// Join multiline records: `builtin`, `java`, `python`, `go`, `nodejs`.
    #[arg(long)]
    multiline: Option<String>,
    /// Input file; stdin when absent.
    file: Option<PathBuf>,
}

/// A record under construction: text plus what the envelope said.
struct Pending {
    line: usize,
    timestamp_ns: i64,
    stream: Option<&'static str>,
    text: String,
}

const MAX_LINE: usize = 1 << 20;

pub fn run(a: ParseArgs) -> anyhow::Result<ExitCode> {
    let (container, body) = match ContainerFormat::from_str(&a.format) {
        Ok(c) => (
            Some(c),
            BodyFormat::from_str(&a.body).map_err(|e| anyhow::anyhow!("--body: {e}"))?,
        ),
        Err(_) => match BodyFormat::from_str(&a.format) {
            Ok(b) => (None, b),
            Err(e) => anyhow::bail!("--format: {e} (or one of cri, docker, plain)"),
        },
    };
    let mut joiner = match &a.multiline {
        Some(r) => Some(Joiner::<(usize, i64, Option<&'static str>)>::new(
            MultilineRule::from_str(r).map_err(|e| anyhow::anyhow!("--multiline: {e}"))?,
            MAX_LINE,
            500,
        )),
        None => None,
    };
    let input: Box<dyn Read> = match &a.file {
        Some(p) => {
            Box::new(std::fs::File::open(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)
        }
        None => Box::new(std::io::stdin()),
    };
    let mut reader = BufReader::new(input);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut merger = PartialMerger::new(MAX_LINE);
    let mut failures = 0usize;
    let mut buf = Vec::new();
    let mut n = 0usize;
    let emit = |p: Pending, out: &mut dyn Write, failures: &mut usize| -> std::io::Result<()> {
        match render(&p, body) {
            Ok(v) => writeln!(out, "{v}"),
            Err(e) => {
                *failures += 1;
                eprintln!("line {}: {e}", p.line);
                Ok(())
            }
        }
    };
    loop {
        buf.clear();
        // Bounded: a line longer than MAX_LINE is cut there and its rest skipped,
        // so a file without newlines cannot take all memory.
        if (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)?
            == 0
        {
            break;
        }
        n += 1;
        if buf.len() >= MAX_LINE && buf.last() != Some(&b'\n') {
            eprintln!("line {n}: longer than {MAX_LINE} bytes; cut");
            skip_line(&mut reader)?;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let pending = match container {
            Some(c) => match parse_line(c, &buf) {
                Ok(cl) => match merger.push(cl) {
                    Some(m) => Pending {
                        line: n,
                        timestamp_ns: m.timestamp_ns,
                        stream: Some(m.stream.as_str()).filter(|s| *s != "unknown"),
                        text: String::from_utf8_lossy(&m.message).into_owned(),
                    },
                    None => continue,
                },
                Err(e) => {
                    failures += 1;
                    eprintln!("line {n}: {e}");
                    continue;
                }
            },
            None => Pending {
                line: n,
                timestamp_ns: 0,
                stream: None,
                text: String::from_utf8_lossy(&buf).into_owned(),
            },
        };
        match &mut joiner {
            Some(j) => {
                if let Some(done) = j.push(
                    pending.text,
                    (pending.line, pending.timestamp_ns, pending.stream),
                ) {
                    emit(joined(done), &mut out, &mut failures)?;
                }
            }
            None => emit(pending, &mut out, &mut failures)?,
        }
    }
    if let Some(m) = merger.flush() {
        let p = Pending {
            line: n,
            timestamp_ns: m.timestamp_ns,
            stream: Some(m.stream.as_str()).filter(|s| *s != "unknown"),
            text: String::from_utf8_lossy(&m.message).into_owned(),
        };
        match &mut joiner {
            Some(j) => {
                if let Some(done) = j.push(p.text, (p.line, p.timestamp_ns, p.stream)) {
                    emit(joined(done), &mut out, &mut failures)?;
                }
            }
            None => emit(p, &mut out, &mut failures)?,
        }
    }
    if let Some(done) = joiner.as_mut().and_then(|j| j.flush()) {
        emit(joined(done), &mut out, &mut failures)?;
    }
    out.flush()?;
    if failures > 0 {
        eprintln!("{failures} line(s) rejected by {}", a.format);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Discards input up to and including the next newline.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let len = chunk.len();
                reader.consume(len);
            }
        }
    }
}

fn joined(j: mecha_parsers::multiline::Joined<(usize, i64, Option<&'static str>)>) -> Pending {
    Pending {
        line: j.first.0,
        timestamp_ns: j.first.1,
        stream: j.first.2,
        text: j.text,
    }
}

fn render(p: &Pending, body: BodyFormat) -> Result<Value, mecha_parsers::ParseError> {
    let parsed = parse_body(body, &p.text)?;
    let mut attributes: Map<String, Value> = parsed.fields;
    if let Some(s) = p.stream {
        attributes.insert("log.iostream".into(), Value::String(s.into()));
    }
    let ts = if p.timestamp_ns > 0 {
        Some(p.timestamp_ns)
    } else {
        parsed.timestamp_ns
    };
    Ok(json!({
        "timestamp": ts.map(format_ts),
        "severity": parsed.severity.unwrap_or_default().as_str(),
        "body": parsed.message,
        "attributes": attributes,
        "resource": {},
    }))
}

fn format_ts(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
