//! `ncp-watchd check`: every kind of configuration mistake, credentials, and secrets.

use crate::helpers::{config_dir, text, watchd};

const WATCH: &str = "[[watch.search_image]]\nasset_key = \"images/a.jpg\"\n";

/// Runs `check` on `toml` and returns (exit code, stdout, stderr).
async fn check(toml: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let cfg = config_dir(toml);
    let out = watchd(&["check", "-c", cfg.path.to_str().unwrap()], env).await;
    let (stdout, stderr) = text(&out);
    (
        out.status.code().unwrap_or(-1),
        stdout,
        stderr.replace(cfg.path.to_str().unwrap(), "CONFIG"),
    )
}

/// Asserts that `toml` fails with a message at `line` naming `key` and containing `needle`.
async fn rejects(toml: &str, line: usize, key: &str, needle: &str) {
    let (code, _, stderr) = check(toml, &[]).await;
    assert_eq!(code, 2, "config should be rejected with exit 2:\n{toml}\n{stderr}");
    // The compilers' form: `file:line:col: error: key: message`.
    let prefix = format!("CONFIG:{line}:");
    let hit = stderr
        .lines()
        .find(|l| l.starts_with(&prefix) && l.contains(": error: ") && l.contains(key) && l.contains(needle));
    assert!(
        hit.is_some(),
        "expected a line starting {prefix:?} naming {key:?} with {needle:?}, got:\n{stderr}"
    );
}

#[tokio::test]
async fn a_misspelled_key_names_the_line_the_key_and_the_nearest_valid_key() {
    let toml = format!("{WATCH}[api]\nrate_limt_per_minute = 100\n");
    rejects(
        &toml,
        4,
        "api.rate_limt_per_minute",
        "did you mean `rate_limit_per_minute`?",
    )
    .await;
}

#[tokio::test]
async fn a_misspelled_section_or_watch_kind_suggests_the_right_one() {
    rejects(
        &format!("{WATCH}[pol]\ninterval = \"1s\"\n"),
        3,
        "pol",
        "did you mean `poll`?",
    )
    .await;
    rejects(
        "[[watch.video_aset]]\nworkspace = \"w\"\n",
        1,
        "watch.video_aset",
        "did you mean `video_asset`?",
    )
    .await;
    rejects(
        &format!("{WATCH}[[sink.webhok]]\nname = \"x\"\n"),
        3,
        "sink.webhok",
        "did you mean `webhook`?",
    )
    .await;
}

#[tokio::test]
async fn each_kind_of_mistake_is_rejected_with_its_line_and_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[api]\nrate_limit_per_minute = \"fast\"\n",
            2,
            "api.rate_limit_per_minute",
            "expected an integer",
        ),
        (
            "[api]\nrate_limit_per_minute = 0\n",
            2,
            "api.rate_limit_per_minute",
            "out of range",
        ),
        ("[api]\nmax_in_flight = -1\n", 2, "api.max_in_flight", "out of range"),
        (
            "[api]\nmedia_url = \"ftp://example.com\"\n",
            2,
            "api.media_url",
            "http or https",
        ),
        ("[api]\nvod_url = \"not a url\"\n", 2, "api.vod_url", "not a valid URL"),
        (
            "[api]\nmedia_asset_path = \"videos\"\n",
            2,
            "api.media_asset_path",
            "\"video-assets\" or \"assets\"",
        ),
        (
            "[poll]\ninterval = \"15 parsecs\"\n",
            2,
            "poll.interval",
            "is not a duration",
        ),
        (
            "[poll]\nmax_backoff = \"0s\"\n",
            2,
            "poll.max_backoff",
            "longer than zero",
        ),
        (
            "[poll]\nterminal_recheck = \"sometimes\"\n",
            2,
            "poll.terminal_recheck",
            "is not a duration",
        ),
        (
            "[server]\nlisten = \"localhost\"\n",
            2,
            "server.listen",
            "address and port",
        ),
        ("[log]\nformat = \"xml\"\n", 2, "log.format", "\"text\" or \"json\""),
        ("[state]\npath = \"\"\n", 2, "state.path", "must not be empty"),
        ("[api\nx = 1\n", 1, "", "invalid TOML"),
        ("instance = \"has space\"\n", 1, "instance", "letters, digits"),
    ];
    for (toml, line, key, needle) in cases {
        // The watch goes after the mistake so line numbers stay those of the snippet.
        rejects(&format!("{toml}{WATCH}"), *line, key, needle).await;
    }
}

