//! The command line (SPEC §2): clap definitions only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Watches NCP Media Intelligence and VOD Station work and tells other systems when it finishes.
#[derive(Debug, Parser)]
#[command(name = "ncp-watchd", version, about)]
pub struct Cli {
    /// Config file [default: $NCP_WATCHD_CONFIG, else /etc/ncp-watchd/config.toml]; before or
    /// after the subcommand.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The config file a command reads: `-c/--config`, given anywhere on the line (clap reads it
/// as one global option, and `Cli::into_command` hands it to the command).
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArg {
    /// The `-c/--config` value, filled in from the global option.
    #[arg(skip)]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// The command, with the global `-c/--config` handed to it.
    pub fn into_command(self) -> Command {
        let mut command = self.command;
        if let Some(arg) = command.config_arg() {
            arg.config = self.config;
        }
        command
    }
}

impl Command {
    fn config_arg(&mut self) -> Option<&mut ConfigArg> {
        match self {
            Self::Check(c) | Self::Once(c) | Self::Healthcheck(c) | Self::Tail(TailArgs { config: c, .. }) => Some(c),
            Self::Run(r) => Some(&mut r.config),
            Self::Status(s) => Some(&mut s.config),
            Self::DeadLetters(d) => Some(&mut d.config),
            Self::Register(r) => Some(&mut r.config),
            Self::Demo | Self::Completions { .. } | Self::Man => None,
        }
    }
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
    /// Follow committed events as they happen, from the state store (works beside a running daemon).
    Tail(TailArgs),
    /// Print a shell completion script: `ncp-watchd completions bash > /etc/bash_completion.d/ncp-watchd`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `ncp-watchd man > /usr/share/man/man1/ncp-watchd.1`.
    Man,
}

/// `tail` arguments.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The config file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only events whose type matches this glob (`vod.encode.*`).
    #[arg(long = "type", value_name = "GLOB")]
    pub event_type: Option<String>,
    /// Only events whose subject matches this glob (`workspaces/ws/projects/1/*`).
    #[arg(long, value_name = "GLOB")]
    pub subject: Option<String>,
    /// Start with the events committed in this much time before now (`10m`, `1h`); default: only new ones.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Print what matches now and exit instead of following.
    #[arg(long)]
    pub no_follow: bool,
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
