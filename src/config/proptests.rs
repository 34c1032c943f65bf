//! Property tests of the config loader and the credentials reader: whatever they are
//! given, they return; a rejected file is reported in at most [`MAX_PROBLEMS`] problems,
//! each on its own `error:` line naming the file; and no secret ever shows.

use std::ffi::OsString;
use std::path::Path;

use proptest::prelude::*;

use super::credentials::resolve_with;
use super::*;
use crate::cmd::render_config_error;

/// The annotated example config, which every mutation starts from.
const EXAMPLE: &str = include_str!("../../config/ncp-watchd.toml");
/// Where the generated files claim to be read from; nothing is there.
const FILE: &str = "/nonexistent/ncp-watchd-proptest/config.toml";

/// Few enough cases that the whole run stays within seconds in a debug build.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Loads `source` and checks the shape of the report when it is refused.
fn loads_or_reports_well(source: &str) -> Result<(), TestCaseError> {
    let Err(e) = Config::parse(Path::new(FILE), source) else {
        return Ok(());
    };
    let text = render_config_error(&e);
    let lines: Vec<&str> = text.lines().collect();
    let prefix = format!("{FILE}:");
    let problems: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with(&prefix)).collect();
    prop_assert!(!problems.is_empty(), "a refusal names at least one problem:\n{text}");
    prop_assert!(problems.len() <= MAX_PROBLEMS, "{} problem lines", problems.len());
    for line in &problems {
        // `file:line:col: error: …`, the compilers' form.
        let mut parts = line[prefix.len()..].splitn(3, ':');
        let numbers = [parts.next(), parts.next()].map(|n| n.is_some_and(|n| n.parse::<u32>().is_ok()));
        prop_assert!(
            numbers == [true, true] && parts.next().is_some_and(|rest| rest.starts_with(" error: ")),
            "a problem line not in the form file:line:col: error: {line:?}"
        );
    }
    // Besides the problems there is the closing line, and the note when the list was cut.
    let others = lines.len() - problems.len();
    prop_assert!(others == 1 || others == 2, "stray lines in:\n{text}");
    prop_assert!(lines.last().is_some_and(|l| l.contains("run `ncp-watchd check` again")));
    Ok(())
}

/// One edit of the example config.
#[derive(Debug, Clone)]
enum Edit {
    /// Remove a line.
    Delete(usize),
    /// Repeat a line just after itself.
    Duplicate(usize),
    /// Replace one character of a line (or append one at its end).
    Substitute(usize, char),
}

/// Characters that matter to TOML, so that substitutions often break structure rather
/// than only change a word.
fn substitute_char() -> impl Strategy<Value = char> {
    prop_oneof![
        any::<char>(),
        prop::sample::select(vec![
            '"', '\'', '[', ']', '=', '#', '{', '}', ',', '.', '\\', '\n', '0', '-', ' ', 'x', '\u{0}',
        ]),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Duplicate),
        (any::<usize>(), substitute_char()).prop_map(|(i, c)| Edit::Substitute(i, c)),
    ]
}

fn mutate(edits: &[Edit]) -> String {
    let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_string).collect();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match *e {
            Edit::Delete(i) => {
                lines.remove(i % n);
            }
            Edit::Duplicate(i) => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            Edit::Substitute(i, c) => {
                let line = &mut lines[i % n];
                let mut chars: Vec<char> = line.chars().collect();
                let at = (i / n) % (chars.len() + 1);
                if at == chars.len() {
                    chars.push(c);
                } else {
                    chars[at] = c;
                }
                *line = chars.into_iter().collect();
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn the_loader_never_panics_on_arbitrary_text(source in any::<String>()) {
        loads_or_reports_well(&source)?;
    }

    #[test]
    fn the_loader_never_panics_on_text_made_of_toml_punctuation(
        source in "[a-z_\\[\\]=\"' .0-9\n#{},\\\\]{0,300}"
    ) {
        loads_or_reports_well(&source)?;
    }

    #[test]
    fn the_loader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        loads_or_reports_well(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn the_loader_reports_every_mutation_of_the_example_config_well(
        edits in prop::collection::vec(edit(), 1..12)
    ) {
        loads_or_reports_well(&mutate(&edits))?;
    }

    #[test]
    fn the_loader_reports_many_repeated_mistakes_in_at_most_fifty_lines(
        line in "(rate_limit_per_minute = 0|timeout = \"soon\"|bogus = 1|= =|\\[\\[x\\]\\])\n",
        times in 40usize..200,
    ) {
        loads_or_reports_well(&format!("[api]\n{}", line.repeat(times)))?;
    }
}

/// A TOML value, or a quoted key, whose text holds escapes for control characters, so that
/// messages which echo what was written are put to the test.
fn escaped_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "x1", " ", "\\n", "\\r", "\\t", "\\u001b"]),
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn each_problem_stays_on_its_line_whatever_a_key_or_value_holds(
        place in prop::sample::select(vec![
            "[api]\nregion", "[api]\nmedia_asset_path", "[api]\ntimeout", "[log]\nformat", "[log]\nlevel",
            "[poll]\nterminal_recheck", "instance", "[[watch.search_image]]\nasset_key",
            "[[watch.project]]\nworkspace", "[[watch.vod]]\ncategories = [\"1\"]\nname",
        ]),
        value in escaped_text(),
        key in escaped_text(),
    ) {
        loads_or_reports_well(&format!("{place} = \"{value}\"\n"))?;
        loads_or_reports_well(&format!("[api]\n\"{key}\" = 1\n"))?;
    }
}

