//! Resolving the NCP access key and secret key, in the order SPEC §3 gives.
//!
//! For each of the two keys, independently:
//! 1. `[credentials] *_file`; a relative path resolves against `$CREDENTIALS_DIRECTORY`
//!    (systemd's `LoadCredential=`) when set, else against the config file's directory;
//! 2. `$CREDENTIALS_DIRECTORY/access_key` or `/secret_key` when that file exists;
//! 3. `NCLOUD_ACCESS_KEY` / `NCLOUD_SECRET_KEY`;
//! 4. `~/.ncloud/configure`, the NCP CLI's file (`ncloud_access_key_id`,
//!    `ncloud_secret_access_key`).
//!
//! An explicitly configured file that cannot be read is an error, never a silent fall
//! through to the next source. Messages name files and variables, never their contents.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{CredentialsConfig, Secret};

/// The resolved NCP credentials, with where each came from.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Access key id.
    pub access_key: Secret,
    /// Secret key.
    pub secret_key: Secret,
    /// Where the access key was found.
    pub access_key_source: CredentialSource,
    /// Where the secret key was found.
    pub secret_key_source: CredentialSource,
    /// The NCP CLI's `ncloud_api_url`, when the access key came from its file: the API
    /// gateway of that profile's region, used when the config chooses no region or URL.
    pub api_url: Option<url::Url>,
}

/// Where a credential was found; safe to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A file named in the config or found in `$CREDENTIALS_DIRECTORY`.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// The NCP CLI's configure file.
    NcloudConfigure(PathBuf),
    /// Built into the program (the demo's simulator credentials).
    BuiltIn,
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(v) => write!(f, "environment variable {v}"),
            Self::NcloudConfigure(p) => write!(f, "NCP CLI file {}", p.display()),
            Self::BuiltIn => f.write_str("the built-in simulator credentials"),
        }
    }
}

/// Why a credential could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A configured file could not be read.
    #[error("cannot read the {what} from {}: {source}; check the path and its permissions", path.display())]
    Unreadable {
        /// Which credential.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error (never the content).
        source: std::io::Error,
    },
    /// A configured file is empty.
    #[error("the {what} file {} is empty; write the key into it", path.display())]
    Empty {
        /// Which credential.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The value was found but cannot be a key: a byte-order mark, a NUL, a second line
    /// or another control character (the signature would never match, and the gateway
    /// would answer with a refusal that does not say why).
    #[error("the {what} from {from} {problem}; write the key alone on one line, as plain text")]
    Malformed {
        /// Which credential.
        what: &'static str,
        /// Where it was found (never the content).
        from: CredentialSource,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// No source had it.
    #[error(
        "no {what} found: set [credentials] {key}_file, put it in $CREDENTIALS_DIRECTORY/{key}, export {env}, or run `ncloud configure` to write {cli_key} to ~/.ncloud/configure"
    )]
    Missing {
        /// Which credential.
        what: &'static str,
        /// Config key stem and credential file name.
        key: &'static str,
        /// Environment variable.
        env: &'static str,
        /// Key in the NCP CLI file.
        cli_key: &'static str,
    },
}

/// The two credentials and their source names.
struct Spec {
    what: &'static str,
    key: &'static str,
    env: &'static str,
    cli_key: &'static str,
}

const ACCESS: Spec = Spec {
    what: "access key",
    key: "access_key",
    env: "NCLOUD_ACCESS_KEY",
    cli_key: "ncloud_access_key_id",
};
const SECRET: Spec = Spec {
    what: "secret key",
    key: "secret_key",
    env: "NCLOUD_SECRET_KEY",
    cli_key: "ncloud_secret_access_key",
};

/// Resolves both credentials from the process environment.
pub fn resolve_credentials(config: &CredentialsConfig) -> Result<Credentials, CredentialError> {
    resolve_with(config, &|name| std::env::var_os(name))
}

