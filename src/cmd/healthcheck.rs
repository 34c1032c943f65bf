//! `ncp-watchd healthcheck`: is the running daemon alive? For container `HEALTHCHECK`.

use crate::cli::ConfigArg;
use crate::server::check_health;

use super::{Failure, load_config};

/// Exits 0 when `/healthz` on `[server] listen` answers 200 within 2 s; 1 with a one-line
/// reason otherwise.
pub async fn run(args: &ConfigArg) -> Result<(), Failure> {
    let config = load_config(args)?;
    if config.listen.port() == 0 {
        return Err(Failure::Runtime(
            "[server] listen has port 0, so there is no fixed address to check; set a port".to_string(),
        ));
    }
    match check_health(config.listen).await {
        Ok(()) => {
            println!("ok");
            Ok(())
        }
        Err(reason) => Err(Failure::Runtime(reason)),
    }
}
