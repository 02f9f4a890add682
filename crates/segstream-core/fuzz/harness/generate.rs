//! Grammar-aware generators: events (JSON), conditions and filters (the condition
//! language) and whole definitions files (TOML), each from the grammar in the README
//! ("Segment language", "Input"), with the names the checker knows and some it does not.
//!
//! Generated text is structurally valid and often compiles; the mutators then break it
//! at the token level.

use super::{ExpectedEvent, Rng, HELPER_SEGMENTS};
use segstream_core::event::MAX_TIMESTAMP_MS;
use segstream_core::time::format_rfc3339;

pub const KNOWN_TYPES: &[&str] = &[
    "page_view",
    "click",
    "ad_click",
    "email_sent",
    "email_open",
    "email_click",
    "email_bounce",
    "unsubscribe",
    "webinar_registered",
    "webinar_attended",
    "webinar_left",
    "purchase",
    "identify",
    "forget",
];

const CUSTOM_TYPES: &[&str] = &["trial_started", "subscribe", "app.open", "ns:evt-1", "x"];

pub const PROPERTIES: &[&str] = &[
    "url",
    "referrer",
    "title",
    "campaign",
    "utm_source",
    "category",
    "webinar_id",
    "starts_at",
    "ends_at",
    "minutes",
    "amount",
    "currency",
    "product",
    "discount_code",
    "quantity",
    "message_id",
    "list",
    "extra",
    "bot",
];

pub const TRAITS: &[&str] = &[
    "role",
    "industry",
    "country",
    "company_size",
    "customer_status",
    "plan",
    "email_opt_in",
    "age_band",
    "custom_trait",
];

pub const ATTRS: &[&str] = &[
    "revenue",
    "purchases",
    "events",
    "opted_out",
    "favourite_category",
    "favourite_product",
    "open_rate",
    "click_rate",
    "unknown",
];

pub const DURATIONS: &[&str] = &[
    "1s", "30s", "15m", "1h", "24h", "1h30m", "7d", "30d", "90d", "365d", "2w", "250ms", "1096d",
    "1097d", "0s",
];

pub const CMP: &[&str] = &["=", "==", "!=", "<", "<=", ">", ">="];

const STRINGS: &[&str] = &[
    "",
    "/pricing",
    "webinar-q4-ads",
    "W-2026-12",
    "DE",
    "shoes",
    "a \\\"quoted\\\" word",
    "tab\\there",
    "é ü 漢字",
];

/// A string literal of the condition language (already escaped).
fn cond_string(rng: &mut Rng) -> String {
    format!("\"{}\"", rng.pick(STRINGS))
}

fn number(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => rng.range(0, 10).to_string(),
        1 => rng.range(0, 100_000).to_string(),
        2 => format!("{}.{}", rng.range(0, 99), rng.range(0, 99)),
        3 => "0.5".into(),
        4 => "-1".into(),
        _ => rng.range(0, 60).to_string(),
    }
}

fn literal(rng: &mut Rng) -> String {
    match rng.below(5) {
        0 | 1 => number(rng),
        2 => cond_string(rng),
        3 => rng.pick(&["true", "false"]).to_string(),
        _ => rng.pick(DURATIONS).to_string(),
    }
}

fn literal_list(rng: &mut Rng) -> String {
    let n = 1 + rng.below(4);
    let items: Vec<String> = (0..n).map(|_| literal(rng)).collect();
    let trailing = if rng.one_in(5) { "," } else { "" };
    format!("[{}{trailing}]", items.join(", "))
}

fn property(rng: &mut Rng) -> String {
    if rng.one_in(8) {
        // A quoted property name (possibly a keyword).
        format!("\"{}\"", rng.pick(&["and", "amount", "a b", "url"]))
    } else {
        rng.pick(PROPERTIES).to_string()
    }
}

