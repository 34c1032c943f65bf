//! The benchmarks behind BENCHMARKS.md. They run the real `ncp-watchd` binary against the
//! in-process simulator over loopback and read the simulator's own request log.
//!
//! ```text
//! cargo bench --bench daemon -- quota  [--watches 10000] [--seconds 300]
//! cargo bench --bench daemon -- memory [--watches 100000] [--postgres]
//! cargo bench --bench daemon -- cpu    [--watches 10000] [--seconds 120]
//! cargo bench --bench daemon -- stall  [--forgotten 2000] [--live 100] [--seconds 300]
//! cargo bench --bench daemon -- callbacks [--encodes 60] [--seconds 240]
//! cargo bench --bench daemon -- cluster [--watches 10000] [--seconds 150] [--events 200000] [--no-quota] [--no-failover]
//! ```
//!
//! `quota` runs the daemon and a naive fixed-interval poller side by side, each against its
//! own simulator holding a 6,000 calls/min quota, and injects the same state changes into
//! both. `stall` runs two daemons side by side, stall handling off and on, each watching
//! forgotten analyses beside live imports, and injects the same imports into both.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ncp_watchd::config::StateConfig;
use ncp_watchd::ncp::signer;
use ncp_watchd::sim::{self, Scenario, SetState, SimConfig, SimHandle};
use ncp_watchd::store::{DynamicWatch, Store};

/// The tests' throwaway PostgreSQL server, for the cluster benchmark.
#[allow(dead_code)]
#[path = "../tests/it/pg.rs"]
mod pg;

const WORKSPACE: &str = "bench";
const PROJECT: &str = "1";
/// The asset the config file names; dynamic watches are `asset_id(0..n)`, well below it.
/// Config validation wants NCP's ids: positive integers.
const STATIC_ASSET: &str = "9999999999";

