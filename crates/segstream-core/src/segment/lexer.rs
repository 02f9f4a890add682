//! Tokens of the condition language, and the map from condition text to file offsets.
//!
//! A condition sits inside a TOML string. The lexer works on the decoded string and turns
//! every token's position into a [`Span`] of the whole file through an [`OffsetMap`], so
//! the parser never sees string-relative offsets.

use std::fmt;

use super::ast::{CmpOp, Span};

/// Maps byte offsets in a decoded string (a condition) to byte offsets in the file.
///
/// It is built from pieces, in order: *verbatim* runs, where the decoded bytes are the
/// file bytes; *escapes*, where some file bytes decode to one character (`\"`, `\u00e9`,
/// a CRLF that decodes to `\n`); and *skipped* file bytes that decode to nothing (the
/// line-ending backslash of a TOML multi-line basic string). Offsets past the last piece
/// continue verbatim, so [`OffsetMap::new`] alone maps `offset` to `base + offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetMap {
    pieces: Vec<Piece>,
    /// Decoded and file offsets after the last piece.
    dec_end: usize,
    file_end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    dec: usize,
    dec_len: usize,
    file: usize,
    file_len: usize,
    verbatim: bool,
}

impl OffsetMap {
    /// A map for text that starts at byte `base` of the file and is (so far) verbatim.
    pub fn new(base: usize) -> Self {
        OffsetMap {
            pieces: Vec::new(),
            dec_end: 0,
            file_end: base,
        }
    }

    /// The next `len` decoded bytes are the same bytes in the file.
    pub fn push_verbatim(&mut self, len: usize) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.pieces.last_mut() {
            if last.verbatim && last.dec + last.dec_len == self.dec_end {
                // Merge with the previous verbatim run if nothing was skipped in between.
                if last.file + last.file_len == self.file_end {
                    last.dec_len += len;
                    last.file_len += len;
                    self.dec_end += len;
                    self.file_end += len;
                    return;
                }
            }
        }
        self.push(len, len, true);
    }

    /// The next `dec_len` decoded bytes (one character) come from `file_len` file bytes.
    pub fn push_escape(&mut self, dec_len: usize, file_len: usize) {
        self.push(dec_len, file_len, false);
    }

    /// The next `file_len` file bytes decode to nothing.
    pub fn skip(&mut self, file_len: usize) {
        self.file_end += file_len;
    }

    fn push(&mut self, dec_len: usize, file_len: usize, verbatim: bool) {
        self.pieces.push(Piece {
            dec: self.dec_end,
            dec_len,
            file: self.file_end,
            file_len,
            verbatim,
        });
        self.dec_end += dec_len;
        self.file_end += file_len;
    }

    /// The file offset where the decoded character at `offset` begins.
    pub fn start(&self, offset: usize) -> usize {
        let i = self.pieces.partition_point(|p| p.dec + p.dec_len <= offset);
        match self.pieces.get(i) {
            Some(p) if p.dec <= offset => {
                if p.verbatim {
                    p.file + (offset - p.dec)
                } else {
                    p.file
                }
            }
            Some(p) => p.file,
            None => self.file_end + (offset - self.dec_end.min(offset)),
        }
    }

    /// The file offset just after the decoded character that ends at `offset`.
    pub fn end(&self, offset: usize) -> usize {
        if offset == 0 {
            return self.start(0);
        }
        let i = self.pieces.partition_point(|p| p.dec + p.dec_len < offset);
        match self.pieces.get(i) {
            Some(p) if p.dec < offset => {
                if p.verbatim {
                    p.file + (offset - p.dec)
                } else {
                    p.file + p.file_len
                }
            }
            _ => self.start(offset),
        }
    }

    /// The file span of the decoded range `start..end`.
    pub fn span(&self, start: usize, end: usize) -> Span {
        if start >= end {
            let at = self.start(start);
            return Span::new(at, at);
        }
        Span::new(self.start(start), self.end(end))
    }
}

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenKind {
    /// `[A-Za-z_][A-Za-z0-9_.:]*`, including keywords.
    Ident(String),
    /// A double-quoted string, decoded.
    Str(String),
    Num(f64),
    /// A duration such as `24h` or `1h30m`, in milliseconds.
    Duration(i64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Cmp(CmpOp),
    Plus,
    Minus,
    Star,
    Slash,
    /// Text that is not a token; the message says why. Lexing stops here.
    Error(String),
    Eof,
}

/// A token with its text in the condition and its span in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub kind: TokenKind,
    /// The token's text as written in the (decoded) condition.
    pub text: String,
    /// Where the token is in the (decoded) condition text.
    pub range: std::ops::Range<usize>,
    /// Where the token is in the file.
    pub span: Span,
}

