//! Webhook delivery: the real daemon, the simulator, and real receivers on loopback.

use std::collections::HashMap;
use std::time::Duration;

use cloudevents::AttributesReader as _;
use serde_json::Value;

use crate::helpers::{Daemon, FAST_POLL, TWO_ASSETS, config_text, has, read_events, set_import, sim_with, summary};
use crate::receiver::{Flood, Receiver, Reply, verify};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const PROJECT: &str = "[[watch.project]]\nworkspace = \"ws\"\nproject_id = \"1\"\n";

fn hook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[sink.webhook]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret_file = \"hook.secret\"\nretry_initial = \"100ms\"\nretry_max = \"400ms\"\ntimeout = \"500ms\"\nmax_attempts = 100\n{extra}\n"
    )
}

async fn start(sim_url: &str, sinks: &str) -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("hook.secret"), SECRET).unwrap();
    std::fs::write(
        tmp.path().join("config.toml"),
        config_text(sim_url, "", &format!("{PROJECT}{sinks}\n{FAST_POLL}")),
    )
    .unwrap();
    let mut d = Daemon::start_in(tmp.path()).await;
    d.adopt(tmp);
    d
}

/// One asset of project `ws/1`, already imported: one `video_asset.import.*` event.
const ONE_COMPLETED: &str = "[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\nimport = [{ at = \"0s\", status = \"COMPLETED\" }]\n";

/// Only the import events: one subject per asset.
const IMPORTS_ONLY: &str = "events = [\"video_asset.import.*\"]";

/// `ncp-watchd dead-letters -c <the daemon's config> ARGS…`.
async fn dead_letters(daemon: &Daemon, args: &[&str]) -> std::process::Output {
    let config = daemon.dir.join("config.toml");
    let mut all = vec!["dead-letters", "-c", config.to_str().unwrap()];
    all.extend_from_slice(args);
    crate::helpers::watchd(&all, &[]).await
}

/// Waits until `dead-letters list --json` shows `n` letters, or fails after `within`.
async fn wait_dead_letters(daemon: &Daemon, n: usize, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let out = dead_letters(daemon, &["list", "--json"]).await;
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} dead letters; list said {:?}; daemon log:\n{}",
            rows.len(),
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn header(r: &crate::receiver::Received, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_are_signed_cloudevents_that_independent_implementations_accept() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    let daemon = start(&sim.url(), &hook("ops", &receiver.url(), "")).await;
    // Two discoveries and two first sights.
    let got = receiver.wait_delivered(4, Duration::from_secs(20)).await;
    for r in &got {
        assert!(
            verify(SECRET, &r.headers, &r.body),
            "the signature verifies: {:?}",
            r.headers
        );
        assert!(
            !verify("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", &r.headers, &r.body),
            "a wrong secret fails"
        );
        assert_eq!(header(r, "content-type"), "application/cloudevents+json");
        assert!(header(r, "user-agent").starts_with("ncp-watchd/"));
        let ts: i64 = header(r, "webhook-timestamp").parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
        let event: cloudevents::Event = serde_json::from_str(&r.body).expect("a CloudEvents SDK parses the body");
        assert_eq!(event.id(), header(r, "webhook-id"), "webhook-id is the event id");
        assert_eq!(event.specversion(), cloudevents::event::SpecVersion::V10);
        assert!(
            event.source().to_string().starts_with("ncp-watchd/"),
            "{}",
            event.source()
        );
        assert!(event.subject().unwrap().starts_with("workspaces/ws/projects/1/"));
        assert!(event.ty().starts_with("project.asset.discovered") || event.ty() == "video_asset.import.in_progress");
    }
    reference_verifier(&got);
    drop(daemon);
}

