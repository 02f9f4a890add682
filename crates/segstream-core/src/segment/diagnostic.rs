//! Error reports with file, line and column, and the map from byte offsets to lines.

use std::fmt;

use super::ast::Span;

/// One error in a definitions file.
///
/// `line` and `column` are 1-based; `column` counts characters (not bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for Diagnostic {}

/// Turns byte offsets into a file into 1-based (line, column) positions.
#[derive(Debug, Clone)]
pub struct SourceMap {
    file: String,
    text: String,
    /// Byte offset of the first character of every line; `line_starts[0] == 0`.
    line_starts: Vec<usize>,
}

impl SourceMap {
    pub fn new(file: &str, text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        SourceMap {
            file: file.to_string(),
            text: text.to_string(),
            line_starts,
        }
    }

    /// The 1-based line and column (in characters) of a byte offset. Offsets past the end
    /// are clamped to the end; offsets inside a character count as that character.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column = self.text[start..offset].chars().count() + 1;
        (line + 1, column)
    }

    /// A diagnostic at the start of `span`.
    pub fn diagnostic(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.line_col(span.start);
        Diagnostic {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }
}

/// A list of diagnostics, usable as an error. `Display` writes one per line, sorted by
/// file, line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The diagnostics in display order: by file, line and column (stable otherwise).
    pub fn sorted(&self) -> Vec<&Diagnostic> {
        let mut all: Vec<&Diagnostic> = self.0.iter().collect();
        all.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        all
    }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(v: Vec<Diagnostic>) -> Self {
        Diagnostics(v)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.sorted().into_iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        let map = SourceMap::new("f.toml", "ab\nçé x\n\nlast");
        assert_eq!(map.line_col(0), (1, 1));
        assert_eq!(map.line_col(1), (1, 2));
        assert_eq!(map.line_col(2), (1, 3)); // the newline itself
        assert_eq!(map.line_col(3), (2, 1));
        // "ç" and "é" are 2 bytes each: "x" is at byte 3 + 5 = 8, the 4th char.
        assert_eq!(map.line_col(8), (2, 4));
        // Inside a multi-byte character: that character.
        assert_eq!(map.line_col(4), (2, 1));
        assert_eq!(map.line_col(10), (3, 1));
        assert_eq!(map.line_col(11), (4, 1));
        assert_eq!(map.line_col(14), (4, 4));
        // End of file and past it.
        assert_eq!(map.line_col(15), (4, 5));
        assert_eq!(map.line_col(100), (4, 5));
    }

    #[test]
    fn empty_text() {
        let map = SourceMap::new("f", "");
        assert_eq!(map.line_col(0), (1, 1));
        assert_eq!(map.line_col(5), (1, 1));
    }

    #[test]
    fn diagnostic_and_display() {
        let map = SourceMap::new("defs.toml", "a\nbc\n");
        let d = map.diagnostic(Span::new(3, 4), "oops");
        assert_eq!(
            d,
            Diagnostic {
                file: "defs.toml".into(),
                line: 2,
                column: 2,
                message: "oops".into()
            }
        );
        assert_eq!(d.to_string(), "defs.toml:2:2: oops");
        assert_eq!(map.file(), "defs.toml");
    }

    #[test]
    fn diagnostics_sorted() {
        let d = |file: &str, line, column, m: &str| Diagnostic {
            file: file.into(),
            line,
            column,
            message: m.into(),
        };
        let all = Diagnostics(vec![
            d("b", 1, 1, "four"),
            d("a", 10, 1, "three"),
            d("a", 2, 5, "two"),
            d("a", 2, 1, "one"),
        ]);
        assert_eq!(
            all.to_string(),
            "a:2:1: one\na:2:5: two\na:10:1: three\nb:1:1: four"
        );
        let e: Box<dyn std::error::Error> = Box::new(all);
        assert!(e.to_string().starts_with("a:2:1"));
        assert_eq!(Diagnostics(vec![]).to_string(), "");
    }
}
