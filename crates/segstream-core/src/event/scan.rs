//! The envelope read in one pass over the bytes, for events of the usual shape.
//!
//! [`wire`] reads what `serde_json` would deserialize into [`Wire`], without serde's
//! per-field dispatch and visitors: one loop over the object's members, the known fields
//! matched by length and bytes, strings borrowed, integers read in place. It handles the
//! shape nearly every event has (an object of fields, strings without escapes, numbers,
//! literals, nested values in properties) and **declines** everything else (`None`):
//! an escape in any string, a duplicate key, a property or trait object that is not an
//! object, an integer of 19 digits or more, `-0`, nesting deeper than [`MAX_DEPTH`], and
//! anything that is not JSON. The caller then takes the serde path, which gives the
//! rejection and its message, or the event, exactly as before.
//!
//! The rule that keeps the two paths one contract: **whenever `wire` answers, the answer
//! is the one `serde_json` gives for the same text** (tested against it on generated and
//! mutated input in `tests`, and by the `events` fuzz target). Numbers with a fraction or
//! an exponent are handed to `serde_json` itself, so a float is rounded as serde rounds it.

use std::borrow::Cow;

use super::{Fields, Obj, Value, Wire};

/// Deeper nesting (arrays and objects inside a property) is declined; serde_json's own
/// limit is 128.
const MAX_DEPTH: usize = 32;

/// The envelope of `text` (the whole input, already checked to be UTF-8), or `None` where
/// the serde path must decide. See the module documentation.
pub(super) fn wire(text: &str) -> Option<Wire<'_>> {
    let mut s = Scanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    s.skip_ws();
    s.expect(b'{')?;
    let mut w = Wire::default();
    // The known fields seen so far (a repeated one is declined: serde rejects it, even
    // where the first was `null`).
    let mut seen = 0u8;
    s.members(|s, key| {
        let field = match key.as_bytes() {
            b"event_id" => 0,
            b"customer_id" => 1,
            b"anonymous_id" => 2,
            b"previous_id" => 3,
            b"type" => 4,
            b"timestamp" => 5,
            b"properties" => 6,
            b"traits" => 7,
            // serde ignores unknown fields (their values must still be JSON).
            _ => return s.skip_value(0),
        };
        if seen & (1 << field) != 0 {
            return None;
        }
        seen |= 1 << field;
        match field {
            0 => w.event_id = s.field()?,
            1 => w.customer_id = s.field()?,
            2 => w.anonymous_id = s.field()?,
            3 => w.previous_id = s.field()?,
            4 => w.event_type = s.field()?,
            5 => w.timestamp = s.field()?,
            6 => w.properties = s.object_field()?,
            _ => w.traits = s.object_field()?,
        }
        Some(())
    })?;
    s.skip_ws();
    // Only whitespace may follow the object.
    (s.at == s.bytes.len()).then_some(w)
}

