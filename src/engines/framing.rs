//! HTTP/1.1 response framing for the upstream client: the head parsed from the bytes read so
//! far, and the body cut out of them by `Content-Length`, chunked encoding, or the connection's
//! end. Pure (bytes in, pieces out), so every split of the input can be tested.

use crate::api::headers::{PassBack, UPSTREAM_REQUEST_ID};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Largest response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines in a response head.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions) or trailer line.
const MAX_LINE: usize = 4096;

/// A malformed response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FramingError(pub String);

fn err<T>(what: impl Into<String>) -> Result<T, FramingError> {
    Err(FramingError(what.into()))
}

/// A parsed response head: what the gateway reads of it.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub retry_after: Option<HeaderValue>,
    /// The headers that go back to the client: those the pass-back list allows, and the
    /// provider's `x-request-id` as `x-switchyard-upstream-request-id`.
    pub passed: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection can carry another request after this response.
    pub keep_alive: bool,
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes.
    Length(u64),
    /// Chunked transfer encoding.
    Chunked,
    /// Until the connection closes.
    Close,
}

/// Parses a response head from the start of `buf`, removing it. `Ok(None)`: more bytes needed.
/// Interim (1xx) responses are skipped. Headers `pass` allows are kept for the client.
pub fn parse_head(buf: &mut BytesMut, pass: &PassBack) -> Result<Option<Head>, FramingError> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut slots);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return err(format!("the response head is over {MAX_HEAD_BYTES} bytes"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return err(format!("malformed response head: {e}")),
        };
        let code = resp.code.unwrap_or(0);
        let Ok(status) = StatusCode::from_u16(code) else {
            return err(format!("invalid status code {code}"));
        };
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        let mut head = Head {
            status,
            content_type: None,
            retry_after: None,
            passed: HeaderMap::new(),
            framing: Framing::Close,
            keep_alive: resp.version == Some(1),
        };
        // The last Transfer-Encoding line's last coding, and the one Content-Length.
        let mut chunked = None;
        let mut length = None;
        let value =
            |v: &[u8]| HeaderValue::from_bytes(v).or_else(|_| err("invalid response header value"));
        for h in resp.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("transfer-encoding") {
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("content-length") {
                for part in h.value.split(|&b| b == b',') {
                    let n = std::str::from_utf8(part.trim_ascii())
                        .ok()
                        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok());
                    match (n, length) {
                        (None, _) => return err("invalid Content-Length"),
                        (Some(n), Some(seen)) if n != seen => {
                            return err("conflicting Content-Length")
                        }
                        (Some(n), _) => length = Some(n),
                    }
                }
            } else if name.eq_ignore_ascii_case("connection") {
                if has_token(h.value, "close") {
                    head.keep_alive = false;
                }
            } else if name.eq_ignore_ascii_case("content-type") {
                head.content_type = Some(value(h.value)?);
            } else if name.eq_ignore_ascii_case("retry-after") {
                head.retry_after = Some(value(h.value)?);
            } else if name.eq_ignore_ascii_case("x-request-id") {
                // A value that is not a valid header value is not worth failing the answer for.
                if let Ok(v) = HeaderValue::from_bytes(h.value) {
                    head.passed.insert(UPSTREAM_REQUEST_ID, v);
                }
            } else if pass.allows(name) {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(h.value),
                ) {
                    head.passed.append(n, v);
                }
            }
        }
        buf.advance(len);
        // RFC 9112 section 6.3.
        head.framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Length(0)
        } else {
            match (chunked, length) {
                (Some(true), _) => Framing::Chunked,
                (Some(false), _) | (None, None) => Framing::Close,
                (None, Some(n)) => Framing::Length(n),
            }
        };
        if head.framing == Framing::Close {
            head.keep_alive = false;
        }
        return Ok(Some(head));
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitively).
fn has_token(v: &[u8], token: &str) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Cuts a body out of the bytes read, by its framing.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    /// Bytes left of a chunk's data.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailer,
    /// Until the connection closes.
    Close,
    Done,
}

/// What the decoder needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A piece of the body.
    Data(Bytes),
    /// More bytes from the connection (or, for [`Framing::Close`], their end).
    NeedMore,
    /// The body is complete.
    Done,
}

