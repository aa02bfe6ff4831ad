//! Refusals reach clients that write their whole request before reading (Python's `urllib`,
//! most HTTP/1 libraries without `Expect: 100-continue`): the gateway reads and discards the
//! rest of a refused request, within bounds, before it closes the connection (lingering close).
//! Each test writes with a raw TCP stream, so that nothing between it and the gateway reads the
//! response early or retries.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(gw: &TestGateway) -> String {
    gw.url.trim_start_matches("http://").to_string()
}

/// The echo engine alone, with these `limits:` and gateway keys.
fn policy(limits: &[(&str, &str)], tenants: &[(&str, &str)]) -> String {
    let p = PolicyBuilder::new()
        .local("local-echo")
        .default_route("local-echo", &[]);
    let p = limits.iter().fold(p, |p, (k, v)| p.limit(k, v));
    tenants
        .iter()
        .fold(p, |p, (name, key)| p.tenant(name, key))
        .render()
}

/// An HTTP/1.1 request, whole: request line, headers, `content-length` when there is a body.
fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nhost: gateway\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        r.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A response as read from the socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `error.code` of the body, asserting the OpenAI error shape.
    fn error_code(&self) -> String {
        let v: Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body))
        });
        let e = &v["error"];
        assert!(e["message"].is_string(), "not an OpenAI error: {v}");
        assert!(e["type"].is_string(), "not an OpenAI error: {v}");
        assert!(e.get("param").is_some(), "not an OpenAI error: {v}");
        e["code"].as_str().unwrap_or_default().to_string()
    }
}

