//! The detectors: a regular expression per kind finds candidates, a validation keeps the real
//! ones.
//!
//! | kind | candidate | validation |
//! |---|---|---|
//! | `email` | RFC 5322 dot-atom local part, `@`, DNS labels, a letter TLD | no `..`, no edge dots; TLD is not a file extension (`icon@2x.png`) |
//! | `phone` | `+` and 8-15 digits (E.164), or North American `(NXX) NXX-XXXX` with separators, or 7-13 digits after a phone word (`tel`, `phone`, `call`...), or 8-13 before a line label (`office`, `fax`, `mobile`, `cell`); extensions kept | digit count; not part of a longer number or id; not a date |
//! | `credit_card` | 12-19 digits, single spaces or dashes between | Luhn (ISO/IEC 7812-1) and an issuer prefix and length (Visa, Mastercard, Maestro, Amex, Discover, JCB, Diners, UnionPay) |
//! | `iban` | two letters, two digits, 11-30 letters or digits, spaces between groups | ISO 13616: the country's length and BBAN format, mod-97 checksum (crate `iban_validate`) |
//! | `national_id` | US SSN `AAA-GG-SSSS`, UK NINO, Spanish DNI/NIE | SSA area/group/serial rules; NINO prefix rules; DNI/NIE mod-23 check letter |
//! | `ip_address` | dotted quad, IPv6 with `::` or eight groups | parses as an address; not loopback, unspecified, broadcast or a netmask; not after a version word |
//! | `secret` | provider key prefixes (OpenAI, Anthropic, AWS, GitHub, GitLab, Slack, Google, Stripe, Hugging Face, npm, SendGrid), PEM private keys, JWTs, passwords in URLs, values assigned to `password`/`token`/`api_key`..., and long mixed-case tokens | prefixed keys by format; assigned values and bare tokens by Shannon entropy (not placeholders like `${VAR}` or `<your-key>`) |

use super::{Found, Kind};
use regex::Regex;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::LazyLock;

/// Where two kinds claim the same bytes, the first listed wins.
pub const PRIORITY: [Kind; 7] = [
    Kind::Secret,
    Kind::CreditCard,
    Kind::Iban,
    Kind::NationalId,
    Kind::Email,
    Kind::IpAddress,
    Kind::Phone,
];

fn re(pattern: &str) -> Regex {
    // The patterns are constants of this file; the unit tests compile every one.
    Regex::new(pattern).unwrap_or_else(|e| panic!("pii pattern {pattern}: {e}"))
}