/// An event filter: `url prefix "/pricing" and not utm_source = "email"`.
pub fn filter(rng: &mut Rng, depth: usize) -> String {
    let leaf = depth == 0 || rng.below(3) > 0;
    if leaf {
        let p = property(rng);
        return match rng.below(6) {
            0 | 1 => format!("{p} {} {}", rng.pick(CMP), literal(rng)),
            2 => format!("{p} in {}", literal_list(rng)),
            3 => format!("{p} exists"),
            4 => format!("{p} contains {}", cond_string(rng)),
            _ => format!(
                "{p} {} {}",
                rng.pick(&["prefix", "starts_with"]),
                cond_string(rng)
            ),
        };
    }
    match rng.below(4) {
        0 => format!("not {}", filter(rng, depth - 1)),
        1 => format!("({})", filter(rng, depth - 1)),
        2 => format!("{} and {}", filter(rng, depth - 1), filter(rng, depth - 1)),
        _ => format!("{} or {}", filter(rng, depth - 1), filter(rng, depth - 1)),
    }
}

fn event_name(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => "any".into(),
        1 => rng.pick(CUSTOM_TYPES).to_string(),
        2 => format!(
            "\"{}\"",
            rng.pick(&["then", "trial started", "page_view", ""])
        ),
        3 => "pgae_view".into(),
        _ => rng.pick(KNOWN_TYPES).to_string(),
    }
}

/// `EVENT [ "(" filter ")" ]`
pub fn pattern(rng: &mut Rng, depth: usize) -> String {
    let name = event_name(rng);
    if rng.one_in(3) {
        format!("{name}({})", filter(rng, depth.min(2)))
    } else {
        name
    }
}

fn window(rng: &mut Rng) -> String {
    if rng.one_in(6) {
        "ever".into()
    } else {
        rng.pick(DURATIONS).to_string()
    }
}

/// A numeric (or other) operand.
pub fn operand(rng: &mut Rng, depth: usize) -> String {
    let leaf = depth == 0 || rng.below(3) > 0;
    if leaf {
        return match rng.below(10) {
            0 => format!("count({}, {})", pattern(rng, depth), window(rng)),
            1 => format!(
                "sum({}, {}, {})",
                pattern(rng, depth),
                rng.pick(&["amount", "quantity", "minutes", "url"]),
                window(rng)
            ),
            2 => format!(
                "{}({})",
                rng.pick(&["since", "since_first"]),
                pattern(rng, depth)
            ),
            3 => "score".into(),
            4 => format!("trait.{}", rng.pick(TRAITS)),
            5 => format!("profile.{}", rng.pick(ATTRS)),
            6 => rng.pick(DURATIONS).to_string(),
            7 => cond_string(rng),
            _ => number(rng),
        };
    }
    match rng.below(3) {
        0 => format!("({})", operand(rng, depth - 1)),
        _ => format!(
            "{} {} {}",
            operand(rng, depth - 1),
            rng.pick(&["+", "-", "*", "/"]),
            operand(rng, depth - 1)
        ),
    }
}

/// A condition of the segment language.
pub fn condition(rng: &mut Rng, depth: usize) -> String {
    let leaf = depth == 0 || rng.below(2) > 0;
    if leaf {
        return match rng.below(12) {
            0..=3 => format!(
                "{} {} {}",
                operand(rng, depth.min(2)),
                rng.pick(CMP),
                operand(rng, depth.min(2))
            ),
            4 => format!("trait.{} in {}", rng.pick(TRAITS), literal_list(rng)),
            5 => format!("trait.{} exists", rng.pick(TRAITS)),
            6 => format!(
                "trait.{} {} {}",
                rng.pick(TRAITS),
                rng.pick(&["contains", "prefix", "starts_with"]),
                cond_string(rng)
            ),
            7 => format!("profile.{}", rng.pick(ATTRS)),
            8 => format!(
                "in_segment(\"{}\")",
                rng.pick(&["a", "b", "fuzz", "nope", "s0", "s1", "s2"])
            ),
            9 => rng.pick(&["true", "false"]).to_string(),
            _ => absence(rng),
        };
    }
    match rng.below(4) {
        0 => format!("not {}", condition(rng, depth - 1)),
        1 => format!("({})", condition(rng, depth - 1)),
        2 => format!(
            "{} and {}",
            condition(rng, depth - 1),
            condition(rng, depth - 1)
        ),
        _ => format!(
            "{}\n  or {}",
            condition(rng, depth - 1),
            condition(rng, depth - 1)
        ),
    }
}

