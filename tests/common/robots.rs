//! Small servers that answer like the WeCom group robot, the DingTalk custom
//! robot, the Feishu custom bot and Slack incoming-webhook APIs, or like a
//! generic Alertmanager webhook receiver, for the receiver tests.
//!
//! Each checks credentials exactly as its platform computes them (WeCom's
//! `key`; DingTalk's `access_token` and `timestamp`+`sign` in the query;
//! Feishu's hook token and `timestamp`+`sign` in the body), enforces the
//! platform's rate limit over a sliding window and its byte limits, and
//! answers refusals with the platform's real error codes. Slack's token is
//! the webhook path's last segment, its answers are HTTP statuses with a
//! reason (`ok`, `no_service`, `invalid_payload`, 429 `rate_limited`); the
//! generic webhook checks the `Authorization` header against its token.
//! Accepted messages are recorded; refusals are counted by code (the HTTP
//! status for Slack and webhooks). [`Robot::answer_status`] makes a Slack
//! or webhook server answer every request with an error status.
//!
//! [`Robot::start_tls`] serves the same API over HTTPS with a certificate
//! of a test CA made by [`TestPki`], as an internal endpoint would.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// Which platform a [`Robot`] plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// WeCom group robot: `POST /cgi-bin/webhook/send?key=`.
    Wecom,
    /// DingTalk custom robot: `POST /robot/send?access_token=&timestamp=&sign=`.
    Dingtalk,
    /// Feishu custom bot: `POST /open-apis/bot/v2/hook/{token}`.
    Feishu,
    /// Slack incoming webhook: `POST /services/T…/B…/{token}`.
    Slack,
    /// A generic webhook receiver: `POST /hook`, the token being the whole
    /// `Authorization` header expected (empty: none).
    Webhook,
}

/// One message a robot accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// The JSON body.
    pub body: Value,
    /// The `Authorization` header, if sent.
    pub authorization: Option<String>,
}

impl Received {
    /// The text a person reads: WeCom markdown/text content, DingTalk
    /// markdown/text, the Feishu card's body or text.
    pub fn text(&self) -> String {
        let b = &self.body;
        let candidates = [
            &b["markdown"]["content"],
            &b["markdown"]["text"],
            &b["text"]["content"],
            &b["content"]["text"],
            &b["card"]["elements"][0]["text"]["content"],
            &b["blocks"][1]["text"]["text"],
        ];
        let mut out = String::new();
        if let Some(title) = b["card"]["header"]["title"]["content"].as_str() {
            out.push_str(title);
            out.push('\n');
        }
        for c in candidates {
            if let Some(s) = c.as_str() {
                out.push_str(s);
            }
        }
        out
    }
}

#[derive(Default)]
struct Log {
    accepted: Vec<Received>,
    refused: Vec<(i64, String)>,
    window: VecDeque<Instant>,
    /// Slack and webhook: the status every request is answered with.
    forced: Option<u16>,
}

struct Robot_ {
    platform: Platform,
    token: String,
    secret: Option<String>,
    per_window: usize,
    window: Duration,
    log: Mutex<Log>,
}