/// Verifies deliveries with the Standard Webhooks reference library (Python) when it is
/// installed; `.ci/run` installs it, so CI always runs this check.
fn reference_verifier(got: &[crate::receiver::Received]) {
    let available = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("note: the Standard Webhooks reference check was skipped: pip install standardwebhooks to run it");
        return;
    }
    let deliveries: Vec<Value> = got
        .iter()
        .map(|r| {
            let headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_str().unwrap_or_default().to_string())))
                .collect();
            serde_json::json!({ "headers": headers, "body": r.body })
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_string(&deliveries).unwrap()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/verify_standard_webhooks.py"
    );
    let out = std::process::Command::new("python3")
        .args([script, SECRET, file.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the reference library rejected a delivery:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_is_down_then_failing_then_slow_gets_everything_in_order_with_stable_ids() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{port}/hooks/T0KEN-SENTINEL-123");
    let daemon = start(&sim.url(), &hook("ops", &url, "")).await;
    daemon
        .wait_for(Duration::from_secs(20), "first sight", |e| {
            e.iter()
                .filter(|e| e["type"] == "video_asset.import.in_progress")
                .count()
                == 2
        })
        .await;
    // While nobody listens (connection refused), the assets move through three statuses.
    for status in ["S1", "S2", "COMPLETED"] {
        let subject_done = |e: &[Value]| {
            ["1", "2"].iter().all(|a| {
                e.iter().any(|e| {
                    e["data"]["current"] == status
                        && e["subject"].as_str().unwrap().ends_with(&format!("video-assets/{a}"))
                })
            })
        };
        set_import(&sim, "1", status);
        set_import(&sim, "2", status);
        daemon.wait_for(Duration::from_secs(20), status, subject_done).await;
    }
    let events = daemon.events();
    assert_eq!(events.len(), 10, "{}", summary(&events));
    // Then it answers 503s, then stalls past the timeout, then 503 with Retry-After, then works.
    let script = vec![
        Reply::Status(503),
        Reply::Status(503),
        Reply::Stall(1500),
        Reply::RetryAfter(503, 1),
        Reply::Status(503),
    ];
    let receiver = Receiver::start(port, script).await;
    let got = receiver.wait_delivered(10, Duration::from_secs(30)).await;
    let ids: Vec<String> = got.iter().map(|r| header(r, "webhook-id")).collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        10,
        "every event delivered once the receiver works: {ids:?}"
    );
    // Every attempt, failed or not, carried the id of one of the events.
    let event_ids: std::collections::HashSet<String> =
        events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| event_ids.contains(&header(r, "webhook-id")))
    );
    // Per subject, deliveries arrive in the order the events happened.
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    for r in &got {
        let e: Value = serde_json::from_str(&r.body).unwrap();
        order
            .entry(e["subject"].as_str().unwrap().to_string())
            .or_default()
            .push(e["id"].as_str().unwrap().to_string());
    }
    for (subject, delivered) in order {
        let happened: Vec<String> = events
            .iter()
            .filter(|e| e["subject"] == subject.as_str())
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(delivered, happened, "order for {subject}");
    }
    let log = daemon.log();
    assert!(!log.contains("T0KEN-SENTINEL"), "the URL's path never reaches the log");
    assert!(
        log.contains(&format!("http://{port}")),
        "the receiver is named by scheme and host"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_deliveries_loses_nothing_and_repeats_only_what_was_in_flight() {
    let mut scenario = String::new();
    for i in 1..=30 {
        scenario.push_str(&format!("[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"{i}\"\nimport = [{{ at = \"0s\", status = \"IN_PROGRESS\" }}]\n"));
    }
    let sim = sim_with(&scenario, 100_000).await;
    // A slow receiver keeps deliveries in flight when the kills come.
    let receiver = Receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        (0..400).map(|_| Reply::Stall(150)).collect(),
    )
    .await;
    let mut daemon = start(
        &sim.url(),
        &hook("ops", &receiver.url(), "").replace("timeout = \"500ms\"", "timeout = \"5s\""),
    )
    .await;
    let dir = daemon.dir.clone();
    let tmp = daemon.keep_dir();
    let kills = 5;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..700))).await;
        daemon.signal("KILL");
        daemon.exit_within(Duration::from_secs(5)).await;
        daemon = Daemon::start_in(&dir).await;
    }
    daemon
        .wait_for(Duration::from_secs(30), "every first sight", |e| e.len() >= 60)
        .await;
    let events = read_events(&dir.join("events.jsonl"));
    let outbox_ids: std::collections::HashSet<String> = {
        let store =
            ncp_watchd::store::Store::open(&ncp_watchd::config::StateConfig::sqlite(dir.join("state.db"))).unwrap();
        store
            .outbox_after(0, 100_000)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(outbox_ids.len(), 60, "{}", summary(&events));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: std::collections::HashSet<String> =
            receiver.received().iter().map(|r| header(r, "webhook-id")).collect();
        if outbox_ids.iter().all(|id| delivered.contains(id)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 60 delivered",
            delivered.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all: Vec<String> = receiver.received().iter().map(|r| header(r, "webhook-id")).collect();
    let repeats = all.len() - outbox_ids.len();
    assert!(
        repeats <= kills * 16,
        "{repeats} repeats for {kills} kills of at most 16 in flight each"
    );
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_that_runs_out_of_attempts_is_a_dead_letter_until_replayed() {
    let sim = sim_with("[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\nimport = [{ at = \"0s\", status = \"COMPLETED\" }]\n", 6000).await;
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![Reply::Status(500); 3]).await;
    let sink = hook("ops", &receiver.url(), "events = [\"video_asset.import.*\"]")
        .replace("max_attempts = 100", "max_attempts = 3");
    let daemon = start(&sim.url(), &sink).await;
    let config = daemon.dir.join("config.toml");
    let cli = |args: &'static [&'static str]| {
        let mut all = vec!["dead-letters", "-c", config.to_str().unwrap()];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::helpers::watchd(&refs, &[]).await
    };
    // Three failed attempts, then it is listed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let listed = loop {
        let out = run(cli(&["list", "--json"])).await;
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if !rows.is_empty() {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter (receiver got {:?}); list said {:?}; daemon log:\n{}",
            receiver.received().iter().map(|r| r.status).collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["sink"], "ops");
    assert_eq!(listed[0]["attempts"], 3);
    assert_eq!(listed[0]["type"], "video_asset.import.completed");
    assert!(listed[0]["last_error"].as_str().unwrap().contains("HTTP 500"));
    assert_eq!(receiver.received().len(), 3);
    let table = String::from_utf8_lossy(&run(cli(&["list"])).await.stdout).into_owned();
    assert!(
        table.contains(listed[0]["id"].as_str().unwrap()) && table.contains("1 dead letters"),
        "{table}"
    );

    // Replaying it while the daemon runs delivers it (the receiver works now).
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let out = run(vec![
        "dead-letters".into(),
        "-c".into(),
        config.to_str().unwrap().into(),
        "replay".into(),
        id.clone(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got = receiver.wait_delivered(1, Duration::from_secs(20)).await;
    assert_eq!(header(&got[0], "webhook-id"), id, "the replay carries the same id");
    let after: Vec<Value> = serde_json::from_slice(&run(cli(&["list", "--json"])).await.stdout).unwrap();
    assert!(after.is_empty());
    let missing = run(cli(&["replay", "no-such-id"])).await;
    assert_eq!(missing.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_receiver_delays_neither_polling_nor_another_sink() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let live = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sinks = format!(
        "{}{}",
        hook("dead", &format!("http://{dead}/x"), ""),
        hook("live", &live.url(), "")
    );
    let daemon = start(&sim.url(), &sinks).await;
    live.wait_delivered(4, Duration::from_secs(20)).await;
    set_import(&sim, "1", "COMPLETED");
    daemon
        .wait_for(Duration::from_secs(10), "the change", |e| {
            has(
                e,
                "video_asset.import.completed",
                "workspaces/ws/projects/1/video-assets/1",
            )
        })
        .await;
    live.wait_delivered(5, Duration::from_secs(5)).await;
    assert!(
        daemon.log().contains("delivery failed; will retry"),
        "the dead sink keeps trying"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_410_pauses_the_sink_and_a_reload_resumes_it() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![Reply::Status(410)]).await;
    // One subject only, so exactly one delivery is in flight when the 410 comes.
    let only_one = "events = [\"video_asset.import.*\"]\n[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n";
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("hook.secret"), SECRET).unwrap();
    let sinks = format!("{}{FAST_POLL}", hook("ops", &receiver.url(), only_one));
    std::fs::write(tmp.path().join("config.toml"), config_text(&sim.url(), "", &sinks)).unwrap();
    let mut daemon = Daemon::start_in(tmp.path()).await;
    daemon.adopt(tmp);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !daemon.log().contains("receiver is gone (410)") {
        assert!(tokio::time::Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = crate::helpers::watchd(&["status", "-c", daemon.dir.join("config.toml").to_str().unwrap()], &[]).await;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        text.contains("sink webhook:ops: PAUSED (the receiver answered 410 Gone"),
        "{text}"
    );
    // A new event is committed while paused, and is not sent.
    set_import(&sim, "1", "COMPLETED");
    let a1 = "workspaces/ws/projects/1/video-assets/1";
    daemon
        .wait_for(Duration::from_secs(20), "the change", |e| {
            has(e, "video_asset.import.completed", a1)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await; // more than one sink tick
    assert_eq!(receiver.received().len(), 1, "nothing more is sent while paused");
    // A reload resumes it, in order.
    daemon.signal("HUP");
    let got = receiver.wait_delivered(2, Duration::from_secs(20)).await;
    let types: Vec<String> = got.iter().map(crate::receiver::Received::event_type).collect();
    assert_eq!(
        types,
        ["video_asset.import.in_progress", "video_asset.import.completed"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn receiver_errors_are_logged_with_the_body_and_without_secrets() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let receiver = Receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![Reply::Status(400), Reply::Status(302)],
    )
    .await;
    let daemon = start(&sim.url(), &hook("ops", &receiver.url(), "")).await;
    receiver.wait_delivered(4, Duration::from_secs(20)).await;
    let log = daemon.log();
    assert!(
        log.contains("receiver refused with HTTP 400") && log.contains("receiver says no thanks"),
        "{log}"
    );
    assert!(log.contains("HTTP 302: redirects are not followed"), "{log}");
    for secret in [
        "T0KEN-SENTINEL",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ncp_watchd::sim::DEFAULT_SECRET_KEY,
    ] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slack_sink_posts_one_readable_line_per_event() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    let sink = format!(
        "[[sink.webhook]]\nname = \"chat\"\nurl = \"{}\"\nformat = \"slack\"\n",
        receiver.url()
    );
    let _daemon = start(&sim.url(), &sink).await;
    let got = receiver.wait_delivered(4, Duration::from_secs(20)).await;
    for r in &got {
        assert_eq!(header(r, "content-type"), "application/json");
        assert!(
            r.headers.get("webhook-signature").is_none(),
            "unsigned without a secret"
        );
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("workspaces/ws/projects/1/"), "{text}");
        assert_eq!(body.as_object().unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn discord_teams_and_google_chat_sinks_post_each_services_own_body() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    let mut sinks = String::new();
    for format in ["discord", "teams", "google_chat"] {
        sinks.push_str(&format!(
            "[[sink.webhook]]\nname = \"{format}\"\nurl = \"{}/{format}\"\nformat = \"{format}\"\n",
            receiver.url().trim_end_matches('/')
        ));
    }
    let _daemon = start(&sim.url(), &sinks).await;
    // Two assets discovered and imported: four events for each of the three sinks.
    let got = receiver.wait_delivered(12, Duration::from_secs(20)).await;
    for format in ["discord", "teams", "google_chat"] {
        // Each service's body has its own shape, which tells the sinks apart.
        let key = match format {
            "discord" => "content",
            "teams" => "attachments",
            _ => "text",
        };
        let bodies: Vec<Value> = got
            .iter()
            .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
            .filter(|b| b.get(key).is_some())
            .collect();
        assert_eq!(bodies.len(), 4, "{format}");
        for body in bodies {
            let text = match format {
                "discord" => body["content"].as_str().unwrap().to_string(),
                "teams" => body["attachments"][0]["content"]["body"][1]["text"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                _ => body["text"].as_str().unwrap().to_string(),
            };
            assert!(text.contains("workspaces/ws/projects/1/"), "{format}: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_sink_posts_the_body_its_template_makes_signed() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    let sink = format!(
        "[[sink.webhook]]\nname = \"own\"\nurl = \"{}\"\nsecret_file = \"hook.secret\"\nevents = [\"video_asset.import.*\"]\n\
         template = '{{\"asset\": {{{{ data.resource.asset_id | tojson }}}}, \"state\": {{{{ data.current | lower | tojson }}}}, \"id\": {{{{ id | tojson }}}}}}'\n",
        receiver.url()
    );
    let _daemon = start(&sim.url(), &sink).await;
    let got = receiver.wait_delivered(2, Duration::from_secs(20)).await;
    let mut assets = Vec::new();
    for r in &got {
        assert_eq!(header(r, "content-type"), "application/json");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["state"], "in_progress");
        assert_eq!(body["id"], header(r, "webhook-id"));
        assert!(
            r.headers.get("webhook-signature").is_some(),
            "a template body is signed too"
        );
        assets.push(body["asset"].as_str().unwrap().to_string());
    }
    assets.sort();
    assert_eq!(assets, ["1", "2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_error_body_is_read_only_as_far_as_the_excerpt_that_is_kept() {
    let sim = sim_with(ONE_COMPLETED, 6000).await;
    // 200 MiB at 64 KiB every 2 ms: sending all of it takes at least 6.4 s.
    const LEN: u64 = 200 * 1024 * 1024;
    let flood = Flood::start(400, "FLOOD-START ", LEN, Duration::from_millis(2)).await;
    let sink = hook("ops", &format!("http://{}/hook", flood.addr), IMPORTS_ONLY)
        .replace("max_attempts = 100", "max_attempts = 1")
        .replace("timeout = \"500ms\"", "timeout = \"60s\"");
    let daemon = start(&sim.url(), &sink).await;
    let ended = flood.wait_ended(1, Duration::from_secs(40)).await;
    assert!(
        ended[0].sent < 32 * 1024 * 1024 && ended[0].ended - ended[0].arrived < Duration::from_secs(4),
        "the daemon took {} bytes of the body in {:?} instead of hanging up after the excerpt",
        ended[0].sent,
        ended[0].ended - ended[0].arrived
    );
    let letters = wait_dead_letters(&daemon, 1, Duration::from_secs(20)).await;
    assert_eq!(
        letters[0]["last_error"].as_str().unwrap(),
        format!(
            "receiver refused with HTTP 400: \"FLOOD-START {}\"",
            "y".repeat(200 - "FLOOD-START ".len())
        ),
        "the recorded error holds the first 200 bytes and no more"
    );
    assert_eq!(flood.requests(), 1);
    let pid = daemon.child.id().expect("the daemon runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    assert!(peak_kb < 150 * 1024, "the daemon's memory peaked at {peak_kb} kB");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_retry_after_waits_retry_max_rather_than_forever_or_not_at_all() {
    let sim = sim_with(ONE_COMPLETED, 6000).await;
    let receiver = Receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![
            Reply::RetryAfterText(503, "18446744073709551615"),
            Reply::RetryAfterText(503, "99999999999"),
            Reply::RetryAfterText(503, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ],
    )
    .await;
    let sink = hook("ops", &receiver.url(), IMPORTS_ONLY).replace("retry_max = \"400ms\"", "retry_max = \"1s\"");
    let daemon = start(&sim.url(), &sink).await;
    // Each of the three waits is capped at retry_max (1 s), so the fourth attempt comes
    // within seconds; a wait taken at its word would be years, a wrapped one none at all.
    receiver.wait_delivered(1, Duration::from_secs(20)).await;
    let attempts = receiver.received();
    assert_eq!(
        attempts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 503, 503, 200],
        "{}",
        daemon.log()
    );
    for pair in attempts.windows(2) {
        let gap = pair[1].arrived - pair[0].answered;
        assert!(
            gap >= Duration::from_millis(900),
            "an attempt came {gap:?} after a Retry-After far beyond retry_max (1 s)"
        );
    }
    assert_eq!(
        daemon.log().matches("retry_in_ms=1000").count(),
        3,
        "each retry waits exactly retry_max:\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_all_dead_letters_of_a_subject_sends_them_one_at_a_time_in_order() {
    let sim = sim_with(
        "[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\nimport = [{ at = \"0s\", status = \"IN_PROGRESS\" }]\n",
        6000,
    )
    .await;
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    receiver.set_fallback(Reply::Status(500));
    let sink = hook("ops", &receiver.url(), IMPORTS_ONLY).replace("max_attempts = 100", "max_attempts = 1");
    let daemon = start(&sim.url(), &sink).await;
    let subject = "workspaces/ws/projects/1/video-assets/1";
    daemon
        .wait_for(Duration::from_secs(20), "first sight", |e| {
            has(e, "video_asset.import.in_progress", subject)
        })
        .await;
    for status in ["S1", "S2", "S3", "S4", "COMPLETED"] {
        set_import(&sim, "1", status);
        daemon
            .wait_for(Duration::from_secs(20), status, |e| {
                e.iter().any(|e| e["data"]["current"] == status)
            })
            .await;
    }
    let happened: Vec<String> = daemon
        .events()
        .iter()
        .filter(|e| e["subject"] == subject)
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(happened.len(), 6);
    wait_dead_letters(&daemon, 6, Duration::from_secs(20)).await;

    // Each replay takes a while to answer, so two sent at once would overlap.
    receiver.set_fallback(Reply::Slow(200, 150));
    let out = dead_letters(&daemon, &["replay", "--all"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let mut got = receiver.wait_delivered(6, Duration::from_secs(30)).await;
    got.sort_by_key(|r| r.arrived);
    let replayed: Vec<String> = got.iter().map(crate::receiver::Received::webhook_id).collect();
    assert_eq!(replayed, happened, "replays arrive in the order the events happened");
    for pair in got.windows(2) {
        assert!(
            pair[1].arrived >= pair[0].answered,
            "a replay was sent before the one before it was answered"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_stop_lets_a_delivery_in_flight_be_answered_and_never_repeats_it() {
    let sim = sim_with(ONE_COMPLETED, 6000).await;
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    receiver.set_fallback(Reply::Slow(200, 1500));
    let sink = hook("ops", &receiver.url(), IMPORTS_ONLY).replace("timeout = \"500ms\"", "timeout = \"5s\"");
    let mut daemon = start(&sim.url(), &sink).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while receiver.arrivals() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGTERM while the receiver is still answering (SPEC §6: in-flight work finishes).
    daemon.signal("TERM");
    assert!(
        daemon.exit_within(Duration::from_secs(10)).await.success(),
        "{}",
        daemon.log()
    );
    assert_eq!(receiver.delivered().len(), 1, "the delivery in flight was answered");
    // It is recorded as delivered: nothing is left for the sink to send after a restart.
    let store =
        ncp_watchd::store::Store::open(&ncp_watchd::config::StateConfig::sqlite(daemon.dir.join("state.db"))).unwrap();
    let summary = store
        .sink_summaries()
        .unwrap()
        .into_iter()
        .find(|s| s.cursor_name == "webhook:ops")
        .unwrap();
    assert_eq!((summary.behind, summary.retrying), (0, 0), "{summary:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn when_more_subjects_are_due_than_may_go_at_once_the_oldest_events_go_first() {
    let mut scenario = String::new();
    for i in 1..=48 {
        scenario.push_str(&format!("[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"{i}\"\nimport = [{{ at = \"0s\", status = \"IN_PROGRESS\" }}]\n"));
    }
    let sim = sim_with(&scenario, 100_000).await;
    // Slow answers: the first 16 sent (the concurrency bound) are all in before any other.
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    receiver.set_fallback(Reply::Slow(200, 500));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("hook.secret"), SECRET).unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(
            &sim.url(),
            "",
            &format!(
                "{PROJECT}{}",
                hook("ops", &receiver.url(), IMPORTS_ONLY).replace("timeout = \"500ms\"", "timeout = \"5s\"")
            ),
        ),
    )
    .unwrap();
    // `once` commits the whole round (48 subjects, one event each), then delivers: a backlog.
    let out = crate::helpers::watchd(&["once", "-c", config.to_str().unwrap()], &crate::helpers::sim_env()).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let mut got = receiver.delivered();
    assert_eq!(got.len(), 48);
    got.sort_by_key(|r| r.arrived);
    let first: std::collections::BTreeSet<String> =
        got.iter().take(16).map(crate::receiver::Received::webhook_id).collect();
    let store =
        ncp_watchd::store::Store::open(&ncp_watchd::config::StateConfig::sqlite(tmp.path().join("state.db"))).unwrap();
    let oldest: std::collections::BTreeSet<String> = store
        .outbox_after(0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.event_type.starts_with("video_asset.import."))
        .take(16)
        .map(|r| r.id)
        .collect();
    assert_eq!(first, oldest, "the 16 oldest events are the first 16 sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_echoing_the_url_path_cannot_leak_its_token_anywhere() {
    let sim = sim_with(ONE_COMPLETED, 6000).await;
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    receiver.set_fallback(Reply::EchoPath(404));
    let url = receiver.url_with_path("/services/T0/B0/TOKEN-SENTINEL-1234");
    let sink = hook("ops", &url, IMPORTS_ONLY).replace("max_attempts = 100", "max_attempts = 2");
    let daemon = start(&sim.url(), &sink).await;
    let letters = wait_dead_letters(&daemon, 1, Duration::from_secs(20)).await;
    assert_eq!(receiver.received().len(), 2);
    let error = letters[0]["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("receiver refused with HTTP 404: \"Cannot POST ") && error.contains("<redacted>"),
        "{error}"
    );
    let json = dead_letters(&daemon, &["list", "--json"]).await;
    let table = dead_letters(&daemon, &["list"]).await;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("last error: receiver refused with HTTP 404"), "{table}");
    let mut places = vec![
        (
            "dead-letters list --json",
            String::from_utf8_lossy(&json.stdout).into_owned(),
        ),
        ("dead-letters list", table),
        ("the daemon's log", daemon.log()),
    ];
    for entry in std::fs::read_dir(&daemon.dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("state.db") {
            let bytes = std::fs::read(&path).unwrap();
            places.push(("the state store", String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    for (place, text) in places {
        assert!(!text.contains("TOKEN-SENTINEL"), "the URL's token leaked into {place}");
    }
}
