//! OTLP/gRPC receiver: the `LogsService` agents (and any OTLP sender) export to.
//!
//! A request is answered only after its records are committed, so a success
//! means "durable and searchable" and senders may drop their copy; store
//! failures map to `UNAVAILABLE` so senders retry. This module must not index
//! or deduplicate by itself: it decodes and hands over to [`Ingest`].

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::ingest::Ingest;
use crate::metrics::Transport;

/// Largest accepted (decompressed) request.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Requests with more records than this are decoded on a blocking thread.
const INLINE_DECODE_RECORDS: usize = 512;

/// The OTLP logs receiver.
#[derive(Debug, Clone)]
pub struct LogsReceiver {
    ingest: Ingest,
}

impl LogsReceiver {
    /// A receiver that pushes into `ingest`.
    pub fn new(ingest: &Ingest) -> LogsReceiver {
        LogsReceiver {
            ingest: ingest.for_transport(Transport::Grpc),
        }
    }

    /// The tonic service, accepting gzip and zstd and messages up to 16 MiB.
    pub fn into_service(self) -> LogsServiceServer<LogsReceiver> {
        LogsServiceServer::new(self)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn record_count(req: &ExportLogsServiceRequest) -> usize {
    req.resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len())
        .sum()
}

#[tonic::async_trait]
impl LogsService for LogsReceiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let req = request.into_inner();
        let records = if record_count(&req) > INLINE_DECODE_RECORDS {
            tokio::task::spawn_blocking(move || mecha_parsers::otlp::decode_logs(req))
                .await
                .map_err(|e| Status::internal(format!("decode task failed: {e}")))?
        } else {
            mecha_parsers::otlp::decode_logs(req)
        };
        match self.ingest.push(records).await {
            // Duplicates are a success: the sender's data is already safe.
            Ok(_) => Ok(Response::new(ExportLogsServiceResponse {
                partial_success: None,
            })),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mecha_parsers::Severity;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use tonic::codec::CompressionEncoding;

    use crate::Aggregator;
    use crate::test_support::*;

    #[tokio::test]
    async fn otlp_exports_land_in_the_index_with_gzip_and_zstd() {
        let dir = tempdir();
        let agg = Aggregator::start(options(dir.path())).await.unwrap();
        let url = format!("http://{}", agg.grpc_addr().unwrap());
        let t = today_start_ns() + HOUR_NS;
        for (i, encoding) in [CompressionEncoding::Gzip, CompressionEncoding::Zstd]
            .into_iter()
            .enumerate()
        {
            let mut client = LogsServiceClient::connect(url.clone())
                .await
                .unwrap()
                .send_compressed(encoding);
            let records: Vec<_> = (0..50)
                .map(|j| {
                    let r = record(
                        t + j,
                        Severity::Error,
                        "shop",
                        &format!("via {encoding:?} {j}"),
                    );
                    at(r, &format!("file-{i}"), 10 * (j as u64 + 1))
                })
                .collect();
            let req = mecha_parsers::otlp::encode_logs(&records);
            let resp = client.export(req.clone()).await.unwrap().into_inner();
            assert_eq!(resp.partial_success, None);
            // A retry of the same request is acknowledged and dropped as a replay.
            client.export(req).await.unwrap();
        }
        // Answered means committed: searchable with no wait.
        let r = agg
            .store()
            .search("level:error AND namespace:shop", t, t + 100, 1)
            .unwrap();
        assert_eq!(r.total, 100);
        let m = agg.metrics();
        assert_eq!(m.duplicate_records.get(), 100);
        assert!(
            m.render()
                .contains("mecha_aggregator_received_records_total{transport=\"grpc\"} 200")
        );
        agg.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn store_failures_map_to_unavailable() {
        let dir = tempdir();
        let agg = Aggregator::start(options(dir.path())).await.unwrap();
        let url = format!("http://{}", agg.grpc_addr().unwrap());
        // Stop the writer but keep a receiver around, as during a shutdown race.
        let receiver = super::LogsReceiver::new(&agg.ingest());
        agg.shutdown().await.unwrap();
        let t = today_start_ns() + HOUR_NS;
        let req = mecha_parsers::otlp::encode_logs(&[record(t, Severity::Info, "a", "x")]);
        let status = super::LogsService::export(&receiver, tonic::Request::new(req))
            .await
            .err()
            .unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        // And the listener is closed after shutdown.
        assert!(LogsServiceClient::connect(url).await.is_err());
    }
}
