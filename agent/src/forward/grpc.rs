//! The OTLP/gRPC downstream: sends batches as `ExportLogsServiceRequest`s to the
//! aggregator (or any OTLP receiver), compressed with zstd or gzip.
//!
//! Requests arrive already encoded, and for zstd usually already compressed by
//! the sources ([`crate::pipeline::ChunkCodec`]). tonic's client cannot send a
//! message compressed ahead of time: it compresses every message itself, on
//! the reactor, at a fixed level with a fresh context. So this room writes the
//! gRPC message frame (a five-byte prefix) and reads the status itself, and
//! leaves connections, HTTP/2, reconnects and timeouts to tonic's [`Channel`].
//! Compression a batch still needs runs off the reactor, once per batch, not
//! once per attempt. This room must not change what goes on the wire (the
//! method path, the message, its compression) nor how answers and errors are
//! classified.

use std::io::Write;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::{Batch, Downstream, ForwardError};
use crate::metrics::AgentMetrics;

const SINK: &str = "grpc";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// Batches smaller than this are compressed on the reactor: spawning a
/// blocking task costs more than the work.
const INLINE_COMPRESS_BELOW: usize = 64 * 1024;

/// An OTLP/gRPC logs client.
pub struct GrpcDownstream {
    channel: Channel,
    compression: WireCompression,
    request_timeout: Duration,
    metrics: std::sync::Arc<AgentMetrics>,
}

/// Wire compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireCompression {
    /// zstd at this level (for parts the sources left raw).
    Zstd(i32),
    /// gzip.
    Gzip,
    /// None.
    None,
}

impl WireCompression {
    /// The `grpc-encoding` name, if compressed.
    fn name(self) -> Option<&'static str> {
        match self {
            WireCompression::Zstd(_) => Some("zstd"),
            WireCompression::Gzip => Some("gzip"),
            WireCompression::None => None,
        }
    }
}

impl GrpcDownstream {
    /// A client for `endpoint` (`http://host:4317`); connects lazily, so the
    /// agent starts while the aggregator is away.
    pub fn new(
        endpoint: &str,
        compression: WireCompression,
        request_timeout: Duration,
        metrics: std::sync::Arc<AgentMetrics>,
    ) -> Result<Self, ForwardError> {
        let ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| ForwardError::Rejected {
                sink: SINK.into(),
                reason: format!("invalid endpoint {endpoint:?}: {e}"),
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(request_timeout)
            .tcp_nodelay(true);
        Ok(GrpcDownstream {
            channel: ep.connect_lazy(),
            compression,
            request_timeout,
            metrics,
        })
    }
}

/// The gRPC message of `batch`: the five-byte prefix (compressed flag,
/// big-endian length), then the request as `compression` wants it.
fn frame(batch: &Batch, compression: WireCompression) -> std::io::Result<Bytes> {
    let body = match compression {
        WireCompression::Zstd(level) => batch.zstd(level)?,
        WireCompression::Gzip => {
            let raw = batch.raw()?;
            // The fast level: gzip is for third-party receivers, and the
            // agent's CPU is the budget.
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(raw.len() / 4),
                flate2::Compression::fast(),
            );
            gz.write_all(&raw)?;
            Bytes::from(gz.finish()?)
        }
        WireCompression::None => batch.raw()?,
    };
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::other("batch larger than a gRPC message can be"))?;
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u8(u8::from(compression.name().is_some()));
    out.put_u32(len);
    out.extend_from_slice(&body);
    Ok(out.freeze())
}

/// The gRPC status of an HTTP answer that carries none, as the gRPC spec
/// maps HTTP codes.
fn status_of_http(code: http::StatusCode) -> Status {
    let grpc = match code.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(grpc, format!("HTTP {code} without a gRPC status"))
}

/// One `LogsService/Export` call carrying `frame`.
async fn export(
    mut channel: Channel,
    frame: Bytes,
    encoding: Option<&'static str>,
    timeout: Duration,
) -> Result<ExportLogsServiceResponse, Status> {
    let mut req = http::Request::builder()
        .method(http::Method::POST)
        .uri(EXPORT_PATH)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header("grpc-accept-encoding", "identity")
        .header("grpc-timeout", format!("{}m", timeout.as_millis().max(1)))
        .header(
            http::header::USER_AGENT,
            concat!("mecha/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(e) = encoding {
        req = req.header("grpc-encoding", e);
    }
    let req = req
        .body(tonic::body::Body::new(http_body_util::Full::new(frame)))
        .map_err(|e| Status::internal(format!("building the request: {e}")))?;
    futures::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::unavailable(format!("not connected: {e}")))?;
    let resp = channel
        .call(req)
        .await
        .map_err(|e| Status::unavailable(format!("request failed: {e}")))?;
    let (parts, body) = resp.into_parts();
    // A trailers-only answer (an error, usually) has its status in the headers.
    if let Some(status) = Status::from_header_map(&parts.headers) {
        if status.code() != Code::Ok {
            return Err(status);
        }
    } else if parts.status != http::StatusCode::OK {
        return Err(status_of_http(parts.status));
    }
    let collected = body
        .collect()
        .await
        .map_err(|e| Status::unavailable(format!("reading the answer: {e}")))?;
    let status = collected.trailers().and_then(Status::from_header_map);
    let data = collected.to_bytes();
    match status {
        Some(s) if s.code() != Code::Ok => return Err(s),
        None if Status::from_header_map(&parts.headers).is_none() => {
            return Err(Status::unknown("answer without a gRPC status"));
        }
        _ => {}
    }
    // The answer only tells about partly rejected records: one that cannot be
    // read is an accepted batch without that detail.
    let message = match (data.first(), data.get(1..5), data.get(5..)) {
        (Some(0), Some(len), Some(rest)) => {
            let len = <[u8; 4]>::try_from(len)
                .map(u32::from_be_bytes)
                .unwrap_or(0) as usize;
            rest.get(..len)
                .and_then(|m| ExportLogsServiceResponse::decode(m).ok())
        }
        _ => None,
    };
    Ok(message.unwrap_or_default())
}

