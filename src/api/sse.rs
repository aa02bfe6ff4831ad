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
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if one is buffered.
    pub fn next_event(&mut self) -> Result<Option<Event>, LineTooLong> {
        if let Some(e) = self.single_data_line() {
            return Ok(Some(e));
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

    /// Fast path for the common event, one `data: ` line and a blank line (`\n` endings):
    /// taken out of the buffer without copying.
    fn single_data_line(&mut self) -> Option<Event> {
        if self.has_data || !self.buf.starts_with(b"data: ") {
            return None;
        }
        // The line's end must also end the event; `\r` endings go the slow way.
        let end = memchr::memchr(b'\n', &self.buf)?;
        if self.buf.get(end + 1) != Some(&b'\n')
            || memchr::memchr(b'\r', &self.buf[..end]).is_some()
        {
            return None;
        }
        let mut event = self.buf.split_to(end + 2);
        event.truncate(end);
        let data = event.split_off(6).freeze();
        Some(Event { data })
    }

    /// An event left without its closing blank line when the stream ended.
    pub fn finish(&mut self) -> Option<Event> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_events_split_anywhere() {
        let stream = b": keep-alive\n\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let mut d = Decoder::default();
            let mut events = vec![];
            for part in [&stream[..split], &stream[split..]] {
                d.push(part);
                while let Some(e) = d.next_event().unwrap() {
                    events.push(e);
                }
            }
            let data: Vec<&[u8]> = events.iter().map(|e| e.data.as_ref()).collect();
            assert_eq!(
                data,
                vec![&b"{\"a\":1}"[..], b"line1\nline2", b"[DONE]"],
                "split at {split}"
            );
            assert!(events[2].is_done());
        }
    }

    #[test]
    fn finish_returns_an_unterminated_event() {
        let mut d = Decoder::default();
        d.push(b"data: {\"x\":1}");
        assert_eq!(d.next_event().unwrap(), None);
        assert_eq!(d.finish().unwrap().data.as_ref(), b"{\"x\":1}");
    }
}
