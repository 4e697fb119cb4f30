//! Incremental splitting of a multipart body into its parts as the bytes
//! arrive, so a STOW-RS request holds one part in memory, not the whole body.
//! Written here because the multipart crates parse form-data, not
//! multipart/related; the framing (RFC 2046) is a delimiter search, the same
//! for the `multipart/form-data` of a prediction with its probabilities.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem::Finder;

/// Longest header block a part may have.
const MAX_PART_HEADERS: usize = 64 << 10;

/// Where the splitter is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first delimiter (the preamble is ignored).
    Preamble,
    /// Just after a delimiter: `--` closes the body, otherwise a line ends.
    AfterDelimiter,
    /// In a part's headers, up to the blank line.
    Headers,
    /// In a part's content, up to the next delimiter.
    Content,
    /// After the closing delimiter (the epilogue is ignored).
    Closed,
}

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The header block, without the blank line that ends it.
    pub headers: Bytes,
    pub content: Bytes,
}

/// Splits a multipart body, fed chunk by chunk, into its parts. Boundaries longer than RFC 2046's 70 characters are accepted:
/// Orthanc sends 73.
pub struct PartSplitter {
    delimiter: Finder<'static>,
    delimiter_len: usize,
    buffer: BytesMut,
    /// Bytes at the start of `buffer` already searched without a match.
    searched: usize,
    phase: Phase,
    /// The headers of the part being read.
    headers: Bytes,
}

impl PartSplitter {
    /// A splitter for `boundary` (without the leading `--`).
    pub fn new(boundary: &str) -> PartSplitter {
        let delimiter = format!("--{boundary}");
        PartSplitter {
            delimiter_len: delimiter.len(),
            delimiter: Finder::new(delimiter.as_bytes()).into_owned(),
            buffer: BytesMut::new(),
            searched: 0,
            phase: Phase::Preamble,
            headers: Bytes::new(),
        }
    }

