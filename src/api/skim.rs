//! A minimal JSON reader for the hot path, which needs a few fields of a larger document and
//! forwards the rest as it came: it walks the structure (objects, arrays, strings, numbers,
//! literals), rejects what is not well-formed JSON, and hands out raw slices of the input
//! instead of building values or copying strings.
//!
//! The input must be valid UTF-8 ([`Reader::new`] checks it), so that any slice it hands out is
//! a `str`.

use std::borrow::Cow;

/// Deepest nesting accepted: serde_json's limit, so that a body the reader accepts also parses
/// whole (serde_json counts down from 128 and refuses the level that reaches 0: 127 levels).
const MAX_DEPTH: usize = 127;

/// Why a document is not well-formed JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct SkimError {
    pub what: &'static str,
    pub at: usize,
}

/// The kind of a JSON value, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl From<&serde_json::Value> for Kind {
    fn from(v: &serde_json::Value) -> Kind {
        use serde_json::Value;
        match v {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }
}

impl Kind {
    /// The kind as an error message says it ("a string", "an object", ...).
    pub fn described(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// A string token as it appears in the input, between its quotes, escapes untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStr<'a> {
    pub raw: &'a str,
    /// Whether it contains a backslash escape.
    pub escaped: bool,
}

impl<'a> RawStr<'a> {
    /// The string's value (borrowed unless it has escapes).
    pub fn decoded(&self) -> Cow<'a, str> {
        if !self.escaped {
            return Cow::Borrowed(self.raw);
        }
        // The token was checked when read, so decoding cannot fail but for lone surrogates,
        // which become U+FFFD.
        let mut quoted = String::with_capacity(self.raw.len() + 2);
        quoted.push('"');
        quoted.push_str(self.raw);
        quoted.push('"');
        match serde_json::from_str::<String>(&quoted) {
            Ok(s) => Cow::Owned(s),
            Err(_) => Cow::Owned(String::from_utf8_lossy(self.raw.as_bytes()).into_owned()),
        }
    }

    /// Whether the string's value is `s`.
    #[inline]
    pub fn is(&self, s: &str) -> bool {
        if self.escaped {
            self.decoded() == s
        } else {
            self.raw == s
        }
    }

    /// Length in bytes of the string's value.
    pub fn len(&self) -> usize {
        if self.escaped {
            self.decoded().len()
        } else {
            self.raw.len()
        }
    }

