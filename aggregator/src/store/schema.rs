//! The log index schema and the mapping between [`LogRecord`]s and documents.
//!
//! One place decides field names, tokenizers and what is stored, so that the
//! writer, the query parser and the hit renderer cannot disagree. This module
//! must not touch the disk or decide which day a record belongs to.

use std::collections::BTreeMap;

use mecha_parsers::LogRecord;
use mecha_parsers::model::keys;
use serde_json::{Map, Value};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, JsonObjectOptions, OwnedValue,
    STORED, STRING, Schema, TEXT, TextFieldIndexing,
};
use tantivy::{DateTime, TantivyDocument, schema::Value as _};

/// Field names, as users type them in queries.
pub mod names {
    /// Effective event time (date, nanosecond fast field).
    pub const TIMESTAMP: &str = "timestamp";
    /// When the collector saw the record.
    pub const OBSERVED: &str = "observed";
    /// Severity name (`error`, `warn`, ...).
    pub const SEVERITY: &str = "severity";
    /// Alias of `severity` for queries (`level:error`); indexed, not stored.
    pub const LEVEL: &str = "level";
    /// The message text.
    pub const BODY: &str = "body";
    /// Kubernetes namespace.
    pub const NAMESPACE: &str = "namespace";
    /// Pod name.
    pub const POD: &str = "pod";
    /// Container name.
    pub const CONTAINER: &str = "container";
    /// Node name.
    pub const NODE: &str = "node";
    /// Container id.
    pub const CONTAINER_ID: &str = "container_id";
    /// Pod uid.
    pub const POD_UID: &str = "pod_uid";
    /// All resource attributes (JSON, case-sensitive values).
    pub const RESOURCE: &str = "resource";
    /// All record attributes (JSON, lowercased words).
    pub const ATTRIBUTES: &str = "attributes";
    /// The attribute values as plain text (indexed, not stored), so that plain
    /// words find them without naming a key.
    pub const ATTRIBUTE_VALUES: &str = "attribute_values";
}