#[tokio::test]
async fn watch_mistakes_are_rejected() {
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[[watch.video_asset]]\nworkspace = \"w\"\nproject_id = \"1\"\n",
            1,
            "watch.video_asset[0].asset_id",
            "missing required key `asset_id`",
        ),
        (
            "[[watch.video_asset]]\nworkspace = \"\"\nproject_id = 1\nasset_id = 2\n",
            2,
            "watch.video_asset[0].workspace",
            "must not be empty",
        ),
        (
            "[[watch.video_asset]]\nworkspace = \"w\"\nproject_id = true\nasset_id = 2\n",
            3,
            "watch.video_asset[0].project_id",
            "expected an id",
        ),
        (
            "[[watch.project]]\nworkspace = \"w\"\nproject_id = \"1\"\n[[watch.project]]\nworkspace = \"w\"\nproject_id = 1\n",
            4,
            "watch.project[1]",
            "duplicate watch: watch.project[0] already watches project w/1",
        ),
        (
            "[[watch.vod]]\ncategories = []\n",
            2,
            "watch.vod[0].categories",
            "empty list watches nothing",
        ),
        (
            "[[watch.vod]]\nprogress_step = 150\n",
            2,
            "watch.vod[0].progress_step",
            "out of range",
        ),
        (
            "[[watch.vod]]\ncategories = [\"a\"]\n[[watch.vod]]\ncategories = [\"b\", \"a\"]\n",
            4,
            "watch.vod[1].categories",
            "already watches VOD category a",
        ),
        (
            "[[watch.vod]]\n[[watch.vod]]\ncategories = [\"b\"]\n",
            1,
            "watch.vod[0]",
            "already watches every category",
        ),
        (
            "[watch.search_image]\nasset_key = \"k\"\n",
            1,
            "watch.search_image",
            "double brackets",
        ),
        ("instance = \"x\"\n", 1, "watch", "no watches"),
    ];
    for (toml, line, key, needle) in cases {
        rejects(toml, *line, key, needle).await;
    }
}

#[tokio::test]
async fn sink_mistakes_are_rejected() {
    let hook = "[[sink.webhook]]\nname = \"ops\"\nurl = \"https://hooks.example.com/x\"\n";
    let cases: Vec<(String, usize, &str, &str)> = vec![
        (
            format!("{hook}secret_file = \"s\"\nsecret_env = \"S\"\n"),
            5,
            "sink.webhook[0].secret_env",
            "not both",
        ),
        (
            format!("{hook}retry_initial = \"10m\"\nretry_max = \"1m\"\n"),
            5,
            "sink.webhook[0].retry_max",
            "shorter than retry_initial",
        ),
        (
            format!("{hook}events = [\"vod.encode.complet\"]\n"),
            4,
            "sink.webhook[0].events",
            "did you mean `vod.encode.complete`?",
        ),
        (
            format!("{hook}events = []\n"),
            4,
            "sink.webhook[0].events",
            "empty list delivers nothing",
        ),
        (
            format!("{hook}format = \"msteams\"\n"),
            4,
            "sink.webhook[0].format",
            "\"cloudevents\" or \"slack\" or \"discord\" or \"teams\" or \"google_chat\"",
        ),
        (
            format!("{hook}max_attempts = 0\n"),
            4,
            "sink.webhook[0].max_attempts",
            "out of range",
        ),
        (
            "[[sink.webhook]]\nurl = \"https://h.example.com\"\n".to_string(),
            1,
            "sink.webhook[0].name",
            "missing required key `name`",
        ),
        (
            "[[sink.webhook]]\nname = \"a\"\nurl = \"mailto:x@example.com\"\n".to_string(),
            3,
            "sink.webhook[0].url",
            "http or https",
        ),
        (
            format!("{hook}{hook}"),
            5,
            "sink.webhook[1].name",
            "already used by sink.webhook[0].name",
        ),
        (
            "[[sink.log]]\n[[sink.log]]\n".to_string(),
            2,
            "sink.log[1].path",
            "already writes to stdout",
        ),
    ];
    for (toml, line, key, needle) in cases {
        rejects(&format!("{toml}{WATCH}"), line, key, needle).await;
    }
}

