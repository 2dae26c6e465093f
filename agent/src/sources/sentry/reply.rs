//! The endpoint's answers, in the shape Sentry SDKs read: `{"id": ...}` on
//! success; `{"detail": "..."}` with the same text in `X-Sentry-Error` on
//! failure; `Retry-After` and `X-Sentry-Rate-Limits` when the client should
//! back off.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mecha_parsers::sentry::encoding::ContentEncoding;

use crate::metrics::reason;

/// A refused request: its status, the discard reason it is counted under
/// (none for auth failures of a request that carried nothing), and the text
/// the client sees.
#[derive(Debug, Clone)]
pub struct Reject {
    /// HTTP status.
    pub status: StatusCode,
    /// The discard reason, if the refusal drops events.
    pub reason: Option<&'static str>,
    /// What went wrong, for `detail` and `X-Sentry-Error`.
    pub detail: String,
    /// Back off this long (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The `X-Sentry-Rate-Limits` value, when rate limited.
    pub rate_limits: Option<String>,
    /// The encoding whose decoding failed, for the decompression error count.
    pub decompression: Option<ContentEncoding>,
}

impl Reject {
    fn new(status: StatusCode, reason: Option<&'static str>, detail: String) -> Self {
        Reject {
            status,
            reason,
            detail,
            retry_after: None,
            rate_limits: None,
            decompression: None,
        }
    }

    /// 400.
    pub fn bad_request(reason: &'static str, detail: String) -> Self {
        Reject::new(StatusCode::BAD_REQUEST, Some(reason), detail)
    }

    /// 401: no usable auth.
    pub fn unauthorized(detail: String) -> Self {
        Reject::new(StatusCode::UNAUTHORIZED, Some(reason::SENTRY_AUTH), detail)
    }

    /// 403: a key that may not send here.
    pub fn forbidden(detail: String) -> Self {
        Reject::new(StatusCode::FORBIDDEN, Some(reason::SENTRY_AUTH), detail)
    }

    /// 413.
    pub fn too_large(reason: &'static str, detail: String) -> Self {
        Reject::new(StatusCode::PAYLOAD_TOO_LARGE, Some(reason), detail)
    }

    /// 400 for a body that does not decode.
    pub fn decompression(encoding: ContentEncoding, detail: String) -> Self {
        let mut r = Reject::new(
            StatusCode::BAD_REQUEST,
            Some(reason::SENTRY_DECOMPRESSION),
            detail,
        );
        r.decompression = Some(encoding);
        r
    }

    /// 404 for a path that is not an endpoint.
    pub fn not_found(detail: String) -> Self {
        Reject::new(StatusCode::NOT_FOUND, None, detail)
    }

    /// 429: back off for `after`; `scope` and `why` go into
    /// `X-Sentry-Rate-Limits` (`<seconds>:<categories>:<scope>:<reason>`),
    /// with the categories events travel under, so that an SDK keeps
    /// sending what is not limited.
    pub fn too_many(reason: &'static str, after: Duration, scope: &str, detail: String) -> Self {
        let secs = after.as_secs().max(1);
        let mut r = Reject::new(StatusCode::TOO_MANY_REQUESTS, Some(reason), detail);
        r.retry_after = Some(Duration::from_secs(secs));
        r.rate_limits = Some(format!("{secs}:error;default;security:{scope}:{reason}"));
        r
    }

    /// 503: not safe in time; retry after `after`.
    pub fn unavailable(reason: Option<&'static str>, after: Duration, detail: String) -> Self {
        let mut r = Reject::new(StatusCode::SERVICE_UNAVAILABLE, reason, detail);
        r.retry_after = Some(Duration::from_secs(after.as_secs().max(1)));
        r
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let detail = self.detail;
        let body = serde_json::json!({ "detail": detail });
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        // Header values cannot hold control characters; the JSON body keeps
        // the full text.
        let printable: String = detail
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(512)
            .collect();
        if let Ok(v) = HeaderValue::from_str(&printable) {
            h.insert("x-sentry-error", v);
        }
        if let Some(after) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        if let Some(Ok(v)) = self.rate_limits.as_deref().map(HeaderValue::from_str) {
            h.insert("x-sentry-rate-limits", v);
        }
        resp
    }
}

/// The success answer: `{"id": "<event id>"}`, or `{}` for an envelope
/// without events.
pub fn accepted(event_id: Option<&str>) -> Response {
    let body = match event_id {
        Some(id) => serde_json::json!({ "id": id }),
        None => serde_json::json!({}),
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_answers_carry_sentrys_headers() {
        let r = Reject::too_many(
            reason::SENTRY_RATE_LIMITED,
            Duration::from_millis(2500),
            "project",
            "slow down".into(),
        )
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = r.headers();
        assert_eq!(
            h.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("2")
        );
        assert_eq!(
            h.get("x-sentry-rate-limits").and_then(|v| v.to_str().ok()),
            Some("2:error;default;security:project:rate_limited")
        );
        assert_eq!(
            h.get("x-sentry-error").and_then(|v| v.to_str().ok()),
            Some("slow down")
        );
    }

    #[test]
    fn error_text_with_control_characters_still_makes_a_header() {
        let r = Reject::bad_request("x", "line\nbreak \u{7f}é".into()).into_response();
        assert_eq!(
            r.headers()
                .get("x-sentry-error")
                .and_then(|v| v.to_str().ok()),
            Some("line?break ??")
        );
    }
}