/// The asset id of the `i`-th bench asset: 1, 2, 3, … (NCP ids are positive).
fn asset_id(i: u64) -> String {
    (i + 1).to_string()
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// Whether `--name` is on the command line.
fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A scenario of `n` video assets, all in progress, plus the one the config names.
fn scenario(n: u64) -> Scenario {
    scenario_of(n, "IN_PROGRESS")
}

/// A scenario of `n` video assets whose import shows `status` (and whose analysis, never
/// started, shows BEFORE_ANALYZE), plus the one the config names, in progress.
fn scenario_of(n: u64, status: &str) -> Scenario {
    let mut text = format!(
        "[[video_asset]]\nworkspace = \"{WORKSPACE}\"\nproject_id = \"{PROJECT}\"\nasset_id = \"{STATIC_ASSET}\"\nimport = [{{ at = \"0s\", status = \"IN_PROGRESS\" }}]\n",
    );
    text.push_str(&format!(
        "[[video_asset]]\nworkspace = \"{WORKSPACE}\"\nproject_id = \"{PROJECT}\"\nasset_id = \"1\"\nimport = [{{ at = \"0s\", status = \"{status}\" }}]\n",
    ));
    let mut s = Scenario::parse(&text).expect("bench scenario parses");
    let template = s.video_asset.pop().expect("template");
    for i in 0..n {
        let mut a = template.clone();
        a.asset_id = asset_id(i);
        s.video_asset.push(a);
    }
    s
}

async fn start_sim(n: u64, quota: u32) -> Arc<SimHandle> {
    start_sim_with(scenario(n), quota).await
}

async fn start_sim_with(scenario: Scenario, quota: u32) -> Arc<SimHandle> {
    let mut config = SimConfig::new(scenario);
    config.quota_per_minute = quota;
    Arc::new(
        SimHandle::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("simulator starts"),
    )
}

/// A directory with a config pointing at `sim_url` and a store holding `n` dynamic watches.
fn prepare(dir: &Path, sim_url: &str, n: u64, rate: u32, interval: &str) {
    write_config(dir, sim_url, rate, &format!("interval = \"{interval}\"\n"), "");
    add_watches(dir, 0..n, false);
}

/// Writes `config.toml`: the simulator's URLs, the limits, `poll` as the `[poll]` table's
/// lines, the one configured watch, and `extra` (sinks) at the end.
fn write_config(dir: &Path, sim_url: &str, rate: u32, poll: &str, extra: &str) {
    write_config_on(dir, sim_url, rate, poll, extra, "[state]\npath = \"state.db\"\n");
}

/// Like [`write_config`], with the store given as its `[state]` table (and `[cluster]`).
fn write_config_on(dir: &Path, sim_url: &str, rate: u32, poll: &str, extra: &str, state: &str) {
    let config = format!(
        "[api]\nmedia_url = \"{sim_url}\"\nvod_url = \"{sim_url}\"\nrate_limit_per_minute = {rate}\nmax_in_flight = 8\ntimeout = \"10s\"\n\
         [poll]\n{poll}{state}[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n\
         [[watch.video_asset]]\nworkspace = \"{WORKSPACE}\"\nproject_id = \"{PROJECT}\"\nasset_id = \"{STATIC_ASSET}\"\n{extra}"
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
}

/// Adds dynamic watches (as `register --watch` does) of the assets `asset_id(i)`.
fn add_watches(dir: &Path, ids: std::ops::Range<u64>, analysis: bool) {
    add_watches_to(&StateConfig::sqlite(dir.join("state.db")), ids, analysis);
}

/// Adds dynamic watches of the assets `asset_id(i)` to the store `state`.
fn add_watches_to(state: &StateConfig, ids: std::ops::Range<u64>, analysis: bool) {
    let mut store = Store::open(state).unwrap();
    let watches: Vec<DynamicWatch> = ids
        .map(|i| DynamicWatch {
            id: 0,
            workspace: WORKSPACE.into(),
            project_id: PROJECT.into(),
            asset_id: asset_id(i),
            name: None,
            analysis,
        })
        .collect();
    store.add_dynamic_watches(&watches).unwrap();
}

/// Starts the daemon on the config in `dir`. With `BENCH_WRAP` set (say `heaptrack -o
/// /tmp/ht`), the daemon runs under that command, to profile it (the RSS figures are then
/// the wrapper's).
fn spawn_daemon(dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(env!("CARGO_BIN_EXE_ncp-watchd"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_ncp-watchd")),
    };
    command
        .process_group(0)
        .args(["run", "-c", dir.join("config.toml").to_str().unwrap()])
        .env("NCLOUD_ACCESS_KEY", sim::DEFAULT_ACCESS_KEY)
        .env("NCLOUD_SECRET_KEY", sim::DEFAULT_SECRET_KEY)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("ncp-watchd starts")
}

fn stop(child: &mut Child) {
    // The daemon itself, not a `BENCH_WRAP` wrapper around it (which writes its results
    // once the daemon has exited).
    let _ = Command::new("pkill")
        .args(["-TERM", "-x", "-g", &child.id().to_string(), "ncp-watchd"])
        .status();
    let _ = child.wait();
}

/// (VmRSS, VmHWM) of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User plus system CPU seconds a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of /proc/pid/stat (utime, stime), counted after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Quota figures from a simulator's request log.
struct QuotaFigures {
    calls: usize,
    rejected_429: usize,
    peak_60s: usize,
    used_pct: f64,
}

fn quota_figures(sim: &SimHandle, quota: u32, steady_from_ms: i64, steady_to_ms: i64) -> QuotaFigures {
    let log = sim.requests();
    let times: Vec<i64> = log.iter().map(|r| r.at_ms).collect();
    let mut peak = 0;
    let mut end = 0;
    for (start, t) in times.iter().enumerate() {
        while end < times.len() && times[end] < t + 60_000 {
            end += 1;
        }
        peak = peak.max(end - start);
    }
    let served = log
        .iter()
        .filter(|r| r.status != 429 && r.at_ms >= steady_from_ms && r.at_ms < steady_to_ms)
        .count() as f64;
    let minutes = (steady_to_ms - steady_from_ms) as f64 / 60_000.0;
    QuotaFigures {
        calls: log.len(),
        rejected_429: log.iter().filter(|r| r.status == 429).count(),
        peak_60s: peak,
        used_pct: 100.0 * served / (f64::from(quota) * minutes),
    }
}

fn latency_figures(latencies: &mut [f64]) -> (f64, f64, f64) {
    latencies.sort_by(|a, b| a.total_cmp(b));
    if latencies.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    (mean, pct(0.5), pct(0.99))
}

/// A fixed-interval poller, the way a cron script polls: every `interval`, GET every asset
/// with 8 requests in flight, no rate limiting. Returns detection times by asset id.
async fn naive_poller(url: String, n: u64, interval: Duration, until: Instant) -> HashMap<String, i64> {
    let http = reqwest::Client::new();
    let mut detected = HashMap::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    while Instant::now() < until {
        let round_start = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(8));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let (http, url, sem) = (http.clone(), url.clone(), sem.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire().await.unwrap();
                let path = format!(
                    "/api/v1/workspaces/{WORKSPACE}/projects/{PROJECT}/video-assets/{}/import-status",
                    asset_id(i)
                );
                let ts = now_ms() as u64;
                let sig = signer::sign("GET", &path, ts, sim::DEFAULT_ACCESS_KEY, sim::DEFAULT_SECRET_KEY);
                let r = http
                    .get(format!("{url}{path}"))
                    .header(signer::HEADER_TIMESTAMP, ts.to_string())
                    .header(signer::HEADER_ACCESS_KEY, sim::DEFAULT_ACCESS_KEY)
                    .header(signer::HEADER_SIGNATURE, sig)
                    .send()
                    .await;
                let status = match r {
                    Ok(r) if r.status().is_success() => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["result"]["uploadStatus"].as_str().map(str::to_string)),
                    _ => None,
                };
                (asset_id(i), status, now_ms())
            });
        }
        while let Some(Ok((id, status, at))) = tasks.join_next().await {
            if let Some(status) = status {
                if seen.get(&id).is_some_and(|s| s != &status) {
                    detected.entry(id.clone()).or_insert(at);
                }
                seen.insert(id, status);
            }
        }
        let next = round_start + interval;
        if next > Instant::now() {
            tokio::time::sleep_until(next.into()).await;
        }
    }
    detected
}