/// Reads one CRLF-terminated line off `buf` (without the CRLF); `None` if incomplete.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, FramingError> {
    let Some(nl) = memchr::memchr(b'\n', buf) else {
        if buf.len() > MAX_LINE {
            return err("a chunk line is too long");
        }
        return Ok(None);
    };
    let mut line = buf.split_to(nl + 1);
    line.truncate(nl);
    if line.last() == Some(&b'\r') {
        line.truncate(nl - 1);
    }
    Ok(Some(line))
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> BodyDecoder {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        BodyDecoder { state }
    }

    /// Whether the whole body has been cut out.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next step, taking what it uses from `buf`.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, FramingError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Length(left) | State::ChunkData(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = (buf.len() as u64).min(left);
                    let data = buf.split_to(n as usize).freeze();
                    let left = left - n;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Step::Data(data));
                }
                State::Close => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                State::ChunkSize => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = line[..].split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size.trim_ascii())
                        .ok()
                        .filter(|s| !s.is_empty() && s.len() <= 16)
                        .and_then(|s| u64::from_str_radix(s, 16).ok());
                    self.state = match size {
                        None => return err("invalid chunk size"),
                        Some(0) => State::Trailer,
                        Some(n) => State::ChunkData(n),
                    };
                }
                State::ChunkEnd => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    if !line.is_empty() {
                        return err("chunk data longer than its size");
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailer => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// The connection ended (no more bytes will come): fine only for a body delimited by it.
    pub fn at_eof(&mut self) -> Result<(), FramingError> {
        match self.state {
            State::Close | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => err("the connection closed before the response was complete"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` split at `at`, returning the head and the body as decoded.
    fn decode(wire: &[u8], at: usize, eof: bool) -> Result<(Head, Vec<u8>), FramingError> {
        let mut buf = BytesMut::new();
        let mut parts = [&wire[..at], &wire[at..]].into_iter();
        let head = loop {
            if let Some(h) = parse_head(&mut buf, &PassBack::default())? {
                break h;
            }
            match parts.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return err("no head"),
            }
        };
        let mut dec = BodyDecoder::new(head.framing);
        let mut body = vec![];
        loop {
            match dec.step(&mut buf)? {
                Step::Data(d) => body.extend_from_slice(&d),
                Step::Done => return Ok((head, body)),
                Step::NeedMore => match parts.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None if eof => {
                        dec.at_eof()?;
                    }
                    None => return err("incomplete"),
                },
            }
        }
    }

    #[test]
    fn content_length_and_chunked_bodies_decode_at_every_split() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":\"bc\"}\n",
                b"{\"a\":\"bc\"}\n",
                true,
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
                b"hello, world",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: keep-alive\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                b"abc",
                true,
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", b"", true),
            (
                b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
                b"no",
                false,
            ),
        ];
        for (wire, want, keep_alive) in cases {
            for at in 0..=wire.len() {
                let (head, body) = decode(wire, at, false)
                    .unwrap_or_else(|e| panic!("{e} at {at}: {}", String::from_utf8_lossy(wire)));
                assert_eq!(&body[..], *want, "split at {at}");
                assert_eq!(head.keep_alive, *keep_alive);
            }
        }
    }

    #[test]
    fn a_body_without_length_runs_to_the_end_of_the_connection() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n";
        let (head, body) = decode(wire, 20, true).unwrap();
        assert_eq!((head.framing, head.keep_alive), (Framing::Close, false));
        assert_eq!(body, b"data: 1\n\n");
        assert_eq!(head.content_type.unwrap(), "text/event-stream");
        let busy = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n";
        let (head, _) = decode(busy, 9, false).unwrap();
        assert_eq!((head.status.as_u16(), head.keep_alive), (429, true));
        assert_eq!(head.retry_after.unwrap(), "7");
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx";
        assert!(!decode(old, 0, false).unwrap().0.keep_alive);
    }

    #[test]
    fn malformed_and_truncated_responses_are_errors() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            assert!(
                decode(wire, 0, true).is_err(),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut huge = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        huge.extend_from_slice(&vec![b'x'; MAX_HEAD_BYTES + 1]);
        assert!(parse_head(&mut huge, &PassBack::default()).is_err());
    }
}