/// A test CA and a server certificate for `127.0.0.1` and `localhost`
/// signed by it, made with rcgen.
pub struct TestPki {
    /// The CA certificate, PEM: what a client's `ca_file` holds.
    pub ca_pem: String,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestPki {
    /// A fresh CA and server certificate.
    pub fn new() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let fail = |e: rcgen::Error| -> ! { panic!("test pki: {e}") };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail(e));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "mecha test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap_or_else(|e| fail(e));
        let ca_cert = ca.self_signed(&ca_key).unwrap_or_else(|e| fail(e));
        let issuer = Issuer::new(ca, ca_key);
        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap_or_else(|e| fail(e));
        server
            .distinguished_name
            .push(DnType::CommonName, "test robot");
        let key = KeyPair::generate().unwrap_or_else(|e| fail(e));
        let cert = server.signed_by(&key, &issuer).unwrap_or_else(|e| fail(e));
        TestPki {
            ca_pem: ca_cert.pem(),
            cert: cert.der().clone(),
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("tls versions: {e}"))
        .with_no_client_auth()
        .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
        .unwrap_or_else(|e| panic!("server certificate: {e}"));
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// A TCP listener whose connections are TLS; a failed handshake (the
/// client refused the certificate) is skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A running test robot.
pub struct Robot {
    /// Where it listens.
    pub addr: SocketAddr,
    scheme: &'static str,
    inner: Arc<Robot_>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Robot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Robot {
    /// Starts a robot of `platform` that accepts `token` (WeCom key,
    /// DingTalk access token, Feishu hook token), checks signatures with
    /// `secret` when given, and accepts at most `per_window` messages in any
    /// `window` (the platforms: 20 a minute; Feishu 100).
    pub async fn start(
        platform: Platform,
        token: &str,
        secret: Option<&str>,
        per_window: usize,
        window: Duration,
    ) -> Robot {
        Robot::serve(platform, token, secret, per_window, window, None).await
    }

    /// Like [`Robot::start`], over HTTPS with `pki`'s server certificate.
    pub async fn start_tls(
        platform: Platform,
        token: &str,
        secret: Option<&str>,
        per_window: usize,
        window: Duration,
        pki: &TestPki,
    ) -> Robot {
        Robot::serve(platform, token, secret, per_window, window, Some(pki)).await
    }

    async fn serve(
        platform: Platform,
        token: &str,
        secret: Option<&str>,
        per_window: usize,
        window: Duration,
        pki: Option<&TestPki>,
    ) -> Robot {
        let inner = Arc::new(Robot_ {
            platform,
            token: token.to_string(),
            secret: secret.map(str::to_string),
            per_window,
            window,
            log: Mutex::new(Log::default()),
        });
        let app = Router::new()
            .route("/cgi-bin/webhook/send", post(wecom))
            .route("/robot/send", post(dingtalk))
            .route("/open-apis/bot/v2/hook/{token}", post(feishu))
            .route("/services/{*path}", post(slack))
            .route("/hook", post(webhook))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind robot: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("robot addr: {e}"));
        let (scheme, task) = match pki {
            None => (
                "http",
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                }),
            ),
            Some(pki) => {
                let tls = TlsListener {
                    tcp: listener,
                    acceptor: pki.acceptor(),
                };
                (
                    "https",
                    tokio::spawn(async move {
                        let _ = axum::serve(tls, app).await;
                    }),
                )
            }
        };
        Robot {
            addr,
            scheme,
            inner,
            task,
        }
    }

    /// The base URL to configure (without the key).
    pub fn url(&self) -> String {
        match self.inner.platform {
            Platform::Wecom => format!("{}://{}/cgi-bin/webhook/send", self.scheme, self.addr),
            Platform::Dingtalk => format!("{}://{}/robot/send", self.scheme, self.addr),
            Platform::Feishu => format!("{}://{}/open-apis/bot/v2/hook/", self.scheme, self.addr),
            Platform::Slack => format!("{}://{}/services/T0/B0/", self.scheme, self.addr),
            Platform::Webhook => format!("{}://{}/hook", self.scheme, self.addr),
        }
    }

    /// Slack and webhook: answer every further request with `status` (and
    /// a platform reason) instead of accepting it.
    pub fn answer_status(&self, status: u16) {
        self.inner.lock().forced = Some(status);
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.inner.lock().accepted.clone()
    }

    /// Refusals so far: (error code, message).
    pub fn refused(&self) -> Vec<(i64, String)> {
        self.inner.lock().refused.clone()
    }
}

impl Robot_ {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts `body` unless over the rate limit; the answer's code.
    fn admit(&self, body: Value, rate_code: i64, rate_msg: &str) -> Result<(), (i64, String)> {
        self.admit_with(body, None, rate_code, rate_msg)
    }

    /// [`Robot_::admit`], recording the `Authorization` header.
    fn admit_with(
        &self,
        body: Value,
        authorization: Option<String>,
        rate_code: i64,
        rate_msg: &str,
    ) -> Result<(), (i64, String)> {
        let now = Instant::now();
        let mut log = self.lock();
        while log
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            log.window.pop_front();
        }
        if log.window.len() >= self.per_window {
            return Err(self.refuse(&mut log, rate_code, rate_msg));
        }
        log.window.push_back(now);
        log.accepted.push(Received {
            at: now,
            body,
            authorization,
        });
        Ok(())
    }

    fn refuse(&self, log: &mut Log, code: i64, msg: &str) -> (i64, String) {
        log.refused.push((code, msg.to_string()));
        (code, msg.to_string())
    }

    fn refuse_now(&self, code: i64, msg: &str) -> (i64, String) {
        let mut log = self.lock();
        self.refuse(&mut log, code, msg)
    }
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|e| panic!("hmac: {e}"));
    mac.update(msg);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn within_an_hour(ts_seconds: i64) -> bool {
    (chrono::Utc::now().timestamp() - ts_seconds).abs() <= 3600
}

fn errcode(r: Result<(), (i64, String)>) -> axum::Json<Value> {
    match r {
        Ok(()) => axum::Json(json!({"errcode": 0, "errmsg": "ok"})),
        Err((code, msg)) => axum::Json(json!({"errcode": code, "errmsg": msg})),
    }
}

async fn wecom(
    State(r): State<Arc<Robot_>>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> axum::Json<Value> {
    errcode((|| {
        if q.get("key") != Some(&r.token) {
            return Err(r.refuse_now(93000, "invalid webhook url, hint: [key]"));
        }
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return Err(r.refuse_now(40035, "invalid json"));
        };
        let (content, max) = match v["msgtype"].as_str() {
            Some("markdown") => (v["markdown"]["content"].as_str(), 4096),
            Some("text") => (v["text"]["content"].as_str(), 2048),
            _ => return Err(r.refuse_now(40008, "invalid message type")),
        };
        let Some(content) = content else {
            return Err(r.refuse_now(44004, "empty content"));
        };
        if content.len() > max {
            return Err(r.refuse_now(40058, &format!("content exceed max length {max}")));
        }
        r.admit(v, 45009, "api freq out of limit")
    })())
}