async fn quota_bench() {
    let n = arg("--watches", 10_000);
    let seconds = arg("--seconds", 300);
    let quota = 6000u32;
    println!("## quota: {n} in-progress watches, simulator quota {quota}/min, {seconds} s");
    let (daemon_sim, naive_sim) = (start_sim(n, quota).await, start_sim(n, quota).await);
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), &daemon_sim.url(), n, quota, "15s");
    let start_ms = now_ms();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut child = spawn_daemon(dir.path());
    let naive = tokio::spawn(naive_poller(naive_sim.url(), n, Duration::from_secs(15), until));

    // Changes start once every item has been seen (one round is N / rate ≈ 100 s) and stop
    // early enough that each has a full round to be detected.
    let round = Duration::from_secs_f64(n as f64 / (f64::from(quota) / 60.0));
    let inject_from = started + round + Duration::from_secs(5);
    let inject_to = until
        .checked_sub(round + Duration::from_secs(10))
        .unwrap_or(inject_from);
    tokio::time::sleep_until(inject_from.into()).await;
    let mut changes: Vec<(String, i64)> = Vec::new();
    let mut next_id = 0u64;
    while Instant::now() < inject_to {
        let id = asset_id(next_id * 7919 % n);
        next_id += 1;
        let at = now_ms();
        for sim in [&daemon_sim, &naive_sim] {
            sim.set(SetState::VideoAsset {
                workspace: WORKSPACE.into(),
                project_id: PROJECT.into(),
                asset_id: id.clone(),
                status: "COMPLETED".into(),
            });
        }
        changes.push((id, at));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep_until(until.into()).await;
    let (rss, hwm) = rss_mib(child.id());
    stop(&mut child);
    let naive_detected = naive.await.unwrap();

    let store = Store::open(&ncp_watchd::config::StateConfig::sqlite(dir.path().join("state.db"))).unwrap();
    let committed: HashMap<String, i64> = store
        .outbox_after(0, usize::MAX >> 1)
        .unwrap()
        .into_iter()
        .filter(|r| r.event_type == "video_asset.import.completed")
        .map(|r| {
            (
                r.subject.rsplit('/').next().unwrap_or_default().to_string(),
                r.created_ms,
            )
        })
        .collect();
    let steady = (start_ms + round.as_millis() as i64, start_ms + (seconds as i64) * 1000);
    let bound = n as f64 / (2.0 * f64::from(quota) / 60.0);
    println!(
        "latency bound N/(2 x calls per second) = {bound:.1} s; {} changes injected",
        changes.len()
    );
    println!(
        "| poller | calls | 429s | peak calls in any 60 s | quota used (steady state) | detected | mean latency | p50 | p99 | RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, sim, detected) in [
        ("ncp-watchd", &daemon_sim, &committed),
        ("naive 15 s poller", &naive_sim, &naive_detected),
    ] {
        let q = quota_figures(sim, quota, steady.0, steady.1);
        let mut lat: Vec<f64> = changes
            .iter()
            .filter_map(|(id, at)| detected.get(id).map(|d| (*d - *at) as f64 / 1000.0))
            .collect();
        let found = lat.len();
        let (mean, p50, p99) = latency_figures(&mut lat);
        let mem = if name == "ncp-watchd" {
            format!("{rss:.1} MiB (peak {hwm:.1})")
        } else {
            "-".into()
        };
        println!(
            "| {name} | {} | {} | {} | {:.1}% | {found}/{} | {mean:.1} s ({:.2} x bound) | {p50:.1} s | {p99:.1} s ({:.2} x bound) | {mem} |",
            q.calls,
            q.rejected_429,
            q.peak_60s,
            q.used_pct,
            changes.len(),
            mean / bound,
            p99 / bound
        );
    }
}

async fn memory_bench() {
    let n = arg("--watches", 100_000);
    println!("## memory and startup: {n} watches in the store");
    let postgres = flag("--postgres");
    let sim = start_sim(n, 1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let (_server, toml, state) = store_for(dir.path(), postgres, "15s");
    write_config_on(dir.path(), &sim.url(), 1000, "interval = \"15s\"\n", "", &toml);
    add_watches_to(&state, 0..n, false);
    // First start: the store's dynamic watches become items.
    let first = Instant::now();
    let mut child = spawn_daemon(dir.path());
    while sim.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_start = first.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop(&mut child);
    // Second start, with every item already in the store: the figure the issue asks for.
    let before = sim.requests().len();
    let started = Instant::now();
    let mut child = spawn_daemon(dir.path());
    let pid = child.id();
    while sim.requests().len() == before {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let to_first_poll = started.elapsed();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (rss, hwm) = rss_mib(pid);
    stop(&mut child);
    println!(
        "| watches | first start to first poll (creates items) | restart to first poll | RSS after 15 s | peak RSS |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {n} | {:.2} s | {:.3} s | {rss:.1} MiB | {hwm:.1} MiB |",
        first_start.as_secs_f64(),
        to_first_poll.as_secs_f64()
    );
}

async fn cpu_bench() {
    let n = arg("--watches", 10_000);
    let seconds = arg("--seconds", 120);
    let rate = 1000u32;
    println!("## CPU: {n} watches at {rate} calls/min, measured over {seconds} s after 20 s of warm-up");
    let sim = start_sim(n, rate).await;
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), &sim.url(), n, rate, "15s");
    let mut child = spawn_daemon(dir.path());
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (cpu0, t0, calls0) = (cpu_seconds(pid), Instant::now(), sim.requests().len());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu1, wall, calls1) = (cpu_seconds(pid), t0.elapsed().as_secs_f64(), sim.requests().len());
    let (rss, _) = rss_mib(pid);
    stop(&mut child);
    println!("| watches | calls/min | calls in window | CPU (one core) | RSS |");
    println!("|---|---|---|---|---|");
    println!(
        "| {n} | {rate} | {} | {:.2}% | {rss:.1} MiB |",
        calls1 - calls0,
        100.0 * (cpu1 - cpu0) / wall
    );
}

/// How many `watch.stalled` events a log sink's JSON-lines file holds so far.
fn stalled_in_log(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "watch.stalled")
        .count()
}

/// One side of the stall bench: a simulator, a directory with the daemon's config and
/// store, and the daemon.
struct StallRun {
    name: &'static str,
    stall_after: &'static str,
    sim: Arc<SimHandle>,
    dir: tempfile::TempDir,
    child: Child,
}

