//! Decoding: every response example of ../shared/ncp-api verbatim (copied byte for byte
//! into tests/fixtures/ncp-api), the documented inconsistencies, and gateway errors.

use ncp_watchd::ncp::ApiError;
use ncp_watchd::ncp::client::classify;
use ncp_watchd::ncp::media::{
    decode_analysis_status, decode_asset_page, decode_import_status, decode_registered_asset,
    decode_search_image_status,
};
use ncp_watchd::ncp::vod::decode_vod_page;
use ncp_watchd::ncp::wire::{ApiTime, Link};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/ncp-api/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap();
    classify(StatusCode::OK, None, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn answer(body: Value) -> Value {
    classify(StatusCode::OK, None, body.to_string().as_bytes()).unwrap()
}

#[test]
fn the_import_status_example_decodes() {
    let s = decode_import_status(fixture("media-video-asset-import-status")).unwrap();
    assert_eq!(s.video_id.as_deref(), Some("5678"));
    assert_eq!(s.upload_status, "COMPLETED");
    assert_eq!(s.upload_result.as_deref(), Some("Video copy completed"));
    let m = s.meta_data.clone().unwrap();
    assert_eq!(
        (m.resolution.as_deref(), m.duration_ms, m.size, m.format.as_deref()),
        (Some("1920x1080"), Some(253702), Some(120333399), Some("mp4"))
    );
    let o = s.observation("my-workspace", "1234", "5678");
    assert!(o.terminal());
    assert_eq!(
        o.detail,
        json!({"uploadResult": "Video copy completed", "metaData": {"resolution": "1920x1080", "durationMs": 253702, "size": 120333399, "format": "mp4"}})
    );
}

#[test]
fn the_asset_list_example_decodes_with_zone_less_times() {
    let page = decode_asset_page(fixture("media-asset-list")).unwrap();
    let assets = &page.items;
    assert_eq!(
        assets.iter().map(|a| a.asset_id.as_str()).collect::<Vec<_>>(),
        ["1001", "1002", "1003"]
    );
    assert_eq!((page.total, page.rows, page.skipped.len()), (Some(3), 3, 0));
    assert_eq!(assets[1].file_name.as_deref(), Some("sample-video-two.mp4"));
    assert_eq!(assets[1].project_id.as_deref(), Some("1234"));
    assert_eq!(assets[2].meta_data.as_ref().unwrap().size, Some(76597066));
    let Some(ApiTime::Local(t)) = &assets[0].created_time else {
        panic!("{:?}", assets[0].created_time)
    };
    assert_eq!(t.to_string(), "2025-04-23 16:49:24");
    assert_eq!(assets[0].observation("w", "1234").detail["key"], "sample-video-one.mp4");
}

#[test]
fn the_search_image_example_decodes() {
    let s = decode_search_image_status(fixture("media-query-asset-upload-complete")).unwrap();
    assert_eq!(s.asset_key.as_deref(), Some("images/.../query_image.jpg"));
    assert_eq!(s.upload_status, "COMPLETED");
    assert_eq!(s.upload_message, None);
}

#[test]
fn the_register_example_decodes() {
    let r = decode_registered_asset(fixture("media-register-asset")).unwrap();
    assert_eq!(r.asset_id, "1234");
}

#[test]
fn the_vod_example_decodes_despite_its_trailing_comma_and_mistyped_fields() {
    let page = decode_vod_page(fixture("vodstation-category-status-list")).unwrap();
    let encodes = &page.items;
    assert_eq!(page.total, Some(1));
    let e = &encodes[0];
    assert_eq!(e.category_id, "10019");
    assert_eq!(e.category_name.as_deref(), Some("test2"));
    assert_eq!(e.output_type, "auto_90fps_abr");
    assert_eq!(e.status, "COMPLETE");
    assert_eq!(e.percent, Some(100.0));
    assert_eq!(e.output_total_size, Some(81040256));
    assert!(matches!(&e.link, Some(Link::Url(u)) if u.ends_with("_30fps.mp4")));
    let Some(ApiTime::Zoned(t)) = &e.last_work_time else {
        panic!("{:?}", e.last_work_time)
    };
    assert_eq!(t.to_rfc3339(), "2021-09-14T15:49:12+09:00");
    let o = e.observation();
    assert_eq!(
        o.resource.subject().as_str(),
        "vodstation/categories/10019/files/SampleVideo_1280x720_5mb_auto_90fps_abr.mp4/outputs/auto_90fps_abr"
    );
    assert!(o.terminal());
}

#[test]
fn vod_fields_typed_as_the_table_says_decode_too() {
    let body = json!({
        "content": [{
            "categoryId": "10019", "categoryName": "test2", "filePath": "a.mp4", "outputType": 3,
            "link": false, "outputTotalSize": "81040256", "lastWorkTime": {"epochSecond": 1631602152},
            "status": "RUNNING", "percent": "45", "brandNewField": {"x": 1}
        }],
        "total": "1"
    });
    let page = decode_vod_page(answer(body)).unwrap();
    let encodes = &page.items;
    assert_eq!(page.total, Some(1));
    let e = &encodes[0];
    assert_eq!(e.output_type, "3");
    assert_eq!(e.link, Some(Link::Available(false)));
    assert_eq!(e.output_total_size, Some(81040256));
    assert_eq!(e.percent, Some(45.0));
    assert!(matches!(e.last_work_time, Some(ApiTime::Other(_))));
    assert_eq!(
        e.observation().detail["brandNewField"],
        json!({"x": 1}),
        "unknown fields are kept for the event detail"
    );
}

#[test]
fn media_variants_decode_ids_as_strings_and_unknown_statuses_as_new_states() {
    let body = json!({"code": 0, "message": "success", "result": {
        "videoId": "5678", "uploadStatus": "RETRYING_COPY", "newField": true
    }});
    let s = decode_import_status(answer(body)).unwrap();
    assert_eq!(s.video_id.as_deref(), Some("5678"));
    let o = s.observation("w", "p", "5678");
    assert!(!o.terminal(), "an unknown status is a new non-terminal state");
    assert_eq!(o.detail, json!({"newField": true}));

    let body = json!({"code": "0", "message": "success", "result": {"assetId": "77", "status": "ANALYZE_FAIL"}});
    let a = decode_analysis_status(answer(body)).unwrap();
    assert!(a.observation("w", "p", "77").terminal());

    let body = json!({"code": "0", "result": {"content": [{"assetId": "1001"}], "totalCount": "1"}});
    let page = decode_asset_page(answer(body)).unwrap();
    assert_eq!((page.items[0].asset_id.as_str(), page.total), ("1001", Some(1)));
}

#[test]
fn a_refusal_inside_a_success_envelope_is_an_error_not_an_observation() {
    let body = json!({"code": "4004", "message": "project not found", "result": null});
    let e = decode_import_status(answer(body)).unwrap_err();
    assert!(matches!(&e, ApiError::Rejected { code, .. } if code == "4004"), "{e:?}");
}

#[test]
fn bodies_missing_required_fields_are_malformed() {
    for body in [
        json!({"code": "0", "result": {"videoId": 1}}),
        json!({"code": "0"}),
        json!({"code": "0", "result": "COMPLETED"}),
    ] {
        assert!(
            matches!(
                decode_import_status(answer(body.clone())),
                Err(ApiError::Malformed { .. })
            ),
            "{body}"
        );
    }
    for body in [
        json!({"content": {"rows": []}}),
        json!([1, 2]),
        json!({"content": "none"}),
    ] {
        assert!(
            matches!(decode_vod_page(answer(body.clone())), Err(ApiError::Malformed { .. })),
            "{body}"
        );
    }
    assert!(matches!(
        classify(StatusCode::OK, None, b"<html>maintenance</html>"),
        Err(ApiError::Malformed { .. })
    ));
}

#[test]
fn a_gateway_error_body_of_each_class_is_classified() {
    let cases: &[(u16, &str, &str)] = &[
        (400, "100", "bad_request"),
        (401, "200", "auth_refused"),
        (401, "210", "auth_refused"),
        (404, "300", "not_found"),
        (429, "400", "rate_limited"),
        (429, "410", "rate_limited"),
        (429, "420", "rate_limited"),
        (503, "500", "server_error"),
        (504, "510", "server_error"),
        (500, "900", "server_error"),
    ];
    for (status, code, class) in cases {
        let body = format!(r#"{{"error":{{"errorCode":"{code}","message":"Gateway says no","details":"detail"}}}}"#);
        let e = classify(StatusCode::from_u16(*status).unwrap(), None, body.as_bytes()).unwrap_err();
        assert_eq!(e.class(), *class, "HTTP {status} errorCode {code}: {e}");
        assert!(
            e.to_string().contains("Gateway says no") || *class == "rate_limited",
            "{e}"
        );
    }
    let e = classify(
        StatusCode::UNAUTHORIZED,
        None,
        br#"{"error":{"errorCode":"210","message":"Permission Denied"}}"#,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("subscribe"),
        "a 210 says to check the subscription: {e}"
    );
}

#[test]
fn one_bad_row_is_skipped_and_the_rest_of_the_page_observed() {
    let body = json!({"content": [
        {"categoryId": 1, "filePath": "a"},
        {"categoryId": 1, "filePath": null, "outputType": "hls", "status": "RUNNING"},
        "not a row",
        {"categoryId": 1, "filePath": "../x", "outputType": "hls", "status": "RUNNING"},
        {"categoryId": 1, "filePath": "ok.mp4", "outputType": "hls", "status": "RUNNING", "percent": 5},
    ], "total": 5});
    let page = decode_vod_page(answer(body)).unwrap();
    assert_eq!(page.rows, 5);
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].file_path, "ok.mp4");
    assert_eq!(page.skipped.len(), 4);
    assert!(page.skipped[1].reason.contains("row 2"), "{:?}", page.skipped[1]);

    let body = json!({"code": "0", "result": {"content": [{"fileName": "no id"}, {"assetId": "."}, {"assetId": 0}, {"assetId": 12}], "totalCount": 4}});
    let page = decode_asset_page(answer(body)).unwrap();
    assert_eq!(
        page.items.iter().map(|a| a.asset_id.as_str()).collect::<Vec<_>>(),
        ["12"]
    );
    assert_eq!(page.skipped.len(), 3);
}

