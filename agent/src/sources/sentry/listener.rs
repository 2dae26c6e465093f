//! The endpoint's TCP listener, with the optional PROXY protocol (v1 text,
//! v2 binary) in front of HTTP.
//!
//! Accepting and reading PROXY headers happen in a task of their own, each
//! header in its own task with a deadline, so that a slow or silent client
//! cannot hold up the connections behind it. A connection whose header is
//! missing, malformed or late is closed and counted. The header is read in
//! bounded pieces; bytes after it are handed to HTTP unchanged.
//!
//! At most `max_connections` are open at once, header reads included: past
//! that the loop stops accepting until one closes, so that a flood of
//! connections queues in the kernel rather than in the agent's memory.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use ppp::{HeaderResult, PartialResult, v1, v2};
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::Shutdown;
use crate::metrics::AgentMetrics;

/// Largest PROXY header read: v1 lines are at most 107 bytes; v2 headers
/// with the TLVs load balancers add fit in HAProxy's recommended 536 bytes
/// (its specification, section 2.2) with room to spare.
const MAX_HEADER: usize = 2048;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The TCP peer.
    pub tcp: SocketAddr,
    /// The source address a PROXY header named, if any.
    pub proxied: Option<SocketAddr>,
}

impl Peer {
    /// The address the client connected from: the PROXY header's, else the
    /// TCP peer's.
    pub fn addr(&self) -> SocketAddr {
        self.proxied.unwrap_or(self.tcp)
    }
}

/// A connection, after its PROXY header if there was one.
pub struct Conn {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
    _slot: Slot,
}

/// One of the `max_connections`, held for as long as the connection is
/// open (hyper drops the connection when it ends).
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// How connections are accepted.
#[derive(Debug, Clone, Copy)]
pub struct Accepting {
    /// Every connection must begin with a PROXY header ...
    pub proxy_protocol: bool,
    /// ... sent within this long.
    pub timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.at..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The listener axum serves from.
pub struct SentryListener {
    rx: mpsc::Receiver<(Conn, Peer)>,
    local: SocketAddr,
}

impl SentryListener {
    /// Starts accepting on `listener` as `how` says.
    pub fn start(
        listener: TcpListener,
        how: Accepting,
        metrics: Arc<AgentMetrics>,
        shutdown: Shutdown,
    ) -> io::Result<SentryListener> {
        let local = listener.local_addr()?;
        // A short queue: accepted connections wait here only until hyper
        // takes them.
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, how, tx, metrics, shutdown));
        Ok(SentryListener { rx, local })
    }
}

async fn accept_loop(
    listener: TcpListener,
    how: Accepting,
    tx: mpsc::Sender<(Conn, Peer)>,
    metrics: Arc<AgentMetrics>,
    shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(how.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        let (stream, tcp) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: wait a moment rather than spin.
                tracing::warn!(error = %e, "sentry: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                metrics
                    .errors
                    .with_label_values(&[super::COMPONENT, "connection_limit"])
                    .inc();
                tracing::debug!(peer = %tcp, max = how.max_connections, "sentry: connection limit reached; waiting for one to close");
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        metrics.sentry_connections.inc();
        let slot = Slot {
            _permit: permit,
            open: metrics.sentry_connections.clone(),
        };
        let _ = stream.set_nodelay(true);
        if !how.proxy_protocol {
            let conn = Conn {
                prefix: Vec::new(),
                at: 0,
                inner: stream,
                _slot: slot,
            };
            if tx.send((conn, Peer { tcp, proxied: None })).await.is_err() {
                return;
            }
            continue;
        }
        let tx = tx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(how.timeout, read_proxy_header(stream, slot)).await {
                Ok(Ok((conn, proxied))) => {
                    let _ = tx.send((conn, Peer { tcp, proxied })).await;
                }
                Ok(Err(e)) => {
                    metrics
                        .errors
                        .with_label_values(&[super::COMPONENT, "proxy_protocol"])
                        .inc();
                    tracing::debug!(peer = %tcp, error = %e, "sentry: bad PROXY header; connection closed");
                }
                Err(_) => {
                    metrics
                        .errors
                        .with_label_values(&[super::COMPONENT, "proxy_protocol_timeout"])
                        .inc();
                    tracing::debug!(peer = %tcp, "sentry: no PROXY header in time; connection closed");
                }
            }
        });
    }
}

impl axum::serve::Listener for SentryListener {
    type Io = Conn;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop stopped at shutdown; axum stops calling us then.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer {
            tcp: self.local,
            proxied: None,
        })
    }
}

