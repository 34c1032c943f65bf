//! The commands. Each returns `Result<(), Failure>`; `main` maps the failure to an exit code.

pub mod check;
pub mod dead_letters;
pub mod demo;
pub mod healthcheck;
pub mod once;
pub mod register;
pub mod run;
pub mod status;
pub mod tail;

use crate::cli::ConfigArg;
use crate::config::{self, Config, ConfigError};

/// Why a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Usage or configuration error: exit 2. The message is complete, one problem a line.
    Config(String),
    /// Something failed while running: exit 1.
    Runtime(String),
}

/// Logs go to stderr, so stdout stays clean for events; the commands report their own
/// failures, so only errors are logged unless `RUST_LOG` asks for more.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::text::ScrubbingStderr)
        .try_init();
}

/// `completions SHELL`: the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    use clap::CommandFactory as _;
    let mut command = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut command, "ncp-watchd", &mut std::io::stdout());
    Ok(())
}

/// `man`: the man page, roff, on stdout.
pub fn man() -> Result<(), Failure> {
    use clap::CommandFactory as _;
    let page = clap_mangen::Man::new(crate::cli::Cli::command());
    page.render(&mut std::io::stdout())
        .map_err(|e| Failure::Runtime(format!("cannot write the man page: {e}")))
}

/// Loads the config named by `-c`, `$NCP_WATCHD_CONFIG` or the default path.
pub fn load_config(arg: &ConfigArg) -> Result<Config, Failure> {
    let path = config::config_path(arg.config.as_deref());
    Config::load(&path).map_err(|e| Failure::Config(render_config_error(&e)))
}

/// Every problem on its own `file:line:col: error:` line, then what to do.
pub fn render_config_error(e: &ConfigError) -> String {
    match e {
        ConfigError::Read { .. } | ConfigError::TooLarge { .. } => format!("error: {e}"),
        ConfigError::Invalid(d) => {
            let mut text: String = d.lines().map(|l| format!("{l}\n")).collect();
            let n = d.items.len();
            if d.truncated {
                text.push_str(&format!(
                    "{}\nthe first {n} problems in {} are shown; fix them and run `ncp-watchd check` again",
                    config::MORE_PROBLEMS_NOTE,
                    d.file.display(),
                ));
            } else {
                text.push_str(&format!(
                    "{n} problem{} in {}; fix {} and run `ncp-watchd check` again",
                    if n == 1 { "" } else { "s" },
                    d.file.display(),
                    if n == 1 { "it" } else { "them" }
                ));
            }
            text
        }
    }
}
