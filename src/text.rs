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

/// Secret values shorter than this are not scrubbed from text: a two-letter "secret"
/// would shred every message, and real keys, tokens and URL paths are far longer.
pub const MIN_SCRUBBED_LEN: usize = 8;

/// The most values remembered for scrubbing (keys, webhook URLs and their tokens): far past
/// any configuration, and a bound on what repeated reloads can pile up.
const MAX_SCRUBBED: usize = 4096;

/// Every secret value this process holds, longest first, so a longer secret that contains
/// a shorter one is replaced whole.
static SECRETS: std::sync::RwLock<Vec<Box<str>>> = std::sync::RwLock::new(Vec::new());

/// Remembers `value` as a secret that [`scrub`] takes out of any text. Called for every
/// [`crate::config::Secret`] made, so nothing else needs to remember to.
pub fn register_secret(value: &str) {
    let value = value.trim();
    if value.len() < MIN_SCRUBBED_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if secrets.iter().any(|s| &**s == value) {
        return;
    }
    if secrets.len() >= MAX_SCRUBBED {
        secrets.remove(0);
    }
    secrets.push(value.into());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret replaced by `<redacted>`: the one filter for text
/// that leaves the process (logs, error messages) or enters the store (errors kept with
/// items, events' `data.error`).
pub fn scrub(text: &str) -> std::borrow::Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| text.contains(&**s)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(&**s) {
            out = out.replace(&**s, "<redacted>");
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A log writer that scrubs each line before it reaches `inner` (stderr, in the daemon).
/// tracing formats one event into one writer, so each event is scrubbed whole.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubbingStderr;

/// One event's bytes, written scrubbed when dropped.
#[derive(Debug, Default)]
pub struct ScrubbedLine(Vec<u8>);

impl std::io::Write for ScrubbedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedLine {
    fn drop(&mut self) {
        use std::io::Write as _;
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().lock().write_all(scrub(&text).as_bytes());
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbingStderr {
    type Writer = ScrubbedLine;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedLine::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_scrubbed_longest_first_and_short_ones_left_alone() {
        register_secret("TOKEN-SENTINEL-0001");
        register_secret("TOKEN-SENTINEL-0001-AND-MORE");
        register_secret("short");
        let text = "echo: /services/TOKEN-SENTINEL-0001-AND-MORE and TOKEN-SENTINEL-0001; short";
        assert_eq!(scrub(text), "echo: /services/<redacted> and <redacted>; short");
        assert!(matches!(scrub("nothing here"), std::borrow::Cow::Borrowed(_)));
    }

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
