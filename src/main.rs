//! `ncp-watchd`: parse the command line, set up logging, run the command, map the outcome
//! to an exit code (0 success, 1 runtime failure, 2 usage or configuration error).

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::Parser;
use ncp_watchd::cli::{Cli, Command};
use ncp_watchd::cmd::{self, Failure};

fn main() -> ExitCode {
    let command = Cli::parse().into_command();
    // The daemon logs as its config says; the other commands log warnings to stderr.
    if !matches!(command, Command::Run(_)) {
        cmd::init_logging();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Check(args) => cmd::check::run(&args).await,
            Command::Run(args) => cmd::run::run(&args).await,
            Command::Once(args) => cmd::once::run(&args).await,
            Command::Status(args) => cmd::status::run(&args).await,
            Command::Demo => cmd::demo::run().await,
            Command::Healthcheck(args) => cmd::healthcheck::run(&args).await,
            Command::DeadLetters(args) => cmd::dead_letters::run(&args).await,
            Command::Register(args) => cmd::register::run(&args).await,
            Command::Tail(args) => cmd::tail::run(&args).await,
            Command::Completions { shell } => cmd::completions(shell),
            Command::Man => cmd::man(),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("{}", ncp_watchd::text::scrub(&message));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("error: {}", ncp_watchd::text::scrub(&message));
            ExitCode::from(1)
        }
    }
}
