//! Token counts of one request, as the OpenAI wire format's `usage` object carries them.

use serde::Deserialize;

/// Token counts of one request: the `usage` object of a `chat.completion` or of the last
/// `chat.completion.chunk` of a stream (OpenAI API reference, "The chat completion object").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the prompt (`usage.prompt_tokens`).
    pub prompt_tokens: u64,
    /// Tokens generated (`usage.completion_tokens`).
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, those served from the provider's prompt cache
    /// (`usage.prompt_tokens_details.cached_tokens`), priced at the cached input price.
    pub cached_prompt_tokens: u64,
    /// Of `prompt_tokens`, those written to the provider's prompt cache (Anthropic's
    /// `usage.cache_creation_input_tokens`), priced at the cache write price.
    pub cache_write_prompt_tokens: u64,
    /// Web searches the provider ran for the answer and bills per search (Anthropic's
    /// `usage.server_tool_use.web_search_requests`), priced per search.
    pub web_searches: u64,
}

impl Usage {
    /// Prompt and completion tokens together.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// A `usage` object as an upstream sent it, read leniently: a count that is missing, `null`,
/// negative, fractional or not a number is `None`; an integral float (`7.0`) is read as the
/// integer. A finished answer is never failed because of its bookkeeping: what is missing is
/// estimated when the request is settled ([`Reported::resolve`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Reported {
    #[serde(default, deserialize_with = "count")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub completion_tokens: Option<u64>,
    /// `prompt_tokens_details.cached_tokens`.
    #[serde(default, rename = "prompt_tokens_details", deserialize_with = "cached")]
    pub cached_tokens: Option<u64>,
    /// `cache_creation_input_tokens`: the prompt tokens written to the provider's cache (an
    /// Anthropic count, which the gateway passes on in OpenAI usage too, as LiteLLM does).
    #[serde(
        default,
        rename = "cache_creation_input_tokens",
        deserialize_with = "count"
    )]
    pub cache_write_tokens: Option<u64>,
    /// `server_tool_use.web_search_requests`: web searches the provider ran (Anthropic's count,
    /// which the gateway passes on in OpenAI usage too, as LiteLLM does).
    #[serde(default, rename = "server_tool_use", deserialize_with = "searches")]
    pub web_searches: Option<u64>,
}

impl From<Usage> for Reported {
    fn from(u: Usage) -> Reported {
        Reported {
            prompt_tokens: Some(u.prompt_tokens),
            completion_tokens: Some(u.completion_tokens),
            cached_tokens: Some(u.cached_prompt_tokens),
            cache_write_tokens: Some(u.cache_write_prompt_tokens),
            web_searches: Some(u.web_searches),
        }
    }
}

impl Reported {
    /// Reads the `usage` member's raw JSON: `None` when it is `null` or not an object.
    pub fn from_json(raw: &str) -> Option<Reported> {
        let mut de = serde_json::Deserializer::from_str(raw);
        reported(&mut de).ok().flatten()
    }

    /// The counts, with what is missing taken from the estimates; `true` when any was missing.
    pub fn resolve(self, prompt_estimate: u64, completion_estimate: u64) -> (Usage, bool) {
        let prompt_tokens = self.prompt_tokens.unwrap_or(prompt_estimate);
        let cached_prompt_tokens = self.cached_tokens.unwrap_or(0).min(prompt_tokens);
        let usage = Usage {
            prompt_tokens,
            completion_tokens: self.completion_tokens.unwrap_or(completion_estimate),
            cached_prompt_tokens,
            cache_write_prompt_tokens: self
                .cache_write_tokens
                .unwrap_or(0)
                .min(prompt_tokens - cached_prompt_tokens),
            web_searches: self.web_searches.unwrap_or(0),
        };
        let estimated = self.prompt_tokens.is_none() || self.completion_tokens.is_none();
        (usage, estimated)
    }
}

/// Reads a `usage` member leniently (for `#[serde(deserialize_with)]`): an object is a
/// [`Reported`], anything else (`null`, a string, a number, an array) is `None`, never an error.
pub fn reported<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Reported>, D::Error> {
    d.deserialize_any(ObjectOrNone(std::marker::PhantomData))
}

/// `prompt_tokens_details` read leniently: its `cached_tokens` count, else `None`.
fn cached<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Details {
        #[serde(default, deserialize_with = "count")]
        cached_tokens: Option<u64>,
    }
    let details = d.deserialize_any(ObjectOrNone::<Details>(std::marker::PhantomData))?;
    Ok(details.and_then(|d| d.cached_tokens))
}

