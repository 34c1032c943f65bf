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

/// Where a secret is read from: a file or an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file, path already resolved (against `$CREDENTIALS_DIRECTORY` or the config's directory).
    File(std::path::PathBuf),
    /// An environment variable.
    Env(String),
}

/// A secret file larger than this is not a secret but a mistake (a log, a binary).
const MAX_SECRET_FILE_BYTES: u64 = 4096;

impl SecretSource {
    /// Reads the value, trimmed of surrounding white space. Errors name `what` and the
    /// source, never the value.
    pub fn read(&self, what: &str) -> Result<Secret, String> {
        let value = match self {
            Self::File(p) => {
                use std::io::Read as _;
                let mut text = String::new();
                std::fs::File::open(p)
                    .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_string(&mut text))
                    .map_err(|e| format!("cannot read {what} from the file {}: {e}", p.display()))?;
                if text.len() as u64 > MAX_SECRET_FILE_BYTES {
                    return Err(format!(
                        "the file {} is larger than {MAX_SECRET_FILE_BYTES} bytes: it does not hold {what}",
                        p.display()
                    ));
                }
                text
            }
            Self::Env(var) => {
                std::env::var(var).map_err(|_| format!("{what}: environment variable {var} is not set"))?
            }
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("{what} from {self} is empty"));
        }
        Ok(Secret::new(value))
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(v) => write!(f, "environment variable {v}"),
        }
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