const EMAIL_P: &str = r"(?i)[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}";
const PHONE_INTL_P: &str = r"\+[0-9]{1,3}(?:[ .-]?\(?[0-9]{1,5}\)?){2,6}";
const PHONE_NANP_P: &str = r"(?:\([2-9][0-9]{2}\)[ \t\r\n]?|[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}(?:[ ]?(?i:x|ext\.?)[ ]?[0-9]{1,6})?";
const PHONE_WORD_P: &str = r"(?i)(?-u:\b)(?:phone|tel|telephone|mobile|cell|call(?: me)?(?: on| at)?|fax|whatsapp|ring me on)(?-u:\b)[:.]?[ \t\r\n]*(?:no\.?|number|nr\.?)?[:.]?[ \t\r\n]*(\(?[0-9][0-9 ().-]{5,16}[0-9](?:[ ]?(?i:x|ext\.?)[ ]?[0-9]{1,6})?)";
/// A number followed by the label of its line, as signatures and contact cards write them
/// (`+41 53 147 37 99 fax`, `041 052 4919 (office)`, `(73) 4746-3459-Office`).
const PHONE_LABEL_P: &str = r"(\(?[0-9][0-9 ().-]{6,16}[0-9](?:[ ]?(?i:x|ext\.?)[ ]?[0-9]{1,6})?)[ \t]*[-(]?[ \t]*(?i:office|fax|mobile|cell)(?-u:\b)";
const CARD_P: &str = r"[0-9](?:[ -]?[0-9]){11,18}";
const IBAN_P: &str = r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}";
const SSN_P: &str = r"([0-9]{3})-([0-9]{2})-([0-9]{4})";
const SSN_WORD_P: &str = r"(?i)(?-u:\b)(?:ssn|social security(?: number| no\.?)?)(?-u:\b)[:#]?[ \t\r\n]*([0-9]{3} ?[0-9]{2} ?[0-9]{4})";
const NINO_P: &str = r"([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]";
const DNI_P: &str = r"([XYZ][0-9]{7}|[0-9]{8})-?([A-Z])";
const IPV4_P: &str = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}";
const IPV6_P: &str = r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}";
const KEY_PREFIXED_P: &str = concat!(
    r"sk-(?:proj-|ant-(?:api[0-9][0-9]-|admin[0-9][0-9]-)?|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}",
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}",
    r"|glpat-[A-Za-z0-9_-]{20,}",
    r"|xox[abposr]-[A-Za-z0-9-]{10,}",
    r"|AIza[0-9A-Za-z_-]{35}",
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}",
    r"|hf_[A-Za-z0-9]{30,}",
    r"|npm_[A-Za-z0-9]{36}",
    r"|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    r"|-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----(?s:.)*?(?:-----END (?:[A-Z]+ )*PRIVATE KEY-----|$)",
);
const URL_PASSWORD_P: &str = r"[a-zA-Z][a-zA-Z0-9+.-]*://[^ \t\r\n:/@]+:([^ \t\r\n/@]+)@";
const ASSIGNED_P: &str = r#"(?i)(?:api[_-]?key|apikey|secret|token|passw(?:or)?d|pwd|access[_-]?key|auth[_-]?key|private[_-]?key|client[_-]?secret)[A-Za-z0-9_-]*["']?[ \t\r\n]*(?:[:=]|=>|(?-u:\b)is(?-u:\b))[ \t\r\n]*["']?([^ \t\r\n"'`,;]{8,})"#;
const TOKEN_P: &str = r"[A-Za-z0-9+/_-]{24,}={0,2}";

static EMAIL: LazyLock<Regex> = LazyLock::new(|| re(EMAIL_P));
static PHONE_INTL: LazyLock<Regex> = LazyLock::new(|| re(PHONE_INTL_P));
static PHONE_NANP: LazyLock<Regex> = LazyLock::new(|| re(PHONE_NANP_P));
static PHONE_WORD: LazyLock<Regex> = LazyLock::new(|| re(PHONE_WORD_P));
static PHONE_LABEL: LazyLock<Regex> = LazyLock::new(|| re(PHONE_LABEL_P));
static CARD: LazyLock<Regex> = LazyLock::new(|| re(CARD_P));
static IBAN: LazyLock<Regex> = LazyLock::new(|| re(IBAN_P));
static SSN: LazyLock<Regex> = LazyLock::new(|| re(SSN_P));
static SSN_WORD: LazyLock<Regex> = LazyLock::new(|| re(SSN_WORD_P));
static NINO: LazyLock<Regex> = LazyLock::new(|| re(NINO_P));
static DNI: LazyLock<Regex> = LazyLock::new(|| re(DNI_P));
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(IPV4_P));
static IPV6: LazyLock<Regex> = LazyLock::new(|| re(IPV6_P));
static KEY_PREFIXED: LazyLock<Regex> = LazyLock::new(|| re(KEY_PREFIXED_P));
static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| re(URL_PASSWORD_P));
static ASSIGNED: LazyLock<Regex> = LazyLock::new(|| re(ASSIGNED_P));
static TOKEN: LazyLock<Regex> = LazyLock::new(|| re(TOKEN_P));

/// Candidates of every kind, validated, then made non-overlapping.
pub fn find_all(text: &str) -> Vec<Found> {
    let mut all: Vec<Found> = vec![];
    secrets(text, &mut all);
    let bytes = text.as_bytes();
    // Every kind but secrets has a digit (and an email an `@`): most texts skip most passes.
    if bytes.iter().any(u8::is_ascii_digit) {
        cards(text, &mut all);
        ibans(text, &mut all);
        national_ids(text, &mut all);
        ips(text, &mut all);
        phones(text, &mut all);
    }
    if memchr::memchr(b'@', bytes).is_some() {
        emails(text, &mut all);
    }
    resolve(all)
}