/// Reads one response with a `content-length` body. A connection reset or an early end is an
/// error, returned for the test to show.
async fn read_response(s: &mut TcpStream) -> Result<RawResponse, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("no status line: {head:?}"))?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(RawResponse {
                    status,
                    headers,
                    body: buf[end + 4..end + 4 + len].to_vec(),
                });
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut chunk))
            .await
            .map_err(|_| "no response in time".to_string())?
            .map_err(|e| format!("reading the response: {e} (after {} bytes)", buf.len()))?;
        if n == 0 {
            return Err(format!(
                "the connection ended after {} bytes: {:?}",
                buf.len(),
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes `request` whole, then reads the response: what a client without
/// `Expect: 100-continue` does.
async fn write_then_read(gw: &TestGateway, request: &[u8]) -> (TcpStream, RawResponse) {
    let mut s = TcpStream::connect(addr(gw)).await.expect("connect");
    tokio::time::timeout(TEST_TIMEOUT, s.write_all(request))
        .await
        .expect("the request is written in time")
        .expect("the gateway takes the whole request");
    let resp = read_response(&mut s)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (s, resp)
}

/// After a response with `Connection: close`: the gateway ends the connection with a FIN (an
/// end of stream), not a reset, and sends nothing more.
async fn assert_closed_cleanly(s: &mut TcpStream) {
    let mut rest = Vec::new();
    let end = tokio::time::timeout(TEST_TIMEOUT, s.read_to_end(&mut rest))
        .await
        .expect("the gateway closes the connection");
    assert!(end.is_ok(), "the connection was reset: {end:?}");
    assert!(
        rest.is_empty(),
        "more after the refusal: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// A chat request body of `len` bytes (valid JSON: the padding is a string field).
fn chat_body(len: usize) -> Vec<u8> {
    let start = br#"{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "pad": ""#;
    let mut body = start.to_vec();
    body.resize(len.saturating_sub(2).max(start.len()), b'x');
    body.extend_from_slice(b"\"}");
    body
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// A body larger than the sockets' buffers hold: a client writing it whole is still writing
/// when the refusal is sent.
const BIG: usize = 16 * 1024 * 1024;

#[tokio::test]
async fn an_oversized_body_sent_whole_gets_its_413() {
    // The default limit (4 MiB) and a 20 MiB body, as a script posting a large file would.
    let gw = start_gateway(&policy(&[], &[]), &[]).await;
    let body = chat_body(20 * 1024 * 1024);
    let req = raw_request("POST", "/v1/chat/completions", &[JSON], &body);
    let (mut s, resp) = write_then_read(&gw, &req).await;
    assert_eq!(resp.status, 413, "{resp:?}");
    assert_eq!(resp.error_code(), "request_too_large");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(resp.header("x-request-id").is_some(), "{resp:?}");
    assert_closed_cleanly(&mut s).await;
    assert_eq!(
        chat(&gw, ask("auto", "still serving"), &[]).await.status,
        200
    );
}

#[tokio::test]
async fn a_huge_head_sent_whole_gets_an_openai_shaped_431() {
    // A 200 KB tags header, far over the default limit of 16 KiB on all headers.
    let gw = start_gateway(&policy(&[], &[]), &[]).await;
    let tags = "t".repeat(200_000);
    let body = chat_body(BIG);
    let req = raw_request(
        "POST",
        "/v1/chat/completions",
        &[JSON, ("x-switchyard-tags", &tags)],
        &body,
    );
    let (mut s, resp) = write_then_read(&gw, &req).await;
    assert_eq!(resp.status, 431, "{resp:?}");
    assert_eq!(resp.error_code(), "request_headers_too_large");
    assert_eq!(resp.header("connection"), Some("close"));
    assert_closed_cleanly(&mut s).await;
}

#[tokio::test]
async fn a_head_past_the_parse_buffer_still_gets_a_readable_431() {
    // max_header_bytes: 1024 parses heads of up to 16 KiB; this one is as large as BIG.
    let gw = start_gateway(&policy(&[("max_header_bytes", "1024")], &[]), &[]).await;
    let junk = "j".repeat(BIG);
    let req = raw_request(
        "POST",
        "/v1/chat/completions",
        &[JSON, ("x-junk", &junk)],
        &chat_body(1024),
    );
    let (mut s, resp) = write_then_read(&gw, &req).await;
    assert_eq!(resp.status, 431, "{resp:?}");
    assert_closed_cleanly(&mut s).await;
    assert_eq!(
        chat(&gw, ask("auto", "still serving"), &[]).await.status,
        200
    );
}

#[tokio::test]
async fn refusals_on_a_kept_alive_connection_close_it_cleanly() {
    let gw = start_gateway(
        &policy(&[("max_body_bytes", "65536")], &[("team", "sk-team")]),
        &[],
    )
    .await;
    let key = ("authorization", "Bearer sk-team");
    let big = chat_body(BIG);
    let chunked = {
        let mut r = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
                      authorization: Bearer sk-team\r\ncontent-type: application/json\r\n\
                      transfer-encoding: chunked\r\n\r\n"
            .to_vec();
        for piece in big.chunks(1024 * 1024) {
            r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            r.extend_from_slice(piece);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "no gateway key",
            raw_request("POST", "/v1/chat/completions", &[JSON], &big),
            401,
            "invalid_api_key",
        ),
        (
            "unknown path",
            raw_request("POST", "/v1/images/generations", &[JSON, key], &big),
            404,
            "not_found",
        ),
        (
            "wrong method",
            raw_request("PUT", "/v1/models", &[JSON, key], &big),
            405,
            "method_not_allowed",
        ),
        (
            "wrong content type",
            raw_request(
                "POST",
                "/v1/chat/completions",
                &[("content-type", "text/plain"), key],
                &big,
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "body over the limit",
            raw_request("POST", "/v1/chat/completions", &[JSON, key], &big),
            413,
            "request_too_large",
        ),
        (
            "chunked body over the limit",
            chunked,
            413,
            "request_too_large",
        ),
    ];
    let health = raw_request("GET", "/healthz", &[], b"");
    for (name, req, status, code) in cases {
        // A first request keeps the connection alive ...
        let (mut s, ok) = write_then_read(&gw, &health).await;
        assert_eq!(ok.status, 200, "{name}: {ok:?}");
        assert_eq!(ok.header("connection"), None, "{name}: {ok:?}");
        // ... then the refused one, written whole, and one more behind it that is never read.
        let mut both = req.clone();
        both.extend_from_slice(&health);
        tokio::time::timeout(TEST_TIMEOUT, s.write_all(&both))
            .await
            .expect("the request is written in time")
            .unwrap_or_else(|e| panic!("{name}: the gateway did not take the request: {e}"));
        let resp = read_response(&mut s)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp.status, status, "{name}: {resp:?}");
        assert_eq!(resp.error_code(), code, "{name}");
        assert_eq!(resp.header("connection"), Some("close"), "{name}");
        assert_closed_cleanly(&mut s).await;
    }
}

#[tokio::test]
async fn a_refusal_after_the_whole_body_was_read_keeps_the_connection() {
    let gw = start_gateway(&policy(&[], &[]), &[]).await;
    let bad = raw_request("POST", "/v1/chat/completions", &[JSON], b"{\"model\": ");
    let (mut s, resp) = write_then_read(&gw, &bad).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_eq!(resp.header("connection"), None, "{resp:?}");
    let good = ask("auto", "again").to_string();
    s.write_all(&raw_request(
        "POST",
        "/v1/chat/completions",
        &[JSON],
        good.as_bytes(),
    ))
    .await
    .expect("write");
    let resp = read_response(&mut s)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[tokio::test]
async fn a_client_waiting_for_100_continue_gets_the_refusal_instead() {
    let gw = start_gateway(&policy(&[], &[("team", "sk-team")]), &[]).await;
    let mut s = TcpStream::connect(addr(&gw)).await.expect("connect");
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
                content-type: application/json\r\ncontent-length: 10000000\r\n\
                expect: 100-continue\r\n\r\n";
    s.write_all(head.as_bytes()).await.expect("write");
    let resp = read_response(&mut s)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 401, "no 100 Continue first: {resp:?}");
    assert_eq!(resp.error_code(), "invalid_api_key");
    assert_eq!(resp.header("connection"), Some("close"));
    assert_closed_cleanly(&mut s).await;
}

#[tokio::test]
async fn a_refused_connection_over_the_limit_reads_its_503() {
    let gw = start_gateway(&policy(&[("max_connections", "1")], &[]), &[]).await;
    let health = raw_request("GET", "/healthz", &[], b"");
    let (_held, ok) = write_then_read(&gw, &health).await;
    assert_eq!(ok.status, 200);
    let req = raw_request("POST", "/v1/chat/completions", &[JSON], &chat_body(BIG));
    let (mut s, resp) = write_then_read(&gw, &req).await;
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(resp.error_code(), "too_many_connections");
    assert_eq!(resp.header("connection"), Some("close"));
    assert_closed_cleanly(&mut s).await;
}

/// Sends a refused request (a body over `max_body_bytes`), then keeps writing, `chunk` bytes
/// at a time with `pause` between writes, until the gateway closes the connection. Returns how
/// long after the refusal that took.
async fn send_forever(gw: &TestGateway, chunk: usize, pause: Duration) -> Duration {
    let mut s = TcpStream::connect(addr(gw)).await.expect("connect");
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
                content-type: application/json\r\ncontent-length: 1000000000000\r\n\r\n";
    s.write_all(head.as_bytes()).await.expect("write");
    let filler = vec![b'x'; chunk];
    let started = Instant::now();
    let mut refused = None;
    let (mut rd, mut wr) = s.split();
    let mut scratch = [0u8; 4096];
    let deadline = started + TEST_TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the connection was still open after {TEST_TIMEOUT:?}"
        );
        tokio::select! {
            // The refusal arrives, then the end of the stream (or a reset).
            n = rd.read(&mut scratch), if refused.is_none() => match n {
                Ok(n) if n > 0 => refused = Some(Instant::now()),
                _ => return started.elapsed(),
            },
            w = wr.write_all(&filler) => {
                if w.is_err() {
                    return refused.unwrap_or(started).elapsed();
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

#[tokio::test]
async fn a_client_that_sends_forever_is_cut_off_by_size() {
    // 64 KiB bodies: at most 64 MiB more is read and discarded after the refusal.
    let gw = start_gateway(&policy(&[("max_body_bytes", "65536")], &[]), &[]).await;
    let took = send_forever(&gw, 64 * 1024, Duration::ZERO).await;
    assert!(took < TEST_TIMEOUT, "{took:?}");
    assert_eq!(
        chat(&gw, ask("auto", "still serving"), &[]).await.status,
        200
    );
}

#[tokio::test]
async fn a_client_that_trickles_forever_is_cut_off_in_time() {
    // body_timeout_ms bounds the lingering too: a trickle far under the size bound is cut off
    // about a second after the refusal.
    let gw = start_gateway(&policy(&[("body_timeout_ms", "1000")], &[]), &[]).await;
    let took = send_forever(&gw, 512, Duration::from_millis(20)).await;
    assert!(took < Duration::from_secs(8), "{took:?}");
}