/// How a planted value is spoiled, so that the error paths that name it are taken too.
fn spoil(value: &str, how: u8) -> Vec<u8> {
    match how {
        0 => format!("{value}\n").into_bytes(),
        1 => format!("\u{feff}{value}").into_bytes(),
        2 => format!("{value}\0").into_bytes(),
        3 => format!("{value}\n{value}\n").into_bytes(),
        4 => format!("{value}\u{7}").into_bytes(),
        _ => [value.as_bytes(), b"\xff"].concat(),
    }
}

proptest! {
    #![proptest_config(cases(96))]

    #[test]
    fn planted_secrets_never_show_in_debug_output_or_any_error(
        secret in "[A-Za-z0-9+/]{24,40}",
        access_spoil in 0u8..6,
        secret_spoil in 0u8..6,
        hook_form in 0u8..3,
        url_form in 0u8..3,
        mistake in any::<bool>(),
    ) {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let ak = dir.path().join("ak");
        std::fs::write(&ak, spoil(&format!("AK{secret}"), access_spoil)).unwrap();
        let hook = dir.path().join("hook");
        let hook_secret = match hook_form {
            0 => format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&secret)),
            1 => format!("whsec_%{secret}"),
            _ => format!("HOOK{secret}"),
        };
        std::fs::write(&hook, &hook_secret).unwrap();
        let url = match url_form {
            0 => format!("https://hooks.example.com/services/{secret}"),
            1 => format!("ftp://hooks.example.com/{secret}"),
            _ => format!("hooks example {secret}"),
        };
        let toml = format!(
            "[credentials]\naccess_key_file = {ak:?}\n\
             [[watch.search_image]]\nasset_key = \"a.jpg\"\n\
             [[sink.webhook]]\nname = \"chat\"\nurl = {url:?}\nsecret_file = {hook:?}\n{}",
            if mistake { "[api]\nrate_limit_per_minute = 0\n" } else { "" },
        );
        let env_secret = OsString::from(String::from_utf8_lossy(&spoil(&format!("SK{secret}"), secret_spoil)).into_owned());
        let env = move |name: &str| (name == "NCLOUD_SECRET_KEY").then(|| env_secret.clone());

        let mut shown = Vec::new();
        match Config::parse(&dir.path().join("config.toml"), &toml) {
            Err(e) => shown.push(render_config_error(&e)),
            Ok(config) => {
                shown.push(format!("{config:?}"));
                match resolve_with(&config.credentials, &env) {
                    Ok(c) => shown.push(format!("{c:?}")),
                    Err(e) => shown.push(e.to_string()),
                }
                for sink in &config.sinks.webhooks {
                    match sink.secret.as_ref().map(WebhookSecretSource::resolve) {
                        Some(Ok(s)) => shown.push(format!("{s:?} {s}")),
                        Some(Err(e)) => shown.push(e),
                        None => {}
                    }
                }
            }
        }
        for text in shown {
            prop_assert!(!text.contains(&secret), "the secret shows in:\n{text}");
        }
    }

    #[test]
    fn the_credentials_reader_never_panics_and_never_echoes_the_file(
        prefix in prop::collection::vec(any::<u8>(), 0..48),
        marker in "[A-Za-z0-9]{16}",
        suffix in prop::collection::vec(any::<u8>(), 0..48),
        raw in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = CredentialsConfig {
            access_key_file: Some("ak".into()),
            secret_key_file: Some("sk".into()),
            base_dir: dir.path().to_path_buf(),
        };
        std::fs::write(dir.path().join("sk"), "SK").unwrap();

        std::fs::write(dir.path().join("ak"), [&prefix[..], marker.as_bytes(), &suffix[..]].concat()).unwrap();
        let text = match resolve_with(&config, &|_| None) {
            Ok(c) => format!("{c:?}"),
            Err(e) => e.to_string(),
        };
        prop_assert!(!text.contains(&marker), "the file's content shows in: {text}");

        std::fs::write(dir.path().join("ak"), &raw).unwrap();
        if let Err(e) = resolve_with(&config, &|_| None) {
            let msg = e.to_string();
            let content = String::from_utf8_lossy(&raw);
            let content = content.trim();
            prop_assert!(
                content.chars().count() < 8 || !msg.contains(content),
                "the file's content shows in: {msg}"
            );
        }
    }
}
