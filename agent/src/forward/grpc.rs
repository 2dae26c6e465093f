//! The OTLP/gRPC downstream: sends batches as `ExportLogsServiceRequest`s to the
//! aggregator (or any OTLP receiver), compressed with zstd or gzip.

use std::time::Duration;

use futures::future::BoxFuture;
use mecha_parsers::LogRecord;
use mecha_parsers::otlp::encode_logs;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use super::{Downstream, ForwardError};
use crate::metrics::AgentMetrics;

const SINK: &str = "grpc";

/// An OTLP/gRPC logs client.
pub struct GrpcDownstream {
    client: LogsServiceClient<Channel>,
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
        let mut client = LogsServiceClient::new(ep.connect_lazy())
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

impl Downstream for GrpcDownstream {
    fn name(&self) -> &str {
        SINK
    }

    fn send<'a>(&'a self, records: &'a [LogRecord]) -> BoxFuture<'a, Result<(), ForwardError>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let req = encode_logs(records);
            match client.export(req).await {
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
