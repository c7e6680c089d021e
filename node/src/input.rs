//! Reading sensor input as lines, with bounded memory.
//!
//! A node is a small gateway box fed by sensors it does not control: one
//! line that is not UTF-8, or one without a newline for hundreds of
//! megabytes, must cost one invalid line, not the process or its memory.
//! [`LineReader`] hands out each line of up to `max_line_bytes` bytes
//! (without its `\n` or `\r\n`); a longer line is read through to its end
//! and skipped without being buffered, and a line that is not UTF-8 is
//! reported as such. Either is an invalid line for the caller to count.
//! Memory is the read buffer plus one line at most, whatever the input.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Why a line was not handed out as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than the configured maximum.
    #[error("line of {bytes} bytes is longer than input.max_line_bytes ({max}); skipped unread")]
    TooLong {
        /// Bytes in the line, without its newline.
        bytes: u64,
        /// The configured maximum.
        max: usize,
    },
    /// Not valid UTF-8.
    #[error("not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid byte in the line.
        offset: usize,
    },
}

/// Lines of an async byte stream, each at most `max` bytes.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Reads lines of at most `max` bytes from `inner`.
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            max,
        }
    }

    /// The next line: `None` at the end of input, `Some(Err(..))` for a line
    /// skipped as too long or not UTF-8, an I/O error as the outer error.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Result<&str, LineError>>> {
        self.buf.clear();
        // Only the first `max + 2` bytes of a line are kept (the line and its
        // `\r\n`); `seen` counts them all.
        let keep_max = self.max + 2;
        let mut seen: u64 = 0;
        let mut newline = false;
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                if seen == 0 {
                    return Ok(None);
                }
                break;
            }
            let take = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    newline = true;
                    i + 1
                }
                None => chunk.len(),
            };
            let keep = keep_max.saturating_sub(self.buf.len()).min(take);
            self.buf.extend_from_slice(&chunk[..keep]);
            seen += take as u64;
            self.inner.consume(take);
            if newline {
                break;
            }
        }
        if seen > keep_max as u64 {
            return Ok(Some(Err(LineError::TooLong {
                bytes: seen - u64::from(newline),
                max: self.max,
            })));
        }
        // The whole line is in the buffer: drop its end as `lines()` does.
        if newline {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        if self.buf.len() > self.max {
            return Ok(Some(Err(LineError::TooLong {
                bytes: self.buf.len() as u64,
                max: self.max,
            })));
        }
        match std::str::from_utf8(&self.buf) {
            Ok(s) => Ok(Some(Ok(s))),
            Err(e) => Ok(Some(Err(LineError::NotUtf8 {
                offset: e.valid_up_to(),
            }))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of `input` read with lines of at most `max` bytes, through
    /// a reader that hands out `chunk` bytes at a time.
    async fn read_all(input: &[u8], max: usize, chunk: usize) -> Vec<Result<String, LineError>> {
        let reader = tokio::io::BufReader::with_capacity(chunk, input);
        let mut lines = LineReader::new(reader, max);
        let mut out = Vec::new();
        while let Some(l) = lines.next_line().await.expect("read") {
            out.push(l.map(str::to_owned));
        }
        out
    }

    #[tokio::test]
    async fn lines_are_split_as_tokio_splits_them() {
        let input = b"a\nbb\r\n\n c \nlast";
        for chunk in [1, 2, 3, 64] {
            let got = read_all(input, 16, chunk).await;
            let want: Vec<Result<String, LineError>> = ["a", "bb", "", " c ", "last"]
                .map(|s| Ok(s.to_owned()))
                .into();
            assert_eq!(got, want, "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn a_long_line_is_skipped_and_the_next_one_read() {
        let mut input = vec![b'x'; 5000];
        input.extend_from_slice(b"\nok\n");
        input.extend_from_slice(&[b'y'; 1025]);
        for chunk in [7, 4096] {
            let got = read_all(&input, 1024, chunk).await;
            assert_eq!(
                got,
                vec![
                    Err(LineError::TooLong {
                        bytes: 5000,
                        max: 1024
                    }),
                    Ok("ok".to_owned()),
                    Err(LineError::TooLong {
                        bytes: 1025,
                        max: 1024
                    }),
                ],
                "chunk {chunk}"
            );
        }
        // Exactly the maximum, with either line end, is accepted.
        let mut exact = vec![b'z'; 1024];
        exact.extend_from_slice(b"\r\n");
        exact.extend_from_slice(&[b'z'; 1024]);
        let got = read_all(&exact, 1024, 10).await;
        assert_eq!(got, vec![Ok("z".repeat(1024)), Ok("z".repeat(1024))]);
    }

    #[tokio::test]
    async fn a_line_that_is_not_utf8_is_named_and_skipped() {
        let got = read_all(b"ok\nab\xffcd\nnext\n", 64, 3).await;
        assert_eq!(
            got,
            vec![
                Ok("ok".to_owned()),
                Err(LineError::NotUtf8 { offset: 2 }),
                Ok("next".to_owned()),
            ]
        );
    }
}
