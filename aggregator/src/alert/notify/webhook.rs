//! Generic webhook: POSTs the notification as Alertmanager's webhook
//! payload (version 4), exactly the JSON Alertmanager sends, so that any
//! receiver written for Alertmanager works unchanged.
//!
//! `max_alerts` keeps the first alerts and counts the rest in
//! `truncatedAlerts`. Authentication by bearer token or basic auth. Like
//! Alertmanager's webhook, 2xx is success, 5xx and 429 are retried, any other
//! status is permanent. No rate limit: the receiving service sets its own.

use std::time::{Duration, Instant};

use mecha_config::{Secret, WebhookConfig};

use super::limit::Failure;
use super::{Preview, for_integration, record};
use crate::alert::model::Notification;
use crate::metrics::NotifyMetrics;

enum Auth {
    None,
    Bearer(Secret),
    Basic(String, Option<Secret>),
}

/// One webhook of a receiver.
pub(crate) struct Webhook {
    receiver: String,
    integration: String,
    url: reqwest::Url,
    auth: Auth,
    pub(crate) send_resolved: bool,
    max_alerts: u64,
    timeout: Duration,
    client: reqwest::Client,
    metrics: NotifyMetrics,
}

impl Webhook {
    pub(crate) fn new(
        receiver: &str,
        index: usize,
        c: &WebhookConfig,
        clients: &mut super::Clients,
        metrics: &NotifyMetrics,
    ) -> Result<Webhook, String> {
        let client = clients.get(&c.tls, c.proxy_url.as_deref())?;
        let Some(url) = c.url()? else {
            return Err("expected url or url_file".into());
        };
        let url = reqwest::Url::parse(url.expose())
            .map_err(|e| format!("url: {e} (value not shown: it is a credential)"))?;
        let auth = match (c.bearer_token()?, &c.basic_auth) {
            (Some(token), _) => Auth::Bearer(token),
            (None, Some(basic)) => Auth::Basic(basic.username.clone(), basic.password()?),
            (None, None) => Auth::None,
        };
        let integration = format!("webhook[{index}]");
        metrics.set_failing(receiver, &integration, false);
        Ok(Webhook {
            receiver: receiver.to_string(),
            integration,
            url,
            auth,
            send_resolved: c.send_resolved,
            max_alerts: c.max_alerts,
            timeout: c.timeout.0,
            client,
            metrics: metrics.clone(),
        })
    }

    pub(crate) fn label(&self) -> String {
        self.integration.clone()
    }

    /// The payload sent for `n`, `None` when there is nothing to send.
    pub(crate) fn payload(&self, n: &Notification) -> Option<Notification> {
        let mut n = for_integration(n, self.send_resolved)?;
        let max = usize::try_from(self.max_alerts).unwrap_or(usize::MAX);
        if self.max_alerts > 0 && n.alerts.len() > max {
            let dropped = n.alerts.len() - max;
            n.alerts.truncate(max);
            n.truncated_alerts += dropped as u64;
        }
        Some(n)
    }

    pub(crate) async fn deliver(&self, n: &Notification) -> Result<(), Failure> {
        let Some(payload) = self.payload(n) else {
            return Ok(());
        };
        let started = Instant::now();
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .json(&payload);
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t.expose()),
            Auth::Basic(user, password) => {
                req.basic_auth(user, password.as_ref().map(Secret::expose))
            }
        };
        let result = match req.send().await {
            Err(e) => Err(super::send_failure(e)),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = super::retry_after(resp.headers());
                let body = resp.text().await.unwrap_or_default();
                match super::classify_status(status, retry_after, &body) {
                    Some(r) => r,
                    None if (200..300).contains(&status) => Ok(()),
                    None => Err(Failure::Permanent(format!(
                        "http {status}: {}",
                        super::split::truncate(body.trim(), 200)
                    ))),
                }
            }
        };
        record(
            &self.metrics,
            &self.receiver,
            &self.integration,
            &result,
            started.elapsed(),
        );
        result
    }

    pub(crate) fn preview(&self, n: &Notification) -> Vec<Preview> {
        let Some(payload) = self.payload(n) else {
            return Vec::new();
        };
        // A webhook URL may carry a token anywhere: show its host only.
        let mut shown = self.url.clone();
        shown.set_query(None);
        shown.set_path("/****");
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        vec![Preview {
            integration: self.integration.clone(),
            url: shown.to_string(),
            body: serde_json::to_string(&payload).unwrap_or_default(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::model::AlertStatus;
    use crate::alert::notify::tests::notification;

    fn webhook(yaml: &str) -> Webhook {
        let c: WebhookConfig = config_of(yaml);
        let metrics = crate::metrics::Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        Webhook::new(
            "r",
            0,
            &c,
            &mut crate::alert::notify::Clients::default(),
            &metrics.notify,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads a webhook config through the real config loader.
    fn config_of(yaml: &str) -> WebhookConfig {
        let text = format!(
            "aggregator:\n  alerting:\n    receivers:\n      - name: r\n        webhook_configs:\n          - {yaml}\n"
        );
        let c = mecha_config::parse("t.yaml", &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        c.aggregator.alerting.receivers[0].webhook_configs[0].clone()
    }

    #[test]
    fn max_alerts_keeps_the_first_and_counts_the_rest() {
        let w = webhook("{ url: 'http://h/x', max_alerts: 2 }");
        let p = w.payload(&notification(AlertStatus::Firing, 5));
        assert_eq!(p.as_ref().map(|p| p.alerts.len()), Some(2));
        assert_eq!(p.map(|p| p.truncated_alerts), Some(3));
    }

    #[test]
    fn the_payload_has_alertmanagers_field_names() {
        let w = webhook("{ url: 'http://user:pw@h/x?token=t' }");
        let p = w.preview(&notification(AlertStatus::Firing, 1));
        assert_eq!(p[0].url, "http://h/****");
        let v: serde_json::Value = serde_json::from_str(&p[0].body).unwrap_or_default();
        for key in [
            "version",
            "groupKey",
            "truncatedAlerts",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        let a = &v["alerts"][0];
        for key in [
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
            "fingerprint",
        ] {
            assert!(a.get(key).is_some(), "{key} missing from {a}");
        }
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    }
}