/// Sorted by start; of overlapping matches the earliest, then longest, then by [`PRIORITY`].
fn resolve(mut all: Vec<Found>) -> Vec<Found> {
    let rank = |k: Kind| {
        PRIORITY
            .iter()
            .position(|p| *p == k)
            .unwrap_or(PRIORITY.len())
    };
    all.sort_by(|a, b| {
        a.range
            .start
            .cmp(&b.range.start)
            .then(b.range.len().cmp(&a.range.len()))
            .then(rank(a.kind).cmp(&rank(b.kind)))
    });
    let mut out: Vec<Found> = Vec::with_capacity(all.len());
    for f in all {
        match out.last() {
            Some(last) if f.range.start < last.range.end => {
                // A higher-priority kind fully covering the same bytes replaces the kept one.
                if f.range == last.range && rank(f.kind) < rank(last.kind) {
                    out.pop();
                    out.push(f);
                }
            }
            _ => out.push(f),
        }
    }
    out
}

fn push(out: &mut Vec<Found>, kind: Kind, range: std::ops::Range<usize>) {
    out.push(Found { kind, range });
}

/// The byte before `start` and the one at `end`, when they exist.
fn around(text: &str, start: usize, end: usize) -> (Option<u8>, Option<u8>) {
    let b = text.as_bytes();
    (
        start.checked_sub(1).and_then(|i| b.get(i).copied()),
        b.get(end).copied(),
    )
}

