//! Recursive-descent parser for segment conditions and event filters.
//!
//! Both entry points take the decoded text and an [`OffsetMap`] from that text to the
//! file, and return nodes whose spans are byte offsets into the whole file. On error they
//! return the span of the offending token (or, for "expected a comparison after X", the
//! span of X) and a message.

use super::ast::{
    Absence, ArithOp, Deadline, Expr, Filter, Literal, Operand, Pattern, Span, Spanned, Window,
};
use super::lexer::{is_keyword, tokenize, OffsetMap, Token, TokenKind};
use super::suggest::suggest;

/// A syntax error: the span (in the file) of the offending text, and a message.
pub type ParseError = (Span, String);

/// Parses a segment condition.
pub fn parse_condition(src: &str, map: &OffsetMap) -> Result<Spanned<Expr>, ParseError> {
    let mut p = Parser::new(src, map, "end of condition");
    let result = p.condition().and_then(|e| {
        p.expect_end("`and`, `or` or the end of the condition")?;
        Ok(e)
    });
    result.map_err(|e| (e.span, e.msg))
}

/// Parses an event filter (the part of a pattern between parentheses, or a scoring rule's
/// `where`).
pub fn parse_filter(src: &str, map: &OffsetMap) -> Result<Spanned<Filter>, ParseError> {
    let mut p = Parser::new(src, map, "end of filter");
    let result = p.filter().and_then(|f| {
        p.expect_end("`and`, `or` or the end of the filter")?;
        Ok(f)
    });
    result.map_err(|e| (e.span, e.msg))
}

/// How deeply `not` and parentheses may nest, so that a pathological input cannot overflow
/// the stack.
const MAX_DEPTH: usize = 32;

/// How many arithmetic operators (`+ - * /`) one condition may have. A chain
/// `a + b + c ...` is parsed by a loop but becomes a tree as deep as it is long, which the
/// compiler and the engine walk recursively: without a limit a long enough chain
/// overflows the stack.
const MAX_OPERATORS: usize = 256;

/// Function names, for "did you mean" hints.
const FUNCTIONS: &[&str] = &["count", "sum", "since", "since_first", "in_segment"];

/// An error while parsing, with the token index reached (to pick the better of two
/// alternatives when backtracking).
#[derive(Debug)]
struct PErr {
    span: Span,
    msg: String,
    at: usize,
}

