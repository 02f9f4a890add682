//! Mutations: bytes (flips, inserts, deletes, copies), interesting values, tokens of the
//! languages (inserted, replaced, removed, duplicated, swapped), splices with other inputs
//! and fragments from the grammar.

use super::generate;
use super::{Rng, Target};

/// Tokens of the condition language, of the definitions file and of the event contract.
pub const CONDITION_TOKENS: &[&str] = &[
    "and",
    "or",
    "not",
    "no",
    "then",
    "within",
    "until",
    "with",
    "same",
    "in",
    "contains",
    "prefix",
    "starts_with",
    "exists",
    "true",
    "false",
    "ever",
    "count",
    "sum",
    "since",
    "since_first",
    "score",
    "in_segment",
    "any",
    "trait.",
    "traits.",
    "profile.",
    "trait.role",
    "profile.opted_out",
    "(",
    ")",
    "[",
    "]",
    ",",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "!",
    "&&",
    "||",
    "'",
    "\"",
    "\\",
    "#",
    "\n",
    " ",
    "\"\"",
    "\"a\"",
    "\"\\q\"",
    "0",
    "1",
    "-1",
    "0.5",
    "1.",
    "1e3",
    "99999999999999999999",
    "30d",
    "24h",
    "1h30m",
    "250ms",
    "9999999999999999d",
    "1x",
    "ever",
    "page_view",
    "purchase",
    "url",
    "amount",
    "ends_at",
    "webinar_id",
    "count(a, 30d)",
    "in_segment(\"a\")",
    "é",
    "\u{0}",
    "\u{feff}",
    "\u{2028}",
];

pub const TOML_TOKENS: &[&str] = &[
    "[segments.",
    "[segments.a]",
    "[[scoring.rules]]",
    "[scoring]",
    "condition = ",
    "description = ",
    "where = ",
    "event = ",
    "points = ",
    "half_life = ",
    "format = ",
    "format = 1",
    "'",
    "''",
    "'''",
    "\"",
    "\"\"\"",
    "\\",
    "\\\n",
    "\\u00e9",
    "\\U0001F600",
    "\\uD800",
    "\r\n",
    "\n",
    "=",
    ".",
    "{",
    "}",
    "[",
    "]",
    ",",
    "#",
    "nan",
    "inf",
    "-0",
    "1e400",
    "9223372036854775807",
    "9223372036854775808",
    "1979-05-27T07:32:00Z",
    "true",
    "segments",
    "scoring",
    "rules",
    "\"30d\"",
    "\"0s\"",
];

pub const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u",
    "\\u0000",
    "\\ud800",
    "\\udc00",
    "\\uD83D\\uDE00",
    "null",
    "true",
    "false",
    "0",
    "-0",
    "1e309",
    "-1",
    "1.5",
    "18446744073709551616",
    "9223372036854775807",
    "4294967295000",
    "4294967295001",
    "\"event_id\"",
    "\"customer_id\"",
    "\"type\"",
    "\"timestamp\"",
    "\"properties\"",
    "\"traits\"",
    "\"identify\"",
    "\"purchase\"",
    "\"amount\"",
    "\"currency\"",
    "\"EUR\"",
    "\"ends_at\"",
    "\"webinar_id\"",
    "\"company_size\"",
    "\"country\"",
    "\"email_opt_in\"",
    "\"2026-11-22T10:00:00Z\"",
    "\"2026-02-29T00:00:00Z\"",
    "\"2106-02-07T06:28:15Z\"",
    "\"1970-01-01T00:00:00-00:01\"",
    "\"2026-11-22T10:00:60.5+23:59\"",
    "\"\"",
    "\" \"",
    "\"\\u0001\"",
    "é",
    "\u{feff}",
    "\u{0}",
    "\u{ff}",
];

/// Interesting byte sequences of any kind.
const INTERESTING: &[&[u8]] = &[
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\xed\xa0\x80",
    b"\r",
    b"\t",
];

