//! The CRI container log format, as kubelet reads it:
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <text>\n`.
//!
//! A line is written when its newline arrives (tag `F`). A line longer than
//! [`MAX_LINE`] is cut into `P` (partial) chunks followed by the `F` rest, and text left
//! without a newline when the stream ends is written as a full line, as containerd does.

/// The longest piece of a line written as one log entry.
pub const MAX_LINE: usize = 16 * 1024;

/// One of a container's output streams, with the text of the line in progress.
pub struct LogStream {
    name: &'static str,
    pending: Vec<u8>,
}

impl LogStream {
    pub fn stdout() -> Self {
        Self { name: "stdout", pending: Vec::new() }
    }

    pub fn stderr() -> Self {
        Self { name: "stderr", pending: Vec::new() }
    }

    /// Appends the entries that `data` completes to `out`, stamped with `now`.
    pub fn feed(&mut self, data: &[u8], now: &str, out: &mut Vec<u8>) {
        let mut rest = data;
        while !rest.is_empty() {
            let room = MAX_LINE - self.pending.len();
            match rest.iter().take(room + 1).position(|&b| b == b'\n') {
                Some(nl) => {
                    self.pending.extend_from_slice(&rest[..nl]);
                    self.emit(false, now, out);
                    rest = &rest[nl + 1..];
                }
                None if rest.len() >= room => {
                    self.pending.extend_from_slice(&rest[..room]);
                    self.emit(true, now, out);
                    rest = &rest[room..];
                }
                None => {
                    self.pending.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
    }

    /// The stream ended: text still waiting for its newline becomes a full line.
    pub fn finish(&mut self, now: &str, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            self.emit(false, now, out);
        }
    }

    fn emit(&mut self, partial: bool, now: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(now.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(if partial { b" P " } else { b" F " });
        out.extend_from_slice(&self.pending);
        out.push(b'\n');
        self.pending.clear();
    }
}

/// The current time in RFC 3339 with nanoseconds, UTC.
pub fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out).lines().map(str::to_owned).collect()
    }

    #[test]
    fn full_lines_and_split_writes() {
        let mut s = LogStream::stdout();
        let mut out = Vec::new();
        s.feed(b"hello\nwor", "T", &mut out);
        s.feed(b"ld\n", "T", &mut out);
        assert_eq!(lines(&out), ["T stdout F hello", "T stdout F world"]);
    }

    #[test]
    fn long_lines_become_partial_chunks() {
        let mut s = LogStream::stderr();
        let mut out = Vec::new();
        let mut line = vec![b'a'; MAX_LINE * 2 + 10];
        line.push(b'\n');
        s.feed(&line, "T", &mut out);
        let got = lines(&out);
        assert_eq!(got.len(), 3);
        assert!(got[0].starts_with("T stderr P aaa"));
        assert_eq!(got[0].len(), "T stderr P ".len() + MAX_LINE);
        assert!(got[1].starts_with("T stderr P "));
        assert_eq!(got[2], format!("T stderr F {}", "a".repeat(10)));
    }

    #[test]
    fn a_line_of_exactly_max_length_is_full() {
        let mut s = LogStream::stdout();
        let mut out = Vec::new();
        let mut line = vec![b'x'; MAX_LINE];
        line.push(b'\n');
        s.feed(&line, "T", &mut out);
        let got = lines(&out);
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("T stdout F xxx"));
    }

    #[test]
    fn unterminated_text_is_written_at_the_end() {
        let mut s = LogStream::stdout();
        let mut out = Vec::new();
        s.feed(b"no newline", "T", &mut out);
        assert!(out.is_empty());
        s.finish("T", &mut out);
        assert_eq!(lines(&out), ["T stdout F no newline"]);
    }

    #[test]
    fn timestamps_are_rfc3339_nano() {
        let t = timestamp();
        assert!(t.ends_with('Z') && t.len() == "2026-11-22T10:00:00.123456789Z".len(), "{t}");
    }
}
