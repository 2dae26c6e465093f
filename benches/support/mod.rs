//! What the end-to-end benches share: an OTLP/gRPC sink that only counts
//! records, the CPU time and peak RSS of a process from `/proc`, and
//! numbers from the environment.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;

/// The OTLP logs service that only counts records and answers at once: the
/// cheapest possible downstream. It shares the benchmark machine's cores
/// with the agent, so it does not decode the requests into prost structs
/// (which cost more CPU than the agent spent making them): it walks the
/// protobuf bytes and counts `ScopeLogs.log_records` fields.
#[derive(Clone)]
pub struct CountingSink(pub Arc<AtomicU64>);

const SERVICE: &str = "opentelemetry.proto.collector.logs.v1.LogsService";

impl tonic::server::NamedService for CountingSink {
    const NAME: &'static str = SERVICE;
}

/// Calls `f` with the tag and body of every length-delimited field of
/// `buf`, skipping the others; `None` when the bytes are not protobuf.
fn each_len_field(mut buf: &[u8], f: &mut dyn FnMut(u64, &[u8]) -> Option<()>) -> Option<()> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match key & 7 {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let body = buf.get(..len)?;
                buf = buf.get(len..)?;
                f(key >> 3, body)?;
            }
            _ => return None,
        }
    }
    Some(())
}

/// The log records in an `ExportLogsServiceRequest`.
pub fn count_records(request: &[u8]) -> Option<u64> {
    let mut n = 0;
    each_len_field(request, &mut |tag, resource_logs| {
        (tag != 1).then_some(()).or_else(|| {
            each_len_field(resource_logs, &mut |tag, scope_logs| {
                (tag != 2).then_some(()).or_else(|| {
                    each_len_field(scope_logs, &mut |tag, _| {
                        n += u64::from(tag == 2);
                        Some(())
                    })
                })
            })
        })
    })?;
    Some(n)
}

/// Decodes a request into its record count.
#[derive(Clone, Copy, Default)]
pub struct CountCodec;

/// See [`CountCodec`].
pub struct CountDecoder;

impl tonic::codec::Decoder for CountDecoder {
    type Item = u64;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<u64>, tonic::Status> {
        use bytes::Buf;
        let bytes = src.copy_to_bytes(src.remaining());
        count_records(&bytes)
            .map(Some)
            .ok_or_else(|| tonic::Status::invalid_argument("not an ExportLogsServiceRequest"))
    }
}

impl tonic::codec::Codec for CountCodec {
    type Encode = ExportLogsServiceResponse;
    type Decode = u64;
    type Encoder =
        <tonic_prost::ProstCodec<ExportLogsServiceResponse, u64> as tonic::codec::Codec>::Encoder;
    type Decoder = CountDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic::codec::Codec::encoder(
            &mut tonic_prost::ProstCodec::<ExportLogsServiceResponse, u64>::default(),
        )
    }

    fn decoder(&mut self) -> Self::Decoder {
        CountDecoder
    }
}

struct Export(Arc<AtomicU64>);

impl tonic::server::UnaryService<u64> for Export {
    type Response = ExportLogsServiceResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<u64>) -> Self::Future {
        self.0.fetch_add(*request.get_ref(), Ordering::SeqCst);
        std::future::ready(Ok(tonic::Response::new(
            ExportLogsServiceResponse::default(),
        )))
    }
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for CountingSink
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let count = self.0.clone();
        Box::pin(async move {
            if req.uri().path()
                != concat!(
                    "/opentelemetry.proto.collector.logs.v1.LogsService",
                    "/Export"
                )
            {
                let mut unimplemented =
                    tonic::codegen::http::Response::new(tonic::body::Body::default());
                *unimplemented.status_mut() = tonic::codegen::http::StatusCode::NOT_FOUND;
                return Ok(unimplemented);
            }
            let mut grpc = tonic::server::Grpc::new(CountCodec)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .max_decoding_message_size(64 << 20);
            Ok(grpc.unary(Export(count), req).await)
        })
    }
}

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime+stime (seconds) and peak RSS (KiB) of a running process.
pub fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // Fields 14 and 15 (1-based) are utime and stime; after ')' they are 12 and 13 (1-based).
    let cpu = (ticks(11) + ticks(12)) / hz.max(1.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}
