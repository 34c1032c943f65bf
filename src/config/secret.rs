//! A wrapper for values that must never be printed.

use std::fmt;

/// URL paths and path segments at least this long are treated as tokens: `/ncp` is a
/// route, `/services/T0/B0/XXXXXXXX` or a 24-character segment is a credential.
const URL_PART_MIN: usize = 12;

/// A secret string: an access key, a secret key, a webhook secret or a webhook URL.
///
/// `Debug` and `Display` print a fixed placeholder, so a secret that ends up in a log
/// line, an error message or a panic message shows nothing of its value. The value is
/// reachable only through [`Secret::expose`], which makes every use easy to audit.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value, and remembers it (and, for a URL, the tokens its path and query
    /// carry) so that [`crate::text::scrub`] takes it out of any text that leaves the
    /// process: an API or a receiver that echoes it back cannot make it public.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::text::register_secret(&value);
        if let Ok(url) = url::Url::parse(&value)
            && url.host_str().is_some()
        {
            // A chat webhook's token is its path; a receiver echoing the path leaks it.
            let path = url.path();
            if path.len() >= URL_PART_MIN {
                crate::text::register_secret(path);
                // Percent-decoded too: an echo may show the decoded form.
                crate::text::register_secret(&percent_encoding::percent_decode_str(path).decode_utf8_lossy());
            }
            for segment in path.split('/').filter(|s| s.len() >= URL_PART_MIN) {
                crate::text::register_secret(segment);
            }
            if let Some(query) = url.query() {
                crate::text::register_secret(query);
                for (_, v) in url.query_pairs() {
                    crate::text::register_secret(&v);
                }
            }
        }
        Self(value)
    }

    /// The value itself, for the one place that needs it (signing, sending).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("s3cr3t-value");
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        assert!(!format!("{secret}").contains("s3cr3t"));
        assert!(!format!("{:?}", Some(&secret)).contains("s3cr3t"));
        assert_eq!(secret.expose(), "s3cr3t-value");
    }
}