async fn stall_bench() {
    let forgotten = arg("--forgotten", 2000);
    let live = arg("--live", 100);
    let seconds = arg("--seconds", 300);
    let rate = 1000u32;
    let interval = "15s";
    // The longest duration the config accepts (MAX_DURATION); "10y" is 10 × 365.25 days, over it.
    let off = "3650d";
    let on = "60s";
    println!(
        "## stall: {forgotten} forgotten analyses (BEFORE_ANALYZE forever) + {live} live imports, \
         {rate} calls/min (simulator quota {rate}), interval {interval}; stall_after {off} (off) vs {on} (on), \
         stalled_interval default (10m); measured over {seconds} s once the forgotten ones have stalled"
    );
    // Forgotten assets: imported long ago (COMPLETED), watched with analysis = true, and
    // nobody ever starts the analysis. The live imports do not exist yet.
    let mut prepared = Vec::new();
    for (name, stall_after) in [("stall handling off", off), ("stall handling on", on)] {
        let sim = start_sim_with(scenario_of(forgotten, "COMPLETED"), rate).await;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.jsonl");
        write_config(
            dir.path(),
            &sim.url(),
            rate,
            &format!("interval = \"{interval}\"\nstall_after = \"{stall_after}\"\n"),
            &format!("[[sink.log]]\npath = \"{}\"\n", log.display()),
        );
        add_watches(dir.path(), 0..forgotten, true);
        prepared.push((name, stall_after, sim, dir));
    }
    let started = Instant::now();
    let mut runs: Vec<StallRun> = prepared
        .into_iter()
        .map(|(name, stall_after, sim, dir)| StallRun {
            name,
            stall_after,
            sim,
            child: spawn_daemon(dir.path()),
            dir,
        })
        .collect();

    // Warm-up: each forgotten asset takes an import poll, a first analysis poll, and a
    // second one at least `stall_after` later that stalls it: three rounds of the quota.
    let round = (forgotten + 1) as f64 * 60.0 / f64::from(rate);
    let give_up = started + Duration::from_secs_f64(3.5 * round + 60.0);
    let on_log = runs[1].dir.path().join("events.jsonl");
    while stalled_in_log(&on_log) < forgotten as usize && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!(
        "{} watch.stalled events after {:.0} s (three quota rounds of {forgotten} calls take {:.0} s)",
        stalled_in_log(&on_log),
        started.elapsed().as_secs_f64(),
        3.0 * round
    );

    // Live imports: new uploads, watched as `register --watch` does, each finishing 20 to 40 s
    // later (well within stall_after, as a real import finishes within minutes of 6 h). They
    // are added one by one over the first 40% of the window; the rest lets the slowest be seen.
    let from = Instant::now();
    let from_ms = now_ms();
    let until = from + Duration::from_secs(seconds);
    let spacing = Duration::from_secs(seconds).mul_f64(0.4) / live.max(1) as u32;
    let mut stores: Vec<Store> = runs
        .iter()
        .map(|r| Store::open(&ncp_watchd::config::StateConfig::sqlite(r.dir.path().join("state.db"))).unwrap())
        .collect();
    let mut pending: Vec<(Instant, String)> = Vec::new();
    let mut changes: Vec<(String, i64)> = Vec::new();
    let set = |runs: &[StallRun], id: &str, status: &str| {
        for run in runs {
            run.sim.set(SetState::VideoAsset {
                workspace: WORKSPACE.into(),
                project_id: PROJECT.into(),
                asset_id: id.to_string(),
                status: status.into(),
            });
        }
    };
    for i in 0..live {
        let added = from + spacing * i as u32;
        // Finish the imports that are due before this one starts.
        while let Some(pos) = (0..pending.len())
            .filter(|&p| pending[p].0 <= added)
            .min_by_key(|&p| pending[p].0)
        {
            let (at, id) = pending.remove(pos);
            tokio::time::sleep_until(at.into()).await;
            set(&runs, &id, "COMPLETED");
            changes.push((id, now_ms()));
        }
        tokio::time::sleep_until(added.into()).await;
        let id = asset_id(forgotten + i);
        set(&runs, &id, "IN_PROGRESS");
        for store in &mut stores {
            store
                .add_dynamic_watch(&DynamicWatch {
                    id: 0,
                    workspace: WORKSPACE.into(),
                    project_id: PROJECT.into(),
                    asset_id: id.clone(),
                    name: None,
                    analysis: false,
                })
                .unwrap();
        }
        pending.push((added + Duration::from_secs(20 + i * 7 % 21), id));
    }
    pending.sort();
    for (at, id) in pending {
        tokio::time::sleep_until(at.into()).await;
        set(&runs, &id, "COMPLETED");
        changes.push((id, now_ms()));
    }
    drop(stores);
    tokio::time::sleep_until(until.into()).await;
    let to_ms = now_ms();
    for run in &mut runs {
        stop(&mut run.child);
    }
    println!(
        "{} live imports completed from {:.0} s to {:.0} s after the window opened; the window is {seconds} s",
        changes.len(),
        changes.first().map_or(0, |c| c.1 - from_ms) as f64 / 1000.0,
        changes.last().map_or(0, |c| c.1 - from_ms) as f64 / 1000.0
    );

    println!(
        "| run | stall_after | watch.stalled events | calls/min (window) | quota used (window) | 429s (whole run) | peak calls in any 60 s (whole run) | live detected | mean latency | p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for run in &runs {
        let store = Store::open(&ncp_watchd::config::StateConfig::sqlite(
            run.dir.path().join("state.db"),
        ))
        .unwrap();
        let outbox = store.outbox_after(0, usize::MAX >> 1).unwrap();
        let stalled = outbox.iter().filter(|r| r.event_type == "watch.stalled").count();
        let completed: HashMap<&str, i64> = outbox
            .iter()
            .filter(|r| r.event_type == "video_asset.import.completed")
            .map(|r| (r.subject.rsplit('/').next().unwrap_or_default(), r.created_ms))
            .collect();
        let mut lat: Vec<f64> = changes
            .iter()
            .filter_map(|(id, at)| completed.get(id.as_str()).map(|d| (*d - *at) as f64 / 1000.0))
            .collect();
        let found = lat.len();
        let (mean, p50, p99) = latency_figures(&mut lat);
        let q = quota_figures(&run.sim, rate, from_ms, to_ms);
        let minutes = (to_ms - from_ms) as f64 / 60_000.0;
        let served = run
            .sim
            .requests()
            .iter()
            .filter(|r| r.status != 429 && r.at_ms >= from_ms && r.at_ms < to_ms)
            .count() as f64;
        println!(
            "| {} | {} | {stalled} | {:.0} | {:.1}% | {} | {} | {found}/{} | {mean:.1} s | {p50:.1} s | {p99:.1} s |",
            run.name,
            run.stall_after,
            served / minutes,
            q.used_pct,
            q.rejected_429,
            q.peak_60s,
            changes.len()
        );
    }
}

