//! The OTLP/gRPC downstream: sends batches as `ExportLogsServiceRequest`s to the
//! aggregator (or any OTLP receiver), compressed with zstd or gzip.
//!
//! The request arrives already encoded (sources encode as they parse, see
//! [`crate::pipeline::Chunk`]) and is handed to tonic as is, through
//! [`PreEncodedCodec`], rather than built as prost structs and encoded by the
//! generated `LogsServiceClient`: building the structs was a measured share of
//! the agent's CPU. This room must not change what goes on
//! the wire (the same method path, message and compression) nor how answers
//! and errors are classified.

use std::time::Duration;

use bytes::{BufMut, Bytes};
use futures::future::BoxFuture;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use tonic::GrpcMethod;
use tonic::client::Grpc;
use tonic::codec::{Codec, CompressionEncoding, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstDecoder;

use super::{Batch, Downstream, ForwardError};
use crate::metrics::AgentMetrics;

const SINK: &str = "grpc";
const SERVICE: &str = "opentelemetry.proto.collector.logs.v1.LogsService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// A gRPC codec whose requests are already protobuf bytes and whose answers
/// are decoded by prost.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreEncodedCodec;

/// Writes pre-encoded request bytes into tonic's frame buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreEncodedEncoder;

impl Encoder for PreEncodedEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        // One copy into the frame buffer that tonic compresses and limits
        // (`max_encoding_message_size`) in place.
        dst.put_slice(&item);
        Ok(())
    }
}

impl Codec for PreEncodedCodec {
    type Encode = Bytes;
    type Decode = ExportLogsServiceResponse;
    type Encoder = PreEncodedEncoder;
    type Decoder = ProstDecoder<ExportLogsServiceResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// An OTLP/gRPC logs client.
pub struct GrpcDownstream {
    client: Grpc<Channel>,
    metrics: std::sync::Arc<AgentMetrics>,
}

/// Wire compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireCompression {
    /// zstd.
    Zstd,
    /// gzip.
    Gzip,
    /// None.
    None,
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
        let mut client = Grpc::new(ep.connect_lazy())
            .max_encoding_message_size(64 * 1024 * 1024)
            .max_decoding_message_size(4 * 1024 * 1024);
        client = match compression {
            WireCompression::Zstd => client.send_compressed(CompressionEncoding::Zstd),
            WireCompression::Gzip => client.send_compressed(CompressionEncoding::Gzip),
            WireCompression::None => client,
        };
        Ok(GrpcDownstream { client, metrics })
    }
}

/// One `LogsService/Export` call with a pre-encoded request, as the generated
/// client makes it.
async fn export(
    client: &mut Grpc<Channel>,
    body: Bytes,
) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("service was not ready: {e}")))?;
    let mut req = tonic::Request::new(body);
    req.extensions_mut()
        .insert(GrpcMethod::new(SERVICE, "Export"));
    client
        .unary(req, PathAndQuery::from_static(EXPORT_PATH), PreEncodedCodec)
        .await
}

impl Downstream for GrpcDownstream {
    fn name(&self) -> &str {
        SINK
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), ForwardError>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            match export(&mut client, batch.request.clone()).await {
                Ok(resp) => {
                    if let Some(p) = resp.into_inner().partial_success
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
                    use tonic::Code;
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
    use crate::pipeline::Chunk;

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
        // Two chunks joined into one batch, as the forwarder joins them.
        let chunks: Vec<Chunk> = [&sent[..2], &sent[2..]]
            .into_iter()
            .map(|records| {
                let mut request = Vec::new();
                encode_logs_wire(records, &mut request);
                Chunk::new(request, records.len(), None)
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
        sends_records_intact(WireCompression::Zstd, Some("zstd")).await;
    }

    #[tokio::test]
    async fn gzip_batches_arrive_as_sent() {
        sends_records_intact(WireCompression::Gzip, Some("gzip")).await;
    }

    #[tokio::test]
    async fn uncompressed_batches_arrive_as_sent() {
        sends_records_intact(WireCompression::None, None).await;
    }
}
