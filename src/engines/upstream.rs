//! The HTTP/1.1 client of a cloud model: a pool of keep-alive connections (plain TCP or TLS)
//! to one upstream, used from the request's own task. The request writes its head and body
//! with one write and reads the answer off the socket itself; there is no connection task and
//! no channel between it and the request, which on this path costs as much as the HTTP work.

use super::framing::{self, BodyDecoder, Framing, Head, Step};
use crate::api::headers::PassBack;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, Uri};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle connections kept per upstream.
const MAX_IDLE: usize = 1024;
/// Read buffer of a connection.
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (DNS, TCP, TLS).
    #[error("{0}")]
    Connect(String),
    /// The connection failed or the upstream broke HTTP.
    #[error("{0}")]
    Transport(String),
}

/// A connection to the upstream.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether an idle connection is still usable: not closed by the upstream, and (for plain
    /// TCP) with no unasked-for bytes waiting. Looks without reading (TLS records stay queued).
    fn idle_usable(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        match self.tcp().poll_peek(&mut cx, &mut buf) {
            Poll::Pending => true,
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => false,
            // A TLS upstream may send session tickets after the handshake.
            Poll::Ready(Ok(_)) => matches!(self, Io::Tls(_)),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection with what has been read from it and not used yet.
struct Conn {
    io: Io,
    buf: BytesMut,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Where the upstream is and how to reach it.
struct Target {
    host: String,
    port: u16,
    /// The `Host` header value.
    authority: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    connect_timeout: Duration,
}

/// A pool of connections to one upstream.
pub struct Upstream {
    target: Target,
    idle: Mutex<Vec<Idle>>,
    /// The response headers that go back to the client.
    pass_back: PassBack,
}

/// The response head, and the body still to be read off the connection.
pub struct Response {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub retry_after: Option<HeaderValue>,
    /// The response headers that go back to the client ([`framing::Head::passed`]).
    pub passed: http::HeaderMap,
    pub body: Body,
}

/// A response body, read from the connection as it is asked for; the connection goes back to
/// the pool when the body has been read to its end (and is closed if the body is dropped
/// before that).
pub struct Body {
    conn: Option<Conn>,
    decoder: BodyDecoder,
    keep_alive: bool,
    pool: Arc<Upstream>,
}

impl Upstream {
    /// A pool for the upstream of `endpoint` (`http://` or `https://`, verified against the
    /// Mozilla root certificates), passing back the response headers `pass_back` allows.
    pub fn new(
        endpoint: &Uri,
        connect_timeout: Duration,
        pass_back: PassBack,
    ) -> Result<Arc<Upstream>, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Upstream::with_roots(endpoint, connect_timeout, roots, pass_back)
    }

    /// [`Upstream::new`] trusting `roots` for TLS.
    fn with_roots(
        endpoint: &Uri,
        connect_timeout: Duration,
        roots: rustls::RootCertStore,
        pass_back: PassBack,
    ) -> Result<Arc<Upstream>, String> {
        let host = endpoint
            .host()
            .ok_or_else(|| format!("`{endpoint}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let https = match endpoint.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("unsupported scheme {other:?} in `{endpoint}`")),
        };
        let port = endpoint.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = match endpoint.port_u16() {
            Some(_) => endpoint
                .authority()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default(),
            None => endpoint.host().unwrap_or_default().to_string(),
        };
        let tls = if https {
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("invalid TLS server name `{host}`: {e}"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Arc::new(Upstream {
            target: Target {
                host,
                port,
                authority,
                tls,
                connect_timeout,
            },
            idle: Mutex::new(Vec::new()),
            pass_back,
        }))
    }

    /// The `Host` header value for requests to this upstream.
    pub fn authority(&self) -> &str {
        &self.target.authority
    }

    /// An idle connection that is still usable, if there is one.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = idle.pop() {
            if i.since.elapsed() < IDLE_TIMEOUT && i.conn.io.idle_usable() {
                return Some(i.conn);
            }
        }
        None
    }

    fn put_back(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE {
            return;
        }
        // The newest are reused first, so the list is oldest first: once its first has
        // expired, the expired ones are dropped.
        let now = Instant::now();
        if idle.first().is_some_and(|i| now - i.since >= IDLE_TIMEOUT) {
            idle.retain(|i| now - i.since < IDLE_TIMEOUT);
        }
        idle.push(Idle { conn, since: now });
    }

    /// A TCP connection to one of the host's addresses. The connect timeout is shared out
    /// among them (as hyper's connector does), so that an address that drops packets (a broken
    /// IPv6 route, say) does not use it all up.
    async fn connect_tcp(&self) -> Result<TcpStream, UpstreamError> {
        let t = &self.target;
        let timed_out = || {
            UpstreamError::Connect(format!(
                "no connection to {}:{} within {:?}",
                t.host, t.port, t.connect_timeout
            ))
        };
        let started = Instant::now();
        let addrs: Vec<_> = tokio::time::timeout(
            t.connect_timeout,
            tokio::net::lookup_host((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| UpstreamError::Connect(format!("{}:{}: {e}", t.host, t.port)))?
        .collect();
        let mut last = None;
        for (i, addr) in addrs.iter().enumerate() {
            let left = t.connect_timeout.saturating_sub(started.elapsed());
            let share = left / (addrs.len() - i) as u32;
            match tokio::time::timeout(share, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => return Ok(tcp),
                Ok(Err(e)) => last = Some(format!("{}:{} ({addr}): {e}", t.host, t.port)),
                Err(_) => last = None,
            }
        }
        Err(match last {
            Some(e) => UpstreamError::Connect(e),
            None if addrs.is_empty() => {
                UpstreamError::Connect(format!("{}: no address found", t.host))
            }
            None => timed_out(),
        })
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let t = &self.target;
        let tcp = self.connect_tcp().await?;
        let _ = tcp.set_nodelay(true);
        let io = match &t.tls {
            None => Io::Plain(tcp),
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(t.connect_timeout, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| UpstreamError::Connect("the TLS handshake timed out".into()))?
                        .map_err(|e| UpstreamError::Connect(format!("TLS handshake: {e}")))?;
                Io::Tls(Box::new(tls))
            }
        };
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        })
    }

    /// Sends a request (`head` is its complete head, ending in the blank line) and reads the
    /// response head. A reused connection that the upstream turns out to have closed before
    /// answering (it closes idle ones on its own schedule) is replaced by a new one, once.
    pub async fn send(
        self: &Arc<Self>,
        head: &[u8],
        body: &[u8],
    ) -> Result<Response, UpstreamError> {
        if let Some(conn) = self.checkout() {
            match self.exchange(conn, head, body).await {
                Err(Failure::BeforeAnswer(_)) => {}
                Err(Failure::After(e)) => return Err(e),
                Ok(resp) => return Ok(resp),
            }
        }
        let conn = self.connect().await?;
        match self.exchange(conn, head, body).await {
            Ok(resp) => Ok(resp),
            Err(Failure::BeforeAnswer(e) | Failure::After(e)) => Err(e),
        }
    }

    async fn exchange(
        self: &Arc<Self>,
        mut conn: Conn,
        head: &[u8],
        body: &[u8],
    ) -> Result<Response, Failure> {
        let mut parts = [IoSlice::new(head), IoSlice::new(body)];
        let mut slices = &mut parts[..];
        while !slices.is_empty() {
            match conn.io.write_vectored(slices).await {
                Ok(0) => return Err(Failure::before("the connection closed")),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) => return Err(Failure::before(e)),
            }
        }
        if let Err(e) = conn.io.flush().await {
            return Err(Failure::before(e));
        }
        let mut answered = false;
        let head = loop {
            match framing::parse_head(&mut conn.buf, &self.pass_back) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(e) => return Err(Failure::After(UpstreamError::Transport(e.to_string()))),
            }
            conn.buf.reserve(READ_CHUNK);
            match conn.io.read_buf(&mut conn.buf).await {
                Ok(0) if !answered => {
                    return Err(Failure::before(
                        "the connection closed before the response head",
                    ))
                }
                Ok(0) => {
                    return Err(Failure::After(UpstreamError::Transport(
                        "the connection closed in the response head".into(),
                    )))
                }
                Ok(_) => answered = true,
                Err(e) if !answered => return Err(Failure::before(e)),
                Err(e) => return Err(Failure::After(UpstreamError::Transport(e.to_string()))),
            }
        };
        let Head {
            status,
            content_type,
            retry_after,
            passed,
            framing,
            keep_alive,
        } = head;
        let mut body = Body {
            conn: Some(conn),
            decoder: BodyDecoder::new(framing),
            keep_alive,
            pool: self.clone(),
        };
        if framing == Framing::Length(0) {
            body.release();
        }
        Ok(Response {
            status,
            content_type,
            retry_after,
            passed,
            body,
        })
    }
}