/// One side of the callbacks bench: its simulator, its directory, its daemon.
struct CallbackRun {
    name: &'static str,
    sim: Arc<SimHandle>,
    dir: tempfile::TempDir,
    child: Child,
}

/// VOD detection latency with callbacks and with polling only, side by side: two daemons
/// with the same quota and intervals, each on its own simulator running the same encodes,
/// which finish at the same moments in both. The simulator of the first sends VOD
/// Station's callbacks to its daemon; the second daemon has callbacks off.
async fn callbacks_bench() {
    let encodes = arg("--encodes", 60);
    let seconds = arg("--seconds", 240);
    let (rate, interval, discovery) = (1000u32, "15s", "1m");
    println!(
        "## callbacks: {encodes} running encodes finishing over {seconds} s; {rate} calls/min, \
         interval {interval}, discovery_interval {discovery}; callbacks on (fallback_interval 5m, the default) vs polling only"
    );
    let mut text = String::new();
    for i in 0..encodes {
        text.push_str(&format!(
            "[[vod]]\ncategory_id = \"7\"\ncategory_name = \"bench\"\nfile_path = \"f{i}.mp4\"\noutput_type = \"hls\"\nstarted_ago = \"1m\"\nencode = [{{ at = \"0s\", status = \"RUNNING\", percent = 10 }}]\n"
        ));
    }
    let scenario = Scenario::parse(&text).expect("bench scenario parses");
    let token: String = (0..32).map(|i| format!("{:02x}", (i * 37 + 11) % 256)).collect();
    let mut runs = Vec::new();
    for (name, callbacks) in [("callbacks", true), ("polling only", false)] {
        let sim = start_sim_with(scenario.clone(), rate).await;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let section = if callbacks {
            std::fs::write(dir.path().join("token"), &token).unwrap();
            sim.set_vod_callback_url(Some(format!("http://127.0.0.1:{port}/callbacks/vod/{token}")));
            "[callbacks]\nvod_token_file = \"token\"\n"
        } else {
            ""
        };
        let url = sim.url();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "[api]\nmedia_url = \"{url}\"\nvod_url = \"{url}\"\nrate_limit_per_minute = {rate}\nmax_in_flight = 8\ntimeout = \"10s\"\n\
                 [poll]\ninterval = \"{interval}\"\ndiscovery_interval = \"{discovery}\"\n[state]\npath = \"state.db\"\n\
                 [server]\nlisten = \"127.0.0.1:{port}\"\n[log]\nlevel = \"warn\"\n{section}\
                 [[watch.vod]]\ncategories = [\"7\"]\n"
            ),
        )
        .unwrap();
        let child = spawn_daemon(dir.path());
        runs.push(CallbackRun { name, sim, dir, child });
    }
    // The first read of each daemon sees every encode running; changes start after it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from_ms = now_ms();
    let from = Instant::now();
    let until = from + Duration::from_secs(seconds);
    // Spread over the first 85% of the window, at uneven gaps, so changes fall at every
    // phase of the poll cycle; the rest lets the last ones be seen by polling.
    let span = Duration::from_secs(seconds).mul_f64(0.85);
    let mut changes: Vec<(String, i64)> = Vec::new();
    for i in 0..encodes {
        let jitter = ((i * 7919) % 1000) as f64 / 1000.0;
        let at = from + span.mul_f64((i as f64 + jitter) / encodes as f64);
        tokio::time::sleep_until(at.into()).await;
        let status = if i % 5 == 4 { "FAILURE" } else { "COMPLETE" };
        for run in &runs {
            run.sim.set(SetState::Vod {
                category_id: "7".into(),
                category_name: None,
                file_path: format!("f{i}.mp4"),
                output_type: "hls".into(),
                status: status.into(),
                percent: Some(100.0),
                new_job: false,
            });
        }
        changes.push((format!("vodstation/categories/7/files/f{i}.mp4/outputs/hls"), now_ms()));
    }
    tokio::time::sleep_until(until.into()).await;
    let to_ms = now_ms();
    for run in &mut runs {
        stop(&mut run.child);
    }
    println!(
        "| run | changes detected | mean latency | p50 | p99 | max | events with data.hint | VOD list calls/min (window) | callbacks sent | 429s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for run in &runs {
        let store = Store::open(&ncp_watchd::config::StateConfig::sqlite(
            run.dir.path().join("state.db"),
        ))
        .unwrap();
        let outbox = store.outbox_after(0, usize::MAX >> 1).unwrap();
        let ends: HashMap<&str, (i64, bool)> = outbox
            .iter()
            .filter(|r| r.event_type == "vod.encode.complete" || r.event_type == "vod.encode.failure")
            .map(|r| {
                (
                    r.subject.as_str(),
                    (r.created_ms, r.body.contains("\"hint\":\"callback\"")),
                )
            })
            .collect();
        let mut lat: Vec<f64> = changes
            .iter()
            .filter_map(|(subject, at)| ends.get(subject.as_str()).map(|(d, _)| (*d - *at) as f64 / 1000.0))
            .collect();
        let hinted = ends.values().filter(|(_, h)| *h).count();
        let found = lat.len();
        let (mean, p50, p99) = latency_figures(&mut lat);
        let max = lat.last().copied().unwrap_or(f64::NAN);
        let log = run.sim.requests();
        let list_calls = log
            .iter()
            .filter(|r| r.target.starts_with("/api/v2/status") && r.at_ms >= from_ms && r.at_ms < to_ms)
            .count() as f64;
        let minutes = (to_ms - from_ms) as f64 / 60_000.0;
        println!(
            "| {} | {found}/{} | {mean:.2} s | {p50:.2} s | {p99:.2} s | {max:.2} s | {hinted} | {:.1} | {} | {} |",
            run.name,
            changes.len(),
            list_calls / minutes,
            run.sim.callbacks().len(),
            log.iter().filter(|r| r.status == 429).count()
        );
    }
}

