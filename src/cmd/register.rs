//! `ncp-watchd register`: add an Object Storage file to a project as a media asset.

use crate::cli::RegisterArgs;
use crate::config::resolve_credentials;
use crate::ncp::NcpClient;

use super::{Failure, load_config};

/// Registers the file and prints the new asset id on stdout.
pub async fn run(args: &RegisterArgs) -> Result<(), Failure> {
    if args.watch {
        // Refuse before registering, so that a retry without the flag does not create a
        // second asset.
        return Err(Failure::Config(
            "error: --watch needs the state store that `ncp-watchd run` keeps, which this build does not have yet; \
             register without --watch and add a [[watch.video_asset]] table with the printed asset id"
                .to_string(),
        ));
    }
    let config = load_config(&args.config)?;
    let credentials = resolve_credentials(&config.credentials).map_err(|e| Failure::Config(format!("error: {e}")))?;
    let client = NcpClient::new(&config.api, &credentials).map_err(|e| Failure::Runtime(e.to_string()))?;
    let asset = client
        .register_asset(&args.workspace, &args.project, &args.bucket, &args.key)
        .await
        .map_err(|e| {
            Failure::Runtime(format!(
                "registering {} from bucket {} failed: {e}",
                args.key, args.bucket
            ))
        })?;
    println!("{}", asset.asset_id);
    Ok(())
}