/// `PATTERN then no PATTERN [with same PROP] (within DURATION | until PROP)`
fn absence(rng: &mut Rng) -> String {
    let with = if rng.one_in(3) {
        format!(" with same {}", rng.pick(&["webinar_id", "campaign", "x"]))
    } else {
        String::new()
    };
    let deadline = if rng.one_in(3) {
        format!("until {}", rng.pick(&["ends_at", "starts_at", "url"]))
    } else {
        format!("within {}", rng.pick(DURATIONS))
    };
    format!(
        "{} then {} {}{with} {deadline}",
        pattern(rng, 1),
        rng.pick(&["no", "no", "not"]),
        pattern(rng, 1)
    )
}

// ---- TOML -----------------------------------------------------------------------------------

/// Writes `s` as one of the four kinds of TOML string (or falls back to a basic string
/// with escapes when the chosen kind cannot hold it).
pub fn toml_any_string(rng: &mut Rng, s: &str) -> String {
    match rng.below(5) {
        0 if !s.contains('\'') && !s.contains('\n') => format!("'{s}'"),
        1 if !s.contains("'''") && !s.ends_with('\'') => format!("'''\n{s}'''"),
        2 if !s.contains('"') && !s.contains('\\') => {
            // Multi-line basic with CRLF line ends and a line-ending backslash.
            let body = s.replace('\n', " \\\r\n   ");
            format!("\"\"\"\r\n{body}\"\"\"")
        }
        3 => {
            // A basic string, some characters as \u escapes.
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c if !c.is_ascii() || rng.one_in(20) => {
                        if (c as u32) > 0xFFFF {
                            out.push_str(&format!("\\U{:08X}", c as u32));
                        } else {
                            out.push_str(&format!("\\u{:04x}", c as u32));
                        }
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        _ => super::toml_string(s),
    }
}

fn segment_name(rng: &mut Rng, i: usize) -> String {
    match rng.below(20) {
        0 => "Bad_Name".into(),
        1 => "\"quoted name\"".into(),
        _ => format!("s{i}"),
    }
}

/// A whole definitions file: optional format, optional scoring with rules, and segments,
/// written with every kind of TOML string and table.
pub fn definitions(rng: &mut Rng) -> String {
    let mut out = String::new();
    if rng.one_in(3) {
        out.push_str("# generated\n");
    }
    if rng.below(3) > 0 {
        out.push_str(&format!(
            "format = {}\n",
            if rng.one_in(10) { 2 } else { 1 }
        ));
    }
    // Dotted keys and inline tables go before the first `[table]` header.
    let mut tables = String::new();
    let n = 1 + rng.below(4);
    for i in 0..n {
        let cond = condition(rng, 3);
        let name = segment_name(rng, i);
        let quoted = toml_any_string(rng, &cond);
        match rng.below(6) {
            0 => out.push_str(&format!(
                "segments.{name} = {{ description = \"d\", condition = {} }}\n",
                super::toml_string(&cond)
            )),
            1 => out.push_str(&format!("segments.{name}.condition = {quoted}\n")),
            _ => {
                tables.push_str(&format!("\n[segments.{name}]\n"));
                if rng.one_in(2) {
                    tables.push_str("description = \"generated\"\n");
                }
                tables.push_str(&format!("condition = {quoted}\n"));
            }
        }
    }
    if rng.below(3) > 0 {
        out.push_str("\n[scoring]\n");
        if rng.below(3) > 0 {
            out.push_str(&format!("half_life = \"{}\"\n", rng.pick(DURATIONS)));
        }
        for _ in 0..rng.below(4) {
            out.push_str("\n[[scoring.rules]]\n");
            out.push_str(&format!(
                "event = \"{}\"\n",
                rng.pick(&["any", "page_view", "purchase", "x"])
            ));
            if rng.one_in(2) {
                let f = filter(rng, 2);
                out.push_str(&format!("where = {}\n", toml_any_string(rng, &f)));
            }
            out.push_str(&format!(
                "points = {}\n",
                rng.pick(&["1", "5", "-2.5", "0", "30"])
            ));
        }
    }
    out.push_str(&tables);
    if rng.one_in(4) {
        out.push('\n');
        out.push_str(HELPER_SEGMENTS);
    }
    out
}

// ---- events ---------------------------------------------------------------------------------

/// Encodes `s` as a JSON string, escaping some characters at random.
fn json_string(rng: &mut Rng, s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            '/' if rng.one_in(2) => out.push_str("\\/"),
            c if rng.one_in(12) || (!c.is_ascii() && rng.one_in(3)) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{:04X}", unit));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn id(rng: &mut Rng, prefix: &str) -> String {
    match rng.below(8) {
        0 => format!("{prefix}\"quoted\" é"),
        1 => format!("{prefix}漢字-😀"),
        2 => "x".repeat(1 + rng.below(256)),
        3 => format!(" {prefix} spaced "),
        _ => format!("{prefix}{:06}", rng.below(1_000_000)),
    }
}

/// A timestamp for `ms` as RFC 3339 (with some offset and precision) or epoch millis
/// (with `float`, also as a float with a zero fraction, which only `timestamp` accepts).
fn timestamp(rng: &mut Rng, ms: i64, float: bool) -> String {
    match rng.below(5) {
        0 => ms.to_string(),
        1 if float => format!("{ms}.0"),
        1 => ms.to_string(),
        _ => {
            let offset_min = match rng.below(3) {
                0 => 0,
                _ => rng.range(-23 * 60 - 59, 23 * 60 + 59),
            };
            let local = format_rfc3339(ms + offset_min * 60_000);
            let body = &local[..local.len() - 1]; // without `Z`
            let (date_time, frac) = body.split_at(19);
            let frac = if ms % 1000 == 0 && rng.one_in(2) {
                ""
            } else if frac.len() == 4 && rng.one_in(3) {
                // More digits than milliseconds: the rest is truncated.
                let more = rng.range(0, 999_999);
                return with_offset(rng, &format!("{date_time}{frac}{more}"), offset_min);
            } else {
                frac
            };
            with_offset(rng, &format!("{date_time}{frac}"), offset_min)
        }
    }
}

fn with_offset(rng: &mut Rng, local: &str, offset_min: i64) -> String {
    let mut local = local.to_string();
    if rng.one_in(4) {
        local = local.replacen('T', "t", 1);
    }
    if offset_min == 0 && rng.below(3) > 0 {
        let z = if rng.one_in(4) { "z" } else { "Z" };
        return format!("\"{local}{z}\"");
    }
    let sign = if offset_min < 0 { '-' } else { '+' };
    let a = offset_min.abs();
    format!("\"{local}{sign}{:02}:{:02}\"", a / 60, a % 60)
}

fn json_scalar(rng: &mut Rng) -> String {
    match rng.below(7) {
        0 => "null".into(),
        1 => rng.pick(&["true", "false"]).to_string(),
        2 => rng.range(-1000, 1_000_000).to_string(),
        3 => "1.5e3".into(),
        4 => "[1, {\"a\": []}]".into(),
        5 => "{\"nested\": {\"x\": 1}}".into(),
        _ => {
            let v = *rng.pick(STRINGS);
            json_string(rng, v)
        }
    }
}

/// Properties of a valid event of `ty` (required ones with the right types, and extras).
fn properties(rng: &mut Rng, ty: &str) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = Vec::new();
    let s = |rng: &mut Rng, v: &str| json_string(rng, v);
    match ty {
        "page_view" => p.push(("url".into(), s(rng, "https://segstream.dev/pricing"))),
        "ad_click" => p.push(("campaign".into(), s(rng, "webinar-q4-ads"))),
        "webinar_registered" | "webinar_attended" | "webinar_left" => {
            p.push(("webinar_id".into(), s(rng, "W-2026-12")));
            if rng.one_in(2) {
                let t = rng.range(0, MAX_TIMESTAMP_MS);
                let v = timestamp(rng, t, false);
                p.push(("ends_at".into(), v));
            }
            if rng.one_in(3) {
                p.push(("minutes".into(), rng.range(0, 300).to_string()));
            }
        }
        "purchase" => {
            p.push(("amount".into(), number_json(rng)));
            let currency = *rng.pick(&["EUR", "USD", "CHF"]);
            p.push(("currency".into(), s(rng, currency)));
            if rng.one_in(2) {
                p.push(("discount_code".into(), s(rng, "BF-10")));
            }
        }
        _ => {}
    }
    for _ in 0..rng.below(3) {
        let name = format!("x_{}", rng.below(1000));
        if !p.iter().any(|(k, _)| *k == name) {
            let v = json_scalar(rng);
            p.push((name, v));
        }
    }
    p
}

fn number_json(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => rng.range(0, 100_000).to_string(),
        1 => format!("{}.{:02}", rng.range(0, 9999), rng.range(0, 99)),
        _ => "1e2".into(),
    }
}