#[tokio::test]
async fn every_mistake_in_a_file_is_reported_in_one_run() {
    let toml = "\
[api]
rate_limit_per_minute = 0
timout = \"5s\"
[poll]
interval = \"soon\"
[[watch.video_asset]]
workspace = \"w\"
project_id = \"1\"
[[sink.webhook]]
name = \"ops\"
url = \"https://hooks.example.com\"
retry_initial = 5
";
    let (code, _, stderr) = check(toml, &[]).await;
    assert_eq!(code, 2);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("CONFIG:")).collect();
    let lines: Vec<&str> = errors.iter().map(|l| l.split(':').nth(1).unwrap()).collect();
    assert_eq!(lines, ["2", "3", "5", "6", "12"], "{stderr}");
    assert!(
        !stderr.contains("no watches"),
        "an invalid watch is still a watch: {stderr}"
    );
    assert!(stderr.contains("5 problems in CONFIG"), "{stderr}");
}

#[tokio::test]
async fn a_missing_config_file_is_a_usage_error_naming_the_file() {
    let out = watchd(&["check", "-c", "/nonexistent/ncp-watchd.toml"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("/nonexistent/ncp-watchd.toml"), "{stderr}");
}

#[tokio::test]
async fn the_config_path_comes_from_the_environment_when_not_given() {
    let cfg = config_dir(&format!("instance = \"from-env\"\n{WATCH}"));
    let out = watchd(
        &["check"],
        &[
            ("NCP_WATCHD_CONFIG", cfg.path.to_str().unwrap()),
            ("NCLOUD_ACCESS_KEY", "a"),
            ("NCLOUD_SECRET_KEY", "s"),
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("instance: from-env"), "{stdout}");
}

#[tokio::test]
async fn missing_credentials_fail_the_check_and_say_where_to_put_them() {
    let (code, _, stderr) = check(WATCH, &[]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("no access key found"), "{stderr}");
    assert!(stderr.contains("NCLOUD_ACCESS_KEY"), "{stderr}");
}

#[tokio::test]
async fn check_summarises_watches_sinks_endpoints_and_credential_sources() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("access_key"), "AKID-SENTINEL-4242\n").unwrap();
    let home = tempfile::tempdir().unwrap();
    let toml = "\
instance = \"prod-1\"
[credentials]
access_key_file = \"access_key\"
[api]
media_asset_path = \"assets\"
rate_limit_per_minute = 500
[[watch.video_asset]]
workspace = \"ws\"
project_id = 1234
asset_id = \"5678\"
name = \"launch-trailer\"
analysis = true
[[watch.project]]
workspace = \"ws\"
project_id = \"1234\"
[[watch.search_image]]
asset_key = \"images/q.jpg\"
[[watch.vod]]
categories = [\"10019\", \"test2\"]
progress_step = 25
[[sink.webhook]]
name = \"chat\"
url = \"https://hooks.slack.example.com/services/T000/B000/URL-TOKEN-SENTINEL\"
format = \"slack\"
[[sink.log]]
";
    let (code, stdout, stderr) = check(
        toml,
        &[
            ("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap()),
            ("NCLOUD_SECRET_KEY", "SECRET-SENTINEL-9999"),
            ("HOME", home.path().to_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    for needle in [
        "watches: 1 video_asset, 1 project, 1 search_image, 1 vod",
        "workspaces/ws/projects/1234/video-assets/5678 \"launch-trailer\" +analysis",
        "categories 10019, test2, progress every 25%",
        "webhook chat -> https://hooks.slack.example.com (slack, unsigned",
        "log stdout -> stdout",
        "import status under assets/",
        "at most 500 calls/min per host",
        &format!("access key from file {}", creds.path().join("access_key").display()),
        "secret key from environment variable NCLOUD_SECRET_KEY",
    ] {
        assert!(stdout.contains(needle), "summary lacks {needle:?}:\n{stdout}");
    }
    for secret in [
        "AKID-SENTINEL-4242",
        "SECRET-SENTINEL-9999",
        "URL-TOKEN-SENTINEL",
        "/services/",
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked:\n{stdout}\n{stderr}"
        );
    }
}

#[tokio::test]
async fn credentials_come_from_the_ncp_cli_file_when_nothing_else_has_them() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".ncloud")).unwrap();
    std::fs::write(
        home.path().join(".ncloud/configure"),
        "[DEFAULT]\nncloud_access_key_id = CLI-AK-SENTINEL\nncloud_secret_access_key = CLI-SK-SENTINEL\nncloud_api_url = https://ncloud.apigw.ntruss.com\n",
    )
    .unwrap();
    let (code, stdout, stderr) = check(WATCH, &[("HOME", home.path().to_str().unwrap())]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("access key from NCP CLI file"), "{stdout}");
    assert!(!stdout.contains("CLI-AK-SENTINEL") && !stdout.contains("CLI-SK-SENTINEL"));
}

#[tokio::test]
async fn webhook_secrets_must_be_present_and_well_formed_and_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, "not-a-whsec-SENTINEL").unwrap();
    let toml = format!(
        "{WATCH}[[sink.webhook]]\nname = \"a\"\nurl = \"https://a.example.com/TOKEN-A\"\nsecret_file = \"{}\"\n\
         [[sink.webhook]]\nname = \"b\"\nurl = \"https://b.example.com/TOKEN-B\"\nsecret_env = \"HOOK_SECRET\"\n\
         [[sink.webhook]]\nname = \"c\"\nurl = \"https://c.example.com/TOKEN-C\"\nsecret_env = \"UNSET_SECRET\"\n",
        secret_file.display()
    );
    let env = [
        ("NCLOUD_ACCESS_KEY", "a"),
        ("NCLOUD_SECRET_KEY", "s"),
        ("HOOK_SECRET", "whsec_%%%-SENTINEL"),
    ];
    let (code, stdout, stderr) = check(&toml, &env).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("sink.webhook `a`: the webhook secret from file"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("sink.webhook `b`: the webhook secret from environment variable HOOK_SECRET is not valid base64"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sink.webhook `c`: environment variable UNSET_SECRET is not set"),
        "{stderr}"
    );
    for secret in ["SENTINEL", "TOKEN-"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked:\n{stderr}"
        );
    }

    std::fs::write(&secret_file, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    let env = [
        ("NCLOUD_ACCESS_KEY", "a"),
        ("NCLOUD_SECRET_KEY", "s"),
        ("HOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("UNSET_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ];
    let (code, stdout, stderr) = check(&toml, &env).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("signed with the secret from environment variable HOOK_SECRET"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("MfKQ9r8") && !stdout.contains("C2FVsBQ") && !stdout.contains("TOKEN-"),
        "{stdout}"
    );
}

#[test]
fn debug_output_of_a_loaded_config_and_credentials_shows_no_secret() {
    let config = crate::helpers::config(&format!(
        "{WATCH}[[sink.webhook]]\nname = \"chat\"\nurl = \"https://hooks.example.com/services/URL-TOKEN-SENTINEL\"\n"
    ));
    let debug = format!("{config:?}");
    assert!(!debug.contains("URL-TOKEN-SENTINEL"), "{debug}");
    assert!(
        debug.contains("https://hooks.example.com"),
        "the display form should remain: {debug}"
    );
    let creds = crate::helpers::credentials("AK-SENTINEL", "SK-SENTINEL");
    let debug = format!("{creds:?}");
    assert!(
        !debug.contains("AK-SENTINEL") && !debug.contains("SK-SENTINEL"),
        "{debug}"
    );
}

#[test]
fn the_annotated_example_config_is_valid_and_documents_the_real_defaults() {
    use ncp_watchd::config::*;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ncp-watchd.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.api.media_url.as_str(), format!("{DEFAULT_MEDIA_URL}/"));
    assert_eq!(c.api.vod_url.as_str(), format!("{DEFAULT_VOD_URL}/"));
    assert_eq!(c.api.media_asset_path, MediaAssetPath::VideoAssets);
    assert_eq!(c.api.timeout, DEFAULT_API_TIMEOUT);
    assert_eq!(c.api.rate_limit_per_minute, DEFAULT_RATE_LIMIT_PER_MINUTE);
    assert_eq!(c.api.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(c.poll.interval, DEFAULT_POLL_INTERVAL);
    assert_eq!(c.poll.max_backoff, DEFAULT_MAX_BACKOFF);
    assert_eq!(c.poll.discovery_interval, DEFAULT_DISCOVERY_INTERVAL);
    assert_eq!(c.poll.vod_lookback, DEFAULT_VOD_LOOKBACK);
    assert_eq!(c.poll.terminal_recheck, None);
    assert_eq!(c.poll.upload_grace, DEFAULT_UPLOAD_GRACE);
    assert_eq!(c.poll.stall_after, DEFAULT_STALL_AFTER);
    assert_eq!(c.poll.stalled_interval, DEFAULT_STALLED_INTERVAL);
    assert!(!c.watches.projects[0].baseline && !c.watches.vods[0].baseline);
    let hook = &c.sinks.webhooks[0];
    assert_eq!(
        (hook.timeout, hook.max_attempts),
        (DEFAULT_WEBHOOK_TIMEOUT, DEFAULT_MAX_ATTEMPTS)
    );
    assert_eq!(
        (hook.retry_initial, hook.retry_max),
        (DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX)
    );
    assert_eq!(c.state, ncp_watchd::config::StateConfig::sqlite(DEFAULT_STATE_PATH));
    assert_eq!(c.state_retention, DEFAULT_RETENTION);
    assert_eq!(c.cluster_lease_ttl, DEFAULT_LEASE_TTL);
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(
        c.callbacks.as_ref().map(|cb| cb.fallback_interval),
        Some(DEFAULT_CALLBACK_FALLBACK_INTERVAL)
    );
    assert_eq!(c.watches.len(), 4);
}

#[test]
fn the_demo_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let c = ncp_watchd::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.watches.len(), 5);
}

