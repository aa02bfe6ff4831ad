//! Server-sent events as OpenAI streams them: `data: <json>\n\n`, ending in `data: [DONE]`.

use bytes::{Buf, Bytes, BytesMut};

/// The last event of an OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Frames a JSON payload as one SSE event.
pub fn event(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    write_event(&mut b, payload);
    b.freeze()
}

/// Appends a JSON payload framed as one SSE event to `out`.
pub fn write_event(out: &mut BytesMut, payload: &[u8]) {
    out.reserve(payload.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n");
}

/// One decoded event: its `data` lines joined with `\n` (comments and other fields dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub data: Bytes,
}

impl Event {
    /// Whether this is the `[DONE]` marker.
    pub fn is_done(&self) -> bool {
        self.data.as_ref() == b"[DONE]"
    }
}

/// Incremental SSE decoder: feed bytes as they arrive, take complete events out.
#[derive(Debug, Default)]
pub struct Decoder {
    /// A pushed piece taken as it is, while nothing was left over before it: its events come
    /// out as slices of it, without a copy. Never set together with `buf`.
    ready: Bytes,
    buf: BytesMut,
    data: BytesMut,
    has_data: bool,
}

/// The buffered, incomplete part of the stream grew past the limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("an SSE line is longer than {0} bytes")]
pub struct LineTooLong(pub usize);

impl Decoder {
    /// Largest line the decoder buffers.
    pub const MAX_LINE: usize = 8 * 1024 * 1024;

    /// Appends bytes from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.spill();
        self.buf.extend_from_slice(chunk);
    }

    /// Appends a piece of the stream, kept without a copy when nothing is left over before it.
    pub fn push_bytes(&mut self, chunk: Bytes) {
        if self.buf.is_empty() && self.ready.is_empty() {
            self.ready = chunk;
        } else {
            self.push(&chunk);
        }
    }

    /// Moves the piece kept as it is into the buffer, for the general decoding.
    fn spill(&mut self) {
        if !self.ready.is_empty() {
            self.buf.extend_from_slice(&self.ready);
            self.ready = Bytes::new();
        }
    }

    /// The next complete event, if one is buffered.
    pub fn next_event(&mut self) -> Result<Option<Event>, LineTooLong> {
        if !self.ready.is_empty() {
            if let Some(end) = single_data_line(&self.ready, self.has_data) {
                let mut data = self.ready.split_to(end + 2);
                data.truncate(end);
                data.advance(6);
                return Ok(Some(Event { data }));
            }
            self.spill();
        }
        if let Some(end) = single_data_line(&self.buf, self.has_data) {
            let mut event = self.buf.split_to(end + 2);
            event.truncate(end);
            let data = event.split_off(6).freeze();
            return Ok(Some(Event { data }));
        }
        loop {
            let Some(nl) = memchr::memchr(b'\n', &self.buf) else {
                if self.buf.len() > Self::MAX_LINE {
                    return Err(LineTooLong(Self::MAX_LINE));
                }
                return Ok(None);
            };
            let mut line = self.buf.split_to(nl + 1);
            line.truncate(nl);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.is_empty() {
                if self.has_data {
                    self.has_data = false;
                    let data = std::mem::take(&mut self.data).freeze();
                    return Ok(Some(Event { data }));
                }
                continue;
            }
            if line.starts_with(b":") {
                continue;
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(i) => {
                    let mut v = &line[i + 1..];
                    if v.first() == Some(&b' ') {
                        v.advance(1);
                    }
                    (&line[..i], v)
                }
                None => (&line[..], &b""[..]),
            };
            if field == b"data" {
                if self.has_data {
                    self.data.extend_from_slice(b"\n");
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
        }
    }

    /// An event left without its closing blank line when the stream ended.
    pub fn finish(&mut self) -> Option<Event> {
        self.spill();
        if !self.buf.is_empty() {
            self.buf.extend_from_slice(b"\n\n");
            if let Ok(Some(e)) = self.next_event() {
                return Some(e);
            }
        }
        self.has_data.then(|| {
            self.has_data = false;
            Event {
                data: std::mem::take(&mut self.data).freeze(),
            }
        })
    }
}

/// The common event, one `data: ` line and a blank line (`\n` endings), at the start of `buf`
/// (with no data lines pending before it): the end of its line. Others go the general way.
fn single_data_line(buf: &[u8], has_data: bool) -> Option<usize> {
    if has_data || !buf.starts_with(b"data: ") {
        return None;
    }
    // The line's end must also end the event; `\r` endings go the general way.
    let end = memchr::memchr(b'\n', buf)?;
    if buf.get(end + 1) != Some(&b'\n') || memchr::memchr(b'\r', &buf[..end]).is_some() {
        return None;
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_events_split_anywhere() {
        let stream = b": keep-alive\n\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        // Pieces pushed as slices (copied) or as `Bytes` (kept), split at every two points.
        for (a, b) in (0..=stream.len()).flat_map(|a| (a..=stream.len()).map(move |b| (a, b))) {
            for shared in [false, true] {
                let mut d = Decoder::default();
                let mut events = vec![];
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    if shared {
                        d.push_bytes(Bytes::copy_from_slice(part));
                    } else {
                        d.push(part);
                    }
                    while let Some(e) = d.next_event().unwrap() {
                        events.push(e);
                    }
                }
                let data: Vec<&[u8]> = events.iter().map(|e| e.data.as_ref()).collect();
                assert_eq!(
                    data,
                    vec![&b"{\"a\":1}"[..], b"line1\nline2", b"[DONE]"],
                    "split at {a} and {b}, shared {shared}"
                );
                assert!(events[2].is_done());
            }
        }
    }

    #[test]
    fn plain_events_pushed_whole_come_out_of_the_piece_itself() {
        let piece = Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: {\"c\"");
        let mut d = Decoder::default();
        d.push_bytes(piece.clone());
        let first = d.next_event().unwrap().unwrap();
        assert_eq!(first.data.as_ref(), b"{\"a\":1}");
        assert_eq!(first.data.as_ptr(), piece[6..].as_ptr(), "not copied");
        assert_eq!(d.next_event().unwrap().unwrap().data.as_ref(), b"{\"b\":2}");
        // The unfinished event waits for the rest.
        assert_eq!(d.next_event().unwrap(), None);
        d.push_bytes(Bytes::from_static(b":3}\n\n"));
        assert_eq!(d.next_event().unwrap().unwrap().data.as_ref(), b"{\"c\":3}");
        assert_eq!(d.next_event().unwrap(), None);
    }

    #[test]
    fn finish_returns_an_unterminated_event() {
        let mut d = Decoder::default();
        d.push(b"data: {\"x\":1}");
        assert_eq!(d.next_event().unwrap(), None);
        assert_eq!(d.finish().unwrap().data.as_ref(), b"{\"x\":1}");
    }
}