/// A failed exchange: before any byte of an answer (a reused connection may be retried on a
/// new one) or after.
enum Failure {
    BeforeAnswer(UpstreamError),
    After(UpstreamError),
}

impl Failure {
    fn before(e: impl std::fmt::Display) -> Failure {
        Failure::BeforeAnswer(UpstreamError::Transport(e.to_string()))
    }
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub async fn frame(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        std::future::poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// [`Body::frame`] as a poll, for streams that read the body themselves.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.decoder.step(&mut conn.buf) {
                Ok(Step::Data(d)) => {
                    if self.decoder.is_done() {
                        self.release();
                    }
                    return Poll::Ready(Some(Ok(d)));
                }
                Ok(Step::Done) => {
                    self.release();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(UpstreamError::Transport(e.to_string()))));
                }
            }
            conn.buf.reserve(READ_CHUNK);
            match std::task::ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.io),
                cx,
                &mut conn.buf
            )) {
                Ok(0) => {
                    self.keep_alive = false;
                    if let Err(e) = self.decoder.at_eof() {
                        self.conn = None;
                        return Poll::Ready(Some(Err(UpstreamError::Transport(e.to_string()))));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(UpstreamError::Transport(e.to_string()))));
                }
            }
        }
    }

    /// The body is complete: the connection goes back to the pool if it can carry another
    /// request (nothing left over in its buffer), else it is closed.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.pool.put_back(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    /// A self-signed certificate for `localhost` and 127.0.0.1 (CA:FALSE), valid until 2126.
    const CERT: &str = include_str!("testdata/localhost-cert.pem");
    const KEY: &str = include_str!("testdata/localhost-key.pem");

    /// Answers every request on a connection with `answer` (keeping the connection open
    /// unless `close_after` is set), counting connections.
    async fn serve<S>(stream: S, answer: &'static [u8], close_after: bool)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut stream = stream;
        let mut buf = BytesMut::new();
        loop {
            // Head, then a body of the announced length.
            let (head_len, body_len) = loop {
                let mut slots = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut slots);
                if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                    let len = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                        .unwrap_or(0usize);
                    break (n, len);
                }
                if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            };
            while buf.len() < head_len + body_len {
                if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            }
            let _ = buf.split_to(head_len + body_len);
            if stream.write_all(answer).await.is_err() || close_after {
                let _ = stream.shutdown().await;
                return;
            }
        }
    }

    async fn listen(
        answer: &'static [u8],
        close_after: bool,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(tcp, answer, close_after).await,
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(tcp).await {
                                serve(s, answer, close_after).await
                            }
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    async fn body_of(resp: Response) -> Vec<u8> {
        let mut body = resp.body;
        let mut out = vec![];
        while let Some(piece) = body.frame().await {
            out.extend_from_slice(&piece.unwrap());
        }
        out
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
    const HEAD: &[u8] =
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n";

    fn plain(port: u16) -> Arc<Upstream> {
        let endpoint = format!("http://127.0.0.1:{port}/v1").parse().unwrap();
        Upstream::new(&endpoint, Duration::from_secs(5), PassBack::default()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_is_read() {
        let (port, accepted) = listen(OK, false, None).await;
        let up = plain(port);
        for _ in 0..3 {
            let resp = up.send(HEAD, b"{}").await.unwrap();
            assert_eq!(resp.status, StatusCode::OK);
            assert_eq!(body_of(resp).await, b"{\"a\":1}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // A body dropped before its end takes its connection with it.
        let resp = up.send(HEAD, b"{}").await.unwrap();
        drop(resp);
        body_of(up.send(HEAD, b"{}").await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        let (port, accepted) = listen(OK, true, None).await;
        let up = plain(port);
        for _ in 0..3 {
            assert_eq!(
                body_of(up.send(HEAD, b"{}").await.unwrap()).await,
                b"{\"a\":1}"
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn tls_upstreams_are_verified() {
        let cert = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (port, _) = listen(OK, false, Some(acceptor)).await;
        let endpoint: Uri = format!("https://localhost:{port}/v1").parse().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let trusted = Upstream::with_roots(
            &endpoint,
            Duration::from_secs(5),
            roots,
            PassBack::default(),
        )
        .unwrap();
        for _ in 0..2 {
            let resp = trusted.send(HEAD, b"{}").await.unwrap();
            assert_eq!(body_of(resp).await, b"{\"a\":1}");
        }
        // The public roots do not vouch for this certificate.
        let public = Upstream::new(&endpoint, Duration::from_secs(5), PassBack::default()).unwrap();
        match public.send(HEAD, b"{}").await {
            Err(UpstreamError::Connect(e)) => assert!(e.contains("certificate"), "{e}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("an unknown certificate was accepted"),
        }
    }
}