/// A receiver that counts what it is sent.
async fn counting_receiver() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    let app = axum::Router::new().fallback(move || {
        let c = c.clone();
        async move {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, count)
}

async fn delivery_bench() {
    let pending = arg("--events", 1_000_000);
    let seconds = arg("--seconds", 60);
    println!("## delivery: {pending} events pending in the outbox, one webhook sink, {seconds} s");
    let sim = start_sim(0, 1_000_000).await;
    let (url, count) = counting_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), &sim.url(), 0, 1000, "1h");
    let mut config = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    config.push_str(&format!(
        "[[sink.webhook]]\nname = \"bench\"\nurl = \"{url}\"\nsecret_env = \"BENCH_HOOK_SECRET\"\n"
    ));
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    // The backlog: events already committed, and the sink's cursor before all of them.
    let filled = Instant::now();
    {
        let mut store = Store::open(&ncp_watchd::config::StateConfig::sqlite(dir.path().join("state.db"))).unwrap();
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..pending {
            let id = uuid::Uuid::now_v7().to_string();
            let body = format!(
                "{{\"specversion\":\"1.0\",\"id\":\"{id}\",\"source\":\"ncp-watchd/bench\",\"type\":\"video_asset.import.completed\",\"subject\":\"workspaces/bench/projects/1/video-assets/{i}\",\"time\":\"2026-11-23T00:00:00.000Z\",\"datacontenttype\":\"application/json\",\"data\":{{\"watch\":null,\"resource\":{{\"kind\":\"video_asset\"}},\"previous\":\"IN_PROGRESS\",\"current\":\"COMPLETED\",\"terminal\":true,\"detail\":{{}}}}}}"
            );
            batch.push(ncp_watchd::store::OutboxEvent {
                id,
                event_type: "video_asset.import.completed".into(),
                subject: format!("workspaces/bench/projects/1/video-assets/{i}"),
                body,
            });
            if batch.len() == 10_000 {
                store.commit(&[], &[], &batch, &[]).unwrap();
                batch.clear();
            }
        }
        store.commit(&[], &[], &batch, &[]).unwrap();
        let mut progress =
            Store::open_for_progress(&ncp_watchd::config::StateConfig::sqlite(dir.path().join("state.db"))).unwrap();
        progress.set_cursor_at("webhook:bench", 0).unwrap();
    }
    println!("(filled the outbox in {:.1} s)", filled.elapsed().as_secs_f64());
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ncp-watchd"))
        .args(["run", "-c", dir.path().join("config.toml").to_str().unwrap()])
        .env("NCLOUD_ACCESS_KEY", sim::DEFAULT_ACCESS_KEY)
        .env("NCLOUD_SECRET_KEY", sim::DEFAULT_SECRET_KEY)
        .env("BENCH_HOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c0, t0, cpu0) = (
        count.load(std::sync::atomic::Ordering::Relaxed),
        Instant::now(),
        cpu_seconds(pid),
    );
    let mut peak = 0.0f64;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_mib(pid).0);
    }
    let (c1, wall, cpu1) = (
        count.load(std::sync::atomic::Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
        cpu_seconds(pid),
    );
    stop(&mut child);
    println!("| pending at start | delivered in window | rate | daemon CPU | peak RSS |");
    println!("|---|---|---|---|---|");
    println!(
        "| {pending} | {} | {:.0} events/s | {:.0}% of a core | {peak:.1} MiB |",
        c1 - c0,
        (c1 - c0) as f64 / wall,
        100.0 * (cpu1 - cpu0) / wall
    );
}

