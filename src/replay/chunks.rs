//! The replay's input read in blocks: lines found with `memchr` in buffers filled straight
//! from the input, without the line-by-line copy of `BufRead::read_until`.

use std::io::{self, Read};

/// Bytes asked of the input per read.
const READ_BYTES: usize = 64 * 1024;

/// Reads the input in blocks straight into the chunks' buffers (no line-by-line copy
/// through the reader's own buffer); the bytes read past a chunk's last line start the
/// next chunk.
pub(super) struct ChunkReader<R> {
    input: R,
    carry: Vec<u8>,
    eof: bool,
    /// Lines per chunk at most.
    lines: usize,
}

impl<R: Read> ChunkReader<R> {
    /// A reader of chunks of at most `lines` lines.
    pub(super) fn new(input: R, lines: usize) -> Self {
        ChunkReader {
            input,
            carry: Vec::new(),
            eof: false,
            lines: lines.max(1),
        }
    }

    /// Reads up to `lines` lines into `buf` (the last line of the input may lack
    /// its newline), their ranges into `ranges` (none at the end of the input).
    pub(super) fn read_chunk(
        &mut self,
        buf: &mut Vec<u8>,
        ranges: &mut Vec<(usize, usize)>,
    ) -> io::Result<()> {
        buf.clear();
        ranges.clear();
        buf.extend_from_slice(&self.carry);
        self.carry.clear();
        // `buf[..filled]` is input; the rest of `buf` is zeroed room for the next reads (a
        // short read does not zero a new block).
        let mut filled = buf.len();
        let (mut line_start, mut scanned) = (0, 0);
        loop {
            while ranges.len() < self.lines {
                match memchr::memchr(b'\n', &buf[scanned..filled]) {
                    Some(i) => {
                        scanned += i + 1;
                        ranges.push((line_start, scanned));
                        line_start = scanned;
                    }
                    None => {
                        scanned = filled;
                        break;
                    }
                }
            }
            if ranges.len() == self.lines {
                break;
            }
            if self.eof {
                if line_start < filled {
                    ranges.push((line_start, filled));
                    line_start = filled;
                }
                break;
            }
            if filled == buf.len() {
                buf.resize(filled + READ_BYTES, 0);
            }
            let n = loop {
                match self.input.read(&mut buf[filled..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        buf.truncate(filled);
                        return Err(e);
                    }
                    Ok(n) => break n,
                }
            };
            filled += n;
            self.eof = n == 0;
        }
        buf.truncate(filled);
        self.carry.extend_from_slice(&buf[line_start..]);
        buf.truncate(line_start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::CHUNK_LINES;
    use proptest::prelude::*;
    use std::io::BufRead;

    /// A reader that hands out at most `piece` bytes per read.
    struct Pieces<'a> {
        data: &'a [u8],
        piece: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.piece.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The chunks' lines, as `read_until(b'\n')` splits the whole input.
    fn chunked_lines(data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        chunked_lines_of(data, piece, CHUNK_LINES)
    }

    fn chunked_lines_of(data: &[u8], piece: usize, lines_per_chunk: usize) -> Vec<Vec<u8>> {
        let mut reader = ChunkReader::new(Pieces { data, piece }, lines_per_chunk);
        let (mut buf, mut ranges) = (Vec::new(), Vec::new());
        let mut lines = Vec::new();
        loop {
            reader.read_chunk(&mut buf, &mut ranges).unwrap();
            if ranges.is_empty() {
                return lines;
            }
            assert!(ranges.len() <= lines_per_chunk);
            assert_eq!(
                ranges.last().unwrap().1,
                buf.len(),
                "a chunk ends with its last line"
            );
            lines.extend(ranges.iter().map(|&(a, b)| buf[a..b].to_vec()));
        }
    }

    fn read_until_lines(mut data: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            if data.read_until(b'\n', &mut line).unwrap() == 0 {
                return lines;
            }
            lines.push(line);
        }
    }

    /// Lines longer than a read, a chunk of exactly `CHUNK_LINES` lines, blank lines, CRLF,
    /// no newline at the end: the lines are the input's, in order, whatever the reads.
    #[test]
    fn chunks_hold_the_input_lines_whatever_the_reads() {
        let mut input = Vec::new();
        for i in 0..CHUNK_LINES {
            input.extend_from_slice(format!("{{\"n\":{i}}}\n").as_bytes());
        }
        input.extend_from_slice(b"\n\r\n");
        input.extend(std::iter::repeat_n(b'x', 3 * READ_BYTES + 7));
        input.push(b'\n');
        input.extend_from_slice(b"{\"last\":true}");
        for piece in [1, 7, 4096, READ_BYTES, usize::MAX] {
            assert_eq!(
                chunked_lines(&input, piece),
                read_until_lines(&input),
                "{piece}"
            );
        }
        assert!(chunked_lines(b"", 5).is_empty());
        assert_eq!(chunked_lines(b"a\n", 1), vec![b"a\n".to_vec()]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn chunks_split_any_input_into_its_lines(
            data in prop::collection::vec(prop::sample::select(vec![b'a', b'\n', b'\r', b'{']), 0..2000),
            piece in 1usize..300,
        ) {
            prop_assert_eq!(chunked_lines(&data, piece), read_until_lines(&data));
            prop_assert_eq!(chunked_lines_of(&data, piece, 3), read_until_lines(&data));
        }
    }
}