fn object(rng: &mut Rng, members: &[(String, String)]) -> String {
    let ws = |rng: &mut Rng| *rng.pick(&["", " ", "\n", "\t ", "  "]);
    let mut out = String::from("{");
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(ws(rng));
        out.push_str(&json_string(rng, k));
        out.push_str(ws(rng));
        out.push(':');
        out.push_str(ws(rng));
        out.push_str(v);
    }
    out.push_str(ws(rng));
    out.push('}');
    out
}

/// A valid event and what it must parse to.
pub fn event(rng: &mut Rng) -> (String, ExpectedEvent) {
    let event_type = match rng.below(6) {
        0 => rng.pick(CUSTOM_TYPES).to_string(),
        _ => rng.pick(KNOWN_TYPES).to_string(),
    };
    let ms = match rng.below(4) {
        0 => 0,
        1 => MAX_TIMESTAMP_MS - rng.range(0, 1000),
        _ => rng.range(1_600_000_000_000, 1_900_000_000_000),
    };
    let ms = if rng.one_in(2) { ms - ms % 1000 } else { ms };
    let expected = ExpectedEvent {
        event_id: id(rng, "e-"),
        customer_id: id(rng, "c-"),
        event_type: event_type.clone(),
        timestamp: ms,
    };
    let mut members: Vec<(String, String)> = vec![
        ("event_id".into(), json_string(rng, &expected.event_id)),
        (
            "customer_id".into(),
            json_string(rng, &expected.customer_id),
        ),
        ("type".into(), json_string(rng, &event_type)),
        ("timestamp".into(), timestamp(rng, ms, true)),
    ];
    let props = properties(rng, &event_type);
    if !props.is_empty() || rng.one_in(2) {
        members.push(("properties".into(), object(rng, &props)));
    }
    if event_type == "identify" || rng.one_in(6) {
        let mut traits = vec![("role".to_string(), json_string(rng, "head of marketing"))];
        if rng.one_in(2) {
            traits.push(("country".into(), "\"DE\"".into()));
        }
        if rng.one_in(2) {
            traits.push(("company_size".into(), rng.range(0, 5000).to_string()));
        }
        if rng.one_in(3) {
            traits.push(("plan".into(), "null".into()));
        }
        members.push(("traits".into(), object(rng, &traits)));
    }
    if rng.one_in(4) {
        members.push(("source".into(), json_scalar(rng)));
    }
    // Any order of the members.
    for i in (1..members.len()).rev() {
        let j = rng.below(i + 1);
        members.swap(i, j);
    }
    (object(rng, &members), expected)
}

