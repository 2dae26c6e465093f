//! Browser security reports sent to `/api/{project}/security/`: Content
//! Security Policy violations, in the legacy `report-uri` form
//! (`{"csp-report": {...}}`) and the Reporting API form (a list of
//! `{"type": "csp-violation", "body": {...}}`), turned into events.
//!
//! Other report types (Expect-CT, HPKP, ...) are recognised and left to the
//! caller to count; they carry nothing an issue needs.

use serde_json::{Map, Value, json};

use crate::ParseError;

const FORMAT: &str = "sentry_security";

/// What a security report body holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityReports {
    /// One event per CSP violation.
    pub events: Vec<Map<String, Value>>,
    /// Reports of other types, not turned into events.
    pub other: usize,
}

/// Reads a security report body.
pub fn parse_reports(body: &[u8]) -> Result<SecurityReports, ParseError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::malformed(FORMAT, format!("invalid JSON: {e}")))?;
    let mut out = SecurityReports {
        events: Vec::new(),
        other: 0,
    };
    match value {
        Value::Object(mut o) => match o.remove("csp-report") {
            Some(Value::Object(report)) => out.events.push(legacy_csp_event(&report)),
            _ => out.other += 1,
        },
        Value::Array(list) => {
            for r in list {
                let csp = r.get("type").and_then(Value::as_str) == Some("csp-violation");
                match r.get("body").and_then(Value::as_object) {
                    Some(body) if csp => out.events.push(reporting_api_csp_event(body)),
                    _ => out.other += 1,
                }
            }
        }
        _ => {
            return Err(ParseError::malformed(
                FORMAT,
                "expected a JSON object or a list of reports",
            ));
        }
    }
    Ok(out)
}

fn text<'a>(o: &'a Map<String, Value>, key: &str) -> &'a str {
    o.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn legacy_csp_event(r: &Map<String, Value>) -> Map<String, Value> {
    let directive = match text(r, "effective-directive") {
        "" => text(r, "violated-directive"),
        d => d,
    };
    csp_event(
        directive,
        text(r, "blocked-uri"),
        text(r, "document-uri"),
        r,
    )
}

fn reporting_api_csp_event(b: &Map<String, Value>) -> Map<String, Value> {
    csp_event(
        text(b, "effectiveDirective"),
        text(b, "blockedURL"),
        text(b, "documentURL"),
        b,
    )
}

fn csp_event(
    directive: &str,
    blocked: &str,
    document: &str,
    report: &Map<String, Value>,
) -> Map<String, Value> {
    let directive = directive.split_whitespace().next().unwrap_or("unknown");
    let blocked_name = match blocked {
        "" => "'none'",
        b => b,
    };
    let v = json!({
        "logger": "csp",
        "level": "error",
        "culprit": directive,
        "logentry": { "formatted": format!("Blocked '{directive}' from '{blocked_name}'") },
        "request": { "url": document },
        "tags": { "csp.directive": directive },
        "csp": Value::Object(report.clone()),
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_csp_report_becomes_one_event() {
        let body = br#"{"csp-report":{"document-uri":"https://shop.example/cart","violated-directive":"script-src-elem 'self'","effective-directive":"script-src-elem","blocked-uri":"https://evil.example/x.js"}}"#;
        let r = parse_reports(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.other, 0);
        let e = &r.events[0];
        assert_eq!(
            e["logentry"]["formatted"],
            "Blocked 'script-src-elem' from 'https://evil.example/x.js'"
        );
        assert_eq!(e["request"]["url"], "https://shop.example/cart");
        assert_eq!(e["csp"]["blocked-uri"], "https://evil.example/x.js");
    }

    #[test]
    fn reporting_api_lists_give_an_event_per_csp_violation() {
        let body = br#"[{"type":"csp-violation","body":{"documentURL":"https://a/","blockedURL":"inline","effectiveDirective":"style-src"}},{"type":"deprecation","body":{}}]"#;
        let r = parse_reports(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.events.len(), r.other), (1, 1));
        assert_eq!(r.events[0]["culprit"], "style-src");
    }

    #[test]
    fn other_reports_are_counted_and_bad_bodies_refused() {
        let r = parse_reports(br#"{"expect-ct-report":{}}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.events.len(), r.other), (0, 1));
        assert!(parse_reports(b"42").is_err());
        assert!(parse_reports(b"{").is_err());
    }
}