/// `server_tool_use` read leniently: its `web_search_requests` count, else `None`.
fn searches<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct ServerToolUse {
        #[serde(default, deserialize_with = "count")]
        web_search_requests: Option<u64>,
    }
    let used = d.deserialize_any(ObjectOrNone::<ServerToolUse>(std::marker::PhantomData))?;
    Ok(used.and_then(|u| u.web_search_requests))
}

/// A visitor that reads an object as `T` and any other JSON value as `None`.
struct ObjectOrNone<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOrNone<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<Option<T>, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(a)).map(Some)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Option<T>, A::Error> {
        while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<T>, E> {
        Ok(None)
    }
}

/// A token count: a non-negative integer, or a float with no fractional part; anything else
/// (null, a string, an object, `7.5`) reads as `None` rather than as an error.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Count;
    impl<'de> serde::de::Visitor<'de> for Count {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a token count")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Option<u64>, E> {
            Ok(Some(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Option<u64>, E> {
            Ok(u64::try_from(v).ok())
        }
        fn visit_f64<E>(self, v: f64) -> Result<Option<u64>, E> {
            // Integral and within the integers an f64 holds exactly (2^53).
            let exact = v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_992.0;
            Ok(exact.then_some(v as u64))
        }
        fn visit_unit<E>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
            d.deserialize_any(Count)
        }
        fn visit_str<E>(self, _: &str) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Option<u64>, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Option<u64>, A::Error> {
            while a
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    d.deserialize_any(Count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_leniently() {
        let r = |s: &str| Reported::from_json(s);
        let both = |p, c| {
            Some(Reported {
                prompt_tokens: p,
                completion_tokens: c,
                cached_tokens: None,
                cache_write_tokens: None,
                web_searches: None,
            })
        };
        assert_eq!(
            r(r#"{"prompt_tokens": 3, "completion_tokens": 4}"#),
            both(Some(3), Some(4))
        );
        assert_eq!(
            r(r#"{"prompt_tokens": 3.0, "completion_tokens": 7e0}"#),
            both(Some(3), Some(7))
        );
        assert_eq!(
            r(r#"{"prompt_tokens": null, "completion_tokens": 4}"#),
            both(None, Some(4))
        );
        assert_eq!(r(r#"{"completion_tokens": 4}"#), both(None, Some(4)));
        assert_eq!(
            r(r#"{"prompt_tokens": "many", "completion_tokens": 2.5, "total_tokens": 9}"#),
            both(None, None)
        );
        assert_eq!(
            r(r#"{"prompt_tokens": -1, "completion_tokens": [1], "x": {"y": 1}}"#),
            both(None, None)
        );
        assert_eq!(
            r(r#"{"prompt_tokens": {"n": 1}, "completion_tokens": 1e300}"#),
            both(None, None)
        );
        let cached = r(r#"{"prompt_tokens": 1000, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 900, "audio_tokens": 0}}"#).unwrap();
        assert_eq!(cached.cached_tokens, Some(900));
        assert_eq!(cached.resolve(0, 0).0.cached_prompt_tokens, 900);
        let odd = r(r#"{"prompt_tokens": 10, "prompt_tokens_details": "x"}"#).unwrap();
        assert_eq!((odd.prompt_tokens, odd.cached_tokens), (Some(10), None));
        let over = r(r#"{"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}"#);
        assert_eq!(
            over.unwrap().resolve(0, 0).0.cached_prompt_tokens,
            10,
            "capped"
        );
        assert_eq!(r("null"), None);
        assert_eq!(r("\"usage\""), None);
        let (u, estimated) = both(None, Some(4)).unwrap().resolve(10, 20);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, estimated),
            (10, 4, true)
        );
        let (u, estimated) = both(Some(1), Some(2)).unwrap().resolve(10, 20);
        assert_eq!((u.total(), estimated), (3, false));
    }

    #[test]
    fn cache_writes_are_read_and_capped_at_the_uncached_prompt() {
        let r = Reported::from_json(
            r#"{"prompt_tokens": 100, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 60}, "cache_creation_input_tokens": 30}"#,
        )
        .unwrap();
        let u = r.resolve(0, 0).0;
        assert_eq!(
            (u.cached_prompt_tokens, u.cache_write_prompt_tokens),
            (60, 30)
        );
        let over = Reported::from_json(
            r#"{"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 60}, "cache_creation_input_tokens": 70}"#,
        )
        .unwrap();
        assert_eq!(over.resolve(0, 0).0.cache_write_prompt_tokens, 40);
    }
}