type PResult<T> = Result<T, PErr>;

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    /// How the end of input is called in messages.
    end_name: &'static str,
    /// Current nesting of `not` and parentheses, limited by [`MAX_DEPTH`].
    depth: usize,
    /// Arithmetic operators parsed so far, limited by [`MAX_OPERATORS`].
    operators: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, map: &OffsetMap, end_name: &'static str) -> Self {
        Parser {
            src,
            tokens: tokenize(src, map),
            pos: 0,
            end_name,
            depth: 0,
            operators: 0,
        }
    }

    // ---- token helpers ----

    fn peek(&self) -> &Token {
        &self.tokens[self.pos]
    }

    fn peek_at(&self, n: usize) -> &Token {
        let i = (self.pos + n).min(self.tokens.len() - 1);
        &self.tokens[i]
    }

    /// Returns the current token and moves on (never past the last token).
    fn bump(&mut self) -> Token {
        let t = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn at_word(&self, word: &str) -> bool {
        self.peek().is_word(word)
    }

    fn eat_word(&mut self, word: &str) -> Option<Token> {
        if self.at_word(word) {
            Some(self.bump())
        } else {
            None
        }
    }

    fn describe(&self, t: &Token) -> String {
        match t.kind {
            TokenKind::Eof => self.end_name.to_string(),
            _ => format!("`{}`", t.text),
        }
    }

    fn err(&self, span: Span, msg: impl Into<String>) -> PErr {
        PErr {
            span,
            msg: msg.into(),
            at: self.pos,
        }
    }

    /// "expected X, found <current token>", or the lexer's message if the current token
    /// is not a token at all.
    fn expected(&self, what: &str) -> PErr {
        let t = self.peek();
        match &t.kind {
            TokenKind::Error(msg) => self.err(t.span, msg.clone()),
            _ => self.err(
                t.span,
                format!("expected {what}, found {}", self.describe(t)),
            ),
        }
    }

    fn expect(&mut self, kind: &TokenKind, what: &str) -> PResult<Token> {
        if &self.peek().kind == kind {
            Ok(self.bump())
        } else {
            Err(self.expected(what))
        }
    }

    fn expect_end(&self, what: &str) -> PResult<()> {
        match self.peek().kind {
            TokenKind::Eof => Ok(()),
            _ => Err(self.expected(what)),
        }
    }

    /// The condition text from token `from` up to (not including) token `to`, with runs
    /// of whitespace collapsed and long texts shortened.
    fn text_between(&self, from: usize, to: usize) -> String {
        if to <= from {
            return String::new();
        }
        let start = self.tokens[from].range.start;
        let end = self.tokens[to - 1].range.end;
        let text = self.src[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if text.chars().count() > 40 {
            let short: String = text.chars().take(37).collect();
            format!("{short}...")
        } else {
            text
        }
    }

    /// Runs `f` one level deeper, failing if the input nests too deeply.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.depth >= MAX_DEPTH {
            let span = self.peek().span;
            return Err(self.err(
                span,
                format!("the condition is nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    // ---- conditions ----

    fn condition(&mut self) -> PResult<Spanned<Expr>> {
        let first = self.and()?;
        if !self.at_word("or") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_word("or").is_some() {
            items.push(self.and()?);
        }
        let span = items[0].span.to(items[items.len() - 1].span);
        Ok(Spanned::new(Expr::Or(items), span))
    }

    fn and(&mut self) -> PResult<Spanned<Expr>> {
        let first = self.unary()?;
        if !self.at_word("and") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_word("and").is_some() {
            items.push(self.unary()?);
        }
        let span = items[0].span.to(items[items.len() - 1].span);
        Ok(Spanned::new(Expr::And(items), span))
    }

    fn unary(&mut self) -> PResult<Spanned<Expr>> {
        if let Some(not) = self.eat_word("not") {
            let inner = self.nested(Self::unary)?;
            let span = not.span.to(inner.span);
            return Ok(Spanned::new(Expr::Not(Box::new(inner)), span));
        }
        self.primary()
    }

    fn primary(&mut self) -> PResult<Spanned<Expr>> {
        let tok = self.peek().clone();
        match &tok.kind {
            TokenKind::LParen => self.paren_primary(),
            TokenKind::Ident(w) if w == "in_segment" => self.in_segment(),
            TokenKind::Ident(w) if (w == "true" || w == "false") && !self.operator_at(1) => {
                self.bump();
                Ok(Spanned::new(Expr::Bool(w == "true"), tok.span))
            }
            TokenKind::Ident(w) if is_event_name(w) => {
                let start = self.pos;
                self.absence().map_err(|e| self.function_hint(start, e))
            }
            TokenKind::Str(_)
                if matches!(self.peek_at(1).kind, TokenKind::LParen)
                    || self.peek_at(1).is_word("then") =>
            {
                self.absence()
            }
            _ if self.operand_start() => self.comparison(true),
            _ => Err(self.expected("a condition")),
        }
    }

    /// A primary starting with `(`.
    fn paren_primary(&mut self) -> PResult<Spanned<Expr>> {
        // Either a parenthesised operand that is compared, `(a + b) >= 5`, or a
        // parenthesised condition. Try the first, then the second; if both fail,
        // report the error that got further.
        let (start, operators) = (self.pos, self.operators);
        let first = match self.comparison(false) {
            Ok(e) => return Ok(e),
            Err(e) => e,
        };
        (self.pos, self.operators) = (start, operators);
        let second = match self.paren_condition() {
            Ok(e) => return Ok(e),
            Err(e) => e,
        };
        Err(if first.at > second.at { first } else { second })
    }

    /// True if the current token can start an operand.
    fn operand_start(&self) -> bool {
        match &self.peek().kind {
            TokenKind::Num(_)
            | TokenKind::Minus
            | TokenKind::Str(_)
            | TokenKind::Duration(_)
            | TokenKind::LParen => true,
            TokenKind::Ident(w) => {
                ["trait.", "traits.", "profile."]
                    .iter()
                    .any(|p| w.starts_with(p))
                    || [
                        "true",
                        "false",
                        "score",
                        "count",
                        "sum",
                        "since",
                        "since_first",
                    ]
                    .contains(&w.as_str())
            }
            _ => false,
        }
    }

    /// True if the token `n` ahead continues an operand into a comparison.
    fn operator_at(&self, n: usize) -> bool {
        let t = self.peek_at(n);
        matches!(
            t.kind,
            TokenKind::Cmp(_)
                | TokenKind::Plus
                | TokenKind::Minus
                | TokenKind::Star
                | TokenKind::Slash
        ) || ["in", "contains", "prefix", "starts_with", "exists"]
            .iter()
            .any(|w| t.is_word(w))
    }

    /// If an absence parse starting at `start` failed on `name(`, and `name` looks like a
    /// misspelt function, say so instead.
    fn function_hint(&self, start: usize, e: PErr) -> PErr {
        let tok = &self.tokens[start];
        let next = &self.tokens[(start + 1).min(self.tokens.len() - 1)];
        if next.kind != TokenKind::LParen {
            return e;
        }
        // Only when the error is inside the parentheses after the name.
        let mut depth = 0usize;
        for (i, t) in self.tokens.iter().enumerate().skip(start + 1) {
            match t.kind {
                TokenKind::LParen => depth += 1,
                TokenKind::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        if e.at > i {
                            return e;
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(name) = tok.ident() else { return e };
        match suggest(name, FUNCTIONS.iter().copied()) {
            Some(f) => PErr {
                span: tok.span,
                msg: format!("unknown function `{name}`; did you mean `{f}`?"),
                at: e.at,
            },
            None => e,
        }
    }

    fn paren_condition(&mut self) -> PResult<Spanned<Expr>> {
        let open = self.expect(&TokenKind::LParen, "`(`")?;
        let inner = self.nested(Self::condition)?;
        let close = self.expect(&TokenKind::RParen, "`)` to close the parenthesis")?;
        Ok(Spanned::new(inner.node, open.span.to(close.span)))
    }

    fn in_segment(&mut self) -> PResult<Spanned<Expr>> {
        let kw = self.bump();
        self.expect(&TokenKind::LParen, "`(` after `in_segment`")?;
        let name = self.string("a segment name in double quotes in `in_segment(...)`")?;
        let close = self.expect(&TokenKind::RParen, "`)` after the segment name")?;
        Ok(Spanned::new(Expr::InSegment(name), kw.span.to(close.span)))
    }

    /// `operand` followed by a comparison; a bare `trait.X` / `profile.X` is `Truthy` when
    /// `allow_truthy`.
    fn comparison(&mut self, allow_truthy: bool) -> PResult<Spanned<Expr>> {
        let start = self.pos;
        let lhs = self.operand()?;
        let end = self.pos;
        let tok = self.peek().clone();
        match &tok.kind {
            TokenKind::Cmp(op) => {
                self.bump();
                let rhs = self.operand()?;
                let span = lhs.span.to(rhs.span);
                Ok(Spanned::new(Expr::Compare { lhs, op: *op, rhs }, span))
            }
            TokenKind::Ident(w) if w == "in" => {
                self.bump();
                let (list, close) = self.literal_list()?;
                let span = lhs.span.to(close);
                Ok(Spanned::new(Expr::In { lhs, list }, span))
            }
            TokenKind::Ident(w) if w == "contains" => {
                self.bump();
                let needle = self.string("a string in double quotes after `contains`")?;
                let span = lhs.span.to(needle.span);
                Ok(Spanned::new(Expr::Contains { lhs, needle }, span))
            }
            TokenKind::Ident(w) if w == "prefix" || w == "starts_with" => {
                self.bump();
                let prefix = self.string(&format!("a string in double quotes after `{w}`"))?;
                let span = lhs.span.to(prefix.span);
                Ok(Spanned::new(Expr::Prefix { lhs, prefix }, span))
            }
            TokenKind::Ident(w) if w == "exists" => {
                self.bump();
                let span = lhs.span.to(tok.span);
                Ok(Spanned::new(Expr::Exists(lhs), span))
            }
            TokenKind::Error(_) => Err(self.expected("")),
            _ if allow_truthy && matches!(lhs.node, Operand::Trait(_) | Operand::Attr(_)) => {
                let span = lhs.span;
                Ok(Spanned::new(Expr::Truthy(lhs), span))
            }
            _ => Err(self.err(
                lhs.span,
                format!(
                    "expected a comparison after `{}`, found {}",
                    self.text_between(start, end),
                    self.describe(&tok)
                ),
            )),
        }
    }

    /// Counts one more arithmetic operator (the current token), failing past
    /// [`MAX_OPERATORS`].
    fn operator(&mut self) -> PResult<()> {
        if self.operators >= MAX_OPERATORS {
            let span = self.peek().span;
            return Err(self.err(
                span,
                format!("too many arithmetic operators (more than {MAX_OPERATORS})"),
            ));
        }
        self.operators += 1;
        Ok(())
    }

    /// `operand := term { ("+" | "-") term }`
    fn operand(&mut self) -> PResult<Spanned<Operand>> {
        let mut lhs = self.term()?;
        loop {
            let op = match self.peek().kind {
                TokenKind::Plus => ArithOp::Add,
                TokenKind::Minus => ArithOp::Sub,
                _ => return Ok(lhs),
            };
            self.operator()?;
            self.bump();
            let rhs = self.term()?;
            lhs = arith(op, lhs, rhs);
        }
    }

    /// `term := factor { ("*" | "/") factor }`
    fn term(&mut self) -> PResult<Spanned<Operand>> {
        let mut lhs = self.factor()?;
        loop {
            let op = match self.peek().kind {
                TokenKind::Star => ArithOp::Mul,
                TokenKind::Slash => ArithOp::Div,
                _ => return Ok(lhs),
            };
            self.operator()?;
            self.bump();
            let rhs = self.factor()?;
            lhs = arith(op, lhs, rhs);
        }
    }

    fn factor(&mut self) -> PResult<Spanned<Operand>> {
        let tok = self.peek().clone();
        let lit = |l: Literal, span: Span| Ok(Spanned::new(Operand::Literal(l), span));
        match &tok.kind {
            TokenKind::Num(_) | TokenKind::Minus | TokenKind::Str(_) | TokenKind::Duration(_) => {
                let l = self.literal("an operand")?;
                lit(l.node, l.span)
            }
            TokenKind::LParen => {
                self.bump();
                let inner = self.nested(Self::operand)?;
                let close = self.expect(&TokenKind::RParen, "`)`")?;
                Ok(Spanned::new(inner.node, tok.span.to(close.span)))
            }
            TokenKind::Ident(w) => {
                let w = w.as_str();
                if w == "true" || w == "false" {
                    self.bump();
                    return lit(Literal::Bool(w == "true"), tok.span);
                }
                for (prefix, is_trait) in [("traits.", true), ("trait.", true), ("profile.", false)]
                {
                    if let Some(rest) = w.strip_prefix(prefix) {
                        if rest.is_empty() {
                            let what = if is_trait {
                                "trait"
                            } else {
                                "profile attribute"
                            };
                            return Err(
                                self.err(tok.span, format!("expected a {what} name after `{w}`"))
                            );
                        }
                        self.bump();
                        let node = if is_trait {
                            Operand::Trait(rest.to_string())
                        } else {
                            Operand::Attr(rest.to_string())
                        };
                        return Ok(Spanned::new(node, tok.span));
                    }
                }
                match w {
                    "score" => {
                        self.bump();
                        Ok(Spanned::new(Operand::Score, tok.span))
                    }
                    "count" => self.count(),
                    "sum" => self.sum(),
                    "since" | "since_first" => self.since(w == "since_first"),
                    _ => Err(self.expected("an operand")),
                }
            }
            _ => Err(self.expected("an operand")),
        }
    }

    /// `count "(" pattern "," window ")"`
    fn count(&mut self) -> PResult<Spanned<Operand>> {
        let kw = self.bump();
        self.expect(&TokenKind::LParen, "`(` after `count`")?;
        let pattern = self.pattern()?;
        self.expect(
            &TokenKind::Comma,
            "`,` and a window (such as `30d` or `ever`) after the event in `count(...)`",
        )?;
        let window = self.window()?;
        let close = self.expect(&TokenKind::RParen, "`)` after the window in `count(...)`")?;
        Ok(Spanned::new(
            Operand::Count { pattern, window },
            kw.span.to(close.span),
        ))
    }

    /// `sum "(" pattern "," PROPERTY "," window ")"`
    fn sum(&mut self) -> PResult<Spanned<Operand>> {
        let kw = self.bump();
        self.expect(&TokenKind::LParen, "`(` after `sum`")?;
        let pattern = self.pattern()?;
        self.expect(
            &TokenKind::Comma,
            "`,` and a property name after the event in `sum(...)`",
        )?;
        let property = self.property("the name of the property to add up in `sum(...)`")?;
        self.expect(
            &TokenKind::Comma,
            "`,` and a window (such as `30d` or `ever`) after the property in `sum(...)`",
        )?;
        let window = self.window()?;
        let close = self.expect(&TokenKind::RParen, "`)` after the window in `sum(...)`")?;
        Ok(Spanned::new(
            Operand::Sum {
                pattern,
                property,
                window,
            },
            kw.span.to(close.span),
        ))
    }

    /// `("since" | "since_first") "(" pattern ")"`
    fn since(&mut self, first: bool) -> PResult<Spanned<Operand>> {
        let kw = self.bump();
        self.expect(&TokenKind::LParen, &format!("`(` after `{}`", kw.text))?;
        let pattern = self.pattern()?;
        let close = self.expect(
            &TokenKind::RParen,
            &format!("`)` after the event in `{}(...)`", kw.text),
        )?;
        Ok(Spanned::new(
            Operand::Since { pattern, first },
            kw.span.to(close.span),
        ))
    }

    fn window(&mut self) -> PResult<Spanned<Window>> {
        let tok = self.peek().clone();
        match tok.kind {
            TokenKind::Duration(ms) => {
                self.bump();
                Ok(Spanned::new(Window::Last(ms), tok.span))
            }
            TokenKind::Ident(ref w) if w == "ever" => {
                self.bump();
                Ok(Spanned::new(Window::Ever, tok.span))
            }
            TokenKind::Num(_) => Err(self.err(
                tok.span,
                format!(
                    "expected a window, found `{}`; durations need a unit: \
                     `ms`, `s`, `m`, `h`, `d` or `w` (e.g. `30d`)",
                    tok.text
                ),
            )),
            _ => Err(self.expected("a window (a duration such as `30d`, or `ever`)")),
        }
    }

    /// `pattern := EVENT [ "(" filter ")" ]`
    fn pattern(&mut self) -> PResult<Pattern> {
        let tok = self.peek().clone();
        let name = match &tok.kind {
            TokenKind::Ident(w) if is_event_name(w) => w.clone(),
            TokenKind::Str(s) => s.clone(),
            TokenKind::Ident(w) if is_keyword(w) => {
                return Err(self.err(
                    tok.span,
                    format!(
                        "expected an event name, found keyword `{w}` \
                         (write \"{w}\" in double quotes for an event of that name)"
                    ),
                ))
            }
            _ => return Err(self.expected("an event name")),
        };
        self.bump();
        let event = Spanned::new(name, tok.span);
        let filter = if self.peek().kind == TokenKind::LParen {
            self.bump();
            let f = self.filter()?;
            self.expect(&TokenKind::RParen, "`)` after filter")?;
            Some(f)
        } else {
            None
        };
        Ok(Pattern { event, filter })
    }

    /// `pattern "then" ("no" | "not") pattern [ "with" "same" PROPERTY ] deadline`
    fn absence(&mut self) -> PResult<Spanned<Expr>> {
        let start = self.pos;
        let trigger = self.pattern()?;
        if self.eat_word("then").is_none() {
            let event = self.text_between(start, self.pos);
            let hint = if self.operator_at(0) {
                format!("; to compare a number of events, use `count({event}, 30d)`")
            } else {
                String::new()
            };
            let e = self.expected(&format!("`then` after event `{event}`"));
            return Err(PErr {
                msg: e.msg + &hint,
                ..e
            });
        }
        if self.eat_word("no").is_none() && self.eat_word("not").is_none() {
            return Err(self.expected("`no` after `then`"));
        }
        let cancel = self.pattern()?;
        let correlate = if self.eat_word("with").is_some() {
            if self.eat_word("same").is_none() {
                return Err(self.expected("`same` after `with`"));
            }
            Some(self.property("a property name after `with same`")?)
        } else {
            None
        };
        let tok = self.peek().clone();
        let deadline = if tok.is_word("within") {
            self.bump();
            let d = self.peek().clone();
            match d.kind {
                TokenKind::Duration(ms) => {
                    self.bump();
                    Spanned::new(Deadline::Within(ms), tok.span.to(d.span))
                }
                _ => return Err(self.expected("a duration (such as `24h`) after `within`")),
            }
        } else if tok.is_word("until") {
            self.bump();
            let p = self.property("a timestamp property name after `until`")?;
            let span = tok.span.to(p.span);
            Spanned::new(Deadline::Until(p.node), span)
        } else {
            let what = if correlate.is_some() {
                "`within DURATION` or `until PROPERTY`"
            } else {
                "`with same PROPERTY`, `within DURATION` or `until PROPERTY`"
            };
            return Err(self.expected(&format!("{what} after `then no EVENT`")));
        };
        let span = trigger.event.span.to(deadline.span);
        Ok(Spanned::new(
            Expr::Absence(Absence {
                trigger,
                cancel,
                correlate,
                deadline,
            }),
            span,
        ))
    }

    // ---- filters ----

    fn filter(&mut self) -> PResult<Spanned<Filter>> {
        let first = self.f_and()?;
        if !self.at_word("or") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_word("or").is_some() {
            items.push(self.f_and()?);
        }
        let span = items[0].span.to(items[items.len() - 1].span);
        Ok(Spanned::new(Filter::Or(items), span))
    }

    fn f_and(&mut self) -> PResult<Spanned<Filter>> {
        let first = self.f_unary()?;
        if !self.at_word("and") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_word("and").is_some() {
            items.push(self.f_unary()?);
        }
        let span = items[0].span.to(items[items.len() - 1].span);
        Ok(Spanned::new(Filter::And(items), span))
    }

    fn f_unary(&mut self) -> PResult<Spanned<Filter>> {
        if let Some(not) = self.eat_word("not") {
            let inner = self.nested(Self::f_unary)?;
            let span = not.span.to(inner.span);
            return Ok(Spanned::new(Filter::Not(Box::new(inner)), span));
        }
        self.f_primary()
    }

    fn f_primary(&mut self) -> PResult<Spanned<Filter>> {
        if self.peek().kind == TokenKind::LParen {
            let open = self.bump();
            let inner = self.nested(Self::filter)?;
            let close = self.expect(&TokenKind::RParen, "`)` to close the parenthesis")?;
            return Ok(Spanned::new(inner.node, open.span.to(close.span)));
        }
        let property = self.property("a property name")?;
        let tok = self.peek().clone();
        match &tok.kind {
            TokenKind::Cmp(op) => {
                self.bump();
                let value = self.literal(&format!("a value after `{op}`"))?;
                let span = property.span.to(value.span);
                Ok(Spanned::new(
                    Filter::Compare {
                        property,
                        op: *op,
                        value,
                    },
                    span,
                ))
            }
            TokenKind::Ident(w) if w == "in" => {
                self.bump();
                let (list, close) = self.literal_list()?;
                let span = property.span.to(close);
                Ok(Spanned::new(Filter::In { property, list }, span))
            }
            TokenKind::Ident(w) if w == "contains" => {
                self.bump();
                let needle = self.string("a string in double quotes after `contains`")?;
                let span = property.span.to(needle.span);
                Ok(Spanned::new(Filter::Contains { property, needle }, span))
            }
            TokenKind::Ident(w) if w == "prefix" || w == "starts_with" => {
                self.bump();
                let prefix = self.string(&format!("a string in double quotes after `{w}`"))?;
                let span = property.span.to(prefix.span);
                Ok(Spanned::new(Filter::Prefix { property, prefix }, span))
            }
            TokenKind::Ident(w) if w == "exists" => {
                self.bump();
                let span = property.span.to(tok.span);
                Ok(Spanned::new(Filter::Exists(property), span))
            }
            TokenKind::Error(_) => Err(self.expected("")),
            _ => Err(self.err(
                property.span,
                format!(
                    "expected a comparison after property `{}`, found {}",
                    property.node,
                    self.describe(&tok)
                ),
            )),
        }
    }

    // ---- small pieces ----

    /// `PROPERTY := IDENT (not a keyword) | STRING`
    fn property(&mut self, what: &str) -> PResult<Spanned<String>> {
        let tok = self.peek().clone();
        match &tok.kind {
            TokenKind::Ident(w) if is_keyword(w) => Err(self.err(
                tok.span,
                format!(
                    "expected {what}, found keyword `{w}` \
                     (write \"{w}\" in double quotes for a property of that name)"
                ),
            )),
            TokenKind::Ident(w) | TokenKind::Str(w) => {
                self.bump();
                Ok(Spanned::new(w.clone(), tok.span))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn string(&mut self, what: &str) -> PResult<Spanned<String>> {
        let tok = self.peek().clone();
        match tok.kind {
            TokenKind::Str(s) => {
                self.bump();
                Ok(Spanned::new(s, tok.span))
            }
            _ => Err(self.expected(what)),
        }
    }

    /// `literal := NUMBER | "-" NUMBER | STRING | "true" | "false" | DURATION`
    fn literal(&mut self, what: &str) -> PResult<Spanned<Literal>> {
        let tok = self.peek().clone();
        let l = match &tok.kind {
            TokenKind::Num(n) => Literal::Num(*n),
            TokenKind::Str(s) => Literal::Str(s.clone()),
            TokenKind::Duration(ms) => Literal::Duration(*ms),
            TokenKind::Ident(w) if w == "true" || w == "false" => Literal::Bool(w == "true"),
            TokenKind::Minus => {
                self.bump();
                let num = self.peek().clone();
                return match num.kind {
                    TokenKind::Num(n) => {
                        self.bump();
                        Ok(Spanned::new(Literal::Num(-n), tok.span.to(num.span)))
                    }
                    _ => Err(self.expected("a number after `-`")),
                };
            }
            _ => return Err(self.expected(what)),
        };
        self.bump();
        Ok(Spanned::new(l, tok.span))
    }

    /// `"[" literal { "," literal } [","] "]"`; returns the literals and the span of `]`.
    fn literal_list(&mut self) -> PResult<(Vec<Spanned<Literal>>, Span)> {
        self.expect(&TokenKind::LBracket, "`[` after `in`")?;
        let mut list = Vec::new();
        loop {
            if !list.is_empty() && self.peek().kind == TokenKind::RBracket {
                break;
            }
            list.push(self.literal("a value in the list")?);
            match self.peek().kind {
                TokenKind::Comma => {
                    self.bump();
                }
                TokenKind::RBracket => break,
                _ => return Err(self.expected("`,` or `]` in the list")),
            }
        }
        let close = self.bump();
        Ok((list, close.span))
    }
}

fn arith(op: ArithOp, lhs: Spanned<Operand>, rhs: Spanned<Operand>) -> Spanned<Operand> {
    let span = lhs.span.to(rhs.span);
    Spanned::new(
        Operand::Arith {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        },
        span,
    )
}

/// An identifier that can name an event: not a keyword, not a trait or profile attribute.
fn is_event_name(w: &str) -> bool {
    !is_keyword(w)
        && !w.starts_with("trait.")
        && !w.starts_with("traits.")
        && !w.starts_with("profile.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::ast::CmpOp;

    const DAY: i64 = 86_400_000;
    const HOUR: i64 = 3_600_000;

    fn cond(src: &str) -> Spanned<Expr> {
        parse_condition(src, &OffsetMap::new(0))
            .unwrap_or_else(|(span, msg)| panic!("{src:?}: {msg} at {span:?}"))
    }

    fn cond_err(src: &str) -> (Span, String) {
        match parse_condition(src, &OffsetMap::new(0)) {
            Ok(e) => panic!("{src:?} parsed: {e:?}"),
            Err(e) => e,
        }
    }

    fn filter(src: &str) -> Spanned<Filter> {
        parse_filter(src, &OffsetMap::new(0))
            .unwrap_or_else(|(span, msg)| panic!("{src:?}: {msg} at {span:?}"))
    }

    fn filter_err(src: &str) -> (Span, String) {
        match parse_filter(src, &OffsetMap::new(0)) {
            Ok(f) => panic!("{src:?} parsed: {f:?}"),
            Err(e) => e,
        }
    }

    fn sp<T>(node: T, start: usize, end: usize) -> Spanned<T> {
        Spanned::new(node, Span::new(start, end))
    }

    fn s(text: &str, start: usize, end: usize) -> Spanned<String> {
        sp(text.to_string(), start, end)
    }

    /// The text a span covers.
    fn text(src: &str, span: Span) -> &str {
        &src[span.start..span.end]
    }

    const EXAMPLES: &[&str] = &[
        "count(email_open, 30d) >= 3",
        "sum(purchase, amount, 365d) >= 10000",
        "since(page_view) > 60d and since_first(any) > 90d",
        r#"ad_click(campaign = "webinar-q4-ads") then no webinar_registered(webinar_id = "W-2026-12") within 24h"#,
        "webinar_registered then no webinar_attended with same webinar_id until ends_at",
        r#"trait.country in ["DE", "AT", "CH"] and not trait.role exists"#,
        "(count(email_sent, 90d) + 5 * count(webinar_attended, 90d)) >= 20 and sum(purchase, amount, 365d) < 500",
        r#"score >= 50 or in_segment("key-account")"#,
        "profile.opted_out",
        "count(purchase(discount_code exists), 365d) / count(purchase, 365d) >= 0.5",
        r#"count(page_view(url prefix "/pricing" and not utm_source = "email"), 7d) >= 2"#,
    ];

    #[test]
    fn all_examples_parse() {
        for src in EXAMPLES {
            let e = cond(src);
            // The top node spans the whole condition.
            assert_eq!(e.span, Span::new(0, src.len()), "{src}");
        }
    }

    #[test]
    fn count_compare() {
        let src = "count(email_open, 30d) >= 3";
        let expected = sp(
            Expr::Compare {
                lhs: sp(
                    Operand::Count {
                        pattern: Pattern {
                            event: s("email_open", 6, 16),
                            filter: None,
                        },
                        window: sp(Window::Last(30 * DAY), 18, 21),
                    },
                    0,
                    22,
                ),
                op: CmpOp::Ge,
                rhs: sp(Operand::Literal(Literal::Num(3.0)), 26, 27),
            },
            0,
            27,
        );
        assert_eq!(cond(src), expected);
    }

    #[test]
    fn sum_and_ever() {
        let src = "sum(purchase, amount, ever) >= 10000";
        let Expr::Compare { lhs, op, rhs } = cond(src).node else {
            panic!()
        };
        assert_eq!(op, CmpOp::Ge);
        assert_eq!(rhs.node, Operand::Literal(Literal::Num(10000.0)));
        assert_eq!(
            lhs.node,
            Operand::Sum {
                pattern: Pattern {
                    event: s("purchase", 4, 12),
                    filter: None
                },
                property: s("amount", 14, 20),
                window: sp(Window::Ever, 22, 26),
            }
        );
    }

    #[test]
    fn absence_within() {
        let src = r#"ad_click(campaign = "webinar-q4-ads") then no webinar_registered(webinar_id = "W-2026-12") within 24h"#;
        let e = cond(src);
        let Expr::Absence(a) = &e.node else {
            panic!("{e:?}")
        };
        assert_eq!(
            a.trigger,
            Pattern {
                event: s("ad_click", 0, 8),
                filter: Some(sp(
                    Filter::Compare {
                        property: s("campaign", 9, 17),
                        op: CmpOp::Eq,
                        value: sp(Literal::Str("webinar-q4-ads".into()), 20, 36),
                    },
                    9,
                    36
                )),
            }
        );
        assert_eq!(a.cancel.event.node, "webinar_registered");
        assert_eq!(text(src, a.cancel.event.span), "webinar_registered");
        let Some(f) = &a.cancel.filter else { panic!() };
        assert_eq!(text(src, f.span), r#"webinar_id = "W-2026-12""#);
        assert_eq!(a.correlate, None);
        assert_eq!(a.deadline.node, Deadline::Within(24 * HOUR));
        assert_eq!(text(src, a.deadline.span), "within 24h");
    }

    #[test]
    fn absence_with_same_until() {
        let src = "webinar_registered then not webinar_attended with same webinar_id until ends_at";
        let expected = sp(
            Expr::Absence(Absence {
                trigger: Pattern {
                    event: s("webinar_registered", 0, 18),
                    filter: None,
                },
                cancel: Pattern {
                    event: s("webinar_attended", 28, 44),
                    filter: None,
                },
                correlate: Some(s("webinar_id", 55, 65)),
                deadline: sp(Deadline::Until("ends_at".into()), 66, 79),
            }),
            0,
            79,
        );
        assert_eq!(cond(src), expected);
    }

    #[test]
    fn quoted_event_names() {
        let src = r#""page view" then no "sign up" within 1h30m"#;
        let Expr::Absence(a) = cond(src).node else {
            panic!()
        };
        assert_eq!(a.trigger.event.node, "page view");
        assert_eq!(text(src, a.trigger.event.span), "\"page view\"");
        assert_eq!(a.cancel.event.node, "sign up");
        assert_eq!(a.deadline.node, Deadline::Within(90 * 60_000));
        // `any` and `count` spelled as a string are ordinary event names.
        let src = r#"count("count", 1d) > 0 and since(any) < 2w"#;
        cond(src);
    }

    #[test]
    fn in_list_and_not_exists() {
        let src = r#"trait.country in ["DE", "AT", "CH",] and not trait.role exists"#;
        let expected = sp(
            Expr::And(vec![
                sp(
                    Expr::In {
                        lhs: sp(Operand::Trait("country".into()), 0, 13),
                        list: vec![
                            sp(Literal::Str("DE".into()), 18, 22),
                            sp(Literal::Str("AT".into()), 24, 28),
                            sp(Literal::Str("CH".into()), 30, 34),
                        ],
                    },
                    0,
                    36,
                ),
                sp(
                    Expr::Not(Box::new(sp(
                        Expr::Exists(sp(Operand::Trait("role".into()), 45, 55)),
                        45,
                        62,
                    ))),
                    41,
                    62,
                ),
            ]),
            0,
            62,
        );
        assert_eq!(cond(src), expected);
    }

    #[test]
    fn arithmetic_precedence_and_parens() {
        let src = "(count(email_sent, 90d) + 5 * count(webinar_attended, 90d)) >= 20 and sum(purchase, amount, 365d) < 500";
        let Expr::And(items) = cond(src).node else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        let Expr::Compare { lhs, op, rhs } = &items[0].node else {
            panic!()
        };
        assert_eq!(*op, CmpOp::Ge);
        assert_eq!(rhs.node, Operand::Literal(Literal::Num(20.0)));
        // The parenthesised operand spans its parentheses.
        assert_eq!(
            text(src, lhs.span),
            "(count(email_sent, 90d) + 5 * count(webinar_attended, 90d))"
        );
        let Operand::Arith {
            op: ArithOp::Add,
            lhs: add_l,
            rhs: add_r,
        } = &lhs.node
        else {
            panic!("{lhs:?}")
        };
        assert!(matches!(add_l.node, Operand::Count { .. }));
        let Operand::Arith {
            op: ArithOp::Mul,
            lhs: mul_l,
            rhs: mul_r,
        } = &add_r.node
        else {
            panic!("{add_r:?}")
        };
        assert_eq!(mul_l.node, Operand::Literal(Literal::Num(5.0)));
        assert_eq!(text(src, mul_r.span), "count(webinar_attended, 90d)");
        assert_eq!(text(src, add_r.span), "5 * count(webinar_attended, 90d)");
        assert_eq!(
            text(src, items[1].span),
            "sum(purchase, amount, 365d) < 500"
        );
    }

    #[test]
    fn arithmetic_is_left_associative() {
        let src = "score - 1 - 2 > -3";
        let Expr::Compare { lhs, rhs, .. } = cond(src).node else {
            panic!()
        };
        let Operand::Arith {
            op: ArithOp::Sub,
            lhs: inner,
            rhs: two,
        } = lhs.node
        else {
            panic!()
        };
        assert_eq!(text(src, inner.span), "score - 1");
        assert_eq!(two.node, Operand::Literal(Literal::Num(2.0)));
        assert_eq!(rhs, sp(Operand::Literal(Literal::Num(-3.0)), 16, 18));
    }

    #[test]
    fn division_of_counts() {
        let src = "count(purchase(discount_code exists), 365d) / count(purchase, 365d) >= 0.5";
        let Expr::Compare { lhs, rhs, .. } = cond(src).node else {
            panic!()
        };
        assert_eq!(rhs.node, Operand::Literal(Literal::Num(0.5)));
        let Operand::Arith {
            op: ArithOp::Div,
            lhs: num,
            ..
        } = lhs.node
        else {
            panic!()
        };
        let Operand::Count { pattern, window } = num.node else {
            panic!()
        };
        assert_eq!(window.node, Window::Last(365 * DAY));
        assert_eq!(
            pattern.filter,
            Some(sp(Filter::Exists(s("discount_code", 15, 28)), 15, 35))
        );
    }

    #[test]
    fn filter_inside_pattern() {
        let src =
            r#"count(page_view(url prefix "/pricing" and not utm_source = "email"), 7d) >= 2"#;
        let Expr::Compare { lhs, .. } = cond(src).node else {
            panic!()
        };
        let Operand::Count { pattern, .. } = lhs.node else {
            panic!()
        };
        let expected = sp(
            Filter::And(vec![
                sp(
                    Filter::Prefix {
                        property: s("url", 16, 19),
                        prefix: s("/pricing", 27, 37),
                    },
                    16,
                    37,
                ),
                sp(
                    Filter::Not(Box::new(sp(
                        Filter::Compare {
                            property: s("utm_source", 46, 56),
                            op: CmpOp::Eq,
                            value: sp(Literal::Str("email".into()), 59, 66),
                        },
                        46,
                        66,
                    ))),
                    42,
                    66,
                ),
            ]),
            16,
            66,
        );
        assert_eq!(pattern.filter, Some(expected));
    }

    #[test]
    fn since_and_or_chains_are_flat() {
        let src =
            "since(page_view) > 60d and since_first(any) > 90d and score > 1 or true or false";
        let Expr::Or(items) = cond(src).node else {
            panic!()
        };
        assert_eq!(items.len(), 3);
        let Expr::And(ands) = &items[0].node else {
            panic!()
        };
        assert_eq!(ands.len(), 3);
        let Expr::Compare { lhs, rhs, .. } = &ands[1].node else {
            panic!()
        };
        assert_eq!(
            lhs.node,
            Operand::Since {
                pattern: Pattern {
                    event: s("any", 39, 42),
                    filter: None
                },
                first: true
            }
        );
        assert_eq!(rhs.node, Operand::Literal(Literal::Duration(90 * DAY)));
        assert_eq!(items[1], sp(Expr::Bool(true), 67, 71));
        assert_eq!(items[2], sp(Expr::Bool(false), 75, 80));
    }

    #[test]
    fn score_and_in_segment() {
        let src = r#"score >= 50 or in_segment("key-account")"#;
        let expected = sp(
            Expr::Or(vec![
                sp(
                    Expr::Compare {
                        lhs: sp(Operand::Score, 0, 5),
                        op: CmpOp::Ge,
                        rhs: sp(Operand::Literal(Literal::Num(50.0)), 9, 11),
                    },
                    0,
                    11,
                ),
                sp(Expr::InSegment(s("key-account", 26, 39)), 15, 40),
            ]),
            0,
            40,
        );
        assert_eq!(cond(src), expected);
    }

    #[test]
    fn truthy_and_traits() {
        assert_eq!(
            cond("profile.opted_out"),
            sp(
                Expr::Truthy(sp(Operand::Attr("opted_out".into()), 0, 17)),
                0,
                17
            )
        );
        assert_eq!(
            cond("not traits.email_opt_in").node,
            Expr::Not(Box::new(sp(
                Expr::Truthy(sp(Operand::Trait("email_opt_in".into()), 4, 23)),
                4,
                23
            )))
        );
        // A parenthesised truthy operand is a parenthesised condition.
        let e = cond("(profile.opted_out) and trait.x = true");
        let Expr::And(items) = e.node else { panic!() };
        assert_eq!(items[0].span, Span::new(0, 19));
        assert!(matches!(items[0].node, Expr::Truthy(_)));
        let Expr::Compare { rhs, .. } = &items[1].node else {
            panic!()
        };
        assert_eq!(rhs.node, Operand::Literal(Literal::Bool(true)));
    }

    #[test]
    fn contains_prefix_starts_with() {
        let e = cond(
            r#"trait.industry contains "soft" and trait.email starts_with "sales@" and trait.email prefix "x""#,
        );
        let Expr::And(items) = e.node else { panic!() };
        assert!(matches!(&items[0].node, Expr::Contains { needle, .. } if needle.node == "soft"));
        assert!(matches!(&items[1].node, Expr::Prefix { prefix, .. } if prefix.node == "sales@"));
        assert!(matches!(&items[2].node, Expr::Prefix { prefix, .. } if prefix.node == "x"));
    }

    #[test]
    fn parenthesised_conditions_nest() {
        let src =
            "not (score > 1 or (trait.a = 1 and trait.b == 2)) and (count(a, 1d) + 1) * 2 != 4";
        let Expr::And(items) = cond(src).node else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        let Expr::Not(inner) = &items[0].node else {
            panic!()
        };
        assert_eq!(
            text(src, inner.span),
            "(score > 1 or (trait.a = 1 and trait.b == 2))"
        );
        let Expr::Or(ors) = &inner.node else { panic!() };
        assert!(matches!(&ors[1].node, Expr::And(v) if v.len() == 2));
        assert_eq!(text(src, items[1].span), "(count(a, 1d) + 1) * 2 != 4");
    }

    #[test]
    fn comments_and_newlines() {
        let src = "# engaged readers\ncount(email_open, 30d) >= 3 # opened\n  and score > 10\n";
        let e = cond(src);
        assert_eq!(
            text(src, e.span),
            "count(email_open, 30d) >= 3 # opened\n  and score > 10"
        );
    }

    #[test]
    fn spans_go_through_the_offset_map() {
        let e = parse_condition("score > 1", &OffsetMap::new(1000)).unwrap();
        assert_eq!(e.span, Span::new(1000, 1009));
        let (span, _) = parse_condition("score >", &OffsetMap::new(1000)).unwrap_err();
        assert_eq!(span, Span::new(1007, 1007));
    }

    #[test]
    fn filters() {
        let src = r#"url prefix "/pricing" or (price >= -10.5 and category in ["a", 2, true, 1h]) or "utm source" != "x""#;
        let Filter::Or(items) = filter(src).node else {
            panic!()
        };
        assert_eq!(items.len(), 3);
        assert_eq!(
            text(src, items[1].span),
            r#"(price >= -10.5 and category in ["a", 2, true, 1h])"#
        );
        let Filter::And(ands) = &items[1].node else {
            panic!()
        };
        let Filter::Compare { value, .. } = &ands[0].node else {
            panic!()
        };
        assert_eq!(value.node, Literal::Num(-10.5));
        assert_eq!(text(src, value.span), "-10.5");
        let Filter::In { list, .. } = &ands[1].node else {
            panic!()
        };
        assert_eq!(
            list.iter().map(|l| l.node.clone()).collect::<Vec<_>>(),
            vec![
                Literal::Str("a".into()),
                Literal::Num(2.0),
                Literal::Bool(true),
                Literal::Duration(HOUR)
            ]
        );
        let Filter::Compare { property, op, .. } = &items[2].node else {
            panic!()
        };
        assert_eq!(property.node, "utm source");
        assert_eq!(*op, CmpOp::Ne);
        assert!(matches!(
            filter("not not a exists").node,
            Filter::Not(ref f) if matches!(f.node, Filter::Not(_))
        ));
        assert!(matches!(
            filter(r#"a contains "b""#).node,
            Filter::Contains { .. }
        ));
        assert!(matches!(
            filter(r#"a starts_with "b""#).node,
            Filter::Prefix { .. }
        ));
    }

    // ---- errors ----

    /// Asserts an error: its message contains `msg`, and its span is exactly `at`.
    fn assert_err(src: &str, at: &str, offset: usize, msg: &str) {
        let (span, m) = cond_err(src);
        assert!(m.contains(msg), "{src:?}: message {m:?} lacks {msg:?}");
        assert_eq!(span.start, offset, "{src:?}: {m}");
        assert_eq!(text(src, span), at, "{src:?}: {m}");
    }

    #[test]
    fn error_missing_close_paren() {
        assert_err(
            "(score > 1 and trait.a = 2",
            "",
            26,
            "expected `)` to close the parenthesis, found end of condition",
        );
        assert_err(
            r#"ad_click(campaign = "x" within 24h"#,
            "within",
            24,
            "expected `)` after filter, found `within`",
        );
        assert_err(
            "count(email_open, 30d >= 3",
            ">=",
            22,
            "expected `)` after the window in `count(...)`, found `>=`",
        );
    }

    #[test]
    fn error_unknown_token() {
        assert_err("score >= 3 @ 4", "@", 11, "unexpected character `@`");
        assert_err("score ! 3", "!", 6, "unexpected character `!`");
        assert_err("score > 3 && score < 5", "&&", 10, "use `and`");
        assert_err("trait.x = 'a'", "'", 10, "double quotes");
        assert_err(r#"trait.x = "abc"#, "\"abc", 10, "unterminated string");
        assert_err(
            "count(a, 30x) > 1",
            "30x",
            9,
            "invalid number or duration `30x`",
        );
        // A lexer error inside a filter.
        assert_err(
            "count(a(b = $), 1d) > 1",
            "$",
            12,
            "unexpected character `$`",
        );
    }

    #[test]
    fn error_missing_window() {
        assert_err(
            "count(email_open) >= 3",
            ")",
            16,
            "expected `,` and a window (such as `30d` or `ever`) after the event in `count(...)`, found `)`",
        );
        assert_err(
            "count(email_open, 30) >= 3",
            "30",
            18,
            "durations need a unit",
        );
        assert_err("count(email_open, x) >= 3", "x", 18, "expected a window");
        assert_err(
            "sum(purchase, 30d) > 1",
            "30d",
            14,
            "expected the name of the property to add up in `sum(...)`",
        );
        assert_err(
            "sum(purchase, amount) > 1",
            ")",
            20,
            "expected `,` and a window",
        );
    }

    #[test]
    fn error_empty_trait() {
        assert_err(
            "trait.",
            "trait.",
            0,
            "expected a trait name after `trait.`",
        );
        assert_err(
            "score > 1 and traits. = 3",
            "traits.",
            14,
            "expected a trait name after `traits.`",
        );
        assert_err(
            "profile. exists",
            "profile.",
            0,
            "expected a profile attribute name after `profile.`",
        );
    }

    #[test]
    fn error_missing_no() {
        assert_err(
            "ad_click then webinar_registered within 24h",
            "webinar_registered",
            14,
            "expected `no` after `then`, found `webinar_registered`",
        );
        assert_err(
            "a then no b",
            "",
            11,
            "expected `with same PROPERTY`, `within DURATION` or `until PROPERTY` after `then no EVENT`, found end of condition",
        );
        assert_err("a then no b within ever", "ever", 19, "expected a duration");
        assert_err(
            "a then no b with webinar_id within 1h",
            "webinar_id",
            17,
            "expected `same` after `with`",
        );
        assert_err(
            "a then no b until within",
            "within",
            18,
            "found keyword `within`",
        );
        assert_err(
            "a then no then within 1h",
            "then",
            10,
            "expected an event name, found keyword `then`",
        );
    }

    #[test]
    fn error_expected_comparison() {
        assert_err(
            "count(a, 30d)",
            "count(a, 30d)",
            0,
            "expected a comparison after `count(a, 30d)`",
        );
        let (_, m) = cond_err("count(a, 30d)");
        assert!(m.ends_with("found end of condition"), "{m}");
        assert_err(
            "score > 1 and score",
            "score",
            14,
            "expected a comparison after `score`",
        );
        assert_err(
            "(count(a, 30d) + count(b, 30d)) and score > 1",
            "(count(a, 30d) + count(b, 30d))",
            0,
            "expected a comparison after `(count(a, 30d) + count(b, 30d))`, found `and`",
        );
    }

    #[test]
    fn error_event_used_as_condition() {
        assert_err(
            "page_view >= 3",
            ">=",
            10,
            "expected `then` after event `page_view`, found `>=`; to compare a number of events, use `count(page_view, 30d)`",
        );
        assert_err(
            "cuont(email_open, 30d) >= 3",
            "cuont",
            0,
            "unknown function `cuont`; did you mean `count`?",
        );
        assert_err(
            "since_frist(any) > 1d",
            "since_frist",
            0,
            "unknown function `since_frist`; did you mean `since_first`?",
        );
        // No hint when the error is after the parentheses: `sun` is an event here.
        assert_err(
            "sun(x = 1) then no y",
            "",
            20,
            "expected `with same PROPERTY`",
        );
        // Nor for names far from every function.
        assert_err(
            "purchase(amount, 30d) > 1",
            "amount",
            9,
            "expected a comparison after property `amount`, found `,`",
        );
        assert_err(
            r#"page_view(url = "/x") > 3"#,
            ">",
            22,
            r#"use `count(page_view(url = "/x"), 30d)`"#,
        );
    }

    #[test]
    fn error_misc() {
        assert_err("", "", 0, "expected a condition, found end of condition");
        assert_err(
            "score > 1 and",
            "",
            13,
            "expected a condition, found end of condition",
        );
        assert_err("score > 1 or )", ")", 13, "expected a condition, found `)`");
        assert_err(
            "score > 1 score",
            "score",
            10,
            "expected `and`, `or` or the end of the condition, found `score`",
        );
        assert_err("score > 1)", ")", 9, "found `)`");
        assert_err(
            "score >",
            "",
            7,
            "expected an operand, found end of condition",
        );
        assert_err("score > x", "x", 8, "expected an operand, found `x`");
        assert_err("score > -x", "x", 9, "expected a number after `-`");
        assert_err(
            "trait.a in []",
            "]",
            12,
            "expected a value in the list, found `]`",
        );
        assert_err(
            r#"trait.a in ["a" "b"]"#,
            "\"b\"",
            16,
            "expected `,` or `]` in the list",
        );
        assert_err("trait.a in \"a\"", "\"a\"", 11, "expected `[` after `in`");
        assert_err(
            "trait.a contains 3",
            "3",
            17,
            "expected a string in double quotes after `contains`",
        );
        assert_err(
            "in_segment(key)",
            "key",
            11,
            "expected a segment name in double quotes",
        );
        assert_err("count(score, 1d) > 1", "score", 6, "found keyword `score`");
        assert_err(
            "count(trait.x, 1d) > 1",
            "trait.x",
            6,
            "expected an event name, found `trait.x`",
        );
        assert_err(
            "count(a(), 1d) > 1",
            ")",
            8,
            "expected a property name, found `)`",
        );
        assert_err(
            "count(a(x), 1d) > 1",
            "x",
            8,
            "expected a comparison after property `x`",
        );
        assert_err(
            "count(a(count = 1), 1d) > 1",
            "count",
            8,
            "found keyword `count`",
        );
        assert_err(
            "((score > 1)",
            "",
            12,
            "expected `)` to close the parenthesis",
        );
        assert_err(
            "(score > 1 and score >)",
            ")",
            22,
            "expected an operand, found `)`",
        );
    }

    #[test]
    fn deep_nesting() {
        let ok = format!("{}score > 1{}", "(".repeat(30), ")".repeat(30));
        cond(&ok);
        let ok = format!("{}score{} > 1", "(".repeat(30), ")".repeat(30));
        cond(&ok);
        let ok = format!("{}profile.x", "not ".repeat(30));
        cond(&ok);
        let deep = format!("{}score > 1{}", "(".repeat(10_000), ")".repeat(10_000));
        let (_, m) = cond_err(&deep);
        assert!(m.contains("nested too deeply"), "{m}");
        let deep = format!("{}profile.x", "not ".repeat(10_000));
        assert!(cond_err(&deep).1.contains("nested too deeply"));
        let deep = format!(
            "count(a({}x exists{}), 1d) > 1",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert!(cond_err(&deep).1.contains("nested too deeply"));
    }

    /// Found with the fuzz harness (`fuzz/`, long-chain inputs): `1 + 1 + ...` has no
    /// nesting but is a tree as deep as it is long, and the compiler's recursive walk
    /// overflowed a 2 MiB stack at a few thousand terms (a file of 20 KB).
    #[test]
    fn long_arithmetic_chains_are_limited() {
        let chain = |n: usize, op: &str| {
            format!(
                "{} > 1",
                vec!["count(a, 1d)"; n + 1].join(&format!(" {op} "))
            )
        };
        for op in ["+", "-", "*", "/"] {
            cond(&chain(256, op));
            let (span, m) = cond_err(&chain(257, op));
            assert_eq!(m, "too many arithmetic operators (more than 256)");
            let src = chain(257, op);
            assert_eq!(&src[span.start..span.end], op, "{src}");
        }
        // Counted over the whole condition, parentheses and both sides included.
        let half = vec!["1"; 129].join(" + ");
        cond(&format!("score > ({half}) and score < {half}"));
        let more = format!("score > ({half}) and score < {half} + 1");
        assert!(cond_err(&more).1.contains("too many arithmetic operators"));
        // Backtracking over `(` does not count the operators twice.
        cond(&format!("({} > 1)", vec!["1"; 200].join(" + ")));
        let deep = vec!["1"; 100_000].join("+");
        assert!(cond_err(&format!("score > {deep}"))
            .1
            .contains("too many arithmetic operators"));
    }

    #[test]
    fn filter_errors() {
        let (span, m) = filter_err("url prefix");
        assert_eq!(
            m,
            "expected a string in double quotes after `prefix`, found end of filter"
        );
        assert_eq!(span, Span::new(10, 10));
        let (span, m) = filter_err("a = 1 b = 2");
        assert_eq!(
            m,
            "expected `and`, `or` or the end of the filter, found `b`"
        );
        assert_eq!(span, Span::new(6, 7));
        let (span, m) = filter_err("(a = 1");
        assert!(m.contains("expected `)`"), "{m}");
        assert_eq!(span, Span::new(6, 6));
        let (span, m) = filter_err("a = b");
        assert_eq!(m, "expected a value after `=`, found `b`");
        assert_eq!(span, Span::new(4, 5));
        let (span, _) = filter_err("");
        assert_eq!(span, Span::new(0, 0));
    }

    /// All spans of a filter, for the bounds check below.
    fn check_filter_spans(f: &Spanned<Filter>, len: usize) {
        check_span(f.span, len);
        match &f.node {
            Filter::And(v) | Filter::Or(v) => v.iter().for_each(|f| check_filter_spans(f, len)),
            Filter::Not(f) => check_filter_spans(f, len),
            _ => {}
        }
    }

    fn check_span(span: Span, len: usize) {
        assert!(span.start <= span.end, "{span:?}");
        assert!(span.end <= len, "{span:?} > {len}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any sequence of condition-like words: no panic, spans inside the text.
        #[test]
        fn never_panics_on_token_soup(words in proptest::collection::vec(proptest::sample::select(vec![
            "(", ")", "[", "]", ",", "=", "!=", ">=", "<", "+", "-", "*", "/", "and", "or", "not",
            "no", "then", "within", "until", "with", "same", "in", "contains", "prefix", "exists",
            "true", "ever", "count", "sum", "since", "since_first", "score", "in_segment",
            "trait.x", "profile.y", "trait.", "ev", "\"s\"", "3", "0.5", "30d", "1h30m", "#c\n",
            "@", "\"", "3x", "é",
        ]), 0..16)) {
            let src = words.join(" ");
            match parse_condition(&src, &OffsetMap::new(0)) {
                Ok(e) => check_span(e.span, src.len()),
                Err((span, msg)) => {
                    proptest::prop_assert!(!msg.is_empty());
                    check_span(span, src.len());
                }
            }
            match parse_filter(&src, &OffsetMap::new(0)) {
                Ok(f) => check_filter_spans(&f, src.len()),
                Err((span, _)) => check_span(span, src.len()),
            }
        }

        /// Arbitrary text: no panic.
        #[test]
        fn never_panics_on_any_text(src in "\\PC{0,40}") {
            let _ = parse_condition(&src, &OffsetMap::new(0));
            let _ = parse_filter(&src, &OffsetMap::new(0));
        }
    }
}
