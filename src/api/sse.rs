//! Server-sent events (the WHATWG HTML standard's `text/event-stream`) as OpenAI streams them:
//! `data: <json>\n\n`, ending in `data: [DONE]`; and as Anthropic and the Responses API stream
//! them, each event named in an `event:` line.

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

/// Appends a named event to `out`: `event: <name>` (when there is one) and its payload, one
/// `data:` line per line of it.
pub fn write_named_event(out: &mut BytesMut, name: Option<&[u8]>, payload: &[u8]) {
    out.reserve(payload.len() + name.map_or(0, <[u8]>::len) + 16);
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name);
        out.extend_from_slice(b"\n");
    }
    let mut rest = payload;
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest[..nl]);
        out.extend_from_slice(b"\n");
        rest = &rest[nl + 1..];
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(rest);
    out.extend_from_slice(b"\n\n");
}

/// One decoded event: its `data` lines joined with `\n`, and its `event` name when it has one
/// (comments and other fields dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub data: Bytes,
    pub name: Option<Bytes>,
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
    /// The `event` field of the event being read.
    name: Option<Bytes>,
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
        // The fast paths read whole events; an `event:` line already read (its event split
        // across pieces) names the next event, which only the general way attaches.
        let fast = self.name.is_none();
        if fast && !self.ready.is_empty() {
            if let Some(end) = single_data_line(&self.ready, self.has_data) {
                let mut data = self.ready.split_to(end + 2);
                data.truncate(end);
                data.advance(6);
                return Ok(Some(Event { data, name: None }));
            }
            if let Some((name_end, end)) = single_named_event(&self.ready, self.has_data) {
                let event = self.ready.split_to(end + 2);
                let name = Some(event.slice(7..name_end));
                let data = event.slice(name_end + 7..end);
                return Ok(Some(Event { data, name }));
            }
        }
        self.spill();
        if let Some(end) = single_data_line(&self.buf, self.has_data || !fast) {
            let mut event = self.buf.split_to(end + 2);
            event.truncate(end);
            let data = event.split_off(6).freeze();
            return Ok(Some(Event { data, name: None }));
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
                    let name = self.name.take();
                    return Ok(Some(Event { data, name }));
                }
                // An event without data is not dispatched (nor is its name kept).
                self.name = None;
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
            if field == b"event" {
                self.name = Some(Bytes::copy_from_slice(value));
            } else if field == b"data" {
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
                name: self.name.take(),
            }
        })
    }
}

/// The common named event, one `event: ` line, one `data: ` line and a blank line (`\n` endings),
/// at the start of `buf` (with no data lines pending before it): the ends of its two lines.
fn single_named_event(buf: &[u8], has_data: bool) -> Option<(usize, usize)> {
    if has_data || !buf.starts_with(b"event: ") {
        return None;
    }
    let name_end = memchr::memchr(b'\n', buf)?;
    let rest = &buf[name_end + 1..];
    if !rest.starts_with(b"data: ") {
        return None;
    }
    let end = name_end + 1 + single_data_line(rest, false)?;
    if memchr::memchr(b'\r', &buf[..name_end]).is_some() {
        return None;
    }
    Some((name_end, end))
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
        let stream = b": keep-alive\n\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\nevent: y\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
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
                    vec![&b"{\"a\":1}"[..], b"line1\nline2", b"{\"b\":2}", b"[DONE]"],
                    "split at {a} and {b}, shared {shared}"
                );
                let names: Vec<Option<&[u8]>> = events.iter().map(|e| e.name.as_deref()).collect();
                assert_eq!(
                    names,
                    vec![None, Some(&b"x"[..]), Some(&b"y"[..]), None],
                    "split at {a} and {b}, shared {shared}"
                );
                assert!(events[3].is_done());
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
    fn named_events_pushed_whole_come_out_of_the_piece_itself() {
        let piece = Bytes::from_static(
            b"event: ping\ndata: {\"type\":\"ping\"}\n\nevent: x\r\ndata: 1\r\n\r\nevent: y\ndata: a\ndata: b\n\n",
        );
        let mut d = Decoder::default();
        d.push_bytes(piece.clone());
        let first = d.next_event().unwrap().unwrap();
        assert_eq!(first.name.as_deref(), Some(&b"ping"[..]));
        assert_eq!(first.data.as_ref(), b"{\"type\":\"ping\"}");
        assert_eq!(first.data.as_ptr(), piece[18..].as_ptr(), "not copied");
        // `\r\n` endings and several data lines go the general way, with the same result.
        let second = d.next_event().unwrap().unwrap();
        assert_eq!(
            (second.name.as_deref(), second.data.as_ref()),
            (Some(&b"x"[..]), &b"1"[..])
        );
        let third = d.next_event().unwrap().unwrap();
        assert_eq!(
            (third.name.as_deref(), third.data.as_ref()),
            (Some(&b"y"[..]), &b"a\nb"[..])
        );
        assert_eq!(d.next_event().unwrap(), None);
    }

    #[test]
    fn named_events_are_written_and_read_back() {
        let mut out = BytesMut::new();
        write_named_event(&mut out, Some(b"message_start"), b"{\"a\":1}");
        write_named_event(&mut out, None, b"two\nlines");
        assert_eq!(
            &out[..],
            b"event: message_start\ndata: {\"a\":1}\n\ndata: two\ndata: lines\n\n"
        );
        let mut d = Decoder::default();
        d.push(&out);
        let first = d.next_event().unwrap().unwrap();
        assert_eq!(first.name.as_deref(), Some(&b"message_start"[..]));
        assert_eq!(first.data.as_ref(), b"{\"a\":1}");
        let second = d.next_event().unwrap().unwrap();
        assert_eq!(
            (second.name, second.data.as_ref()),
            (None, &b"two\nlines"[..])
        );
    }

    #[test]
    fn finish_returns_an_unterminated_event() {
        let mut d = Decoder::default();
        d.push(b"data: {\"x\":1}");
        assert_eq!(d.next_event().unwrap(), None);
        assert_eq!(d.finish().unwrap().data.as_ref(), b"{\"x\":1}");
    }
}