    /// Adds the next bytes of the body; returns the parts they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Part>, String> {
        if self.phase != Phase::Closed {
            self.buffer.extend_from_slice(chunk);
        }
        self.split()
    }

    /// Splits a whole body already in memory; its parts share its bytes
    /// (no copy) when nothing else holds them.
    pub fn push_whole(&mut self, body: Bytes) -> Result<Vec<Part>, String> {
        if self.buffer.is_empty() && self.phase != Phase::Closed {
            self.buffer = body
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            self.searched = 0;
            self.split()
        } else {
            self.push(&body)
        }
    }

    /// The parts the buffered bytes complete.
    fn split(&mut self) -> Result<Vec<Part>, String> {
        let mut parts = Vec::new();
        loop {
            match self.phase {
                Phase::Preamble => match self.find_delimiter() {
                    Some(at) => self.consume(at + self.delimiter_len, Phase::AfterDelimiter),
                    None => {
                        let keep = self.searched;
                        self.buffer.advance(keep);
                        self.searched = 0;
                        return Ok(parts);
                    }
                },
                Phase::AfterDelimiter => {
                    if self.buffer.len() < 2 {
                        return Ok(parts);
                    }
                    if self.buffer.starts_with(b"--") {
                        self.buffer.clear();
                        self.phase = Phase::Closed;
                        continue;
                    }
                    // Transport padding may follow the delimiter; the line ends
                    // with CRLF.
                    match memchr::memmem::find(&self.buffer, b"\r\n") {
                        Some(end) => self.consume(end + 2, Phase::Headers),
                        None if self.buffer.len() > MAX_PART_HEADERS => {
                            return Err("a delimiter line does not end".into());
                        }
                        None => return Ok(parts),
                    }
                }
                Phase::Headers => {
                    if self.buffer.starts_with(b"\r\n") {
                        self.headers = Bytes::new();
                        self.consume(2, Phase::Content);
                        continue;
                    }
                    match memchr::memmem::find(&self.buffer, b"\r\n\r\n") {
                        Some(end) => {
                            self.headers = self.buffer.split_to(end).freeze();
                            self.consume(4, Phase::Content);
                        }
                        None if self.buffer.len() > MAX_PART_HEADERS => {
                            return Err(format!(
                                "a part's headers are longer than {MAX_PART_HEADERS} bytes"
                            ));
                        }
                        None => return Ok(parts),
                    }
                }
                Phase::Content => match self.find_delimiter() {
                    Some(at) => {
                        // The CRLF before a delimiter belongs to the delimiter.
                        let end = if self.buffer[..at].ends_with(b"\r\n") {
                            at - 2
                        } else {
                            at
                        };
                        parts.push(Part {
                            headers: std::mem::take(&mut self.headers),
                            content: self.buffer.split_to(end).freeze(),
                        });
                        self.consume(at - end + self.delimiter_len, Phase::AfterDelimiter);
                    }
                    None => return Ok(parts),
                },
                Phase::Closed => return Ok(parts),
            }
        }
    }

    /// Checks that the body ended with its closing delimiter.
    pub fn finish(&self) -> Result<(), String> {
        match self.phase {
            Phase::Closed => Ok(()),
            Phase::Preamble => Err("no boundary delimiter in the body".into()),
            _ => Err("the body ends without a closing delimiter".into()),
        }
    }

    /// The next delimiter in the buffer, searching only bytes not searched
    /// before (less a delimiter's length, which a chunk boundary may split).
    fn find_delimiter(&mut self) -> Option<usize> {
        let from = self.searched;
        match self.delimiter.find(&self.buffer[from..]) {
            Some(at) => Some(from + at),
            None => {
                self.searched = (self.buffer.len() + 1).saturating_sub(self.delimiter_len);
                None
            }
        }
    }

    /// Drops `n` bytes of framing and moves on to `phase`.
    fn consume(&mut self, n: usize, phase: Phase) {
        self.buffer.advance(n);
        self.searched = 0;
        self.phase = phase;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Splits `body` fed in chunks of `chunk` bytes.
    fn split(body: &[u8], boundary: &str, chunk: usize) -> Result<Vec<Bytes>, String> {
        Ok(split_parts(body, boundary, chunk)?
            .into_iter()
            .map(|p| p.content)
            .collect())
    }

    fn split_parts(body: &[u8], boundary: &str, chunk: usize) -> Result<Vec<Part>, String> {
        let mut splitter = PartSplitter::new(boundary);
        let mut parts = Vec::new();
        for piece in body.chunks(chunk.max(1)) {
            parts.extend(splitter.push(piece)?);
        }
        splitter.finish()?;
        Ok(parts)
    }

    #[test]
    fn keeps_each_part_s_headers() {
        let body = b"--B\r\nContent-Disposition: form-data; name=\"labels\"\r\nContent-Type: application/octet-stream\r\n\r\nab\r\n--B\r\n\r\ncd\r\n--B--\r\n";
        for chunk in [1, 5, body.len()] {
            let parts = split_parts(body, "B", chunk).unwrap();
            assert_eq!(
                parts[0].headers,
                Bytes::from_static(b"Content-Disposition: form-data; name=\"labels\"\r\nContent-Type: application/octet-stream")
            );
            assert_eq!(parts[0].content, Bytes::from_static(b"ab"));
            assert_eq!(parts[1].headers, Bytes::new());
            assert_eq!(parts[1].content, Bytes::from_static(b"cd"));
        }
    }

    #[test]
    fn splits_multipart_related() {
        let body = b"--B\r\nContent-Type: application/dicom\r\nContent-Length: 3\r\n\r\nabc\r\n--B\r\nContent-Type: application/dicom\r\n\r\n\r\nxy\r\n--B--";
        for chunk in [1, 2, 3, 7, body.len()] {
            assert_eq!(
                split(body, "B", chunk).unwrap(),
                vec![Bytes::from_static(b"abc"), Bytes::from_static(b"\r\nxy")]
            );
        }
        assert_eq!(
            split(b"ignored\r\n--B\r\n\r\nz\r\n--B--\r\nepilogue", "B", 4).unwrap(),
            vec![Bytes::from_static(b"z")]
        );
        assert_eq!(
            split(b"--B\r\n\r\nopen", "B", 3).unwrap_err(),
            "the body ends without a closing delimiter"
        );
        assert_eq!(
            split(b"no delimiter", "B", 5).unwrap_err(),
            "no boundary delimiter in the body"
        );
        assert!(split(b"--B--", "B", 1).unwrap().is_empty());
        let endless_headers = [b"--B\r\nX: ".as_slice(), &[b'a'; MAX_PART_HEADERS + 1]].concat();
        assert!(split(&endless_headers, "B", 4096).is_err());
    }

    proptest! {
        /// Any parts framed with a boundary they do not contain come back
        /// whole, however the body is cut into chunks.
        #[test]
        fn chunking_does_not_change_the_parts(
            parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..5),
            chunk in 1usize..64,
        ) {
            let boundary = "segwatch-0123456789abcdef-boundary";
            let mut body = b"preamble\r\n".to_vec();
            for part in &parts {
                body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
                body.extend_from_slice(part);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            let split_parts = split(&body, boundary, chunk).unwrap();
            prop_assert_eq!(split_parts.iter().map(|p| p.to_vec()).collect::<Vec<_>>(), parts);
        }
    }
}
