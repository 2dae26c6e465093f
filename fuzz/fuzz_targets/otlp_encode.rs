//! Fuzzes the agent's forward path to bytes: log lines parsed by `auto` (so
//! attributes hold whatever JSON, logfmt or syslog put there: big unsigned
//! numbers, floats, nesting) become records and go through the hand-written
//! OTLP wire encoder. See `cri.rs` for how to run.
//!
//! Checked: the wire encoder writes exactly prost's bytes for `encode_logs`,
//! and those bytes decode to as many records.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mecha_parsers::body::{BodyFormat, parse_body};
use mecha_parsers::model::keys;
use mecha_parsers::otlp::{decode_logs, encode_logs, encode_logs_wire};
use mecha_parsers::{LogRecord, Resource, SourcePosition};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Three resources, shared by pointer the way a tail source shares them,
    // plus one equal to the first by content only.
    let resources: Vec<Resource> = ["shop", "auth", "", "shop"]
        .iter()
        .map(|ns| {
            let mut r = Resource::default();
            if !ns.is_empty() {
                r.set(keys::NAMESPACE, *ns);
            }
            r
        })
        .collect();
    let stream: Arc<str> = Arc::from("fingerprint");
    let mut records = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let Ok(body) = parse_body(BodyFormat::Auto, line) else {
            panic!("auto failed");
        };
        let pick = line.len() % resources.len();
        records.push(LogRecord {
            timestamp_ns: body.timestamp_ns.unwrap_or(0),
            observed_ns: i64::try_from(n).unwrap_or(i64::MAX),
            severity: body.severity.unwrap_or_default(),
            body: body.message,
            attributes: body.fields,
            resource: resources[pick].clone(),
            position: (n % 2 == 0).then(|| SourcePosition {
                stream: stream.clone(),
                offset: u64::try_from(line.len()).unwrap_or(u64::MAX) << (n % 64),
            }),
        });
    }

    let mut wire = Vec::new();
    encode_logs_wire(&records, &mut wire);
    assert_eq!(wire, encode_logs(&records).encode_to_vec());
    match ExportLogsServiceRequest::decode(&wire[..]) {
        Ok(request) => assert_eq!(decode_logs(request).len(), records.len()),
        Err(e) => panic!("our own encoding does not decode: {e}"),
    }
});