    /// Whether the string's value is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// The first byte at or after `from` that ends a run of plain string content: `"`, `\\` or a
/// control character (`b.len()` if none). Eight bytes at a time: a byte is special when it equals
/// `"` or `\\` (a zero byte after XOR) or is below 0x20; the lowest flag of each test is exact.
#[inline]
fn next_special(b: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut pos = from;
    while let Some(chunk) = b.get(pos..pos + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let flags = zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
        if flags != 0 {
            return pos + (flags.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    while let Some(&c) = b.get(pos) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return pos;
        }
        pos += 1;
    }
    pos
}

/// A cursor over one JSON document.
pub struct Reader<'a> {
    s: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `input`, which must be UTF-8.
    pub fn new(input: &'a [u8]) -> Result<Reader<'a>, SkimError> {
        match std::str::from_utf8(input) {
            Ok(s) => Ok(Reader::of(s)),
            Err(e) => Err(SkimError {
                what: "invalid UTF-8",
                at: e.valid_up_to(),
            }),
        }
    }

    /// A reader over a string.
    pub fn of(s: &'a str) -> Reader<'a> {
        Reader {
            s,
            pos: 0,
            depth: 0,
        }
    }

    /// Byte offset where the next value starts (after whitespace).
    pub fn value_start(&mut self) -> usize {
        self.skip_ws();
        self.pos
    }

    /// Byte offset of the cursor.
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn bytes(&self) -> &'a [u8] {
        self.s.as_bytes()
    }

    fn err<T>(&self, what: &'static str) -> Result<T, SkimError> {
        Err(SkimError { what, at: self.pos })
    }

    fn skip_ws(&mut self) {
        let b = self.bytes();
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The kind of the next value (after whitespace), without reading it.
    pub fn peek(&mut self) -> Result<Kind, SkimError> {
        self.skip_ws();
        Ok(match self.bytes().get(self.pos) {
            Some(b'n') => Kind::Null,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'"') => Kind::String,
            Some(b'[') => Kind::Array,
            Some(b'{') => Kind::Object,
            Some(b'-' | b'0'..=b'9') => Kind::Number,
            Some(_) => return self.err("expected a value"),
            None => return self.err("unexpected end of input"),
        })
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.bytes().get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &'static str) -> Result<(), SkimError> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.err("invalid literal")
        }
    }

    /// Reads a string token.
    pub fn string(&mut self) -> Result<RawStr<'a>, SkimError> {
        if !self.eat(b'"') {
            return self.err("expected a string");
        }
        let b = self.bytes();
        let start = self.pos;
        let mut escaped = false;
        loop {
            self.pos = next_special(b, self.pos);
            match b.get(self.pos) {
                None => return self.err("unterminated string"),
                Some(&c) if c < 0x20 => return self.err("control character in a string"),
                _ => {}
            }
            if b[self.pos] == b'"' {
                let raw = &self.s[start..self.pos];
                self.pos += 1;
                return Ok(RawStr { raw, escaped });
            }
            escaped = true;
            self.pos += 1;
            match b.get(self.pos) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                Some(b'u') => {
                    let unit = self.hex_escape(self.pos + 1)?;
                    self.pos += 5;
                    if (0xDC00..0xE000).contains(&unit) {
                        return self.err("lone surrogate in a \\u escape");
                    }
                    if (0xD800..0xDC00).contains(&unit) {
                        let low = match b.get(self.pos..self.pos + 2) {
                            Some(b"\\u") => self.hex_escape(self.pos + 2)?,
                            _ => 0,
                        };
                        if !(0xDC00..0xE000).contains(&low) {
                            return self.err("lone surrogate in a \\u escape");
                        }
                        self.pos += 6;
                    }
                }
                _ => return self.err("invalid escape"),
            }
        }
    }

    /// The four hex digits of a `\\u` escape at `at`, as a UTF-16 unit.
    fn hex_escape(&self, at: usize) -> Result<u32, SkimError> {
        let digits = self
            .bytes()
            .get(at..at + 4)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        match digits.and_then(|h| u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
            Some(unit) => Ok(unit),
            None => Err(SkimError {
                what: "invalid \\u escape",
                at,
            }),
        }
    }

    fn number(&mut self) -> Result<(), SkimError> {
        let b = self.bytes();
        let digits = |pos: &mut usize| {
            let from = *pos;
            while b.get(*pos).is_some_and(u8::is_ascii_digit) {
                *pos += 1;
            }
            *pos - from
        };
        let start = self.pos;
        let mut p = self.pos;
        if b.get(p) == Some(&b'-') {
            p += 1;
        }
        match b.get(p) {
            Some(b'0') => p += 1,
            Some(b'1'..=b'9') => {
                digits(&mut p);
            }
            _ => {
                self.pos = p;
                return self.err("invalid number");
            }
        }
        if b.get(p) == Some(&b'.') {
            p += 1;
            if digits(&mut p) == 0 {
                self.pos = p;
                return self.err("invalid number");
            }
        }
        let exponent = matches!(b.get(p), Some(b'e' | b'E'));
        if exponent {
            p += 1;
            if let Some(b'+' | b'-') = b.get(p) {
                p += 1;
            }
            if digits(&mut p) == 0 {
                self.pos = p;
                return self.err("invalid number");
            }
        }
        // As serde_json: a number beyond f64's range is an error (only an exponent or many
        // digits can get there).
        let token = &self.s[start..p];
        if (exponent || token.len() > 18) && !token.parse::<f64>().is_ok_and(f64::is_finite) {
            return self.err("number out of range");
        }
        self.pos = p;
        Ok(())
    }

    /// Reads `null` if it comes next; says whether it did.
    pub fn null(&mut self) -> Result<bool, SkimError> {
        if self.peek()? == Kind::Null {
            self.literal("null")?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Skips one value of any kind, checking that it is well formed. Iterative (a bit per open
    /// container says object or array), as this is most of the work of a skim.
    pub fn skip(&mut self) -> Result<(), SkimError> {
        let base = self.depth;
        // Bit i: whether the container at depth base + i + 1 is an object.
        let mut objects: u128 = 0;
        'value: loop {
            match self.peek()? {
                Kind::Null => self.literal("null")?,
                Kind::Bool => {
                    if self.bytes()[self.pos] == b't' {
                        self.literal("true")?
                    } else {
                        self.literal("false")?
                    }
                }
                Kind::Number => self.number()?,
                Kind::String => {
                    self.string()?;
                }
                kind @ (Kind::Array | Kind::Object) => {
                    self.pos += 1;
                    self.enter()?;
                    let level = self.depth - base - 1;
                    if kind == Kind::Object {
                        objects |= 1 << level;
                        if !self.eat(b'}') {
                            self.key()?;
                            continue 'value;
                        }
                    } else {
                        objects &= !(1 << level);
                        if !self.eat(b']') {
                            continue 'value;
                        }
                    }
                    self.depth -= 1;
                }
            }
            // After a value: close containers until one continues or the value is done.
            while self.depth > base {
                let in_object = objects >> (self.depth - base - 1) & 1 == 1;
                if self.eat(b',') {
                    if in_object {
                        self.key()?;
                    }
                    continue 'value;
                }
                if self.eat(if in_object { b'}' } else { b']' }) {
                    self.depth -= 1;
                    continue;
                }
                return self.err(if in_object {
                    "expected `,` or `}`"
                } else {
                    "expected `,` or `]`"
                });
            }
            return Ok(());
        }
    }

    /// Reads an object key and its `:`.
    fn key(&mut self) -> Result<RawStr<'a>, SkimError> {
        self.skip_ws();
        if self.bytes().get(self.pos) != Some(&b'"') {
            return self.err("expected a key");
        }
        let key = self.string()?;
        if !self.eat(b':') {
            return self.err("expected `:`");
        }
        Ok(key)
    }

    /// Skips one value and returns its text as it appears in the input.
    pub fn raw(&mut self) -> Result<&'a str, SkimError> {
        self.skip_ws();
        let start = self.pos;
        self.skip()?;
        Ok(&self.s[start..self.pos])
    }

    fn enter(&mut self) -> Result<(), SkimError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nested too deep");
        }
        Ok(())
    }

    /// Reads an array, calling `each` to read every element.
    pub fn array(
        &mut self,
        mut each: impl FnMut(&mut Reader<'a>) -> Result<(), SkimError>,
    ) -> Result<(), SkimError> {
        if !self.eat(b'[') {
            return self.err("expected an array");
        }
        self.enter()?;
        if !self.eat(b']') {
            loop {
                each(self)?;
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b']') {
                    break;
                }
                return self.err("expected `,` or `]`");
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// Reads an object, calling `each` with every key to read its value.
    pub fn object(
        &mut self,
        mut each: impl FnMut(&mut Reader<'a>, RawStr<'a>) -> Result<(), SkimError>,
    ) -> Result<(), SkimError> {
        if !self.eat(b'{') {
            return self.err("expected an object");
        }
        self.enter()?;
        if !self.eat(b'}') {
            loop {
                let key = self.key()?;
                each(self, key)?;
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b'}') {
                    break;
                }
                return self.err("expected `,` or `}`");
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// Checks that nothing but whitespace follows.
    pub fn end(mut self) -> Result<(), SkimError> {
        self.skip_ws();
        if self.pos == self.s.len() {
            Ok(())
        } else {
            self.err("trailing characters")
        }
    }
}

/// Calls `f` with a reader at the value of every member whose key is `quoted_key` (a finder
/// for the key with its quotes, e.g. `"content"`), wherever it is nested, found by substring
/// search instead of a parse. Only for documents assumed well formed: there, a quoted key
/// followed by `:` is always a member (a quote inside a string is escaped).
pub fn each_member_value(
    doc: &str,
    quoted_key: &memchr::memmem::Finder,
    mut f: impl FnMut(&mut Reader) -> Result<(), SkimError>,
) -> Result<(), SkimError> {
    for at in quoted_key.find_iter(doc.as_bytes()) {
        let mut r = Reader::of(doc);
        r.pos = at + quoted_key.needle().len();
        if r.eat(b':') {
            f(&mut r)?;
        }
    }
    Ok(())
}

/// Length of a well-formed JSON text without the whitespace between its tokens (the length
/// of its compact form).
pub fn compact_len(json: &str) -> usize {
    let (mut len, mut in_string, mut escape) = (0, false, false);
    for &c in json.as_bytes() {
        if in_string {
            len += 1;
            match (escape, c) {
                (true, _) => escape = false,
                (false, b'\\') => escape = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            len += 1;
            in_string = c == b'"';
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn well_formed(doc: &[u8]) -> Result<(), SkimError> {
        let mut r = Reader::new(doc)?;
        r.skip()?;
        r.end()
    }

    /// Whether serde_json parses `doc` into a value (what the gateway did before skimming).
    fn serde_accepts(doc: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(doc).is_ok()
    }

    const VALID: &[&str] = &[
        r#"{"a":1,"b":[true,false,null],"c":{"d":"e\"\\\/\b\f\n\r\t\u00e9"},"e":-0.5e+10}"#,
        r#" [ 1 , 2.25 , -3E-2 , "x" , { } , [ ] ] "#,
        r#"{"choices":[{"index":0,"delta":{"content":"h\u00e9 \ud83d\ude00"},"finish_reason":null}],"usage":{"prompt_tokens":3}}"#,
        r#"[1e10, 123456789012345678901234, 1.5E-300, "\uD834\uDD1E"]"#,
        r#""plain""#,
        "0",
        "-0",
        "null",
        "{\"k\":\"caf\u{e9}\"}",
    ];

    #[test]
    fn accepts_what_serde_accepts() {
        for doc in VALID {
            assert_eq!(well_formed(doc.as_bytes()), Ok(()), "{doc}");
            assert!(serde_accepts(doc.as_bytes()), "{doc}");
        }
    }

    #[test]
    fn rejects_what_serde_rejects() {
        for doc in [
            "",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "nul",
            "\"abc",
            "\"a\\x\"",
            "\"\\u12g4\"",
            "\"a\u{1}b\"",
            "[1 2]",
            "{\"a\":1}}",
            "[]x",
            "'a'",
            "NaN",
            "1e400",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud800x\"",
        ] {
            assert!(!serde_accepts(doc.as_bytes()), "serde takes {doc:?}");
            assert!(well_formed(doc.as_bytes()).is_err(), "{doc:?}");
        }
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(!serde_accepts(deep(200).as_bytes()));
        assert_eq!(
            well_formed(deep(200).as_bytes()).unwrap_err().what,
            "nested too deep"
        );
        // The two agree at the limit itself: what the reader accepts, serde_json parses whole.
        for n in [126, 127, 128, 129] {
            assert_eq!(
                well_formed(deep(n).as_bytes()).is_ok(),
                serde_accepts(deep(n).as_bytes()),
                "{n} levels"
            );
        }
        assert!(well_formed(deep(MAX_DEPTH).as_bytes()).is_ok());
        assert_eq!(well_formed(b"\"\xff\"").unwrap_err().what, "invalid UTF-8");
    }

    /// Random single-byte edits of valid documents: the reader and serde_json agree on every
    /// one whether it is still JSON.
    #[test]
    fn agrees_with_serde_on_mutated_documents() {
        let alphabet = b"{}[]\",:\\0123456789.eE+-tfnrul axdcDF\n";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut checked = 0;
        for doc in VALID {
            for _ in 0..3000 {
                let mut d = doc.as_bytes().to_vec();
                for _ in 0..1 + next(3) {
                    let at = next(d.len() + 1);
                    match next(3) {
                        0 if at < d.len() => {
                            d.remove(at);
                        }
                        1 if at < d.len() => d[at] = alphabet[next(alphabet.len())],
                        _ => d.insert(at, alphabet[next(alphabet.len())]),
                    }
                }
                if std::str::from_utf8(&d).is_err() {
                    continue;
                }
                assert_eq!(
                    well_formed(&d).is_ok(),
                    serde_accepts(&d),
                    "{:?}",
                    String::from_utf8_lossy(&d)
                );
                checked += 1;
            }
        }
        assert!(checked > 20_000);
    }

    #[test]
    fn compact_length_leaves_out_whitespace_between_tokens_only() {
        let pretty = "[ {\n  \"name\" : \"a b\\\" c\" ,\t\"n\": [1, 2] } ]";
        let compact =
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(pretty).unwrap())
                .unwrap();
        assert_eq!(compact_len(pretty), compact.len());
    }

    #[test]
    fn reads_keys_values_and_raw_text() {
        let doc =
            br#"{"model": "gpt-4o", "n\u0061me": "x\ty", "list": [1, {"a": null}], "esc": "a\"b"}"#;
        let mut r = Reader::new(doc).unwrap();
        let mut seen = vec![];
        r.object(|r, key| {
            let value = match key.decoded().as_ref() {
                "model" | "name" => r.string()?.decoded().into_owned(),
                "esc" => {
                    let s = r.string()?;
                    assert_eq!((s.raw, s.len()), (r#"a\"b"#, 3));
                    s.decoded().into_owned()
                }
                _ => r.raw()?.to_string(),
            };
            seen.push((key.decoded().into_owned(), value));
            Ok(())
        })
        .unwrap();
        r.end().unwrap();
        assert_eq!(
            seen,
            vec![
                ("model".into(), "gpt-4o".into()),
                ("name".into(), "x\ty".into()),
                ("list".into(), r#"[1, {"a": null}]"#.into()),
                ("esc".into(), "a\"b".into()),
            ]
        );
    }
}
