//! Fuzzes the CRI line parser and the format sniffing in front of it.
//!
//! The fuzz targets of `mecha-parsers` live in this directory, one per parser
//! of untrusted input. `scripts/fuzz` builds and runs all of them (on stable
//! Rust, through `RUSTC_BOOTSTRAP=1`); to run one by hand:
//!
//! ```sh
//! cargo install cargo-fuzz --locked
//! cd fuzz
//! RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=~/.cache/mecha/fuzz-target \
//!   cargo fuzz run cri corpus/cri -- -max_total_time=60 -rss_limit_mb=512
//! cargo fuzz list
//! ```
//!
//! A crash leaves its input in `fuzz/artifacts/<target>/`; replay it with
//! `cargo fuzz run <target> artifacts/<target>/<file>` (same environment) and
//! turn it into a unit test beside the parser.
//!
//! Checked here: a parsed line's message is the tail of the line it borrows
//! from, `detect` agrees with `parse_cri`, and a parsed line written back in
//! the canonical form parses to the same line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::container::{ContainerFormat, Stream, detect, parse_cri, parse_line};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        check_line(line);
    }
});

fn check_line(line: &[u8]) {
    let plain = parse_line(ContainerFormat::Plain, line).ok();
    assert_eq!(plain.map(|l| l.message.into_owned()), Some(line.to_vec()));

    let parsed = parse_cri(line);
    assert_eq!(parse_line(ContainerFormat::Cri, line), parsed);
    let format = detect(line);
    if format == ContainerFormat::Cri {
        // `detect` strips one trailing `\r`.
        let trimmed = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(parse_cri(trimmed).is_ok());
    }
    let Ok(parsed) = parsed else {
        return;
    };
    if !line.ends_with(b"\r") {
        assert_eq!(format, ContainerFormat::Cri);
    }
    assert!(matches!(parsed.stream, Stream::Stdout | Stream::Stderr));
    assert!(parsed.message.len() < line.len());
    assert!(line.ends_with(&parsed.message));

    // Written back canonically, the line reads the same.
    let ts = chrono::DateTime::from_timestamp_nanos(parsed.timestamp_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let tag = if parsed.partial { "P" } else { "F" };
    let mut canonical = format!("{ts} {} {tag} ", parsed.stream).into_bytes();
    canonical.extend_from_slice(&parsed.message);
    assert_eq!(parse_cri(&canonical).ok(), Some(parsed));
}