/// Resolves both credentials, reading environment variables through `env` (tests pass
/// their own, because changing the real environment races with other threads).
pub fn resolve_with(
    config: &CredentialsConfig,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Credentials, CredentialError> {
    let (access_key, access_key_source) = resolve_one(&ACCESS, config.access_key_file.as_deref(), config, env)?;
    let (secret_key, secret_key_source) = resolve_one(&SECRET, config.secret_key_file.as_deref(), config, env)?;
    // The CLI's file names its region's gateway beside the keys; it belongs to those keys.
    let api_url = match &access_key_source {
        CredentialSource::NcloudConfigure(path) => std::fs::read_to_string(path)
            .ok()
            .and_then(|t| ncloud_configure_value(&t, "ncloud_api_url"))
            .and_then(|u| url::Url::parse(u.trim()).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some()),
        _ => None,
    };
    Ok(Credentials {
        access_key,
        secret_key,
        access_key_source,
        secret_key_source,
        api_url,
    })
}

fn resolve_one(
    spec: &Spec,
    file: Option<&Path>,
    config: &CredentialsConfig,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<(Secret, CredentialSource), CredentialError> {
    let cred_dir = env("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    if let Some(file) = file {
        let path = if file.is_absolute() {
            file.to_path_buf()
        } else {
            cred_dir.as_deref().unwrap_or(&config.base_dir).join(file)
        };
        return read_key_file(spec.what, &path).map(|s| (s, CredentialSource::File(path)));
    }
    if let Some(dir) = &cred_dir {
        let path = dir.join(spec.key);
        if path.exists() {
            return read_key_file(spec.what, &path).map(|s| (s, CredentialSource::File(path)));
        }
    }
    if let Some(value) = env(spec.env) {
        let source = CredentialSource::Env(spec.env);
        let malformed = |problem| CredentialError::Malformed {
            what: spec.what,
            from: source.clone(),
            problem,
        };
        let value = value.into_string().map_err(|_| malformed("is not UTF-8 text"))?;
        let value = value.trim();
        if !value.is_empty() {
            check_key(value).map_err(malformed)?;
            return Ok((Secret::new(value), source));
        }
    }
    if let Some(home) = env("HOME").filter(|h| !h.is_empty()) {
        let path = PathBuf::from(home).join(".ncloud").join("configure");
        if let Some(value) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| ncloud_configure_value(&t, spec.cli_key))
        {
            let source = CredentialSource::NcloudConfigure(path);
            check_key(&value).map_err(|problem| CredentialError::Malformed {
                what: spec.what,
                from: source.clone(),
                problem,
            })?;
            return Ok((Secret::new(value), source));
        }
    }
    Err(CredentialError::Missing {
        what: spec.what,
        key: spec.key,
        env: spec.env,
        cli_key: spec.cli_key,
    })
}

/// The longest key file read. NCP's keys are 20 and 40 characters; a file of kilobytes is
/// the wrong file, and reading it to the end (a device, a log) could take forever.
const MAX_KEY_FILE_BYTES: u64 = 4096;

fn read_key_file(what: &'static str, path: &Path) -> Result<Secret, CredentialError> {
    use std::io::Read as _;
    let unreadable = |source| CredentialError::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    };
    let malformed = |problem| CredentialError::Malformed {
        what,
        from: CredentialSource::File(path.to_path_buf()),
        problem,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(malformed("is larger than 4 KiB, far longer than any key"));
    }
    // The UTF-8 error says only at which byte the text broke, never what is there; still,
    // it is not passed on, since that is of no use to someone fixing the file.
    let text = String::from_utf8(bytes).map_err(|_| malformed("is not UTF-8 text"))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(CredentialError::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    check_key(value).map_err(malformed)?;
    Ok(Secret::new(value))
}

/// Whether a trimmed value can be a key; what is wrong with it if not. Surrounding
/// whitespace (an editor's final newline) is trimmed beforehand; anything else that is
/// not plain text would silently become part of the key and make every signature wrong.
fn check_key(value: &str) -> Result<(), &'static str> {
    if value.starts_with('\u{feff}') {
        Err("starts with a byte-order mark (save it as UTF-8 without BOM)")
    } else if value.contains('\u{feff}') {
        Err("contains a byte-order mark")
    } else if value.contains('\0') {
        Err("contains a NUL byte")
    } else if value.lines().filter(|l| !l.trim().is_empty()).count() > 1 {
        Err("has more than one line")
    } else if value.chars().any(char::is_control) {
        Err("contains a control character")
    } else {
        Ok(())
    }
}