/// Handles of every field of the log schema.
#[derive(Debug, Clone)]
pub struct Fields {
    /// The schema itself.
    pub schema: Schema,
    /// `timestamp`.
    pub timestamp: Field,
    /// `observed`.
    pub observed: Field,
    /// `severity`.
    pub severity: Field,
    /// `level`.
    pub level: Field,
    /// `body`.
    pub body: Field,
    /// `resource`.
    pub resource: Field,
    /// `attributes`.
    pub attributes: Field,
    /// `attribute_values`.
    pub attribute_values: Field,
    /// Raw string fields lifted from resource attributes: (field, resource key).
    pub resource_fields: Vec<(Field, &'static str)>,
}

impl Fields {
    /// Builds the schema every day index uses.
    pub fn new() -> Fields {
        let mut b = Schema::builder();
        let nanos = DateOptions::default().set_precision(DateTimePrecision::Nanoseconds);
        let timestamp = b.add_date_field(
            names::TIMESTAMP,
            nanos.clone().set_indexed().set_fast().set_stored(),
        );
        let observed = b.add_date_field(names::OBSERVED, nanos.set_stored());
        let severity = b.add_text_field(names::SEVERITY, STRING | STORED);
        let level = b.add_text_field(names::LEVEL, STRING);
        let body = b.add_text_field(names::BODY, TEXT | STORED);
        let resource_fields = [
            (names::NAMESPACE, keys::NAMESPACE),
            (names::POD, keys::POD),
            (names::CONTAINER, keys::CONTAINER),
            (names::NODE, keys::NODE),
            (names::CONTAINER_ID, keys::CONTAINER_ID),
            (names::POD_UID, keys::POD_UID),
        ]
        .into_iter()
        .map(|(name, key)| (b.add_text_field(name, STRING), key))
        .collect();
        // Resource values are identifiers (`k8s.pod.name:web-7f9c`): kept whole.
        let resource = b.add_json_field(
            names::RESOURCE,
            JsonObjectOptions::default()
                .set_stored()
                .set_expand_dots_enabled()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("raw")
                        .set_index_option(IndexRecordOption::Basic),
                ),
        );
        // Attribute values are often prose (`error: "connection refused"`): split
        // into lowercased words with positions, so phrases work too. Dots in keys
        // are expanded so `attributes.http.method:get` finds `{"http.method": "GET"}`.
        let attributes = b.add_json_field(
            names::ATTRIBUTES,
            JsonObjectOptions::default()
                .set_stored()
                .set_expand_dots_enabled()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("default")
                        .set_index_option(IndexRecordOption::WithFreqsAndPositions),
                ),
        );
        let attribute_values = b.add_text_field(names::ATTRIBUTE_VALUES, TEXT);
        Fields {
            schema: b.build(),
            timestamp,
            observed,
            severity,
            level,
            body,
            resource,
            attributes,
            attribute_values,
            resource_fields,
        }
    }

    /// Fields searched by words without a `field:` prefix: the body and the
    /// attribute values. The JSON field among them makes `key:value` reach
    /// `attributes.key` for keys that are not schema fields (tantivy tries the
    /// default JSON fields for unknown field names).
    pub fn default_fields(&self) -> Vec<Field> {
        vec![self.body, self.attribute_values, self.attributes]
    }

    /// Turns a record into a document, with `timestamp_ns` as its (already
    /// clamped) event time.
    pub fn to_document(&self, record: LogRecord, timestamp_ns: i64) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_date(self.timestamp, DateTime::from_timestamp_nanos(timestamp_ns));
        doc.add_date(
            self.observed,
            DateTime::from_timestamp_nanos(record.observed_ns),
        );
        let severity = record.severity.as_str();
        doc.add_text(self.severity, severity);
        doc.add_text(self.level, severity);
        doc.add_text(self.body, &record.body);
        for (field, key) in &self.resource_fields {
            if let Some(v) = record.resource.get(key) {
                doc.add_text(*field, v);
            }
        }
        let resource: BTreeMap<String, OwnedValue> = record
            .resource
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), OwnedValue::Str(v.clone())))
            .collect();
        doc.add_object(self.resource, resource);
        for value in record.attributes.values() {
            add_scalars(&mut doc, self.attribute_values, value);
        }
        let attributes: BTreeMap<String, OwnedValue> = record
            .attributes
            .into_iter()
            .map(|(k, v)| (k, OwnedValue::from(v)))
            .collect();
        doc.add_object(self.attributes, attributes);
        doc
    }

    /// Renders a stored document as a search hit.
    pub fn to_hit(&self, doc: &TantivyDocument) -> Hit {
        let timestamp_ns = doc
            .get_first(self.timestamp)
            .and_then(|v| v.as_datetime())
            .map(DateTime::into_timestamp_nanos)
            .unwrap_or(0);
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let object = |field| match doc.get_first(field).map(OwnedValue::from) {
            Some(v) => match serde_json::to_value(v) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            },
            None => Map::new(),
        };
        Hit {
            timestamp_ns,
            severity: text(self.severity),
            body: text(self.body),
            attributes: object(self.attributes),
            resource: object(self.resource),
        }
    }
}

/// Adds every scalar inside `value` as text to `field`.
fn add_scalars(doc: &mut TantivyDocument, field: Field, value: &Value) {
    match value {
        Value::Null => {}
        Value::String(s) => doc.add_text(field, s),
        Value::Bool(_) | Value::Number(_) => doc.add_text(field, value.to_string()),
        Value::Array(items) => items.iter().for_each(|v| add_scalars(doc, field, v)),
        Value::Object(map) => map.values().for_each(|v| add_scalars(doc, field, v)),
    }
}

impl Default for Fields {
    fn default() -> Self {
        Fields::new()
    }
}

/// One search hit, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Effective event time, nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// Severity name.
    pub severity: String,
    /// Message text.
    pub body: String,
    /// Record attributes.
    pub attributes: Map<String, Value>,
    /// Resource attributes.
    pub resource: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use mecha_parsers::Severity;

    #[test]
    fn document_round_trips_to_hit() {
        let f = Fields::new();
        let mut r = LogRecord::new("hello world", 5);
        r.severity = Severity::Error;
        r.attributes.insert("user".into(), Value::from("ann"));
        r.attributes.insert("status".into(), Value::from(500));
        r.resource.set(keys::NAMESPACE, "shop");
        let doc = f.to_document(r, 1_700_000_000_123_456_789);
        let hit = f.to_hit(&doc);
        assert_eq!(hit.timestamp_ns, 1_700_000_000_123_456_789);
        assert_eq!(hit.severity, "error");
        assert_eq!(hit.body, "hello world");
        assert_eq!(hit.attributes.get("user"), Some(&Value::from("ann")));
        assert_eq!(hit.attributes.get("status"), Some(&Value::from(500)));
        assert_eq!(
            hit.resource.get(keys::NAMESPACE),
            Some(&Value::from("shop"))
        );
    }
}
