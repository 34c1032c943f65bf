//! Every NCP response decoder on any bytes, as a 200 and as an error answer: a value, a
//! classified error or a skipped row, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ncp_watchd::ncp::client::classify;
use ncp_watchd::ncp::media::{
    decode_analysis_status, decode_asset_page, decode_import_status, decode_registered_asset,
    decode_search_image_status,
};
use ncp_watchd::ncp::vod::{decode_vod_page, newest_jobs};

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (if *s < 200 { 200 } else { 200 + u16::from(*s) * 2 }, rest),
        None => (200, data),
    };
    let Ok(status) = reqwest::StatusCode::from_u16(status.min(599)) else { return };
    let Ok(value) = classify(status, None, body) else { return };
    let _ = decode_import_status(value.clone());
    let _ = decode_analysis_status(value.clone());
    let _ = decode_search_image_status(value.clone());
    let _ = decode_registered_asset(value.clone());
    if let Ok(page) = decode_asset_page(value.clone()) {
        assert_eq!(page.items.len() + page.skipped.len(), page.rows);
    }
    if let Ok(page) = decode_vod_page(value) {
        assert_eq!(page.items.len() + page.skipped.len(), page.rows);
        let _ = newest_jobs(page.items);
    }
});
