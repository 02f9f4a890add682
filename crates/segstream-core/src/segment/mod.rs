//! Segment definitions: the file format, the condition language, and its compiler.
//!
//! `source` reads a TOML definitions file into the syntax tree of `ast` (with `lexer` and
//! `parser` for the condition language); `compile` checks it and turns it into the
//! [`compile::Definitions`] the engine evaluates. `suggest` is the one "did you mean" rule
//! both the parser and the compiler use.

pub mod ast;
pub mod compile;
pub mod diagnostic;
pub mod lexer;
pub mod parser;
pub mod source;
pub mod suggest;