impl Token {
    /// The identifier text, if this is an identifier (keyword or not).
    pub fn ident(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::Ident(s) => Some(s),
            _ => None,
        }
    }

    /// True if this is the keyword (or identifier) `word`.
    pub fn is_word(&self, word: &str) -> bool {
        self.ident() == Some(word)
    }
}

impl fmt::Display for Token {
    /// How the token is named in error messages: `` `within` ``, `end of input`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TokenKind::Eof => f.write_str("end of input"),
            _ => write!(f, "`{}`", self.text),
        }
    }
}

/// The reserved words of the condition language; none can be an event or property name.
pub const KEYWORDS: &[&str] = &[
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
];

pub fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == ':'
}

/// Milliseconds per duration unit, longest unit names first.
const UNITS: &[(&str, i64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];

/// Scans `digits unit { digits unit }` at the start of `text`. Returns the value (`None`
/// on overflow) and the length scanned, or `None` if `text` does not start with
/// `digits unit`.
fn scan_duration(text: &str) -> Option<(Option<i64>, usize)> {
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut total: Option<i64> = Some(0);
    loop {
        let digits = bytes[pos..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            break;
        }
        let rest = &text[pos + digits..];
        let Some(&(unit, ms)) = UNITS.iter().find(|(u, _)| rest.starts_with(u)) else {
            break;
        };
        let value = text[pos..pos + digits]
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(ms));
        total = total.and_then(|t| value.and_then(|v| t.checked_add(v)));
        pos += digits + unit.len();
    }
    (pos > 0).then_some((total, pos))
}

/// Splits a condition into tokens. The list always ends with an [`TokenKind::Eof`] token,
/// or with a [`TokenKind::Error`] token where the text stops making sense.
pub fn tokenize(src: &str, map: &OffsetMap) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut pos = 0;
    let bytes = src.as_bytes();
    let token = |kind, start: usize, end: usize| Token {
        kind,
        text: src[start..end].to_string(),
        range: start..end,
        span: map.span(start, end),
    };
    loop {
        // Skip whitespace and comments.
        while pos < src.len() {
            let c = src[pos..].chars().next().unwrap_or(' ');
            if c.is_whitespace() {
                pos += c.len_utf8();
            } else if c == '#' {
                pos = src[pos..].find('\n').map_or(src.len(), |n| pos + n);
            } else {
                break;
            }
        }
        let start = pos;
        let Some(c) = src[pos..].chars().next() else {
            tokens.push(token(TokenKind::Eof, start, start));
            return tokens;
        };
        let next = bytes.get(pos + 1).copied();
        let (kind, len) = match c {
            '(' => (TokenKind::LParen, 1),
            ')' => (TokenKind::RParen, 1),
            '[' => (TokenKind::LBracket, 1),
            ']' => (TokenKind::RBracket, 1),
            ',' => (TokenKind::Comma, 1),
            '+' => (TokenKind::Plus, 1),
            '-' => (TokenKind::Minus, 1),
            '*' => (TokenKind::Star, 1),
            '/' => (TokenKind::Slash, 1),
            '=' if next == Some(b'=') => (TokenKind::Cmp(CmpOp::Eq), 2),
            '=' => (TokenKind::Cmp(CmpOp::Eq), 1),
            '!' if next == Some(b'=') => (TokenKind::Cmp(CmpOp::Ne), 2),
            '<' if next == Some(b'=') => (TokenKind::Cmp(CmpOp::Le), 2),
            '<' => (TokenKind::Cmp(CmpOp::Lt), 1),
            '>' if next == Some(b'=') => (TokenKind::Cmp(CmpOp::Ge), 2),
            '>' => (TokenKind::Cmp(CmpOp::Gt), 1),
            '"' => lex_string(&src[pos..]),
            c if c.is_ascii_digit() => lex_number(&src[pos..]),
            c if is_ident_start(c) => {
                let len = src[pos..]
                    .find(|c: char| !is_ident_char(c))
                    .unwrap_or(src.len() - pos);
                (TokenKind::Ident(src[pos..pos + len].to_string()), len)
            }
            '!' => (
                TokenKind::Error("unexpected character `!`; did you mean `!=` or `not`?".into()),
                1,
            ),
            '&' | '|' => {
                let word = if c == '&' { "and" } else { "or" };
                let len = if next == Some(c as u8) { 2 } else { 1 };
                let msg = format!("unexpected `{}`; use `{word}`", &src[pos..pos + len]);
                (TokenKind::Error(msg), len)
            }
            '\'' => (
                TokenKind::Error(
                    "unexpected character `'`; strings use double quotes: \"...\"".into(),
                ),
                1,
            ),
            c => (
                TokenKind::Error(format!("unexpected character `{}`", c.escape_debug())),
                c.len_utf8(),
            ),
        };
        pos += len;
        let stop = matches!(kind, TokenKind::Error(_));
        tokens.push(token(kind, start, pos));
        if stop {
            return tokens;
        }
    }
}