/// A match that is part of a longer word or number (`ORD-4111...`, `v1.2.3.4`).
fn glued(c: Option<u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

// ---------------------------------------------------------------------------------------------
// email

/// Top-level "domains" that are file extensions in practice: `icon@2x.png`, `font@1.0.woff`.
const FILE_TLDS: [&str; 16] = [
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "js", "ts", "css", "json", "md", "py", "rs",
    "woff", "html",
];

fn emails(text: &str, out: &mut Vec<Found>) {
    for m in EMAIL.find_iter(text) {
        let s = m.as_str();
        let Some(at) = s.rfind('@') else { continue };
        let (local, domain) = (&s[..at], &s[at + 1..]);
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            continue;
        }
        let tld = domain
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if FILE_TLDS.contains(&tld.as_str()) {
            continue;
        }
        let (_, after) = around(text, m.start(), m.end());
        if after.is_some_and(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        // `scheme://user:password@host`: the user part of a URL, not an address.
        let word_start = text[..m.start()]
            .rfind(char::is_whitespace)
            .map_or(0, |i| i + 1);
        if text[word_start..m.start()].contains("://") {
            continue;
        }
        push(out, Kind::Email, m.range());
    }
}

// ---------------------------------------------------------------------------------------------
// phone

fn phones(text: &str, out: &mut Vec<Found>) {
    for m in PHONE_INTL.find_iter(text) {
        let s = m.as_str();
        // `(+1 415 555 0100)`: the closing parenthesis is the sentence's.
        let end = if s.ends_with(')') && s.matches('(').count() < s.matches(')').count() {
            m.end() - 1
        } else {
            m.end()
        };
        let n = digits(&text[m.start()..end]).len();
        let (before, after) = around(text, m.start(), end);
        if (8..=15).contains(&n) && !glued(before) && !glued(after) {
            push(out, Kind::Phone, m.start()..end);
        }
    }
    for m in PHONE_NANP.find_iter(text) {
        let (before, after) = around(text, m.start(), m.end());
        // A separator after the number continues it only when a digit follows.
        let next_digit = text[m.end()..]
            .chars()
            .nth(1)
            .is_some_and(|c| c.is_ascii_digit());
        let number_after =
            glued(after) || (matches!(after, Some(b'-' | b'.' | b'/')) && next_digit);
        if !continues_a_number(before) && !number_after {
            push(out, Kind::Phone, m.range());
        }
    }
    for c in PHONE_WORD.captures_iter(text) {
        let Some(m) = c.get(1) else { continue };
        let n = number_digits(m.as_str());
        let (_, after) = around(text, m.start(), m.end());
        if (7..=13).contains(&n) && !glued(after) && !date_shaped(m.as_str()) {
            push(out, Kind::Phone, m.range());
        }
    }
    for c in PHONE_LABEL.captures_iter(text) {
        let Some(m) = c.get(1) else { continue };
        let n = number_digits(m.as_str());
        let (before, _) = around(text, m.start(), m.end());
        if (8..=13).contains(&n) && !continues_a_number(before) && !date_shaped(m.as_str()) {
            push(out, Kind::Phone, m.range());
        }
    }
}

/// Whether the byte before a phone-shaped match makes it the tail of another number or id
/// (`ORD-415...`, `#415...`, `v2.415...`).
fn continues_a_number(before: Option<u8>) -> bool {
    glued(before) || matches!(before, Some(b'-' | b'.' | b'/' | b'#' | b'+'))
}

/// A date written with one separator, as the phone captures can hold it: `2024-11-30`,
/// `30.11.2024`.
fn date_shaped(s: &str) -> bool {
    let Some(sep) = s.bytes().find(|b| matches!(b, b'-' | b'.')) else {
        return false;
    };
    let groups: Vec<usize> = s.split(char::from(sep)).map(str::len).collect();
    s.bytes().all(|b| b.is_ascii_digit() || b == sep)
        && (groups == [4, 2, 2] || groups == [2, 2, 4])
}

/// The digits of a phone number before its extension (`x123`, `ext. 12`).
fn number_digits(s: &str) -> usize {
    let main = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or(s, |i| &s[..i]);
    main.bytes().filter(u8::is_ascii_digit).count()
}

// ---------------------------------------------------------------------------------------------
// credit_card

/// The Luhn checksum (ISO/IEC 7812-1, annex B) of a digit string.
pub fn luhn(number: &str) -> bool {
    let mut sum = 0;
    for (i, c) in number.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// Whether a card number's length and issuer prefix belong to a major network (published IIN
/// ranges of Visa, Mastercard, Maestro, American Express, Discover, JCB, Diners Club and
/// UnionPay).
fn issued(number: &str) -> bool {
    let n = number.len();
    let p = |k: usize| {
        number
            .get(..k)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    };
    // Maestro: 12 to 19 digits.
    let maestro = (12..=19).contains(&n)
        && matches!(
            p(4),
            5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761 | 6762 | 6763
        );
    if maestro {
        return true;
    }
    match number.as_bytes().first() {
        Some(b'4') => matches!(n, 13 | 16 | 19),
        Some(b'5') => n == 16 && (51..=55).contains(&p(2)),
        Some(b'2') => n == 16 && (2221..=2720).contains(&p(4)),
        Some(b'3') => {
            (n == 15 && matches!(p(2), 34 | 37))
                || ((16..=19).contains(&n) && (3528..=3589).contains(&p(4)))
                || ((14..=19).contains(&n)
                    && ((300..=305).contains(&p(3)) || matches!(p(2), 36 | 38)))
        }
        Some(b'6') => {
            (16..=19).contains(&n)
                && (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3)) || p(2) == 62)
        }
        _ => false,
    }
}

