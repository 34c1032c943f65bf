//! `ncp-watchd register`: add an Object Storage file to a project as a media asset.

use crate::cli::RegisterArgs;
use crate::config::resolve_credentials;
use crate::ncp::NcpClient;
use crate::store::{DynamicWatch, Store};

use super::{Failure, load_config};

/// Registers the file and prints the new asset id on stdout.
pub async fn run(args: &RegisterArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    // Open the store before registering, so a store problem cannot leave an unwatched asset.
    let mut store = match args.watch {
        true => Some(Store::open(&config.state).map_err(|e| Failure::Runtime(e.to_string()))?),
        false => None,
    };
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
    if let Some(store) = &mut store {
        let watch = DynamicWatch {
            id: 0,
            workspace: args.workspace.clone(),
            project_id: args.project.clone(),
            asset_id: asset.asset_id.clone(),
            name: None,
            analysis: false,
        };
        store.add_dynamic_watch(&watch).map_err(|e| {
            Failure::Runtime(format!(
                "asset {} was registered but could not be added as a watch: {e}; add a [[watch.video_asset]] table for it",
                asset.asset_id
            ))
        })?;
    }
    Ok(())
}
