//! The command line (SPEC §2): clap definitions only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Watches NCP Media Intelligence and VOD Station work and tells other systems when it finishes.
#[derive(Debug, Parser)]
#[command(name = "ncp-watchd", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The config file option shared by commands.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Config file [default: $NCP_WATCHD_CONFIG, else /etc/ncp-watchd/config.toml].
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and the presence of credentials, offline; print a summary.
    Check(ConfigArg),
    /// Run the daemon: poll within the quota, commit every change, deliver events.
    Run(RunArgs),
    /// Poll every watch once, deliver and print what changed since the last run, and exit.
    Once(ConfigArg),
    /// Show what each watched item last showed, from the state store.
    Status(StatusArgs),
    /// Run the bundled simulator and watch its scenario play out, printing events live.
    Demo,
    /// List or re-queue webhook deliveries that ran out of attempts (works while the daemon runs).
    DeadLetters(DeadLetterArgs),
    /// Exit 0 if the running daemon's /healthz answers 200 within 2 s, 1 otherwise (for container HEALTHCHECK).
    Healthcheck(ConfigArg),
    /// Register an Object Storage file as a media asset and print its asset id.
    Register(RegisterArgs),
}

/// `register` arguments.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The config file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Media Intelligence workspace name.
    #[arg(long)]
    pub workspace: String,
    /// Project id.
    #[arg(long)]
    pub project: String,
    /// Object Storage bucket.
    #[arg(long)]
    pub bucket: String,
    /// Object key of the uploaded file.
    #[arg(long)]
    pub key: String,
    /// Also add a persistent watch for the new asset, which a running daemon picks up.
    #[arg(long)]
    pub watch: bool,
}

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The config file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `dead-letters` arguments.
#[derive(Debug, Args)]
pub struct DeadLetterArgs {
    /// The config file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// What to do.
    #[command(subcommand)]
    pub action: DeadLetterAction,
}

/// `dead-letters list|replay`.
#[derive(Debug, Subcommand)]
pub enum DeadLetterAction {
    /// Show every dead letter: event id, sink, subject, type, attempts, last error.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-queue one dead letter by event id, or all of them; paused sinks resume.
    Replay {
        /// The event id to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// `run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log format, overriding `[log] format`: `json` for journald and container collectors.
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}
