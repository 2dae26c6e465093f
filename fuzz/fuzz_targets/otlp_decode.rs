//! Fuzzes OTLP log decoding (what the aggregator does with every request it
//! receives): arbitrary bytes as a protobuf `ExportLogsServiceRequest`, then
//! the conversion into mecha's records. See `cri.rs` for how to run.
//!
//! Checked on whatever decodes: the hand-written wire encoder writes the
//! bytes prost writes for the same records, and records survive a second
//! encode and decode unchanged (decoding is a fixed point after one round).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::otlp::{decode_logs, encode_logs, encode_logs_wire};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ExportLogsServiceRequest::decode(data) else {
        return;
    };
    let records = decode_logs(request);

    let mut wire = Vec::new();
    encode_logs_wire(&records, &mut wire);
    assert_eq!(wire, encode_logs(&records).encode_to_vec());

    let again = match ExportLogsServiceRequest::decode(&wire[..]) {
        Ok(request) => decode_logs(request),
        Err(e) => panic!("our own encoding does not decode: {e}"),
    };
    assert_eq!(again.len(), records.len());
    let mut wire_again = Vec::new();
    encode_logs_wire(&again, &mut wire_again);
    assert_eq!(wire_again, wire);
});