/// The offset of the first quote, backslash or control character in `bytes` (eight bytes
/// at a time: ids, types and timestamps are 8 to 40 bytes long).
#[inline(always)]
fn string_len(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of each byte that is zero in `x` (exact for the lowest such byte, which is
    // all that is used).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let special = zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS);
        if special != 0 {
            return Some(at + (special.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// The members of an object whose `{` was just read, to its `}` and past it: `member`
    /// reads each value after its key (and may decline).
    #[inline(always)]
    fn members(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.skip_ws();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.key()?;
            member(self, key)?;
            self.skip_ws();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A member's key and its `:`, whitespace around them skipped.
    #[inline(always)]
    fn key(&mut self) -> Option<&'a str> {
        self.skip_ws();
        self.expect(b'"')?;
        let key = self.string_body()?;
        self.skip_ws();
        self.expect(b':')?;
        self.skip_ws();
        Some(key)
    }

    /// The rest of a string after its opening quote, borrowed; `None` at an escape, a
    /// control character or the end of the input.
    #[inline(always)]
    fn string_body(&mut self) -> Option<&'a str> {
        let start = self.at;
        let rest = &self.bytes[start..];
        let len = string_len(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // Quotes and backslashes are ASCII, so both ends are character boundaries.
        Some(&self.text[start..start + len])
    }

    /// A top-level field read as `Option<Value>`: `null` is `None`, as serde's `Option`
    /// makes it.
    fn field(&mut self) -> Option<Option<Value<'a>>> {
        let v = self.value(0)?;
        Some((v != Value::Null).then_some(v))
    }

    /// `properties` or `traits`: an object of values, or `null` (`None`). Anything else is
    /// declined (serde's answer names the type found).
    fn object_field(&mut self) -> Option<Option<Obj<'a>>> {
        match self.peek()? {
            b'n' => {
                self.literal(b"null")?;
                Some(None)
            }
            b'{' => {
                self.at += 1;
                // Room for a typical event's properties, as on the serde path.
                let mut out = Fields::with_capacity(8);
                self.members(|s, k| {
                    let v = s.value(1)?;
                    if out.iter().any(|(existing, _)| existing.as_ref() == k) {
                        return None;
                    }
                    out.push((Cow::Borrowed(k), v));
                    Some(())
                })?;
                Some(Some(Obj::Map(out)))
            }
            _ => None,
        }
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// One value as [`Value`] (arrays and objects as their markers, skipped).
    fn value(&mut self, depth: usize) -> Option<Value<'a>> {
        Some(match self.peek()? {
            b'"' => {
                self.at += 1;
                Value::Str(Cow::Borrowed(self.string_body()?))
            }
            b'-' | b'0'..=b'9' => self.number()?,
            b't' => {
                self.literal(b"true")?;
                Value::Bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                Value::Bool(false)
            }
            b'n' => {
                self.literal(b"null")?;
                Value::Null
            }
            b'[' => {
                self.skip_value(depth)?;
                Value::Array
            }
            b'{' => {
                self.skip_value(depth)?;
                Value::Object
            }
            _ => return None,
        })
    }

    /// A number: integers of up to 18 digits read here, anything with a fraction or an
    /// exponent parsed by serde_json (so rounded as it rounds).
    fn number(&mut self) -> Option<Value<'a>> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let int_start = self.at;
        let mut n: i64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.wrapping_mul(10).wrapping_add(i64::from(d - b'0'));
            self.at += 1;
        }
        let digits = self.at - int_start;
        // JSON allows no leading zeros; `-0` is a float for serde (`-0.0`): declined.
        if digits == 0 || digits > 18 || (digits > 1 && self.bytes[int_start] == b'0') {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return self.float(start);
        }
        if negative {
            if n == 0 {
                return None;
            }
            n = -n;
        }
        Some(Value::Int(n))
    }

    /// The fraction and exponent of the number begun at `start`, checked against JSON's
    /// grammar here and converted by serde_json.
    fn float(&mut self, start: usize) -> Option<Value<'a>> {
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.digits()?;
        }
        let f: f64 = serde_json::from_str(&self.text[start..self.at]).ok()?;
        Some(Value::Float(f))
    }

    /// One or more digits.
    fn digits(&mut self) -> Option<()> {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        (self.at > start).then_some(())
    }

    /// Skips one value, checking it is JSON (arrays and objects to [`MAX_DEPTH`]).
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.at += 1;
                self.skip_ws();
                if self.peek()? == b']' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.skip_ws();
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    match self.peek()? {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.at += 1;
                self.members(|s, _| s.skip_value(depth + 1))
            }
            _ => self.value(depth).map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde_json makes of `text` (the reference the scanner must equal).
    fn serde(text: &str) -> Option<Wire<'_>> {
        serde_json::from_str(text).ok()
    }

    /// Where the scanner answers, serde answers the same; returns whether it answered.
    fn agrees(text: &str) -> bool {
        match wire(text) {
            Some(w) => {
                assert_eq!(Some(&w), serde(text).as_ref(), "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn reads_the_usual_shapes_as_serde_does() {
        for text in [
            r#"{"event_id":"e-1","customer_id":"c-1","type":"page_view","timestamp":"2026-11-02T00:00:00.091Z","properties":{"url":"https://x.test/a?b=c","n":3,"f":-2.5e3,"ok":true,"none":null,"list":[1,[2,{"a":"b"}]],"o":{}}}"#,
            r#"{"event_id":"e-2","anonymous_id":"d1ea10f08ba139ca","type":"identify","timestamp":1793577600068,"traits":{"company_size":8,"country":"CH","email_opt_in":false}}"#,
            " \t{ \"event_id\" : \"e\" , \"extra\" : {\"deep\": [true, false, null, -1.5E-3]} , \"timestamp\" : 0 }\r\n ",
            r#"{}"#,
            r#"{"event_id":null,"properties":null,"traits":{},"timestamp":-12,"type":"ümlaut ✓"}"#,
            r#"{"event_id":{"a":1},"customer_id":[],"type":7,"timestamp":123456789012345678}"#,
            r#"{"amount":0.1,"x":1e2,"y":0,"z":-7}"#,
        ] {
            assert!(agrees(text), "declined: {text}");
        }
    }

    #[test]
    fn declines_what_only_serde_may_decide() {
        for text in [
            r#"{"event_id":"e\"1"}"#,
            r#"{"event_id":"e","event_id":"f"}"#,
            r#"{"properties":{"a":1,"a":2}}"#,
            r#"{"properties":"x"}"#,
            r#"{"properties":null,"properties":{}}"#,
            r#"{"timestamp":1234567890123456789}"#,
            r#"{"timestamp":-0}"#,
            r#"{"timestamp":01}"#,
            r#"{"timestamp":1.}"#,
            r#"{"timestamp":1e999}"#,
            r#"{"a":1} x"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            "{\"a\":\"tab\there\"}",
            r#"[1]"#,
            r#"{"a":[1,]}"#,
            r#"{"a":"#,
        ] {
            assert!(wire(text).is_none(), "answered: {text}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(40), "]".repeat(40));
        assert!(wire(&deep).is_none());
        let shallow = format!("{{\"a\":{}{}}}", "[".repeat(20), "]".repeat(20));
        assert!(agrees(&shallow));
    }

    proptest! {
        #[test]
        fn finds_the_first_special_byte_as_a_plain_scan(
            bytes in prop::collection::vec(prop_oneof![
                4 => 0x20u8..0x7f, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20, 1 => 0x80u8..=0xff,
            ], 0..40)
        ) {
            let plain = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(string_len(&bytes), plain);
        }
    }

    /// The funnel's own events all take this path.
    #[test]
    fn every_generated_kind_of_line_is_read_here() {
        let lines = [
            r#"{"event_id":"e-42-0","customer_id":"c-117813","type":"identify","timestamp":1793577600068,"traits":{"company_size":8,"country":"CH","customer_status":"lead","email_opt_in":true,"industry":"consulting","role":"head of sales","time_zone":"Europe/Zurich"}}"#,
            r#"{"event_id":"e-42-14999","customer_id":"c-110857","type":"purchase","timestamp":"2026-11-02T00:16:04.578Z","properties":{"amount":477.03,"category":"subscription","currency":"EUR","order_id":"o-110857-1793578564578","product":"segstream-pro-annual","quantity":1}}"#,
            r#"{"event_id":"e-42-1709","customer_id":"c-122977","anonymous_id":"d1ea10f08ba139ca","type":"ad_click","timestamp":"2026-11-02T00:01:49.182Z","properties":{"campaign":"brand-awareness","url":"https://segstream.dev/features","utm_source":"google"}}"#,
        ];
        for l in lines {
            assert!(agrees(l), "{l}");
        }
    }

    /// JSON-ish text from a small alphabet of tokens: the scanner agrees with serde
    /// wherever it answers, and answers for most well-formed objects.
    fn token() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\"event_id\"",
            "\"type\"",
            "\"timestamp\"",
            "\"properties\"",
            "\"traits\"",
            "\"customer_id\"",
            "\"x\"",
            "\"a\\nb\"",
            "\"\"",
            "0",
            "-1",
            "12",
            "3.25",
            "-0",
            "1e5",
            "2E-2",
            "01",
            "true",
            "false",
            "null",
            "\"é\"",
            "\t",
            "\"2026-11-02T00:00:00Z\"",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn answers_only_as_serde_answers(tokens in prop::collection::vec(token(), 0..40)) {
            let text: String = tokens.concat();
            agrees(&text);
        }

        #[test]
        fn answers_objects_of_scalars_as_serde(
            fields in prop::collection::vec((
                prop::sample::select(vec!["event_id", "customer_id", "anonymous_id", "previous_id",
                    "type", "timestamp", "other"]),
                prop_oneof![
                    "[a-z0-9\\-]{0,12}".prop_map(|s| format!("\"{s}\"")),
                    any::<i64>().prop_map(|n| n.to_string()),
                    any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
                    Just("null".to_string()),
                    Just("{\"k\":[1,2,{}]}".to_string()),
                ],
            ), 0..8),
            props in prop::collection::vec(("[a-z_]{1,8}", any::<u32>()), 0..6),
        ) {
            let mut members: Vec<String> =
                fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let members_of_props: Vec<String> =
                props.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            members.push(format!("\"properties\":{{{}}}", members_of_props.join(",")));
            let text = format!("{{{}}}", members.join(","));
            let answered = agrees(&text);
            // Distinct keys, no escapes, numbers under 19 digits: always answered.
            let mut keys: Vec<&str> = fields.iter().map(|(k, _)| *k).filter(|k| *k != "other").collect();
            keys.sort_unstable();
            let distinct = keys.windows(2).all(|w| w[0] != w[1]);
            let mut pkeys: Vec<&str> = props.iter().map(|(k, _)| k.as_str()).collect();
            pkeys.sort_unstable();
            let pdistinct = pkeys.windows(2).all(|w| w[0] != w[1]);
            let short = fields.iter().all(|(_, v)| {
                v.parse::<i64>().map_or(true, |n| n.unsigned_abs().to_string().len() < 19)
            });
            if distinct && pdistinct && short && serde(&text).is_some() {
                prop_assert!(answered, "declined {}", text);
            }
        }
    }
}