pub fn tokens(target: Target) -> &'static [&'static str] {
    match target {
        Target::Events => JSON_TOKENS,
        Target::Conditions => CONDITION_TOKENS,
        Target::Definitions => TOML_TOKENS,
    }
}

fn token(rng: &mut Rng, target: Target) -> &'static str {
    match target {
        // Definitions contain conditions.
        Target::Definitions if rng.one_in(2) => CONDITION_TOKENS[rng.below(CONDITION_TOKENS.len())],
        t => {
            let all = tokens(t);
            all[rng.below(all.len())]
        }
    }
}

/// Byte offsets where tokens start and end, roughly: boundaries between runs of word
/// characters, whitespace and single punctuation characters.
fn boundaries(data: &[u8]) -> Vec<usize> {
    let class = |b: u8| {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b >= 0x80 {
            0
        } else if b.is_ascii_whitespace() {
            1
        } else {
            2
        }
    };
    let mut out = vec![0];
    for i in 1..data.len() {
        let (a, b) = (class(data[i - 1]), class(data[i]));
        if a != b || a == 2 {
            out.push(i);
        }
    }
    out.push(data.len());
    out
}

/// A random token-sized range of `data`: `(start, end)`.
fn token_range(rng: &mut Rng, data: &[u8]) -> (usize, usize) {
    let b = boundaries(data);
    if b.len() < 2 {
        return (0, data.len());
    }
    let i = rng.below(b.len() - 1);
    let n = 1 + if rng.one_in(4) { rng.below(4) } else { 0 };
    (b[i], b[(i + n).min(b.len() - 1)])
}

fn random_pos(rng: &mut Rng, data: &[u8]) -> usize {
    rng.below(data.len() + 1)
}

/// Applies one to eight mutations to `data`, keeping it at most `max_len` bytes.
/// `others` are inputs to splice from (may be empty).
pub fn mutate(
    rng: &mut Rng,
    target: Target,
    data: &mut Vec<u8>,
    others: &[Vec<u8>],
    max_len: usize,
) {
    let most = if rng.one_in(4) { 8 } else { 3 };
    let n = 1 + rng.below(most);
    for _ in 0..n {
        mutate_once(rng, target, data, others);
    }
    data.truncate(max_len);
}

fn mutate_once(rng: &mut Rng, target: Target, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    match rng.below(16) {
        // Bytes.
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] = rng.next_u64() as u8;
        }
        2 => {
            let i = random_pos(rng, data);
            let bytes: &[u8] = if rng.one_in(2) {
                INTERESTING[rng.below(INTERESTING.len())]
            } else {
                &[
                    b' ', b'"', b'\'', b'\\', b'\n', b'(', b')', b'{', b'}', b'[', b']',
                ][rng.below(11)..][..1]
            };
            data.splice(i..i, bytes.iter().copied());
        }
        3 if !data.is_empty() => {
            let i = rng.below(data.len());
            let len = 1 + rng.below((data.len() - i).min(16));
            data.drain(i..i + len);
        }
        4 if !data.is_empty() => {
            // Copy a chunk elsewhere (also grows nesting: `((` ... `))`).
            let i = rng.below(data.len());
            let len = 1 + rng.below((data.len() - i).min(32));
            let chunk: Vec<u8> = data[i..i + len].to_vec();
            let at = random_pos(rng, data);
            let times = if rng.one_in(8) { 1 + rng.below(64) } else { 1 };
            for _ in 0..times {
                data.splice(at..at, chunk.iter().copied());
            }
        }
        // Tokens.
        5 | 6 => {
            let at = if rng.one_in(2) {
                token_range(rng, data).0
            } else {
                random_pos(rng, data)
            };
            let t = token(rng, target);
            let sep = if rng.one_in(2) { " " } else { "" };
            let s = format!("{sep}{t}{sep}");
            data.splice(at..at, s.bytes());
        }
        7 | 8 => {
            let (a, b) = token_range(rng, data);
            let t = token(rng, target);
            data.splice(a..b, t.bytes());
        }
        9 => {
            let (a, b) = token_range(rng, data);
            data.drain(a..b);
        }
        10 => {
            // Swap two tokens.
            let (a1, b1) = token_range(rng, data);
            let (a2, b2) = token_range(rng, data);
            if b1 <= a2 {
                let second: Vec<u8> = data[a2..b2].to_vec();
                let first: Vec<u8> = data[a1..b1].to_vec();
                data.splice(a2..b2, first);
                data.splice(a1..b1, second);
            }
        }
        11 => {
            // Repeat a token many times: deep nesting, long chains.
            let (a, b) = token_range(rng, data);
            let chunk: Vec<u8> = data[a..b].to_vec();
            let most = if rng.one_in(4) { 200 } else { 8 };
            let times = 1 + rng.below(most);
            for _ in 0..times {
                data.splice(b..b, chunk.iter().copied());
            }
        }
        // Structure.
        12 => {
            let frag = generate::fragment(rng, target);
            if rng.one_in(2) {
                let (a, b) = token_range(rng, data);
                data.splice(a..b, frag.bytes());
            } else {
                let at = random_pos(rng, data);
                data.splice(at..at, frag.bytes());
            }
        }
        13 if !others.is_empty() => {
            // Splice: a prefix of this input and a suffix of another.
            let other = rng.pick(others);
            let cut = random_pos(rng, data);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        14 if !others.is_empty() => {
            // Insert a chunk of another input.
            let other = rng.pick(others);
            if !other.is_empty() {
                let i = rng.below(other.len());
                let len = 1 + rng.below((other.len() - i).min(64));
                let at = random_pos(rng, data);
                data.splice(at..at, other[i..i + len].iter().copied());
            }
        }
        15 => {
            // Truncate (unterminated strings, tables, objects).
            let cut = random_pos(rng, data);
            data.truncate(cut);
        }
        _ => {
            let at = random_pos(rng, data);
            let t = token(rng, target);
            data.splice(at..at, t.bytes());
        }
    }
}