/// A store for one side of the cluster benchmark: SQLite in `dir`, or a fresh PostgreSQL
/// server (kept alive by the returned handle) with `lease_ttl`.
fn store_for(dir: &Path, postgres: bool, lease_ttl: &str) -> (Option<pg::PgServer>, String, StateConfig) {
    if !postgres {
        return (
            None,
            "[state]\npath = \"state.db\"\n".into(),
            StateConfig::sqlite(dir.join("state.db")),
        );
    }
    let server = pg::start(false).expect("the cluster benchmark needs PostgreSQL (apt-get install postgresql)");
    let toml = format!("{}[cluster]\nlease_ttl = \"{lease_ttl}\"\n", server.state_toml());
    let state = server.state_config("sslmode=disable");
    (Some(server), toml, state)
}

/// Starts `n` replicas of the config in `dir`: the first in `dir` itself (where an SQLite
/// store lives), the others each in a directory of its own (its log).
fn spawn_replicas(dir: &Path, n: usize) -> Vec<(Child, Option<tempfile::TempDir>)> {
    (0..n)
        .map(|i| {
            if i == 0 {
                return (spawn_daemon(dir), None);
            }
            let own = tempfile::tempdir().unwrap();
            std::fs::copy(dir.join("config.toml"), own.path().join("config.toml")).unwrap();
            (spawn_daemon(own.path()), Some(own))
        })
        .collect()
}

/// Unexpired leases per holder pid, from the database.
fn lease_pids(server: &pg::PgServer) -> HashMap<u32, Vec<u16>> {
    let out = server.sql_in(
        "ncp_watchd",
        "SELECT COALESCE(string_agg(r.pid || ':' || l.shard, ','), '') FROM leases l \
         JOIN replicas r ON r.id = l.holder WHERE l.expires_at > now()",
    );
    let mut by_pid: HashMap<u32, Vec<u16>> = HashMap::new();
    for pair in out.trim().split(',').filter(|p| !p.is_empty()) {
        if let Some((pid, shard)) = pair.split_once(':') {
            by_pid
                .entry(pid.parse().unwrap())
                .or_default()
                .push(shard.parse().unwrap());
        }
    }
    by_pid
}

