//! OTLP logs: the wire form between agent and aggregator, and toward any OTLP
//! backend.
//!
//! Records are grouped by resource into `ResourceLogs`. The source position rides
//! in two reserved attributes (`mecha.source.stream`, `mecha.source.offset`) so
//! that any OTLP hop in between keeps it, and is lifted back out on decode.
//!
//! [`encode_logs`] builds the prost structs and is the reference;
//! [`encode_logs_wire`] writes the same request's bytes directly for the
//! agent's forward path (see [`wire`] for why).

use std::collections::BTreeMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpLogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use serde_json::{Map, Number, Value};

use crate::model::{LogRecord, Resource, Severity, SourcePosition};

pub mod wire;

pub use wire::{
    LogsEncoder, RecordBuf, RecordHead, attr_field, encode_logs_wire, encode_record_field,
    position_offset_field, position_stream_field,
};

/// Attribute carrying [`SourcePosition::stream`].
pub const POSITION_STREAM_KEY: &str = "mecha.source.stream";
/// Attribute carrying [`SourcePosition::offset`].
pub const POSITION_OFFSET_KEY: &str = "mecha.source.offset";

const SCOPE_NAME: &str = "mecha";

/// Builds an export request from records, one `ResourceLogs` per distinct resource.
pub fn encode_logs(records: &[LogRecord]) -> ExportLogsServiceRequest {
    // Records of one source share their resource: compare pointers first and
    // fall back to comparing attributes only when the resource changes.
    let mut groups: Vec<(&Resource, Vec<OtlpLogRecord>)> = Vec::new();
    let mut index: BTreeMap<&BTreeMap<String, String>, usize> = BTreeMap::new();
    let mut last: Option<usize> = None;
    for r in records {
        let g = match last {
            Some(i)
                if groups
                    .get(i)
                    .is_some_and(|(res, _)| res.same_as(&r.resource)) =>
            {
                i
            }
            _ => *index.entry(&r.resource.attributes).or_insert_with(|| {
                groups.push((&r.resource, Vec::new()));
                groups.len() - 1
            }),
        };
        last = Some(g);
        if let Some((_, list)) = groups.get_mut(g) {
            list.push(encode_record(r));
        }
    }
    let resource_logs = groups
        .into_iter()
        .map(|(res, log_records)| ResourceLogs {
            resource: Some(OtlpResource {
                attributes: res
                    .attributes
                    .iter()
                    .map(|(k, v)| string_kv(k, v.clone()))
                    .collect(),
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_string(),
                    ..Default::default()
                }),
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest { resource_logs }
}

fn encode_record(r: &LogRecord) -> OtlpLogRecord {
    let mut attributes: Vec<KeyValue> = r
        .attributes
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            key_strindex: 0,
            value: Some(json_to_any(v)),
        })
        .collect();
    if let Some(pos) = &r.position {
        attributes.push(string_kv(POSITION_STREAM_KEY, pos.stream.to_string()));
        attributes.push(KeyValue {
            key: POSITION_OFFSET_KEY.to_string(),
            key_strindex: 0,
            // OTLP has no unsigned integer; offsets beyond i64::MAX cannot occur in files.
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(
                    i64::try_from(pos.offset).unwrap_or(i64::MAX),
                )),
            }),
        });
    }
    OtlpLogRecord {
        time_unix_nano: u64::try_from(r.timestamp_ns).unwrap_or(0),
        observed_time_unix_nano: u64::try_from(r.observed_ns).unwrap_or(0),
        severity_number: r.severity.otlp_number(),
        severity_text: if r.severity == Severity::Unspecified {
            String::new()
        } else {
            r.severity.as_str().to_string()
        },
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(r.body.clone())),
        }),
        attributes,
        ..Default::default()
    }
}

fn string_kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
    }
}

/// Turns an export request from any OTLP sender into records.
///
/// Non-string resource attributes are rendered as JSON text; a non-string body is
/// rendered as JSON text too (OTLP allows maps as bodies).
pub fn decode_logs(req: ExportLogsServiceRequest) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for rl in req.resource_logs {
        let mut resource = Resource::default();
        if let Some(res) = rl.resource {
            for kv in res.attributes {
                let v = kv.value.map(any_to_json).unwrap_or(Value::Null);
                resource.set(kv.key, json_to_text(v));
            }
        }
        for sl in rl.scope_logs {
            for lr in sl.log_records {
                out.push(decode_record(lr, &resource));
            }
        }
    }
    out
}

