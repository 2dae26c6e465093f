//! Fuzzes OTLP log decoding: arbitrary bytes as a protobuf
//! `ExportLogsServiceRequest`, then the conversion into mecha's records. See
//! `cri.rs` for how to run.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::otlp::decode_logs;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = ExportLogsServiceRequest::decode(data) {
        let _ = decode_logs(request);
    }
});