fn cards(text: &str, out: &mut Vec<Found>) {
    for m in CARD.find_iter(text) {
        let (before, after) = around(text, m.start(), m.end());
        if glued(before) || glued(after) || matches!(before, Some(b'-' | b'.' | b'#')) {
            continue;
        }
        let s = m.as_str();
        // One kind of separator, if any.
        if s.contains(' ') && s.contains('-') {
            continue;
        }
        let d = digits(s);
        if luhn(&d) && issued(&d) {
            push(out, Kind::CreditCard, m.range());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// iban

fn ibans(text: &str, out: &mut Vec<Found>) {
    for m in IBAN.find_iter(text) {
        let (before, _) = around(text, m.start(), m.end());
        if glued(before) {
            continue;
        }
        // The pattern may run into a following word in capitals: shorten it group by group.
        let mut s = m.as_str();
        loop {
            let compact: String = s.chars().filter(|c| *c != ' ').collect();
            let (_, after) = around(text, m.start(), m.start() + s.len());
            if !glued(after) && iban::Iban::from_str(&compact).is_ok() {
                push(out, Kind::Iban, m.start()..m.start() + s.len());
                break;
            }
            match s.trim_end().rfind(' ') {
                Some(i) if i >= 15 => s = s[..i].trim_end(),
                _ => break,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// national_id

/// A US Social Security number the SSA could issue: area not 000, 666 or 900-999, group not
/// 00, serial not 0000.
fn ssn_valid(area: &str, group: &str, serial: &str) -> bool {
    let area: u32 = area.parse().unwrap_or(0);
    area != 0 && area != 666 && area < 900 && group != "00" && serial != "0000"
}

/// The mod-23 check letter of a Spanish DNI (and NIE, with X/Y/Z read as 0/1/2).
fn dni_letter(number: &str) -> Option<char> {
    const LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let digits: String = number
        .chars()
        .map(|c| match c {
            'X' => '0',
            'Y' => '1',
            'Z' => '2',
            c => c,
        })
        .collect();
    let n: u64 = digits.parse().ok()?;
    Some(char::from(LETTERS[(n % 23) as usize]))
}

fn national_ids(text: &str, out: &mut Vec<Found>) {
    for c in SSN.captures_iter(text) {
        let (Some(m), Some(a), Some(g), Some(s)) = (c.get(0), c.get(1), c.get(2), c.get(3)) else {
            continue;
        };
        let (before, after) = around(text, m.start(), m.end());
        let joined = |c: Option<u8>| glued(c) || c == Some(b'-');
        if !joined(before) && !joined(after) && ssn_valid(a.as_str(), g.as_str(), s.as_str()) {
            push(out, Kind::NationalId, m.range());
        }
    }
    for c in SSN_WORD.captures_iter(text) {
        let Some(m) = c.get(1) else { continue };
        let d = digits(m.as_str());
        if ssn_valid(&d[..3], &d[3..5], &d[5..]) && !glued(around(text, m.start(), m.end()).1) {
            push(out, Kind::NationalId, m.range());
        }
    }
    for c in NINO.captures_iter(text) {
        let (Some(m), Some(prefix)) = (c.get(0), c.get(1)) else {
            continue;
        };
        let (before, after) = around(text, m.start(), m.end());
        let banned = ["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"];
        if !glued(before) && !glued(after) && !banned.contains(&prefix.as_str()) {
            push(out, Kind::NationalId, m.range());
        }
    }
    for c in DNI.captures_iter(text) {
        let (Some(m), Some(num), Some(letter)) = (c.get(0), c.get(1), c.get(2)) else {
            continue;
        };
        let (before, after) = around(text, m.start(), m.end());
        if glued(before) || glued(after) {
            continue;
        }
        if dni_letter(num.as_str()).is_some_and(|l| letter.as_str().starts_with(l)) {
            push(out, Kind::NationalId, m.range());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ip_address

/// Words after which a dotted quad is a version, not an address.
const VERSION_WORDS: [&str; 5] = ["version", "release", "build", "upgrade to", "ver"];

fn after_version_word(text: &str, start: usize) -> bool {
    // The 24 bytes before the match are enough for the longest word and its spacing.
    let mut from = start.saturating_sub(24);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let head = text[from..start].trim_end().to_ascii_lowercase();
    VERSION_WORDS.iter().any(|w| {
        head.ends_with(w)
            && head[..head.len() - w.len()]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_ascii_alphanumeric())
    })
}

fn ips(text: &str, out: &mut Vec<Found>) {
    for m in IPV4.find_iter(text) {
        let (before, after) = around(text, m.start(), m.end());
        if glued(before) || before == Some(b'.') || glued(after) {
            continue;
        }
        // `1.2.3.4.5` is not an address.
        if after == Some(b'.') && text[m.end() + 1..].starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let Ok(ip) = Ipv4Addr::from_str(m.as_str()) else {
            continue;
        };
        let special =
            ip.is_loopback() || ip.is_unspecified() || ip.is_broadcast() || ip.octets()[0] == 255;
        if !special && !after_version_word(text, m.start()) {
            push(out, Kind::IpAddress, m.range());
        }
    }
    for m in IPV6.find_iter(text) {
        let s = m.as_str();
        let (before, after) = around(text, m.start(), m.end());
        if glued(before) || before == Some(b':') || glued(after) {
            continue;
        }
        // At least three groups of digits: `std::io` and `12:30:45` are not addresses.
        let groups = s.split(':').filter(|g| !g.is_empty()).count();
        if groups < 3 || !(s.contains("::") || groups == 8) {
            continue;
        }
        if let Ok(ip) = Ipv6Addr::from_str(s) {
            if !ip.is_loopback() && !ip.is_unspecified() {
                push(out, Kind::IpAddress, m.range());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// secret

/// Shannon entropy of the characters of `s`, in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// A value written in place of a secret: `${VAR}`, `<your-key>`, `xxxx`, `changeme`.
fn placeholder(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    v.starts_with("${")
        || v.starts_with('<')
        || v.starts_with("{{")
        || v.starts_with("$(")
        || v.starts_with("os.environ")
        || v.starts_with("process.env")
        || v.starts_with("env")
        || v.contains("your")
        || v.contains("xxxx")
        || v.contains("****")
        || v.contains("...")
        || v.contains("example")
        || v.contains("placeholder")
        || v.contains("changeme")
        || v.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
}

/// A bare token that is likely a credential: upper and lower case letters and digits, and
/// close to the highest entropy its length allows (random base62/base64), which names,
/// paths, hashes (no upper case) and UUIDs (no upper case) are not.
fn random_token(s: &str) -> bool {
    let count = |f: fn(&u8) -> bool| s.as_bytes().iter().filter(|c| f(c)).count();
    if count(u8::is_ascii_uppercase) < 2
        || count(u8::is_ascii_lowercase) < 2
        || count(u8::is_ascii_digit) < 1
    {
        return false;
    }
    let max = (s.len().min(64) as f64).log2();
    entropy(s) >= 0.82 * max
}

fn secrets(text: &str, out: &mut Vec<Found>) {
    for m in KEY_PREFIXED.find_iter(text) {
        let (before, _) = around(text, m.start(), m.end());
        if !glued(before) {
            push(out, Kind::Secret, m.range());
        }
    }
    for c in URL_PASSWORD.captures_iter(text) {
        if let Some(m) = c.get(1) {
            if !placeholder(m.as_str()) {
                push(out, Kind::Secret, m.range());
            }
        }
    }
    for c in ASSIGNED.captures_iter(text) {
        let Some(m) = c.get(1) else { continue };
        let v = m.as_str();
        if !placeholder(v)
            && entropy(v) >= 2.5
            && v.chars()
                .any(|c| c.is_ascii_digit() || !c.is_ascii_alphanumeric())
        {
            push(out, Kind::Secret, m.range());
        }
    }
    for m in TOKEN.find_iter(text) {
        let (before, after) = around(text, m.start(), m.end());
        if glued(before) || glued(after) || before == Some(b'.') {
            continue;
        }
        if random_token(m.as_str()) {
            push(out, Kind::Secret, m.range());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, String)> {
        find_all(text)
            .into_iter()
            .map(|f| (f.kind, text[f.range].to_string()))
            .collect()
    }

    fn one(text: &str, kind: Kind, value: &str) {
        assert_eq!(kinds(text), vec![(kind, value.to_string())], "in {text:?}");
    }

    fn none(text: &str) {
        assert_eq!(kinds(text), vec![], "in {text:?}");
    }

    #[test]
    fn emails_match_and_file_names_do_not() {
        one(
            "write to jane.doe+x@mail.example.org.",
            Kind::Email,
            "jane.doe+x@mail.example.org",
        );
        none("the icon is logo@2x.png");
        none("decorators like @property and user@localhost");
    }

    #[test]
    fn phones_need_a_phone_shape() {
        // (text, the phone number in it)
        for (text, phone) in [
            ("call +44 20 7946 0958 today", "+44 20 7946 0958"),
            ("office: (415) 555-2671", "(415) 555-2671"),
            ("mobile: 07700 900123", "07700 900123"),
            // A short local number after a phone word; dots between groups; extensions.
            ("Phone: 428 6182", "428 6182"),
            ("tel. 04.44.34.41.79", "04.44.34.41.79"),
            ("Fax: 831.244.1290x7596", "831.244.1290x7596"),
            ("ring (415) 555-2671 ext. 12 now", "(415) 555-2671 ext. 12"),
            // The label of its line after the number, as contact cards write it.
            ("Jane Roe\n+41 53 147 37 99 fax\n", "+41 53 147 37 99"),
            ("041 052 4919 (office)", "041 052 4919"),
            ("(73) 4746-3459-Office", "(73) 4746-3459"),
        ] {
            one(text, Kind::Phone, phone);
        }
        none("order 415-555-26711 and ISBN 978-3-16-148410-0, total 1,234,567.89 on 2024-01-15");
        // Too short, a date, and a number continuing another.
        none("room 1204 office, received 2024-10-12 (fax), call in 5 min, id #12345678 office");
    }

    #[test]
    fn cards_need_luhn_and_an_issuer() {
        one(
            "card 4111 1111 1111 1111 exp",
            Kind::CreditCard,
            "4111 1111 1111 1111",
        );
        one("amex 378282246310005", Kind::CreditCard, "378282246310005");
        // Maestro's 12 digits; 12 Luhn-valid digits no network issues.
        one("card no 501803075628", Kind::CreditCard, "501803075628");
        none("card no 587662702899");
        // Luhn-valid but no issuer; issuer but Luhn-invalid; an ISBN-13.
        none("ref 1234567812345670, card 4111111111111112, isbn 9780306406157");
    }

    #[test]
    fn ibans_need_their_checksum() {
        one(
            "pay to DE89 3704 0044 0532 0130 00 TODAY",
            Kind::Iban,
            "DE89 3704 0044 0532 0130 00",
        );
        one(
            "GB82WEST12345698765432",
            Kind::Iban,
            "GB82WEST12345698765432",
        );
        none("DE89 3704 0044 0532 0130 01");
    }

    #[test]
    fn national_ids_follow_their_rules() {
        one("SSN 123-45-6789.", Kind::NationalId, "123-45-6789");
        none("ssn 666-45-6789 and 123-00-6789");
        one("NI number JG 10 37 59 A", Kind::NationalId, "JG 10 37 59 A");
        one("DNI 12345678Z", Kind::NationalId, "12345678Z");
        none("DNI 12345678A");
    }

    #[test]
    fn ips_but_not_versions() {
        one("from 203.0.113.42 at", Kind::IpAddress, "203.0.113.42");
        one(
            "host 2001:db8::8a2e:370:7334",
            Kind::IpAddress,
            "2001:db8::8a2e:370:7334",
        );
        none("upgrade to version 1.2.3.4, v2.0.0.1 and 1.2.3.4.5; bind 127.0.0.1; at 12:30:45; std::io::Result");
    }

    #[test]
    fn secrets_by_prefix_assignment_and_entropy() {
        one(
            "key sk-proj-abcDEF1234567890ghijKLMN ok",
            Kind::Secret,
            "sk-proj-abcDEF1234567890ghijKLMN",
        );
        one("AKIAIOSFODNN7EXAMPLE", Kind::Secret, "AKIAIOSFODNN7EXAMPLE");
        one("password = \"Tr0ub4dor&3x\"", Kind::Secret, "Tr0ub4dor&3x");
        one(
            "postgres://app:s3cr3tP4ss@db:5432/x",
            Kind::Secret,
            "s3cr3tP4ss",
        );
        one(
            "token 9fQ2xLr7Vb3KpZ8mWc4TnY6hJd1",
            Kind::Secret,
            "9fQ2xLr7Vb3KpZ8mWc4TnY6hJd1",
        );
        none("api_key = ${OPENAI_API_KEY}; password: <your-password>; id 550e8400-e29b-41d4-a716-446655440000");
        none(
            "commit 3f786850e387550fdab836ed7e6dc881de23001b in src/components/UserProfileCard.tsx",
        );
    }

    #[test]
    fn overlaps_keep_one_match() {
        // A low-entropy value after `token=` is not a secret; the card number stays one card.
        let k = kinds("card_token=4111111111111111");
        assert_eq!(k, vec![(Kind::CreditCard, "4111111111111111".to_string())]);
        assert!(luhn("79927398713") && !luhn("79927398710"));
    }
}