/// A fragment for `target`, to insert into other inputs.
pub fn fragment(rng: &mut Rng, target: super::Target) -> String {
    use super::Target;
    match target {
        Target::Events => match rng.below(3) {
            0 => json_scalar(rng),
            1 => {
                let ms = rng.range(0, MAX_TIMESTAMP_MS);
                timestamp(rng, ms, true)
            }
            _ => event(rng).0,
        },
        Target::Definitions | Target::Conditions => match rng.below(4) {
            0 => filter(rng, 2),
            1 => operand(rng, 2),
            2 => pattern(rng, 1),
            _ => condition(rng, 2),
        },
    }
}

/// A fresh input for `target` from the grammar.
pub fn input(rng: &mut Rng, target: super::Target) -> String {
    use super::Target;
    match target {
        Target::Events => event(rng).0,
        Target::Definitions => definitions(rng),
        Target::Conditions => {
            if rng.one_in(4) {
                filter(rng, 3)
            } else {
                condition(rng, 4)
            }
        }
    }
}

/// A large input for `target` that stresses limits rather than the grammar: long chains
/// (`a + b + ...`, `and`, `or`), nesting past the parser's limits, long lists, names and
/// strings, many segments or properties. Up to about 64 KB.
pub fn stress(rng: &mut Rng, target: super::Target) -> String {
    use super::Target;
    let n = *rng.pick(&[100, 300, 1_000, 3_000, 6_000]);
    match target {
        Target::Events => match rng.below(4) {
            0 => {
                let props: Vec<String> = (0..n).map(|i| format!("\"p{i}\": {i}")).collect();
                format!(
                    "{{\"event_id\":\"e\",\"customer_id\":\"c\",\"type\":\"click\",\
                     \"timestamp\":0,\"properties\":{{{}}}}}",
                    props.join(",")
                )
            }
            1 => format!("{}1{}", "[".repeat(n), "]".repeat(n)),
            2 => format!(
                "{{\"event_id\":\"{}\",\"customer_id\":\"c\",\"type\":\"click\",\"timestamp\":0}}",
                "\\u00e9".repeat(n)
            ),
            _ => format!(
                "{{\"event_id\":\"e\",\"customer_id\":\"c\",\"type\":\"click\",\
                 \"timestamp\":0,\"properties\":{}}}",
                "{\"a\":".repeat(n.min(200)) + "1" + &"}".repeat(n.min(200))
            ),
        },
        Target::Conditions | Target::Definitions => {
            let op = *rng.pick(&["+", "-", "*", "/", "and", "or"]);
            let term = match op {
                "and" | "or" => "score > 1".to_string(),
                _ => operand(rng, 0),
            };
            let cond = match rng.below(6) {
                0 | 1 => {
                    let chain = vec![term.as_str(); n].join(&format!(" {op} "));
                    match op {
                        "and" | "or" => chain,
                        _ => format!("{chain} > 1"),
                    }
                }
                2 => format!("{}score > 1{}", "(".repeat(n), ")".repeat(n)),
                3 => format!("{}true", "not ".repeat(n)),
                4 => format!("trait.x in [{}]", vec!["\"v\""; n].join(", ")),
                _ => format!("count({}, 1d) > 1", "x".repeat(n)),
            };
            if target == Target::Conditions {
                return cond;
            }
            let mut out = String::new();
            for i in 0..(n / 100).max(2) {
                let c = if i == 0 {
                    cond.as_str()
                } else {
                    "trait.role exists"
                };
                out.push_str(&format!(
                    "[segments.s{i}]\ncondition = {}\n",
                    super::toml_string(c)
                ));
            }
            out
        }
    }
}
