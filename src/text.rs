//! Small text helpers shared by the NCP client and the sinks.

/// An error and its sources, joined with `: ` (what a log line or message should show).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// At most the first `max` bytes of `body` as text, cut at a character boundary.
pub fn excerpt(body: &[u8], max: usize) -> String {
    let mut end = body.len().min(max);
    while end > 0 && std::str::from_utf8(&body[..end]).is_err() {
        end -= 1;
    }
    String::from_utf8_lossy(&body[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_never_split_a_character() {
        assert_eq!(excerpt("héllo".as_bytes(), 2), "h");
        assert_eq!(excerpt(b"hello", 3), "hel");
        assert_eq!(excerpt(b"hi", 200), "hi");
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn chains_name_every_cause() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "error sending request: connection refused");
    }
}