impl Downstream for GrpcDownstream {
    fn name(&self) -> &str {
        SINK
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), ForwardError>> {
        let compression = self.compression;
        Box::pin(async move {
            let framed = batch
                .wire
                .get_or_try_init(|| async {
                    if batch.raw_bytes < INLINE_COMPRESS_BELOW {
                        return frame(batch, compression);
                    }
                    let parts = Batch {
                        parts: batch.parts.clone(),
                        records: batch.records,
                        raw_bytes: batch.raw_bytes,
                        wire: tokio::sync::OnceCell::new(),
                    };
                    tokio::task::spawn_blocking(move || frame(&parts, compression))
                        .await
                        .map_err(std::io::Error::other)?
                })
                .await
                .map_err(|e| ForwardError::Rejected {
                    sink: SINK.into(),
                    reason: format!("cannot encode the batch: {e}"),
                })?
                .clone();
            let call = export(
                self.channel.clone(),
                framed,
                compression.name(),
                self.request_timeout,
            );
            let answer = match tokio::time::timeout(self.request_timeout, call).await {
                Ok(a) => a,
                Err(_) => Err(Status::deadline_exceeded("no answer in time")),
            };
            match answer {
                Ok(resp) => {
                    if let Some(p) = resp.partial_success
                        && p.rejected_log_records > 0
                    {
                        self.metrics
                            .discarded
                            .with_label_values(&["forward", "partially_rejected"])
                            .inc_by(u64::try_from(p.rejected_log_records).unwrap_or(0));
                        tracing::warn!(
                            rejected = p.rejected_log_records,
                            reason = p.error_message,
                            "downstream rejected part of a batch"
                        );
                    }
                    Ok(())
                }
                Err(status) => {
                    let reason = format!("{:?}: {}", status.code(), status.message());
                    match status.code() {
                        // Permanent: the request itself is wrong; retrying cannot help.
                        // Auth failures are retried: a fixed token must not find the
                        // data gone.
                        Code::InvalidArgument => Err(ForwardError::Rejected {
                            sink: SINK.into(),
                            reason,
                        }),
                        _ => Err(ForwardError::Unavailable {
                            sink: SINK.into(),
                            reason,
                        }),
                    }
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use mecha_parsers::otlp::{decode_logs, encode_logs_wire};
    use mecha_parsers::{LogRecord, SourcePosition};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    use serde_json::json;
    use tonic::transport::server::TcpIncoming;

    use super::*;
    use crate::pipeline::{Chunk, ChunkCodec};
    use tonic::codec::CompressionEncoding;

    /// What one export carried: its `grpc-encoding` and its records.
    type Received = Arc<Mutex<Vec<(Option<String>, Vec<LogRecord>)>>>;

    struct Recorder(Received);

    #[tonic::async_trait]
    impl LogsService for Recorder {
        async fn export(
            &self,
            request: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            let encoding = request
                .metadata()
                .get("grpc-encoding")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let records = decode_logs(request.into_inner());
            if let Ok(mut got) = self.0.lock() {
                got.push((encoding, records));
            }
            Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
        }
    }

    /// A real tonic `LogsServiceServer` on a free local port, accepting zstd
    /// and gzip.
    async fn serve() -> Option<(String, Received)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
        let addr = listener.local_addr().ok()?;
        let received = Received::default();
        let svc = LogsServiceServer::new(Recorder(received.clone()))
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        Some((format!("http://{addr}"), received))
    }

    fn batch() -> Vec<LogRecord> {
        let mut shop = LogRecord::new("order 42 accepted", 1_700_000_000_000_000_001);
        shop.timestamp_ns = 1_700_000_000_000_000_000;
        shop.severity = mecha_parsers::Severity::Info;
        shop.resource.set("k8s.namespace.name", "shop");
        shop.attributes.insert("status".into(), json!(200));
        shop.attributes.insert(
            "nested".into(),
            json!({"a": [1, 2.5, null, true], "b": "x"}),
        );
        shop.position = Some(SourcePosition {
            stream: "f1".into(),
            offset: 4096,
        });
        let mut auth = LogRecord::new("", 7);
        auth.resource.set("k8s.namespace.name", "auth");
        let mut shop2 = shop.clone();
        shop2.body = "order 43 accepted".into();
        vec![shop, shop2, auth]
    }

    async fn sends_records_intact(compression: WireCompression, encoding: Option<&str>) {
        sends_chunks_intact(compression, encoding, [ChunkCodec::Raw, ChunkCodec::Raw]).await;
    }

    /// Two chunks sealed by `codecs` (as sources seal them) joined into one
    /// batch, as the forwarder joins them, arrive as one export.
    async fn sends_chunks_intact(
        compression: WireCompression,
        encoding: Option<&str>,
        codecs: [ChunkCodec; 2],
    ) {
        let Some((endpoint, received)) = serve().await else {
            panic!("cannot bind a local port");
        };
        let downstream = GrpcDownstream::new(
            &endpoint,
            compression,
            Duration::from_secs(10),
            Arc::new(AgentMetrics::new()),
        );
        let Ok(downstream) = downstream else {
            panic!("endpoint {endpoint} rejected");
        };
        let sent = batch();
        let chunks: Vec<Chunk> = [&sent[..2], &sent[2..]]
            .into_iter()
            .zip(codecs)
            .map(|(records, codec)| {
                let mut request = Vec::new();
                encode_logs_wire(records, &mut request);
                codec.sealer().seal(&mut request, records.len(), None)
            })
            .collect();
        let result = downstream.send(&Batch::join(&chunks)).await;
        assert!(result.is_ok(), "send failed: {result:?}");
        let got = received.lock().map(|g| g.clone()).unwrap_or_default();
        assert_eq!(
            got,
            vec![(encoding.map(str::to_string), sent)],
            "one export, records grouped by resource in order of appearance"
        );
    }

    #[tokio::test]
    async fn zstd_batches_arrive_as_sent() {
        sends_records_intact(WireCompression::Zstd(1), Some("zstd")).await;
    }

    #[tokio::test]
    async fn gzip_batches_arrive_as_sent() {
        sends_records_intact(WireCompression::Gzip, Some("gzip")).await;
    }

    #[tokio::test]
    async fn uncompressed_batches_arrive_as_sent() {
        sends_records_intact(WireCompression::None, None).await;
    }

    #[tokio::test]
    async fn chunks_compressed_by_their_sources_are_sent_as_they_are() {
        let z = ChunkCodec::Zstd(1);
        sends_chunks_intact(WireCompression::Zstd(1), Some("zstd"), [z, z]).await;
        // A raw chunk (a source that does not compress) among compressed ones.
        sends_chunks_intact(WireCompression::Zstd(3), Some("zstd"), [ChunkCodec::Raw, z]).await;
        // gzip on the wire: compressed chunks are decompressed first.
        sends_chunks_intact(WireCompression::Gzip, Some("gzip"), [z, ChunkCodec::Raw]).await;
    }

    /// Answers every export with `code`.
    struct Refuser(tonic::Code);

    #[tonic::async_trait]
    impl LogsService for Refuser {
        async fn export(
            &self,
            _: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            Err(tonic::Status::new(self.0, "no"))
        }
    }

    #[tokio::test]
    async fn refusals_are_classified_as_permanent_or_retryable() {
        for (code, permanent) in [
            (tonic::Code::InvalidArgument, true),
            (tonic::Code::Unavailable, false),
            (tonic::Code::ResourceExhausted, false),
            (tonic::Code::Unauthenticated, false),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(LogsServiceServer::new(Refuser(code)))
                    .serve_with_incoming(TcpIncoming::from(listener)),
            );
            let d = GrpcDownstream::new(
                &format!("http://{addr}"),
                WireCompression::None,
                Duration::from_secs(10),
                Arc::new(AgentMetrics::new()),
            )
            .unwrap();
            let batch = Batch::join(&[Chunk::new(Vec::new(), 0, None)]);
            match d.send(&batch).await {
                Err(ForwardError::Rejected { reason, .. }) => {
                    assert!(permanent, "{code:?} rejected: {reason}")
                }
                Err(ForwardError::Unavailable { reason, .. }) => {
                    assert!(!permanent, "{code:?} retried: {reason}");
                    assert!(reason.contains("no"), "{reason}");
                }
                Ok(()) => panic!("{code:?} taken for success"),
            }
        }
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_retryable() {
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let d = GrpcDownstream::new(
            &format!("http://{addr}"),
            WireCompression::Zstd(1),
            Duration::from_secs(5),
            Arc::new(AgentMetrics::new()),
        )
        .unwrap();
        let batch = Batch::join(&[Chunk::new(Vec::new(), 0, None)]);
        assert!(matches!(
            d.send(&batch).await,
            Err(ForwardError::Unavailable { .. })
        ));
    }
}