#[test]
fn a_null_list_is_an_empty_list() {
    let page = decode_vod_page(answer(json!({"content": null, "total": 0}))).unwrap();
    assert_eq!((page.rows, page.items.len()), (0, 0));
    let page = decode_asset_page(answer(
        json!({"code": "0", "result": {"content": null, "totalCount": 0}}),
    ))
    .unwrap();
    assert_eq!((page.rows, page.items.len()), (0, 0));
}

#[test]
fn media_intelligence_error_bodies_of_each_shape_reach_the_error() {
    for body in [
        r#"{"code":"4001","message":"asset is gone"}"#,
        r#"{"responseError":{"code":"4001","message":"asset is gone"}}"#,
    ] {
        let e = classify(StatusCode::from_u16(404).unwrap(), None, body.as_bytes()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("4001") && text.contains("asset is gone"),
            "{body}: {text}"
        );
        let e = classify(StatusCode::from_u16(400).unwrap(), None, body.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("asset is gone"), "{body}: {e}");
    }
}

#[test]
fn the_newest_job_of_an_output_is_followed() {
    let row = |time: &str, status: &str| json!({"categoryId": 1, "filePath": "a.mp4", "outputType": "hls", "status": status, "lastWorkTime": time});
    for rows in [
        vec![
            row("2026-12-01T10:00:00+0900", "FAILURE"),
            row("2026-12-01T10:05:00+0900", "RUNNING"),
        ],
        vec![
            row("2026-12-01T10:05:00+0900", "RUNNING"),
            row("2026-12-01T10:00:00+0900", "FAILURE"),
        ],
    ] {
        let page = decode_vod_page(answer(json!({"content": rows}))).unwrap();
        let newest = ncp_watchd::ncp::vod::newest_jobs(page.items);
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].status, "RUNNING");
    }
    // Equal times (whole seconds: a retry started in the second the first job failed):
    // the unfinished row is the newer job, in a list oldest first or newest first.
    for rows in [
        vec![
            row("2026-12-01T10:00:00+0900", "FAILURE"),
            row("2026-12-01T10:00:00+0900", "WAITING"),
        ],
        vec![
            row("2026-12-01T10:00:00+0900", "WAITING"),
            row("2026-12-01T10:00:00+0900", "FAILURE"),
        ],
    ] {
        let page = decode_vod_page(answer(json!({"content": rows}))).unwrap();
        assert_eq!(ncp_watchd::ncp::vod::newest_jobs(page.items)[0].status, "WAITING");
    }
    // Rows alike at equal times: the later row in the list.
    let rows = vec![
        row("2026-12-01T10:00:00+0900", "RUNNING"),
        row("2026-12-01T10:00:00+0900", "WAITING"),
    ];
    let page = decode_vod_page(answer(json!({"content": rows}))).unwrap();
    assert_eq!(ncp_watchd::ncp::vod::newest_jobs(page.items)[0].status, "WAITING");
}

#[test]
fn an_import_status_about_another_asset_is_malformed_not_an_observation() {
    use ncp_watchd::ncp::media::decode_import_status_of;
    let body =
        |id: Value| json!({"code": "0", "message": "success", "result": {"videoId": id, "uploadStatus": "COMPLETED"}});
    assert!(decode_import_status_of(answer(body(json!(5678))), "5678").is_ok());
    assert!(decode_import_status_of(answer(body(json!("5678"))), "5678").is_ok());
    let e = decode_import_status_of(answer(body(json!(9999))), "5678").unwrap_err();
    assert!(matches!(&e, ApiError::Malformed { .. }), "{e:?}");
    assert!(e.to_string().contains("asset 9999 but asset 5678 was asked for"), "{e}");
    // The newer path leaves videoId out: nothing to compare, the answer stands.
    let body = json!({"code": "0", "result": {"uploadStatus": "IN_PROGRESS"}});
    assert!(decode_import_status_of(answer(body), "5678").is_ok());
}