/// Lexes a string starting at its opening quote. Returns the token and its length.
fn lex_string(text: &str) -> (TokenKind, usize) {
    let mut value = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (TokenKind::Str(value), i + 1),
            '\\' => match chars.next() {
                Some((_, '"')) => value.push('"'),
                Some((_, '\\')) => value.push('\\'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((j, e)) => {
                    let msg = format!(
                        "unknown escape `\\{}` in string; use `\\\"`, `\\\\`, `\\n` or `\\t`",
                        e.escape_debug()
                    );
                    return (TokenKind::Error(msg), j + e.len_utf8());
                }
                None => break,
            },
            '\n' => {
                return (
                    TokenKind::Error("unterminated string (strings end on the same line)".into()),
                    i,
                )
            }
            c => value.push(c),
        }
    }
    (
        TokenKind::Error("unterminated string: missing closing `\"`".into()),
        text.len(),
    )
}

/// Lexes a number or a duration starting at a digit. Returns the token and its length.
fn lex_number(text: &str) -> (TokenKind, usize) {
    let word_len = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(text.len());
    let word = &text[..word_len];
    if let Some((ms, len)) = scan_duration(word) {
        if len == word.len() {
            return match ms {
                Some(ms) => (TokenKind::Duration(ms), len),
                None => (
                    TokenKind::Error(format!("duration `{word}` is too large")),
                    len,
                ),
            };
        }
    }
    let digits = word.bytes().take_while(|b| b.is_ascii_digit()).count();
    let mut len = digits;
    if word[len..].starts_with('.') {
        let frac = word[len + 1..]
            .bytes()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if frac > 0 {
            len += 1 + frac;
        }
    }
    if len == word.len() {
        return match word.parse::<f64>() {
            Ok(n) if n.is_finite() => (TokenKind::Num(n), len),
            _ => (TokenKind::Error(format!("invalid number `{word}`")), len),
        };
    }
    let msg = if word.contains('.') {
        format!("invalid number `{word}`")
    } else {
        format!(
            "invalid number or duration `{word}`; durations are whole numbers with a unit \
             (`ms`, `s`, `m`, `h`, `d`, `w`), e.g. `30d` or `1h30m`"
        )
    };
    (TokenKind::Error(msg), word_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src, &OffsetMap::new(0))
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    fn ident(s: &str) -> TokenKind {
        TokenKind::Ident(s.into())
    }

    #[test]
    fn punctuation_and_operators() {
        use TokenKind::*;
        assert_eq!(
            kinds("( ) [ ] , = == != < <= > >= + - * /"),
            vec![
                LParen,
                RParen,
                LBracket,
                RBracket,
                Comma,
                Cmp(CmpOp::Eq),
                Cmp(CmpOp::Eq),
                Cmp(CmpOp::Ne),
                Cmp(CmpOp::Lt),
                Cmp(CmpOp::Le),
                Cmp(CmpOp::Gt),
                Cmp(CmpOp::Ge),
                Plus,
                Minus,
                Star,
                Slash,
                Eof
            ]
        );
        assert_eq!(
            kinds("a>=3"),
            vec![ident("a"), Cmp(CmpOp::Ge), Num(3.0), Eof]
        );
    }

    #[test]
    fn identifiers_with_dots_and_colons() {
        assert_eq!(
            kinds("trait.role profile.revenue _x a:b.c9 not"),
            vec![
                ident("trait.role"),
                ident("profile.revenue"),
                ident("_x"),
                ident("a:b.c9"),
                ident("not"),
                TokenKind::Eof
            ]
        );
    }

    #[test]
    fn numbers_and_durations() {
        use TokenKind::*;
        assert_eq!(
            kinds("3 0.5 10000 24h 30d 2w 1h30m 250ms 10s 5m"),
            vec![
                Num(3.0),
                Num(0.5),
                Num(10000.0),
                Duration(24 * 3_600_000),
                Duration(30 * 86_400_000),
                Duration(2 * 604_800_000),
                Duration(90 * 60_000),
                Duration(250),
                Duration(10_000),
                Duration(300_000),
                Eof
            ]
        );
        assert_eq!(crate::time::parse_duration("1d12h"), Some(36 * 3_600_000));
        assert_eq!(crate::time::parse_duration("1m1ms"), Some(60_001));
        assert_eq!(crate::time::parse_duration("30"), None);
        assert_eq!(crate::time::parse_duration("30x"), None);
        assert_eq!(crate::time::parse_duration("h"), None);
        assert_eq!(crate::time::parse_duration(""), None);
        assert_eq!(crate::time::parse_duration("99999999999999999999d"), None);
    }

    #[test]
    fn bad_numbers() {
        let t = tokenize("x > 3x", &OffsetMap::new(0));
        assert!(matches!(&t[2].kind, TokenKind::Error(m) if m.contains("`3x`")));
        assert_eq!(t[2].span, Span::new(4, 6));
        assert_eq!(t.len(), 3);
        let t = tokenize("1.5h", &OffsetMap::new(0));
        assert!(matches!(&t[0].kind, TokenKind::Error(m) if m == "invalid number `1.5h`"));
        let t = tokenize("1h30", &OffsetMap::new(0));
        assert!(matches!(&t[0].kind, TokenKind::Error(m) if m.contains("`1h30`")));
        let t = tokenize("99999999999999999999d", &OffsetMap::new(0));
        assert!(matches!(&t[0].kind, TokenKind::Error(m) if m.contains("too large")));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            kinds(r#""a \"b\" \\ \n \t" """#),
            vec![
                TokenKind::Str("a \"b\" \\ \n \t".into()),
                TokenKind::Str(String::new()),
                TokenKind::Eof
            ]
        );
        let t = tokenize(r#"x = "abc"#, &OffsetMap::new(0));
        assert!(matches!(&t[2].kind, TokenKind::Error(m) if m.contains("unterminated")));
        assert_eq!(t[2].span, Span::new(4, 8));
        let t = tokenize(r#""a\qb""#, &OffsetMap::new(0));
        assert!(matches!(&t[0].kind, TokenKind::Error(m) if m.contains("`\\q`")));
        assert_eq!(t[0].span, Span::new(0, 4));
    }

    #[test]
    fn comments_and_whitespace() {
        assert_eq!(
            kinds("a # comment ( \"\n\t b # end"),
            vec![ident("a"), ident("b"), TokenKind::Eof]
        );
    }

    #[test]
    fn unknown_characters() {
        let t = tokenize("a @ b", &OffsetMap::new(10));
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].span, Span::new(12, 13));
        assert!(matches!(&t[1].kind, TokenKind::Error(m) if m == "unexpected character `@`"));
        let t = tokenize("a && b", &OffsetMap::new(0));
        assert!(matches!(&t[1].kind, TokenKind::Error(m) if m.contains("use `and`")));
        assert_eq!(t[1].span, Span::new(2, 4));
    }

    #[test]
    fn spans_are_shifted_by_the_map() {
        let t = tokenize("count(a, 30d)", &OffsetMap::new(100));
        let spans: Vec<Span> = t.iter().map(|t| t.span).collect();
        assert_eq!(
            spans,
            vec![
                Span::new(100, 105),
                Span::new(105, 106),
                Span::new(106, 107),
                Span::new(107, 108),
                Span::new(109, 112),
                Span::new(112, 113),
                Span::new(113, 113),
            ]
        );
        assert_eq!(t[4].text, "30d");
        assert_eq!(t[0].to_string(), "`count`");
        assert_eq!(t[6].to_string(), "end of input");
    }

    #[test]
    fn offset_map_with_escapes_and_skips() {
        // File: `"a\"b` then a skipped `\<newline>  ` then `cd"`; decoded: `a"bcd`.
        //  file offsets: 10 `"`, 11 a, 12-13 \", 14 b, 15-18 skipped, 19 c, 20 d
        let mut m = OffsetMap::new(11);
        m.push_verbatim(1); // a
        m.push_escape(1, 2); // "
        m.push_verbatim(1); // b
        m.skip(4);
        m.push_verbatim(2); // cd
        assert_eq!(m.start(0), 11);
        assert_eq!(m.start(1), 12);
        assert_eq!(m.start(2), 14);
        assert_eq!(m.start(3), 19);
        assert_eq!(m.start(4), 20);
        assert_eq!(m.start(5), 21);
        assert_eq!(m.end(1), 12);
        assert_eq!(m.end(2), 14);
        assert_eq!(m.end(3), 15); // just after `b`, before the skipped bytes
        assert_eq!(m.end(5), 21);
        assert_eq!(m.span(1, 2), Span::new(12, 14));
        assert_eq!(m.span(0, 5), Span::new(11, 21));
        assert_eq!(m.span(5, 5), Span::new(21, 21));
        // Beyond the pieces: verbatim.
        assert_eq!(m.start(7), 23);
    }

    #[test]
    fn offset_map_merges_verbatim_runs() {
        let mut m = OffsetMap::new(5);
        m.push_verbatim(2);
        m.push_verbatim(3);
        assert_eq!(m.pieces.len(), 1);
        assert_eq!(m.span(0, 5), Span::new(5, 10));
    }
}