async fn dingtalk(
    State(r): State<Arc<Robot_>>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> axum::Json<Value> {
    errcode((|| {
        if q.get("access_token") != Some(&r.token) {
            return Err(r.refuse_now(300001, "token is not exist"));
        }
        if let Some(secret) = &r.secret {
            let ts = q.get("timestamp").cloned().unwrap_or_default();
            let ok_time = ts.parse::<i64>().is_ok_and(|ms| within_an_hour(ms / 1000));
            // axum's Query has already URL-decoded `sign`.
            let want = hmac_b64(secret.as_bytes(), format!("{ts}\n{secret}").as_bytes());
            if !ok_time || q.get("sign") != Some(&want) {
                return Err(r.refuse_now(
                    310000,
                    "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]",
                ));
            }
        }
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return Err(r.refuse_now(43004, "invalid json"));
        };
        let content = match v["msgtype"].as_str() {
            Some("markdown") => v["markdown"]["text"].as_str(),
            Some("text") => v["text"]["content"].as_str(),
            _ => return Err(r.refuse_now(40035, "msgtype invalid")),
        };
        if content.is_none_or(|c| c.len() > 20_000) {
            return Err(r.refuse_now(460101, "message too long"));
        }
        r.admit(v, 130101, "send too fast, exceed 20 times per minute")
    })())
}

async fn feishu(
    State(r): State<Arc<Robot_>>,
    Path(token): Path<String>,
    body: Bytes,
) -> axum::Json<Value> {
    let result = (|| {
        if token != r.token {
            return Err(r.refuse_now(
                19001,
                "param invalid: incoming webhook access token invalid",
            ));
        }
        if body.len() > 20 * 1024 {
            return Err(r.refuse_now(9499, "Bad Request"));
        }
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return Err(r.refuse_now(9499, "Bad Request"));
        };
        if let Some(secret) = &r.secret {
            let ts = v["timestamp"].as_str().unwrap_or_default().to_string();
            let ok_time = ts.parse::<i64>().is_ok_and(within_an_hour);
            let want = hmac_b64(format!("{ts}\n{secret}").as_bytes(), b"");
            if !ok_time || v["sign"].as_str() != Some(want.as_str()) {
                return Err(r.refuse_now(
                    19021,
                    "sign match fail or timestamp is not within one hour from current time",
                ));
            }
        }
        match v["msg_type"].as_str() {
            Some("interactive") | Some("text") | Some("post") => {}
            _ => return Err(r.refuse_now(19002, "params error, msg_type need")),
        }
        r.admit(v, 11232, "frequency limited psm")
    })();
    match result {
        Ok(()) => axum::Json(json!({"code": 0, "data": {}, "msg": "success"})),
        Err((code, msg)) => axum::Json(json!({"code": code, "data": {}, "msg": msg})),
    }
}

/// An HTTP answer of Slack or a webhook receiver: the status and its reason.
fn http_answer(r: Result<(), (i64, String)>, ok: &str) -> (axum::http::StatusCode, String) {
    let (code, text) = match r {
        Ok(()) => (200, ok.to_string()),
        Err((code, msg)) => (code, msg),
    };
    let status = u16::try_from(code)
        .ok()
        .and_then(|c| axum::http::StatusCode::from_u16(c).ok())
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (status, text)
}

/// The status forced by [`Robot::answer_status`], as a refusal.
fn forced(r: &Robot_, reason: &str) -> Result<(), (i64, String)> {
    let forced = r.lock().forced;
    match forced {
        Some(status) => Err(r.refuse_now(i64::from(status), reason)),
        None => Ok(()),
    }
}

async fn slack(
    State(r): State<Arc<Robot_>>,
    Path(path): Path<String>,
    body: Bytes,
) -> (axum::http::StatusCode, String) {
    let result = (|| {
        if path.rsplit('/').next() != Some(r.token.as_str()) {
            return Err(r.refuse_now(404, "no_service"));
        }
        forced(&r, "channel_is_archived")?;
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return Err(r.refuse_now(400, "invalid_payload"));
        };
        // Slack wants `text`, and blocks each with a type and text.
        let blocks_ok = match &v["blocks"] {
            Value::Null => true,
            Value::Array(b) => b
                .iter()
                .all(|b| b["type"].is_string() && b["text"]["text"].is_string()),
            _ => false,
        };
        if !v["text"].is_string() || !blocks_ok {
            return Err(r.refuse_now(400, "invalid_blocks"));
        }
        r.admit_with(v, None, 429, "rate_limited")
    })();
    http_answer(result, "ok")
}

async fn webhook(
    State(r): State<Arc<Robot_>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (axum::http::StatusCode, String) {
    let result = (|| {
        let auth = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if !r.token.is_empty() && auth.as_deref() != Some(r.token.as_str()) {
            return Err(r.refuse_now(401, "unauthorized"));
        }
        forced(&r, "receiver unavailable")?;
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return Err(r.refuse_now(400, "expected a JSON body"));
        };
        r.admit_with(v, auth, 429, "too many requests")
    })();
    http_answer(result, "")
}
