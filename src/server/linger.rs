//! Lingering close: when the gateway ends a connection, it first sends its end of the stream
//! (a FIN), then reads and discards what the client still sends, within bounds, before it
//! closes the socket.
//!
//! A refusal (401, 413, 431, ...) is often answered before the request's body, or the rest of
//! an oversized head, has been read. A client that writes its whole request before reading
//! (any HTTP/1 client without `Expect: 100-continue`) is then still sending. Closing a socket
//! with unread data makes the kernel send a reset: the client's write fails (`Broken pipe`,
//! `Connection reset`) and the response it was about to read is lost. Reading on until the
//! client is done lets it finish writing and read the refusal. nginx does the same
//! (`lingering_close`, `lingering_time`, `lingering_timeout`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// How long lingering may wait between two reads (nginx's `lingering_timeout`).
pub const IDLE: Duration = Duration::from_secs(5);
/// How much more than `limits.max_body_bytes` lingering reads and discards at most.
pub const EXTRA_BYTES: usize = 64 * 1024 * 1024;

/// The bounds of one connection's lingering close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Longest the whole lingering may take (nginx's `lingering_time`).
    pub total: Duration,
    /// Longest it may wait for the next bytes.
    pub idle: Duration,
    /// Most bytes it reads and discards.
    pub bytes: usize,
}

impl Bounds {
    /// The bounds of a policy's limits: as long as a client may take to send a body
    /// (`body_timeout`, 30 s by default), [`IDLE`] between reads (or `body_timeout` when that
    /// is shorter), and `max_body_bytes` plus [`EXTRA_BYTES`] (68 MiB by default), so that
    /// a refused request with a body the gateway would take is always read whole.
    pub fn of(limits: &crate::policy::Limits) -> Bounds {
        Bounds {
            total: limits.body_timeout,
            idle: IDLE.min(limits.body_timeout),
            bytes: limits.max_body_bytes.saturating_add(EXTRA_BYTES),
        }
    }
}

/// A client connection whose shutdown lingers: [`AsyncWrite::poll_shutdown`] sends the FIN,
/// then reads and discards until the client closes its side or a [bound](Bounds) is reached.
/// Reads and writes before that go straight to the socket.
pub struct Lingering {
    stream: TcpStream,
    bounds: Bounds,
    /// Set once the FIN is sent.
    draining: Option<Draining>,
}

struct Draining {
    /// When lingering ends whatever the client does.
    until: Instant,
    /// When it ends unless more bytes arrive.
    idle_until: Instant,
    discarded: usize,
    /// Wakes the task at `idle_until` (never later than `until`).
    timer: Pin<Box<Sleep>>,
    finished: bool,
}

impl Lingering {
    pub fn new(stream: TcpStream, bounds: Bounds) -> Lingering {
        Lingering {
            stream,
            bounds,
            draining: None,
        }
    }
}

/// Size of each discarding read.
const SCRATCH: usize = 16 * 1024;

/// `d` after `now`; a bound too far to be represented (a policy's huge `body_timeout_ms`) is a
/// year away instead.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

impl Draining {
    fn new(bounds: Bounds) -> Draining {
        let now = Instant::now();
        let until = after(now, bounds.total);
        let idle_until = after(now, bounds.idle).min(until);
        Draining {
            until,
            idle_until,
            discarded: 0,
            timer: Box::pin(tokio::time::sleep_until(idle_until)),
            finished: false,
        }
    }

    /// Reads and discards until the client's end of stream, a read error, or a bound.
    fn poll(&mut self, stream: &mut TcpStream, bounds: Bounds, cx: &mut Context<'_>) -> Poll<()> {
        if self.finished {
            return Poll::Ready(());
        }
        ready!(self.poll_discard(stream, bounds, cx));
        self.finished = true;
        Poll::Ready(())
    }

    fn poll_discard(
        &mut self,
        stream: &mut TcpStream,
        bounds: Bounds,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let mut scratch = [0u8; SCRATCH];
        loop {
            if self.discarded >= bounds.bytes {
                tracing::debug!(
                    "lingering close: {} bytes discarded, the most",
                    self.discarded
                );
                return Poll::Ready(());
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    self.discarded = self.discarded.saturating_add(buf.filled().len());
                    let now = Instant::now();
                    if now >= self.until {
                        tracing::debug!("lingering close: still sending after {:?}", bounds.total);
                        return Poll::Ready(());
                    }
                    self.idle_until = after(now, bounds.idle).min(self.until);
                }
                // The client closed its side, or the connection broke: nothing more to wait for.
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        if self.timer.deadline() != self.idle_until {
            self.timer.as_mut().reset(self.idle_until);
        }
        ready!(self.timer.as_mut().poll(cx));
        Poll::Ready(())
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Sends the FIN, then lingers (see the module documentation). Lingering never fails: it
    /// ends at the client's end of stream, at a read error, or at a bound.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let draining = match &mut this.draining {
            Some(d) => d,
            None => {
                ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
                this.draining.insert(Draining::new(this.bounds))
            }
        };
        ready!(draining.poll(&mut this.stream, this.bounds, cx));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: the gateway's side, wrapped, and the client's.
    async fn pair(bounds: Bounds) -> (Lingering, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (Lingering::new(server, bounds), client)
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn sends_its_end_then_reads_until_the_client_closes() {
        let (mut server, mut client) = pair(Bounds {
            total: LONG,
            idle: LONG,
            bytes: usize::MAX,
        })
        .await;
        server.write_all(b"refused").await.expect("write");
        let shutdown = tokio::spawn(async move { server.shutdown().await });
        // The client is still sending when the gateway shuts down; it reads the refusal and
        // the end of stream, then closes.
        client.write_all(&[b'x'; 1 << 20]).await.expect("write");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"refused");
        drop(client);
        let done = tokio::time::timeout(Duration::from_secs(20), shutdown).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
    }

    #[tokio::test]
    async fn a_silent_client_is_given_up_on_after_the_idle_time() {
        let (mut server, mut client) = pair(Bounds {
            total: LONG,
            idle: Duration::from_millis(200),
            bytes: usize::MAX,
        })
        .await;
        client.write_all(b"partial body").await.expect("write");
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(20), server.shutdown())
            .await
            .expect("lingering ends")
            .expect("shutdown");
        assert!(started.elapsed() < LONG / 2, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_client_that_keeps_sending_is_cut_off_in_time_and_size() {
        for (bounds, pause) in [
            (
                Bounds {
                    total: Duration::from_millis(300),
                    idle: LONG,
                    bytes: usize::MAX,
                },
                Duration::from_millis(10),
            ),
            (
                Bounds {
                    total: LONG,
                    idle: LONG,
                    bytes: 1 << 20,
                },
                Duration::ZERO,
            ),
        ] {
            let (mut server, mut client) = pair(bounds).await;
            let sender = tokio::spawn(async move {
                let chunk = [b'x'; 4096];
                while client.write_all(&chunk).await.is_ok() {
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            });
            let started = std::time::Instant::now();
            tokio::time::timeout(Duration::from_secs(20), server.shutdown())
                .await
                .expect("lingering ends")
                .expect("shutdown");
            assert!(started.elapsed() < LONG / 2, "{bounds:?}");
            if bounds.bytes != usize::MAX {
                let discarded = server.draining.as_ref().map_or(0, |d| d.discarded);
                assert!(
                    (bounds.bytes..bounds.bytes + SCRATCH).contains(&discarded),
                    "{discarded}"
                );
            }
            drop(server);
            tokio::time::timeout(Duration::from_secs(20), sender)
                .await
                .expect("the sender sees the connection closed")
                .expect("sender");
        }
    }
}