impl Connected<IncomingStream<'_, SentryListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, SentryListener>) -> Self {
        *stream.remote_addr()
    }
}

/// Reads a PROXY header off `stream`; returns the connection (holding
/// `slot`) positioned after it and the source address it names (`None` for
/// `LOCAL` / `UNKNOWN`).
async fn read_proxy_header(
    mut stream: TcpStream,
    slot: Slot,
) -> io::Result<(Conn, Option<SocketAddr>)> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the PROXY header ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_proxy_header(&buf) {
            Parsed::Incomplete if buf.len() < MAX_HEADER => continue,
            Parsed::Incomplete => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "PROXY header longer than 2048 bytes",
                ));
            }
            Parsed::Invalid(why) => return Err(io::Error::new(io::ErrorKind::InvalidData, why)),
            Parsed::Done { len, source } => {
                let conn = Conn {
                    prefix: buf.split_off(len.min(buf.len())),
                    at: 0,
                    inner: stream,
                    _slot: slot,
                };
                return Ok((conn, source));
            }
        }
    }
}

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// Not a PROXY header.
    Invalid(String),
    /// A header of `len` bytes naming `source`.
    Done {
        /// Header length.
        len: usize,
        /// Source address, if the header names one.
        source: Option<SocketAddr>,
    },
}

/// Parses the start of a connection as a PROXY v1 or v2 header.
pub(super) fn parse_proxy_header(buf: &[u8]) -> Parsed {
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return Parsed::Incomplete;
    }
    match result {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            Parsed::Done {
                len: h.header.len(),
                source,
            }
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                // LOCAL (health checks) and unix sockets: the TCP peer stands.
                _ => None,
            };
            Parsed::Done {
                len: h.len(),
                source,
            }
        }
        HeaderResult::V1(Err(e)) => Parsed::Invalid(format!("PROXY v1: {e}")),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("PROXY v2: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_header_names_the_client_and_its_length() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 9000\r\nPOST /api/1/store/ HTTP/1.1\r\n";
        assert_eq!(
            parse_proxy_header(h),
            Parsed::Done {
                len: 44,
                source: Some(
                    "203.0.113.7:51234"
                        .parse()
                        .unwrap_or_else(|e| panic!("{e}"))
                )
            }
        );
        let h6 = b"PROXY TCP6 2001:db8::1 ::1 443 9000\r\n";
        assert!(
            matches!(parse_proxy_header(h6), Parsed::Done { source: Some(s), .. } if s.ip().is_ipv6())
        );
        assert_eq!(
            parse_proxy_header(b"PROXY UNKNOWN\r\n"),
            Parsed::Done {
                len: 15,
                source: None
            }
        );
    }

    #[test]
    fn a_v2_header_names_the_client_and_local_means_the_peer() {
        let src: SocketAddr = "198.51.100.9:4000"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let dst: SocketAddr = "10.0.0.1:9000".parse().unwrap_or_else(|e| panic!("{e}"));
        let header = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap_or_default();
        let mut input = header.clone();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse_proxy_header(&input),
            Parsed::Done {
                len: header.len(),
                source: Some(src)
            }
        );
        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap_or_default();
        assert!(matches!(
            parse_proxy_header(&local),
            Parsed::Done { source: None, .. }
        ));
        // Cut short: more bytes are needed.
        assert_eq!(parse_proxy_header(&header[..20]), Parsed::Incomplete);
    }

    #[test]
    fn http_without_a_header_is_invalid_and_a_partial_line_incomplete() {
        assert!(matches!(
            parse_proxy_header(b"POST /api/1/store/ HTTP/1.1\r\n"),
            Parsed::Invalid(_)
        ));
        assert_eq!(parse_proxy_header(b"PROXY TCP4 1.2"), Parsed::Incomplete);
    }

    #[tokio::test]
    async fn bytes_after_the_header_reach_http_unchanged() {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut s = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            // Header and request in one write, as load balancers send them.
            let _ = s
                .write_all(b"PROXY TCP4 192.0.2.1 10.0.0.1 1111 9000\r\nhello")
                .await;
        });
        let (stream, _) = l.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let slot = Slot {
            _permit: Arc::new(Semaphore::new(1))
                .try_acquire_owned()
                .unwrap_or_else(|e| panic!("{e}")),
            open: IntGauge::new("open", "open").unwrap_or_else(|e| panic!("{e}")),
        };
        let (mut conn, source) = read_proxy_header(stream, slot)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            source.map(|s| s.to_string()),
            Some("192.0.2.1:1111".to_string())
        );
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest).await;
        assert_eq!(rest, b"hello");
        let _ = client.await;
    }
}