async fn cluster_bench() {
    let n = arg("--watches", 10_000);
    let seconds = arg("--seconds", 150);
    let quota = 6000u32;
    println!("## cluster: replicas sharing one PostgreSQL, side by side with SQLite");

    // 1. One quota: 10,000 watches polled as fast as the quota allows.
    if !flag("--no-quota") {
        println!("\n### quota: {n} in-progress watches, simulator quota {quota}/min, {seconds} s each");
        println!("| store | replicas | calls | 429s | peak calls in any 60 s | quota used (from 60 s on) |");
        println!("|---|---|---|---|---|---|");
        for (postgres, replicas) in [(false, 1), (true, 1), (true, 2), (true, 3)] {
            let sim = start_sim(n, quota).await;
            let dir = tempfile::tempdir().unwrap();
            let (_server, toml, state) = store_for(dir.path(), postgres, "15s");
            write_config_on(dir.path(), &sim.url(), quota, "interval = \"15s\"\n", "", &toml);
            add_watches_to(&state, 0..n, false);
            let start_ms = now_ms();
            let mut children = spawn_replicas(dir.path(), replicas);
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            for (c, _) in &mut children {
                stop(c);
            }
            let q = quota_figures(&sim, quota, start_ms + 60_000, start_ms + seconds as i64 * 1000);
            println!(
                "| {} | {replicas} | {} | {} | {} | {:.1}% |",
                if postgres { "PostgreSQL" } else { "SQLite" },
                q.calls,
                q.rejected_429,
                q.peak_60s,
                q.used_pct
            );
        }
    }

    // 2. Failover: kill -9 of one of three replicas; how long until each of its shards is
    // polled again by the others.
    if !flag("--no-failover") {
        let watches = 1000;
        let ttl = 15;
        println!("\n### failover: {watches} watches polled every 2 s, 3 replicas, lease_ttl = {ttl}s");
        println!("| stop | shards moved | first of them polled again | last of them polled again | target |");
        println!("|---|---|---|---|---|");
        for signal in ["KILL", "TERM"] {
            let sim = start_sim(watches, 1_000_000).await;
            let dir = tempfile::tempdir().unwrap();
            let (server, toml, state) = store_for(dir.path(), true, &format!("{ttl}s"));
            let server = server.unwrap();
            write_config_on(dir.path(), &sim.url(), 1_000_000, "interval = \"2s\"\n", "", &toml);
            add_watches_to(&state, 0..watches, false);
            let mut children = spawn_replicas(dir.path(), 3);
            // Settled: three holders and every watch polled at least once.
            let deadline = Instant::now() + Duration::from_secs(120);
            while lease_pids(&server).len() < 3 || sim.requests().len() < 2 * watches as usize {
                assert!(Instant::now() < deadline, "the replicas did not settle");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            let victim = children[0].0.id();
            let moved: Vec<u16> = lease_pids(&server).remove(&victim).unwrap_or_default();
            let moved_assets: HashMap<String, u16> = (0..watches)
                .map(asset_id)
                .map(|id| {
                    let subject = format!("workspaces/{WORKSPACE}/projects/{PROJECT}/video-assets/{id}");
                    (id, ncp_watchd::cluster::shard_of(&subject))
                })
                .filter(|(_, shard)| moved.contains(shard))
                .collect();
            let killed_ms = now_ms();
            let _ = Command::new("kill").args(["-s", signal, &victim.to_string()]).status();
            let _ = children[0].0.wait();
            // Each moved shard's first poll after the stop.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut first: HashMap<u16, i64> = HashMap::new();
            let mut seen = 0;
            while first.len() < moved.len() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let log = sim.requests();
                for r in log[seen..].iter().filter(|r| r.at_ms > killed_ms) {
                    let id = r
                        .target
                        .split("/video-assets/")
                        .nth(1)
                        .and_then(|rest| rest.split(['/', '?']).next())
                        .unwrap_or_default();
                    if let Some(shard) = moved_assets.get(id) {
                        first.entry(*shard).or_insert(r.at_ms);
                    }
                }
                seen = log.len();
            }
            let mut times: Vec<f64> = first.values().map(|t| (t - killed_ms) as f64 / 1000.0).collect();
            times.sort_by(f64::total_cmp);
            println!(
                "| {} | {} | {:.2} s | {:.2} s{} | ≤ {} s |",
                if signal == "KILL" { "kill -9" } else { "SIGTERM" },
                moved.len(),
                times.first().copied().unwrap_or(f64::NAN),
                times.last().copied().unwrap_or(f64::NAN),
                if first.len() < moved.len() {
                    " (not all within 60 s)"
                } else {
                    ""
                },
                ttl + 2
            );
            for (c, _) in &mut children[1..] {
                stop(c);
            }
        }
    }

    // 3. Delivery from the outbox, and memory with 100,000 watches.
    let pending = arg("--events", 200_000);
    println!("\n### delivery: {pending} events pending, one webhook sink; memory: 100,000 watches");
    println!(
        "| store | delivered in 30 s | rate | peak RSS delivering | RSS 15 s after a restart with 100,000 watches |"
    );
    println!("|---|---|---|---|---|");
    for postgres in [false, true] {
        let sim = start_sim(0, 1_000_000).await;
        let (url, count) = counting_receiver().await;
        let dir = tempfile::tempdir().unwrap();
        let (_server, toml, state) = store_for(dir.path(), postgres, "15s");
        write_config_on(
            dir.path(),
            &sim.url(),
            1000,
            "interval = \"1h\"\n",
            &format!("[[sink.webhook]]\nname = \"bench\"\nurl = \"{url}\"\n"),
            &toml,
        );
        // The sink's cursors first (as a running daemon would have them), then the backlog.
        let mut child = spawn_daemon(dir.path());
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop(&mut child);
        {
            let mut store = Store::open(&state).unwrap();
            let mut batch = Vec::with_capacity(5_000);
            for i in 0..pending {
                let id = uuid::Uuid::now_v7().to_string();
                let subject = format!("workspaces/bench/projects/1/video-assets/{i}");
                let body = format!(
                    "{{\"specversion\":\"1.0\",\"id\":\"{id}\",\"source\":\"ncp-watchd/bench\",\"type\":\"video_asset.import.completed\",\"subject\":\"{subject}\",\"time\":\"2026-12-05T00:00:00.000Z\",\"datacontenttype\":\"application/json\",\"data\":{{\"watch\":null,\"resource\":{{\"kind\":\"video_asset\"}},\"previous\":\"IN_PROGRESS\",\"current\":\"COMPLETED\",\"terminal\":true,\"detail\":{{}}}}}}"
                );
                batch.push(ncp_watchd::store::OutboxEvent {
                    id,
                    event_type: "video_asset.import.completed".into(),
                    subject,
                    body,
                });
                if batch.len() == 5_000 {
                    store.commit(&[], &[], &batch, &[]).unwrap();
                    batch.clear();
                }
            }
            store.commit(&[], &[], &batch, &[]).unwrap();
        }
        let mut child = spawn_daemon(dir.path());
        let pid = child.id();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (c0, t0) = (count.load(std::sync::atomic::Ordering::Relaxed), Instant::now());
        let mut peak = 0.0f64;
        while t0.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            peak = peak.max(rss_mib(pid).0);
        }
        let (c1, wall) = (
            count.load(std::sync::atomic::Ordering::Relaxed),
            t0.elapsed().as_secs_f64(),
        );
        stop(&mut child);
        // Memory: a fresh store with 100,000 watches and no backlog; a first start makes the
        // items, and the restart after it is measured 15 s in (as `memory` does).
        drop(_server);
        let sim = start_sim(100_000, 1_000_000).await;
        let dir = tempfile::tempdir().unwrap();
        let (_server, toml, state) = store_for(dir.path(), postgres, "15s");
        write_config_on(dir.path(), &sim.url(), 1000, "interval = \"15s\"\n", "", &toml);
        add_watches_to(&state, 0..100_000, false);
        let mut child = spawn_daemon(dir.path());
        tokio::time::sleep(Duration::from_secs(20)).await;
        stop(&mut child);
        let mut child = spawn_daemon(dir.path());
        tokio::time::sleep(Duration::from_secs(15)).await;
        let (rss, _) = rss_mib(child.id());
        stop(&mut child);
        println!(
            "| {} | {} | {:.0} events/s | {peak:.1} MiB | {rss:.1} MiB |",
            if postgres { "PostgreSQL" } else { "SQLite" },
            c1 - c0,
            (c1 - c0) as f64 / wall
        );
    }
}

fn main() {
    let which = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && a.parse::<u64>().is_err())
        .unwrap_or_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        match which.as_str() {
            "quota" => quota_bench().await,
            "memory" => memory_bench().await,
            "cpu" => cpu_bench().await,
            "delivery" => delivery_bench().await,
            "stall" => stall_bench().await,
            "callbacks" => callbacks_bench().await,
            "cluster" => cluster_bench().await,
            "all" => {
                memory_bench().await;
                cpu_bench().await;
                quota_bench().await;
            }
            _ => eprintln!("usage: cargo bench --bench daemon -- quota|memory|cpu|delivery|stall|callbacks|cluster|all [--watches N] [--events N] [--forgotten N] [--live N] [--encodes N] [--seconds S]"),
        }
    });
}
