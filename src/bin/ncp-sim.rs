//! `ncp-sim`: the NCP API simulator on its own (SPEC §7).

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ncp_watchd::sim::{self, Scenario, SimConfig, SimHandle};

/// One line for `-h`: what the simulator is (clap would otherwise take the package's
/// description, which describes the daemon).
const ABOUT: &str = "ncp-sim: a simulator of NCP's Media Intelligence and VOD Station APIs, for trying and testing ncp-watchd without an NCP account";

/// The fuller `--help` text: what it serves, its admin routes and its default credentials.
const LONG_ABOUT: &str = "\
ncp-sim: a simulator of NAVER Cloud Platform's Media Intelligence and VOD Station APIs, for
trying and testing ncp-watchd without an NCP account.

It serves the video asset import and analysis status, asset list, register, search image upload
status and VOD Station status list endpoints on one address (point both [api] media_url and vod_url
at it), checks API Gateway signature v2 and the 5-minute timestamp window, enforces a
calls-per-minute quota with HTTP 429, and plays a scenario: items and the times their
statuses change (the built-in one when --scenario is absent).

Admin routes (unsigned):
  GET /_sim/requests, DELETE /_sim/requests   the log of API requests, or clear it
  POST /_sim/state                            set an item's status now (JSON)
  POST /_sim/faults, DELETE /_sim/faults      inject faults (errors, malformed bodies, stalls,
                                              extra rows, repeated pages), or clear them
  GET /_sim/status                            elapsed time, whether the scenario is done

Default credentials (not secrets; printed at start):
  access key NCPSIM0ACCESS0KEY, secret key ncp-sim-secret-key-for-local-tries";

/// The simulator's command line.
#[derive(Debug, Parser)]
#[command(name = "ncp-sim", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = sim::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Scenario file (TOML); the built-in scenario when absent.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// The access key to accept.
    #[arg(long, default_value = sim::DEFAULT_ACCESS_KEY, requires = "secret_key")]
    access_key: String,
    /// The secret key to accept.
    #[arg(long, default_value = sim::DEFAULT_SECRET_KEY)]
    secret_key: String,
    /// Calls per minute per access key (Media Intelligence and VOD Station together) before 429.
    #[arg(long, default_value_t = sim::DEFAULT_QUOTA_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    quota: u32,
    /// POST VOD Station's callbacks here on every encode status change but CANCELED, as
    /// VOD Station does (such as http://127.0.0.1:9464/callbacks/vod/TOKEN).
    #[arg(long, value_name = "URL")]
    vod_callback_url: Option<url::Url>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scenario = match &args.scenario {
        None => Scenario::built_in(),
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Scenario::parse(&t))
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: scenario {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let config = SimConfig {
        access_key: args.access_key,
        secret_key: args.secret_key,
        quota_per_minute: args.quota,
        scenario,
        vod_callback_url: args.vod_callback_url.map(String::from),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let printed = config.clone();
        let handle = match SimHandle::start(config, args.listen).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", args.listen);
                return ExitCode::from(1);
            }
        };
        println!("ncp-sim listening on {}", handle.url());
        println!("  access key: {}", printed.access_key);
        if printed.secret_key == sim::DEFAULT_SECRET_KEY {
            println!("  secret key: {}", printed.secret_key);
        } else {
            println!("  secret key: (the one given with --secret-key)");
        }
        println!(
            "  quota: {} calls/min per access key, both services together",
            printed.quota_per_minute
        );
        println!(
            "  admin: {}/_sim/requests, /_sim/state, /_sim/faults, /_sim/status",
            handle.url()
        );
        if printed.vod_callback_url.is_some() {
            // The URL holds the daemon's token: said to be set, not shown.
            println!("  VOD Station callbacks: sent to the --vod-callback-url given");
        }
        wait_for_stop().await;
        handle.stop().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_stop() {
    // Without a SIGTERM handler (it cannot fail on Linux, but if it did) Ctrl-C still stops it.
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