#[tokio::test]
async fn a_relative_webhook_secret_file_is_read_from_the_credentials_directory() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(
        creds.path().join("webhook_secret"),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .unwrap();
    std::fs::write(creds.path().join("access_key"), "a").unwrap();
    std::fs::write(creds.path().join("secret_key"), "s").unwrap();
    let toml = format!(
        "{WATCH}[[sink.webhook]]\nname = \"ops\"\nurl = \"https://h.example.com/x\"\nsecret_file = \"webhook_secret\"\n"
    );
    let (code, stdout, stderr) = check(&toml, &[("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())]).await;
    assert_eq!(code, 0, "{stderr}");
    let expected = format!(
        "signed with the secret from file {}",
        creds.path().join("webhook_secret").display()
    );
    assert!(stdout.contains(&expected), "{stdout}");
}

#[tokio::test]
async fn identifiers_that_cannot_be_right_are_rejected_before_anything_is_sent() {
    let asset = |ws: &str, pid: &str, aid: &str| {
        format!("[[watch.video_asset]]\nworkspace = {ws}\nproject_id = {pid}\nasset_id = {aid}\n")
    };
    let cases: Vec<(String, usize, &str, &str)> = vec![
        (
            asset("\"ws\"", "\"..\"", "\".\""),
            3,
            "watch.video_asset[0].project_id",
            "not an id",
        ),
        (
            asset("\"ws\"", "\"1\"", "\".\""),
            4,
            "watch.video_asset[0].asset_id",
            "positive integers",
        ),
        (
            asset("\"ws\"", "\"1\"", "\"a/b\""),
            4,
            "watch.video_asset[0].asset_id",
            "not an id",
        ),
        (
            asset("\"ws\"", "0", "\"5\""),
            3,
            "watch.video_asset[0].project_id",
            "not an id",
        ),
        (
            asset("\"ws\"", "\"12x\"", "\"5\""),
            3,
            "watch.video_asset[0].project_id",
            "not an id",
        ),
        (
            asset("\"My WS\"", "1", "2"),
            2,
            "watch.video_asset[0].workspace",
            "lowercase letters, digits and `-`",
        ),
        (
            asset("\"../ws\"", "1", "2"),
            2,
            "watch.video_asset[0].workspace",
            "not a workspace name",
        ),
        (
            "[[watch.project]]\nworkspace = \"ws\"\nproject_id = \"-3\"\n".to_string(),
            3,
            "watch.project[0].project_id",
            "not an id",
        ),
        (
            "[[watch.search_image]]\nasset_key = \"images//a.jpg\"\n".to_string(),
            2,
            "watch.search_image[0].asset_key",
            "no empty, `.` or `..` segment",
        ),
        (
            "[[watch.search_image]]\nasset_key = \"images/../a.jpg\"\n".to_string(),
            2,
            "watch.search_image[0].asset_key",
            "segment",
        ),
    ];
    for (toml, line, key, needle) in &cases {
        rejects(toml, *line, key, needle).await;
    }
    let (code, _, stderr) = check(
        &asset("\"my-ws-2\"", "1234", "\"5678\""),
        &[("NCLOUD_ACCESS_KEY", "a"), ("NCLOUD_SECRET_KEY", "b")],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn a_region_presets_both_hosts_and_explicit_urls_win() {
    let env = [("NCLOUD_ACCESS_KEY", "a"), ("NCLOUD_SECRET_KEY", "b")];
    for (region, media, vod) in [
        (
            "public",
            "https://mi.apigw.ntruss.com",
            "https://vodstation.apigw.ntruss.com",
        ),
        (
            "gov",
            "https://mi.apigw.gov-ntruss.com",
            "https://vodstation.apigw.gov-ntruss.com",
        ),
        (
            "fin",
            "https://mi.apigw.fin-ntruss.com",
            "https://vodstation.apigw.fin-ntruss.com",
        ),
    ] {
        let (code, stdout, stderr) = check(&format!("{WATCH}[api]\nregion = \"{region}\"\n"), &env).await;
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(&format!("endpoints (region {region})")), "{stdout}");
        assert!(stdout.contains(&format!("media {media}")), "{stdout}");
        assert!(stdout.contains(&format!("vod   {vod}")), "{stdout}");
    }
    let (_, stdout, _) = check(
        &format!("{WATCH}[api]\nregion = \"gov\"\nmedia_url = \"https://proxy.internal\"\n"),
        &env,
    )
    .await;
    assert!(stdout.contains("media https://proxy.internal"), "{stdout}");
    assert!(
        stdout.contains("vod   https://vodstation.apigw.gov-ntruss.com"),
        "{stdout}"
    );
    rejects(
        &format!("{WATCH}[api]\nregion = \"moon\"\n"),
        4,
        "api.region",
        "\"public\" or \"gov\" or \"fin\"",
    )
    .await;
}

#[tokio::test]
async fn field_behaviour_keys_are_validated_and_summarised() {
    let env = [("NCLOUD_ACCESS_KEY", "a"), ("NCLOUD_SECRET_KEY", "b")];
    let toml = format!(
        "{WATCH}[[watch.project]]\nworkspace = \"ws\"\nproject_id = 1\nbaseline = true\n[[watch.vod]]\nbaseline = true\n\
         [poll]\nupload_grace = \"20m\"\nstall_after = \"2h\"\nstalled_interval = \"30m\"\n"
    );
    let (code, stdout, stderr) = check(&toml, &env).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("upload grace 20m, stalled after 2h unchanged, then every 30m"),
        "{stdout}"
    );
    assert!(stdout.contains("+baseline"), "{stdout}");
    assert!(stdout.contains("every category, baseline"), "{stdout}");
    rejects(
        &format!("{WATCH}[poll]\nstall_after = \"soon\"\n"),
        4,
        "poll.stall_after",
        "not a duration",
    )
    .await;
    rejects(
        &format!("{WATCH}[poll]\nvod_lookback = \"1000000y\"\n"),
        4,
        "poll.vod_lookback",
        "too long",
    )
    .await;
    rejects(
        &format!("{WATCH}[[watch.vod]]\nbaseline = \"yes\"\n"),
        4,
        "watch.vod[0].baseline",
        "",
    )
    .await;
}

#[tokio::test]
async fn a_config_file_over_one_mebibyte_is_refused_at_once_naming_the_file_and_the_limit() {
    let padding = "# padding\n".repeat(2 * 1024 * 1024 / 10);
    let (code, stdout, stderr) = check(&format!("{WATCH}{padding}"), &[]).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("config file CONFIG is larger than the limit of 1 MiB"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line, no per-line report: {stderr}");
}

#[tokio::test]
async fn ten_thousand_mistakes_are_reported_as_the_first_fifty_and_a_note() {
    let unknown: String = (0..10_000).map(|i| format!("unknown_{i} = 1\n")).collect();
    let (code, _, stderr) = check(&format!("{WATCH}[api]\n{unknown}"), &[]).await;
    assert_eq!(code, 2);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("CONFIG:")).collect();
    assert_eq!(errors.len(), 50, "{stderr}");
    assert!(errors[0].starts_with("CONFIG:4:1: error: api.unknown_0:"), "{stderr}");
    assert!(
        errors[49].starts_with("CONFIG:53:1: error: api.unknown_49:"),
        "the earliest are kept: {stderr}"
    );
    assert!(stderr.contains("… and more; fix these first"), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        52,
        "the problems, the note and what to do: {stderr}"
    );
}

#[tokio::test]
async fn a_misspelled_log_level_suggests_the_nearest_level_and_real_filters_pass() {
    let level = |l: &str| format!("{WATCH}[log]\nlevel = \"{l}\"\n");
    rejects(
        &level("warnn"),
        4,
        "log.level",
        "`warnn` is not a log level; did you mean `warn`?",
    )
    .await;
    rejects(
        &level("info,ncp_watchd=debugg"),
        4,
        "log.level",
        "did you mean `debug`?",
    )
    .await;
    rejects(&level("ncp_watchd"), 4, "log.level", "`ncp_watchd` is not a log level").await;
    rejects(&level("=debug"), 4, "log.level", "not a filter directive").await;
    rejects(&level(""), 4, "log.level", "expected a level").await;
    let creds = [("NCLOUD_ACCESS_KEY", "a"), ("NCLOUD_SECRET_KEY", "s")];
    for ok in [
        "WARN",
        "off",
        "ncp_watchd=debug,info",
        "ncp_watchd::daemon[poll]=Trace,warn",
        "[delivery]=debug",
    ] {
        let (code, _, stderr) = check(&level(ok), &creds).await;
        assert_eq!(code, 0, "{ok}: {stderr}");
    }
}

#[tokio::test]
async fn a_key_file_that_cannot_hold_a_key_fails_the_check_naming_the_file_not_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ak = dir.path().join("access_key");
    let toml = format!(
        "[credentials]\naccess_key_file = {:?}\n{WATCH}",
        ak.display().to_string()
    );
    for (content, problem) in [
        (&b"\xef\xbb\xbfAKID-SENTINEL\n"[..], "starts with a byte-order mark"),
        (b"AKID-SENTINEL\0", "contains a NUL byte"),
        (b"AKID-SENTINEL\nSECOND-SENTINEL\n", "has more than one line"),
        (b"AKID\tSENTINEL", "contains a control character"),
    ] {
        std::fs::write(&ak, content).unwrap();
        let (code, stdout, stderr) = check(&toml, &[("NCLOUD_SECRET_KEY", "s")]).await;
        assert_eq!(code, 2, "{problem}: {stdout}{stderr}");
        let expected = format!("error: the access key from file {} {problem}", ak.display());
        assert!(stderr.contains(&expected), "{expected}:\n{stderr}");
        assert!(!stderr.contains("SENTINEL") && !stdout.contains("SENTINEL"), "{stderr}");
    }
}

#[tokio::test]
async fn a_state_or_log_path_that_cannot_be_a_file_is_rejected_with_its_line_and_key() {
    rejects(
        &format!("[state]\npath = \".\"\n{WATCH}"),
        2,
        "state.path",
        "is a directory; name a file",
    )
    .await;
    rejects(
        &format!("[state]\npath = \"config.toml/state.db\"\n{WATCH}"),
        2,
        "state.path",
        "CONFIG is not a directory",
    )
    .await;
    rejects(
        &format!("{WATCH}[[sink.log]]\npath = \".\"\n"),
        4,
        "sink.log[0].path",
        "is a directory; name a file",
    )
    .await;
}

#[tokio::test]
async fn durations_too_long_to_add_to_a_timestamp_are_rejected_for_every_key() {
    const HOOK: &str = "[[sink.webhook]]\nname = \"h\"\nurl = \"https://h.example.com\"\n";
    for too_long in ["1000000y", "18446744073709551615s", "18446744073709551616s"] {
        let cases = [
            (format!("[api]\ntimeout = \"{too_long}\"\n"), 2, "api.timeout"),
            (format!("[poll]\ninterval = \"{too_long}\"\n"), 2, "poll.interval"),
            (format!("[poll]\nmax_backoff = \"{too_long}\"\n"), 2, "poll.max_backoff"),
            (
                format!("[poll]\nterminal_recheck = \"{too_long}\"\n"),
                2,
                "poll.terminal_recheck",
            ),
            (format!("[poll]\nstall_after = \"{too_long}\"\n"), 2, "poll.stall_after"),
            (
                format!("{HOOK}timeout = \"{too_long}\"\n"),
                4,
                "sink.webhook[0].timeout",
            ),
            (
                format!("{HOOK}retry_initial = \"{too_long}\"\n"),
                4,
                "sink.webhook[0].retry_initial",
            ),
            (
                format!("{HOOK}retry_max = \"{too_long}\"\n"),
                4,
                "sink.webhook[0].retry_max",
            ),
        ];
        for (toml, line, key) in cases {
            rejects(&format!("{toml}{WATCH}"), line, key, &format!("`{too_long}`")).await;
        }
    }
}

#[tokio::test]
async fn webhook_templates_are_validated_by_check() {
    let hook = "[[sink.webhook]]\nname = \"own\"\nurl = \"https://hooks.example.com/x\"\n";
    let env = [("NCLOUD_ACCESS_KEY", "a"), ("NCLOUD_SECRET_KEY", "b")];
    let good = format!("{WATCH}{hook}template = '{{\"what\": {{{{ subject | tojson }}}}}}'\n");
    let (code, _, stderr) = check(&good, &env).await;
    assert_eq!(code, 0, "{good}\n{stderr}");
    rejects(
        &format!("{WATCH}{hook}template = \"{{% if %}}\"\n"),
        6,
        "sink.webhook[0].template",
        "the template failed",
    )
    .await;
    rejects(
        &format!("{WATCH}{hook}template = \"{{{{ subject }}}}\"\n"),
        6,
        "sink.webhook[0].template",
        "not JSON",
    )
    .await;
    rejects(
        &format!("{WATCH}{hook}template = '{{}}'\nformat = \"slack\"\n"),
        7,
        "sink.webhook[0].format",
        "a template makes the body itself",
    )
    .await;
    rejects(
        &format!("{WATCH}{hook}template_file = \"missing.j2\"\n"),
        6,
        "sink.webhook[0].template_file",
        "cannot read",
    )
    .await;
}

#[tokio::test]
async fn a_lease_ttl_outside_three_seconds_to_ten_minutes_is_refused_naming_its_line() {
    for value in ["\"2s\"", "\"11m\"", "\"0s\"", "\"999999y\""] {
        let toml = format!("{WATCH}[cluster]\nlease_ttl = {value}\n");
        rejects(&toml, 4, "cluster.lease_ttl", "").await;
    }
    rejects(
        &format!("{WATCH}[cluster]\nlease_ttl = \"soon\"\n"),
        4,
        "cluster.lease_ttl",
        "not a duration",
    )
    .await;
    rejects(
        &format!("{WATCH}[cluster]\nlease = \"15s\"\n"),
        4,
        "cluster.lease",
        "lease_ttl",
    )
    .await;
    for value in ["\"3s\"", "\"10m\""] {
        let (_, _, stderr) = check(&format!("{WATCH}[cluster]\nlease_ttl = {value}\n"), &[]).await;
        assert!(!stderr.contains("lease_ttl"), "{value} is a valid lease: {stderr}");
    }
}

#[tokio::test]
async fn a_sink_name_holding_a_hash_is_refused() {
    rejects(
        &format!("{WATCH}[[sink.log]]\nname = \"ops#1\"\n"),
        4,
        "sink.log[0].name",
        "may not hold `#`",
    )
    .await;
}