/// Decodes the bytes of an export request (as the agent's chunks and batches
/// carry them) into records.
pub fn decode_logs_request(bytes: &[u8]) -> Result<Vec<LogRecord>, crate::ParseError> {
    use prost::Message;
    ExportLogsServiceRequest::decode(bytes)
        .map(decode_logs)
        .map_err(|e| crate::ParseError::malformed("otlp", e.to_string()))
}

fn decode_record(lr: OtlpLogRecord, resource: &Resource) -> LogRecord {
    let mut attributes = Map::new();
    let mut stream = None;
    let mut offset = None;
    for kv in lr.attributes {
        let v = kv.value.map(any_to_json).unwrap_or(Value::Null);
        match kv.key.as_str() {
            POSITION_STREAM_KEY => stream = v.as_str().map(Arc::from),
            POSITION_OFFSET_KEY => offset = v.as_i64().and_then(|o| u64::try_from(o).ok()),
            _ => {
                attributes.insert(kv.key, v);
            }
        }
    }
    let severity = match Severity::from_otlp_number(lr.severity_number) {
        Severity::Unspecified => Severity::parse(&lr.severity_text).unwrap_or_default(),
        s => s,
    };
    let body = lr
        .body
        .map(any_to_json)
        .map(json_to_text)
        .unwrap_or_default();
    LogRecord {
        timestamp_ns: i64::try_from(lr.time_unix_nano).unwrap_or(0),
        observed_ns: i64::try_from(lr.observed_time_unix_nano).unwrap_or(0),
        severity,
        body,
        attributes,
        resource: resource.clone(),
        position: stream.map(|stream| SourcePosition {
            stream,
            offset: offset.unwrap_or(0),
        }),
    }
}

fn json_to_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Converts a JSON value to an OTLP `AnyValue`.
pub fn json_to_any(v: &Value) -> AnyValue {
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(any_value::Value::BoolValue(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
        }),
        Value::String(s) => Some(any_value::Value::StringValue(s.clone())),
        Value::Array(a) => Some(any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().map(json_to_any).collect(),
        })),
        Value::Object(o) => Some(any_value::Value::KvlistValue(KeyValueList {
            values: o
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    key_strindex: 0,
                    value: Some(json_to_any(v)),
                })
                .collect(),
        })),
    };
    AnyValue { value }
}

/// Converts an OTLP `AnyValue` to JSON; bytes become lowercase hex.
pub fn any_to_json(v: AnyValue) -> Value {
    match v.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => Value::Number(i.into()),
        Some(any_value::Value::DoubleValue(d)) => Number::from_f64(d)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.into_iter().map(any_to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(
            kv.values
                .into_iter()
                .map(|kv| (kv.key, kv.value.map(any_to_json).unwrap_or(Value::Null)))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => {
            Value::String(b.iter().map(|x| format!("{x:02x}")).collect())
        }
        #[allow(unreachable_patterns)]
        Some(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::keys;

    #[test]
    fn records_round_trip_with_positions_and_resources() {
        let mut a = LogRecord::new("hello", 5);
        a.timestamp_ns = 1_700_000_000_000_000_000;
        a.severity = Severity::Error;
        a.attributes
            .insert("user".into(), Value::String("ann".into()));
        a.attributes.insert("n".into(), Value::Number(3.into()));
        a.resource.set(keys::NAMESPACE, "shop");
        a.position = Some(SourcePosition {
            stream: "abc".into(),
            offset: 42,
        });
        let mut b = LogRecord::new("other", 6);
        b.resource.set(keys::NAMESPACE, "auth");
        let req = encode_logs(&[a.clone(), b.clone()]);
        assert_eq!(req.resource_logs.len(), 2);
        let mut back = decode_logs(req);
        back.sort_by(|x, y| x.body.cmp(&y.body));
        assert_eq!(back, vec![a, b]);
    }

    #[test]
    fn foreign_bodies_and_levels_are_kept() {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: None,
                scope_logs: vec![ScopeLogs {
                    log_records: vec![OtlpLogRecord {
                        severity_text: "WARNING".into(),
                        body: Some(json_to_any(&serde_json::json!({"k": [1, 2.5]}))),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let back = decode_logs(req);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].severity, Severity::Warn);
        assert_eq!(back[0].body, r#"{"k":[1,2.5]}"#);
        assert_eq!(back[0].position, None);
    }
}
