//! The PostgreSQL store (SPEC §9) on a real server the test starts itself: the daemon and
//! every command on it, TLS, the password, migrations, one writer, and kill -9.

use std::time::Duration;

use crate::helpers::{Daemon, FAST_POLL, TWO_ASSETS, config_text, has, set_import, sim_env, sim_with, text, watchd};
use crate::pg;
use ncp_watchd::store::Store;

const PROJECT: &str = "[[watch.project]]\nworkspace = \"ws\"\nproject_id = \"1\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_on_postgres_delivers_every_change_and_every_command_reads_the_same_store() {
    let Some(server) = pg::start(false) else { return };
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let config = config_text(
        &sim.url(),
        "",
        &format!("{PROJECT}\n{FAST_POLL}\n{}", server.state_toml()),
    );
    let mut daemon = Daemon::start(&config).await;
    let a1 = "workspaces/ws/projects/1/video-assets/1";
    daemon
        .wait_for(Duration::from_secs(30), "first sight of asset 1", |e| {
            has(e, "video_asset.import.in_progress", a1)
        })
        .await;
    set_import(&sim, "1", "COMPLETED");
    daemon
        .wait_for(Duration::from_secs(30), "asset 1 completed", |e| {
            has(e, "video_asset.import.completed", a1)
        })
        .await;

    // The state is in PostgreSQL, not in a file beside the config.
    assert!(!daemon.dir.join("state.db").exists());
    let in_db = server.sql_in(
        "ncp_watchd",
        "SELECT count(*) FROM outbox WHERE type = 'video_asset.import.completed'",
    );
    assert_eq!(in_db.trim(), "1");

    // The commands read the same store while the daemon runs.
    let cfg = daemon.dir.join("config.toml");
    let cfg = cfg.to_str().unwrap();
    let out = watchd(&["status", "--json", "-c", cfg], &sim_env()).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains(a1) && stdout.contains("COMPLETED"), "{stdout}");
    let out = watchd(&["dead-letters", "list", "-c", cfg], &sim_env()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let out = watchd(
        &[
            "tail",
            "--no-follow",
            "--since",
            "1h",
            "--type",
            "video_asset.import.*",
            "-c",
            cfg,
        ],
        &sim_env(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("video_asset.import.completed"), "{stdout}");
    // `once` beside the running daemon asks it for a round through the shared store, and
    // the change it sees is emitted once, not once by each.
    let a2 = "workspaces/ws/projects/1/video-assets/2";
    set_import(&sim, "2", "FAILED");
    let out = watchd(&["once", "-c", cfg], &sim_env()).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = daemon
        .wait_for(Duration::from_secs(30), "asset 2 failed", |e| {
            has(e, "video_asset.import.failed", a2)
        })
        .await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "video_asset.import.failed" && e["subject"] == a2)
            .count(),
        1
    );
    // A watch registered from the command line reaches the running daemon.
    let out = watchd(
        &[
            "register",
            "-c",
            cfg,
            "--workspace",
            "ws",
            "--project",
            "1",
            "--bucket",
            "b",
            "--key",
            "new.mp4",
            "--watch",
        ],
        &sim_env(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let registered = format!("workspaces/ws/projects/1/video-assets/{}", stdout.trim());
    daemon
        .wait_for(Duration::from_secs(30), "the registered asset polled", |e| {
            e.iter().any(|e| e["subject"] == registered.as_str())
        })
        .await;

    daemon.signal("TERM");
    let status = daemon.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(
        !daemon.log().contains(pg::PASSWORD),
        "the password never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_on_postgres_loses_and_repeats_nothing() {
    let Some(server) = pg::start(false) else { return };
    let state = server.state_config("sslmode=disable");
    // Short leases: a replica restarted after kill -9 takes its shards back 3 s later.
    let state_toml = format!("{}\n[cluster]\nlease_ttl = \"3s\"\n", server.state_toml());
    crate::daemon::sigkill_loop(&state_toml, |_| Store::open(&state).unwrap()).await;
}

#[test]
fn replicas_starting_together_create_the_schema_once() {
    let Some(server) = pg::start(false) else { return };
    let state = server.state_config("sslmode=disable");
    let opened: Vec<_> = (0..6)
        .map(|_| {
            let state = state.clone();
            std::thread::spawn(move || Store::open(&state).map(|_| ()).map_err(|e| e.to_string()))
        })
        .collect();
    for o in opened {
        o.join().unwrap().unwrap();
    }
    let versions = server.sql_in(
        "ncp_watchd",
        "SELECT string_agg(version::text, ',') FROM schema_migrations",
    );
    assert_eq!(versions.trim(), "1,2");
}

#[test]
fn tls_verifies_the_server_against_the_given_ca_and_refuses_an_unknown_one() {
    let Some(server) = pg::start(true) else { return };
    let ca = server.ca.clone().unwrap();
    let ca = ca.to_str().unwrap();
    // `require` with the CA file checks the chain; `verify-full` also the host name.
    for params in [
        format!("sslmode=require&sslrootcert={ca}"),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let store = Store::open(&server.state_config(&params)).unwrap_or_else(|e| panic!("{params}: {e}"));
        assert_eq!(store.item_count().unwrap(), 0);
    }
    let encrypted = server.sql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.usename = 'ncp_watchd'");
    assert!(
        encrypted.trim().parse::<i64>().unwrap() > 0,
        "the store's connections use TLS"
    );
    // A self-signed CA the system does not know is refused, never silently accepted.
    let err = Store::open(&server.state_config("sslmode=require"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate") || err.contains("Certificate"), "{err}");
    assert!(
        err.contains("postgres://ncp_watchd@127.0.0.1:"),
        "names the store: {err}"
    );
    assert!(!err.contains(pg::PASSWORD));
}

#[test]
fn a_wrong_password_is_reported_without_the_password_and_a_url_password_is_refused() {
    let Some(server) = pg::start(false) else { return };
    let ncp_watchd::config::StateConfig::Postgres(mut pg) = server.state_config("sslmode=disable") else {
        unreachable!()
    };
    let wrong = "not-the-password-0000";
    pg.password = Some(ncp_watchd::config::SecretSource::Env(
        "NCPW_TEST_WRONG_PG_PASSWORD".into(),
    ));
    // SAFETY: the variable is set once, by this test alone, before the store reads it.
    unsafe { std::env::set_var("NCPW_TEST_WRONG_PG_PASSWORD", wrong) };
    let err = Store::open(&ncp_watchd::config::StateConfig::Postgres(pg))
        .unwrap_err()
        .to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains(wrong), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[watch.search_image]]\nasset_key = \"x\"\n[state]\nurl = \"postgres://ncp_watchd:{}@127.0.0.1:{}/ncp_watchd\"\n",
        pg::PASSWORD,
        server.port
    );
    std::fs::write(dir.path().join("config.toml"), &config).unwrap();
    let out = std::process::Command::new(crate::helpers::watchd_bin())
        .args(["check", "-c", dir.path().join("config.toml").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("state.url") && stderr.contains("password_file"),
        "{stderr}"
    );
    assert!(!stderr.contains(pg::PASSWORD), "{stderr}");
}

/// A sink part stopping (a reload restarts every sink) may record its last progress after
/// its successor has moved on: on either store, a cursor never moves back.
#[test]
fn a_sinks_cursor_never_moves_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = pg::start(false);
    let mut stores = vec![Store::open(&ncp_watchd::config::StateConfig::sqlite(dir.path().join("state.db"))).unwrap()];
    if let Some(server) = &server {
        stores.push(Store::open(&server.state_config("sslmode=disable")).unwrap());
    }
    for mut store in stores {
        store.cursor("webhook:ops").unwrap();
        store.record_deliveries("ops", &[], 10).unwrap();
        store.record_deliveries("ops", &[], 5).unwrap();
        assert_eq!(store.cursor("webhook:ops").unwrap(), 10, "{}", store.describe());
        store.cursor("log:events").unwrap();
        store.set_cursor("log:events", 7).unwrap();
        store.set_cursor("log:events", 3).unwrap();
        assert_eq!(store.cursor("log:events").unwrap(), 7, "{}", store.describe());
    }
}