/// Reads `key` from the NCP CLI's INI-like file: the `[DEFAULT]` profile if there is one,
/// else keys before any section, else the first section that has the key.
fn ncloud_configure_value(text: &str, key: &str) -> Option<String> {
    let mut section: Option<String> = None;
    let mut found: Vec<(Option<String>, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_string());
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            if k.trim() == key && !v.is_empty() {
                found.push((section.clone(), v.to_string()));
            }
        }
    }
    let pick = |want: Option<&str>| found.iter().find(|(s, _)| s.as_deref() == want).map(|(_, v)| v.clone());
    pick(Some("DEFAULT"))
        .or_else(|| pick(None))
        .or_else(|| found.first().map(|(_, v)| v.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn config(dir: &Path, access: Option<&str>, secret: Option<&str>) -> CredentialsConfig {
        CredentialsConfig {
            access_key_file: access.map(PathBuf::from),
            secret_key_file: secret.map(PathBuf::from),
            base_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn configured_relative_files_resolve_against_the_credentials_directory() {
        let creds = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join("ak"), "AKVALUE\n").unwrap();
        std::fs::write(creds.path().join("sk"), "SKVALUE").unwrap();
        let env = env_of(&[("CREDENTIALS_DIRECTORY", creds.path())]);
        let c = resolve_with(&config(Path::new("/nonexistent"), Some("ak"), Some("sk")), &env).unwrap();
        assert_eq!(c.access_key.expose(), "AKVALUE");
        assert_eq!(c.secret_key.expose(), "SKVALUE");
        assert_eq!(c.access_key_source, CredentialSource::File(creds.path().join("ak")));
    }

    #[test]
    fn the_credentials_directory_is_used_even_without_configured_files() {
        let creds = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join("access_key"), "A").unwrap();
        std::fs::write(creds.path().join("secret_key"), "S").unwrap();
        let env = env_of(&[("CREDENTIALS_DIRECTORY", creds.path())]);
        let c = resolve_with(&config(Path::new("/x"), None, None), &env).unwrap();
        assert_eq!(c.secret_key.expose(), "S");
    }

    #[test]
    fn environment_variables_come_before_the_ncp_cli_file() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".ncloud")).unwrap();
        std::fs::write(
            home.path().join(".ncloud/configure"),
            "[DEFAULT]\nncloud_access_key_id = FROMFILE\nncloud_secret_access_key = SECRETFILE\n",
        )
        .unwrap();
        let env = env_of(&[("HOME", home.path()), ("NCLOUD_ACCESS_KEY", Path::new("ENVAK"))]);
        let c = resolve_with(&config(Path::new("/x"), None, None), &env).unwrap();
        assert_eq!(c.access_key.expose(), "ENVAK");
        assert_eq!(c.access_key_source, CredentialSource::Env("NCLOUD_ACCESS_KEY"));
        assert_eq!(c.secret_key.expose(), "SECRETFILE");
        assert!(matches!(c.secret_key_source, CredentialSource::NcloudConfigure(_)));
    }

    #[test]
    fn the_ncp_cli_file_brings_its_api_url_with_its_keys() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".ncloud")).unwrap();
        std::fs::write(
            home.path().join(".ncloud/configure"),
            "[DEFAULT]\nncloud_access_key_id = AK\nncloud_secret_access_key = SK\nncloud_api_url = https://ncloud.apigw.gov-ntruss.com\n",
        )
        .unwrap();
        let env = env_of(&[("HOME", home.path())]);
        let c = resolve_with(&config(Path::new("/x"), None, None), &env).unwrap();
        assert_eq!(c.api_url.unwrap().as_str(), "https://ncloud.apigw.gov-ntruss.com/");
        let env = env_of(&[("HOME", home.path()), ("NCLOUD_ACCESS_KEY", Path::new("ENVAK"))]);
        let c = resolve_with(&config(Path::new("/x"), None, None), &env).unwrap();
        assert_eq!(c.api_url, None, "keys from elsewhere do not take the file's region");
    }

    #[test]
    fn ncp_cli_file_prefers_the_default_profile() {
        let text = "[other]\nncloud_access_key_id = OTHER\n[DEFAULT]\nncloud_access_key_id=DEF\n";
        assert_eq!(
            ncloud_configure_value(text, "ncloud_access_key_id").as_deref(),
            Some("DEF")
        );
        let text = "ncloud_access_key_id = TOP\n[p]\nncloud_access_key_id = P\n";
        assert_eq!(
            ncloud_configure_value(text, "ncloud_access_key_id").as_deref(),
            Some("TOP")
        );
        assert_eq!(ncloud_configure_value("[p]\n", "ncloud_access_key_id"), None);
    }

    #[test]
    fn a_configured_file_that_is_missing_is_an_error_naming_the_file_not_a_fallback() {
        let env = env_of(&[("NCLOUD_ACCESS_KEY", Path::new("ENVAK"))]);
        let err = resolve_with(&config(Path::new("/nowhere"), Some("ak"), None), &env).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nowhere/ak"), "{msg}");
        assert!(!msg.contains("ENVAK"), "{msg}");
    }

    #[test]
    fn a_key_file_that_cannot_hold_a_key_is_refused_naming_the_file_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sk"), "SK").unwrap();
        let cases: &[(&[u8], &str)] = &[
            (b"\xef\xbb\xbfAK-SENTINEL\n", "byte-order mark"),
            (b"AK-SENTINEL\0\n", "NUL byte"),
            (b"AK-SENTINEL\nSECOND-LINE-SENTINEL\n", "more than one line"),
            (b"AK-SENTINEL\r\n\r\nSECOND-LINE-SENTINEL", "more than one line"),
            (b"AK-\x1b[0mSENTINEL", "control character"),
            (b"AK-SENTINEL\xff", "not UTF-8"),
        ];
        for (content, needle) in cases {
            std::fs::write(dir.path().join("ak"), content).unwrap();
            let err = resolve_with(&config(dir.path(), Some("ak"), Some("sk")), &|_| None).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(needle), "{needle}: {msg}");
            assert!(msg.contains(&dir.path().join("ak").display().to_string()), "{msg}");
            assert!(!msg.contains("SENTINEL"), "{msg}");
        }
        // A final newline, or a Windows one, is what editors write: still fine.
        std::fs::write(dir.path().join("ak"), "AK\r\n").unwrap();
        let c = resolve_with(&config(dir.path(), Some("ak"), Some("sk")), &|_| None).unwrap();
        assert_eq!(c.access_key.expose(), "AK");
    }

    #[test]
    fn a_key_file_that_is_far_too_long_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ak"), "A".repeat(100_000)).unwrap();
        let err = resolve_with(&config(dir.path(), Some("ak"), None), &|_| None).unwrap_err();
        assert!(err.to_string().contains("larger than 4 KiB"), "{err}");
    }

    #[test]
    fn an_environment_or_ncp_cli_value_that_cannot_be_a_key_is_refused_naming_its_source() {
        let env = env_of(&[("NCLOUD_ACCESS_KEY", Path::new("\u{feff}AK-SENTINEL"))]);
        let err = resolve_with(&config(Path::new("/x"), None, None), &env).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("environment variable NCLOUD_ACCESS_KEY"), "{msg}");
        assert!(msg.contains("byte-order mark") && !msg.contains("SENTINEL"), "{msg}");
        let env = env_of(&[("NCLOUD_ACCESS_KEY", Path::new("AK\nSECOND-SENTINEL"))]);
        let msg = resolve_with(&config(Path::new("/x"), None, None), &env)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("more than one line") && !msg.contains("SENTINEL"), "{msg}");

        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".ncloud")).unwrap();
        std::fs::write(
            home.path().join(".ncloud/configure"),
            "[DEFAULT]\nncloud_access_key_id = AK\x07SENTINEL\nncloud_secret_access_key = SK\n",
        )
        .unwrap();
        let env = env_of(&[("HOME", home.path())]);
        let msg = resolve_with(&config(Path::new("/x"), None, None), &env)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("NCP CLI file") && msg.contains("control character"),
            "{msg}"
        );
        assert!(!msg.contains("SENTINEL"), "{msg}");
    }

    #[test]
    fn nothing_found_says_every_place_to_put_the_key() {
        let err = resolve_with(&config(Path::new("/x"), None, None), &|_| None).unwrap_err();
        let msg = err.to_string();
        for needle in [
            "access_key_file",
            "CREDENTIALS_DIRECTORY",
            "NCLOUD_ACCESS_KEY",
            "ncloud configure",
        ] {
            assert!(msg.contains(needle), "{msg} lacks {needle}");
        }
    }
}
