//! Private data in a request: detection by kind, and redaction to typed placeholders.
//!
//! Detection runs in-process on every request whose policy asks for it (a `pii` condition, a
//! `redact` action, or a request log that keeps prompts). Each kind is a pattern followed by a
//! validation that the pattern alone cannot do ([`patterns`]): the Luhn checksum and issuer
//! prefixes of card numbers, the ISO 13616 checksum of IBANs, the structure rules of national
//! ids, octet ranges of IP addresses, provider key prefixes and the character entropy of
//! secrets. Numbers that only look like private data (order numbers, ISBNs, versions, UUIDs,
//! sums, dates) fail those checks. Precision and recall on a labelled synthetic set are in
//! docs/privacy.md.
//!
//! [`request`] walks a request body (any dialect) and finds or replaces the matches in every
//! text a model would read.

pub mod patterns;
pub mod request;

use std::fmt;

/// A kind of private data, as named in a policy (`pii: [email, ...]`) and in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Email,
    Phone,
    CreditCard,
    Iban,
    NationalId,
    IpAddress,
    Secret,
}

impl Kind {
    /// Every kind, in the order names are listed.
    pub const ALL: [Kind; 7] = [
        Kind::Email,
        Kind::Phone,
        Kind::CreditCard,
        Kind::Iban,
        Kind::NationalId,
        Kind::IpAddress,
        Kind::Secret,
    ];

    /// The name in policies and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::CreditCard => "credit_card",
            Kind::Iban => "iban",
            Kind::NationalId => "national_id",
            Kind::IpAddress => "ip_address",
            Kind::Secret => "secret",
        }
    }

    /// Every kind's name, comma-separated (for error messages).
    pub fn names() -> String {
        Kind::ALL.map(Kind::name).join(", ")
    }

    /// The kind of a policy name.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The placeholder's stem: `EMAIL` in `[EMAIL_1]`.
    fn stem(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::CreditCard => "CREDIT_CARD",
            Kind::Iban => "IBAN",
            Kind::NationalId => "NATIONAL_ID",
            Kind::IpAddress => "IP_ADDRESS",
            Kind::Secret => "SECRET",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Kinds(u8);

impl Kinds {
    pub const NONE: Kinds = Kinds(0);
    pub const ALL: Kinds = Kinds((1 << Kind::ALL.len()) - 1);

    pub fn with(self, k: Kind) -> Kinds {
        Kinds(self.0 | k.bit())
    }
    pub fn contains(self, k: Kind) -> bool {
        self.0 & k.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Some kind is in both sets.
    pub fn intersects(self, other: Kinds) -> bool {
        self.0 & other.0 != 0
    }
    /// Every kind of `self` is in `other`.
    pub fn within(self, other: Kinds) -> bool {
        self.0 & !other.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
    /// The kinds named, or the first name that is not a kind.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Kinds, &'a str> {
        names.into_iter().try_fold(Kinds::NONE, |acc, n| {
            Kind::parse(n).map(|k| acc.with(k)).ok_or(n)
        })
    }
}

impl FromIterator<Kind> for Kinds {
    fn from_iter<I: IntoIterator<Item = Kind>>(iter: I) -> Self {
        iter.into_iter().fold(Kinds::NONE, Kinds::with)
    }
}

impl fmt::Display for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Kind::name).collect();
        write!(f, "[{}]", names.join(", "))
    }
}

/// One match in a text: its kind and byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    pub range: std::ops::Range<usize>,
}

/// Every match in `text`, in order, none overlapping (where two kinds claim the same bytes,
/// the one that starts first wins, then the longer, then the kind listed first in
/// [`patterns::PRIORITY`]).
pub fn find(text: &str) -> Vec<Found> {
    patterns::find_all(text)
}

/// Typed placeholders for one request: the same value gets the same placeholder everywhere
/// in the request (`[EMAIL_1]`, `[EMAIL_2]`, `[PHONE_1]`...), so the cloud model can still tell
/// values apart. Values are held only for the request's life and never leave the box.
#[derive(Debug, Default)]
pub struct Placeholders {
    /// Each value's number within its kind (a hash map: a request may hold many values).
    seen: std::collections::HashMap<(Kind, String), usize>,
    /// Values numbered so far, by kind.
    numbered: std::collections::HashMap<Kind, usize>,
    /// Values replaced, by kind (the metrics' count).
    pub replaced: Vec<(Kind, u64)>,
}

impl Placeholders {
    fn placeholder(&mut self, kind: Kind, value: &str) -> String {
        let n = match self.seen.get(&(kind, value.to_string())) {
            Some(n) => *n,
            None => {
                let count = self.numbered.entry(kind).or_default();
                *count += 1;
                self.seen.insert((kind, value.to_string()), *count);
                *count
            }
        };
        match self.replaced.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, c)) => *c += 1,
            None => self.replaced.push((kind, 1)),
        }
        format!("[{}_{n}]", kind.stem())
    }

    /// `text` with every match of a kind in `kinds` replaced by its placeholder; `None` when
    /// nothing was replaced.
    pub fn redact(&mut self, text: &str, kinds: Kinds) -> Option<String> {
        let found: Vec<Found> = find(text)
            .into_iter()
            .filter(|f| kinds.contains(f.kind))
            .collect();
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in found {
            out.push_str(&text[at..f.range.start]);
            let p = self.placeholder(f.kind, &text[f.range.clone()]);
            out.push_str(&p);
            at = f.range.end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        let k = Kinds::parse(["email", "iban"]).unwrap();
        assert!(k.contains(Kind::Email) && k.contains(Kind::Iban) && !k.contains(Kind::Phone));
        assert_eq!(k.to_string(), "[email, iban]");
        assert_eq!(Kinds::parse(["email", "mail"]), Err("mail"));
        assert!(k.within(Kinds::ALL) && !Kinds::ALL.within(k));
        assert_eq!(Kinds::ALL.iter().count(), Kind::ALL.len());
    }

    #[test]
    fn placeholders_number_values_per_kind() {
        let mut p = Placeholders::default();
        let text = "a@example.com wrote to b@example.com, cc a@example.com";
        let out = p.redact(text, Kinds::ALL).unwrap();
        assert_eq!(out, "[EMAIL_1] wrote to [EMAIL_2], cc [EMAIL_1]");
        assert_eq!(p.replaced, vec![(Kind::Email, 3)]);
        assert_eq!(p.redact("nothing here", Kinds::ALL), None);
        // Kinds not asked for stay.
        assert_eq!(
            p.redact("x a@example.com", Kinds::NONE.with(Kind::Phone)),
            None
        );
    }
}
