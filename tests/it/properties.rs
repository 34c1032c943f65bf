//! Property tests (issue 9): every NCP response decoder, the two signers and `Retry-After`
//! parsing, on any input. No panic, and the invariants each promises. (The config loader's,
//! `detect`'s, the limiter's and the due queue's are unit tests beside their code.)

use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use ncp_watchd::ncp::client::{MAX_RETRY_AFTER, classify, parse_retry_after};
use ncp_watchd::ncp::media::{
    decode_analysis_status, decode_asset_page, decode_import_status, decode_registered_asset,
    decode_search_image_status,
};
use ncp_watchd::ncp::vod::{decode_vod_page, newest_jobs};
use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Any JSON value, biased toward the shapes NCP answers with: objects with the fields the
/// decoders look for, holding values of every type.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("COMPLETED"),
            Just("FAILED"),
            Just("RUNNING"),
            Just("0"),
            Just(".."),
            Just("2021-09-14T15:49:12+0900")
        ]
        .prop_map(Value::from),
    ];
    let keys = prop_oneof![
        Just("code".to_string()),
        Just("message".to_string()),
        Just("result".to_string()),
        Just("content".to_string()),
        Just("total".to_string()),
        Just("totalCount".to_string()),
        Just("uploadStatus".to_string()),
        Just("uploadMessage".to_string()),
        Just("videoId".to_string()),
        Just("assetId".to_string()),
        Just("status".to_string()),
        Just("categoryId".to_string()),
        Just("filePath".to_string()),
        Just("outputType".to_string()),
        Just("percent".to_string()),
        Just("lastWorkTime".to_string()),
        Just("link".to_string()),
        Just("error".to_string()),
        Just("errorCode".to_string()),
        Just("responseError".to_string()),
        "[a-zA-Z]{1,8}",
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(keys.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No decoder panics on any JSON, and a list decoder accounts for every row: each one
    /// is either an item or a skipped row.
    #[test]
    fn every_decoder_takes_any_json_without_panicking(body in any_json()) {
        let _ = decode_import_status(body.clone());
        let _ = decode_analysis_status(body.clone());
        let _ = decode_search_image_status(body.clone());
        let _ = decode_registered_asset(body.clone());
        if let Ok(page) = decode_asset_page(body.clone()) {
            prop_assert_eq!(page.items.len() + page.skipped.len(), page.rows);
            for a in &page.items {
                prop_assert!(ncp_watchd::config::is_positive_integer(&a.asset_id));
            }
        }
        if let Ok(page) = decode_vod_page(body.clone()) {
            prop_assert_eq!(page.items.len() + page.skipped.len(), page.rows);
            let jobs = newest_jobs(page.items);
            let keys: std::collections::HashSet<String> = jobs.iter().map(|e| e.key()).collect();
            prop_assert_eq!(keys.len(), jobs.len(), "one job per output");
            for e in &jobs {
                prop_assert!(!e.file_path.is_empty() && !e.file_path.split('/').any(|s| s == ".." || s == "."));
            }
        }
    }

    /// Wrapped in a list page, any row is observed or skipped, never fails the page.
    #[test]
    fn any_row_in_a_list_page_is_observed_or_skipped(rows in proptest::collection::vec(any_json(), 0..12)) {
        let n = rows.len();
        let page = decode_vod_page(json!({"content": rows.clone(), "total": n})).unwrap();
        prop_assert_eq!(page.rows, n);
        let page = decode_asset_page(json!({"code": "0", "result": {"content": rows, "totalCount": n}})).unwrap();
        prop_assert_eq!(page.rows, n);
    }

    /// Any bytes with any status classify without panicking; a non-2xx is never a success.
    #[test]
    fn any_answer_classifies(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..400), retry in proptest::option::of(0u64..100_000)) {
        let status = StatusCode::from_u16(status).unwrap();
        let result = classify(status, retry.map(Duration::from_secs), &body);
        if !status.is_success() {
            prop_assert!(result.is_err());
        }
    }

    /// `Retry-After` of any text parses without panicking and never past the cap.
    #[test]
    fn retry_after_is_bounded_for_any_text(text in "\\PC{0,40}|[0-9]{1,40}") {
        if let Some(d) = parse_retry_after(&text) {
            prop_assert!(d <= MAX_RETRY_AFTER);
        }
    }

    /// NCP's signature v2 is HMAC-SHA256 over `METHOD URI\ntimestamp\naccessKey`, Base64:
    /// the client's signer agrees with one written here from SPEC §1, for any input.
    #[test]
    fn the_ncp_signer_agrees_with_the_spec_for_any_request(
        method in "GET|POST|PUT|DELETE",
        uri in "/[!-~]{0,60}",
        timestamp in any::<u64>(),
        access in "[!-~]{0,30}",
        secret in "\\PC{1,40}",
    ) {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{method} {uri}\n{timestamp}\n{access}").as_bytes());
        let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        prop_assert_eq!(ncp_watchd::ncp::signer::sign(&method, &uri, timestamp, &access, &secret), expected);
    }

    /// Standard Webhooks: `v1,` + Base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), the
    /// key being the Base64 after `whsec_`; the sink's signer agrees for any input.
    #[test]
    fn the_webhook_signer_agrees_with_the_spec_for_any_delivery(
        key in proptest::collection::vec(any::<u8>(), 1..64),
        id in "[!-~]{1,40}",
        timestamp in any::<i64>(),
        body in proptest::collection::vec(any::<u8>(), 0..500),
    ) {
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key));
        let decoded = ncp_watchd::sink::encode::signing_key(&secret).unwrap();
        prop_assert_eq!(&decoded, &key);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(&body);
        let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
        prop_assert_eq!(ncp_watchd::sink::encode::signature(&decoded, &id, timestamp, &body), expected);
    }
}