/// One input for a run without coverage feedback: a fresh grammar input, a mutated seed, or
/// a mutated grammar input. Returns the input and, for a fresh valid event, what it must
/// parse to.
pub fn next_input(
    rng: &mut Rng,
    target: Target,
    seeds: &[Vec<u8>],
    max_len: usize,
) -> (Vec<u8>, Option<super::ExpectedEvent>) {
    match rng.below(8) {
        0 => {
            if target == Target::Events {
                let (json, expected) = generate::event(rng);
                (json.into_bytes(), Some(expected))
            } else {
                (generate::input(rng, target).into_bytes(), None)
            }
        }
        1..=4 if !seeds.is_empty() => {
            let mut data = rng.pick(seeds).clone();
            mutate(rng, target, &mut data, seeds, max_len);
            (data, None)
        }
        _ => {
            let mut data = generate::input(rng, target).into_bytes();
            mutate(rng, target, &mut data, seeds, max_len);
            (data, None)
        }
    }
}

/// A libFuzzer custom mutator (`fuzz_mutator!`): mutates `data[..size]` in place, to at
/// most `max_size` bytes, and returns the new size. Half of the time libFuzzer's own
/// mutations (`default`), else the mutations of this module; now and then a fresh input
/// from the grammar.
pub fn custom(
    target: Target,
    data: &mut [u8],
    size: usize,
    max_size: usize,
    seed: u32,
    default: fn(&mut [u8], usize, usize) -> usize,
) -> usize {
    let mut rng = Rng::new(u64::from(seed));
    let mut input = match rng.below(16) {
        0..=7 => return default(data, size, max_size),
        8 => generate::input(&mut rng, target).into_bytes(),
        9 => {
            let mut fresh = generate::input(&mut rng, target).into_bytes();
            mutate(&mut rng, target, &mut fresh, &[], max_size);
            fresh
        }
        _ => {
            let mut input = data[..size].to_vec();
            let other = generate::input(&mut rng, target).into_bytes();
            mutate(&mut rng, target, &mut input, &[other], max_size);
            input
        }
    };
    input.truncate(max_size.min(data.len()));
    data[..input.len()].copy_from_slice(&input);
    input.len()
}
