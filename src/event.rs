//! The CloudEvents 1.0 contract (SPEC §4): the one serialized type that sinks receive.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::watch::{Change, Resource};

/// Every documented event type; a status the API adds later forms a new type in its
/// family (such as `vod.encode.paused`).
pub const KNOWN_EVENT_TYPES: &[&str] = &[
    "video_asset.import.in_progress",
    "video_asset.import.completed",
    "video_asset.import.failed",
    "video_asset.import.file_not_exist",
    "video_asset.import.invalid_metadata",
    "video_asset.analysis.before_analyze",
    "video_asset.analysis.wait_analyze",
    "video_asset.analysis.analyzing",
    "video_asset.analysis.analyze_completed",
    "video_asset.analysis.analyze_fail",
    "video_asset.analysis.analyze_cancel",
    "search_image.upload.completed",
    "search_image.upload.failed",
    "project.asset.discovered",
    "vod.encode.waiting",
    "vod.encode.running",
    "vod.encode.complete",
    "vod.encode.failure",
    "vod.encode.canceled",
    "vod.encode.progress",
    "watch.failing",
    "watch.recovered",
    "watch.stalled",
    "account.failing",
    "account.recovered",
];

/// Whether `event_type` matches `glob`, where `*` matches any run of characters.
pub fn glob_matches(glob: &str, event_type: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == event_type;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !event_type.starts_with(first) || event_type.len() < first.len() + last.len() || !event_type.ends_with(last) {
        return false;
    }
    let mut rest = &event_type[first.len()..event_type.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The most an event's `data.detail` may carry, serialized: NCP's answers are a few
/// hundred bytes; a 15 MB answer is a fault, and must not become a 15 MB event in every
/// sink and in the store.
pub const MAX_DETAIL_BYTES: usize = 64 * 1024;

/// `detail`, or, when it serializes past [`MAX_DETAIL_BYTES`], a small stand-in saying so
/// (with its top-level keys, so a reader knows what was there).
pub fn bounded_detail(detail: &Value) -> Value {
    let size = detail.to_string().len();
    if size <= MAX_DETAIL_BYTES {
        return detail.clone();
    }
    let keys: Vec<&str> = detail
        .as_object()
        .map(|m| m.keys().take(50).map(String::as_str).collect())
        .unwrap_or_default();
    json!({"truncated": true, "bytes": size, "keys": keys})
}

/// `data.current` of `watch.failing` and `watch.recovered` about an item never seen yet.
pub const UNKNOWN_STATUS: &str = "UNKNOWN";

/// A CloudEvents 1.0 event in structured JSON form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `"1.0"`.
    pub specversion: String,
    /// A UUIDv7, unique per event and stable across delivery attempts.
    pub id: String,
    /// `ncp-watchd/{instance}`.
    pub source: String,
    /// Such as `video_asset.import.completed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The item, such as `workspaces/ws/projects/1/video-assets/2`.
    pub subject: String,
    /// When the change was observed, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// Always `"application/json"`.
    pub datacontenttype: String,
    /// The payload.
    pub data: EventData,
}

/// The `data` of every event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// The watch's `name`, when it has one.
    pub watch: Option<String>,
    /// The item, with `kind` and its identifiers.
    pub resource: Value,
    /// The status before; `null` on first sight.
    pub previous: Option<String>,
    /// The status now.
    pub current: String,
    /// Whether `current` is final.
    pub terminal: bool,
    /// The API's own fields besides identity and status.
    pub detail: Value,
    /// Encode progress in percent, for encodes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub percent: Option<f64>,
    /// Why a watch is failing (`watch.failing` and `watch.recovered` only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// `"callback"` when the change was first seen by a list read that a VOD Station
    /// callback asked for (SPEC §10); absent when a scheduled poll saw it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hint: Option<String>,
}

/// `data.hint` of a change first seen by a read a callback asked for.
pub const HINT_CALLBACK: &str = "callback";

impl CloudEvent {
    /// The event for `change`, observed at `time` by instance `instance`.
    pub fn from_change(change: &Change, instance: &str, watch: Option<&str>, time: DateTime<Utc>) -> Self {
        let o = &change.observation;
        CloudEvent {
            specversion: "1.0".to_string(),
            id: uuid::Uuid::now_v7().to_string(),
            source: format!("ncp-watchd/{instance}"),
            event_type: change.event_type(),
            subject: o.resource.subject().to_string(),
            time: time.to_rfc3339_opts(SecondsFormat::Millis, true),
            datacontenttype: "application/json".to_string(),
            data: EventData {
                watch: watch.map(str::to_string),
                resource: resource_json(&o.resource),
                previous: change.previous.clone(),
                current: o.status.clone(),
                terminal: o.terminal(),
                detail: bounded_detail(&o.detail),
                percent: o.percent,
                error: None,
                hint: None,
            },
        }
    }
}

impl CloudEvent {
    /// `watch.failing` or `watch.recovered` about the item `subject`.
    #[allow(clippy::too_many_arguments)]
    pub fn watch_health(
        event_type: &str,
        subject: &str,
        resource: Value,
        watch: Option<&str>,
        status: Option<&str>,
        error: Option<String>,
        instance: &str,
        time: DateTime<Utc>,
    ) -> Self {
        CloudEvent {
            specversion: "1.0".to_string(),
            id: uuid::Uuid::now_v7().to_string(),
            source: format!("ncp-watchd/{instance}"),
            event_type: event_type.to_string(),
            subject: subject.to_string(),
            time: time.to_rfc3339_opts(SecondsFormat::Millis, true),
            datacontenttype: "application/json".to_string(),
            data: EventData {
                watch: watch.map(str::to_string),
                resource,
                previous: status.map(str::to_string),
                current: status.unwrap_or(UNKNOWN_STATUS).to_string(),
                terminal: false,
                detail: Value::Object(Default::default()),
                percent: None,
                // Whatever an API or a receiver echoed into the error, no secret is kept.
                error: error.map(|e| crate::text::scrub(&e).into_owned()),
                hint: None,
            },
        }
    }
}

/// `data.resource`: the kind and the identifiers of the item.
pub fn resource_json(resource: &Resource) -> Value {
    match resource {
        Resource::VideoAsset {
            workspace,
            project_id,
            asset_id,
        }
        | Resource::ProjectAsset {
            workspace,
            project_id,
            asset_id,
        } => json!({
            "kind": resource.kind(),
            "workspace": workspace,
            "project_id": project_id,
            "asset_id": asset_id,
        }),
        Resource::SearchImage { asset_key } => json!({"kind": resource.kind(), "asset_key": asset_key}),
        Resource::VodEncode {
            category_id,
            category_name,
            file_path,
            output_type,
        } => json!({
            "kind": resource.kind(),
            "category_id": category_id,
            "category_name": category_name,
            "file_path": file_path,
            "output_type": output_type,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::{Aspect, ChangeKind, Observation};

    #[test]
    fn an_oversized_detail_becomes_a_small_note() {
        let big = json!({"uploadResult": "x".repeat(MAX_DETAIL_BYTES + 1), "metaData": {}});
        let d = bounded_detail(&big);
        assert_eq!(d["truncated"], true);
        assert_eq!(d["keys"], json!(["uploadResult", "metaData"]));
        assert!(d.to_string().len() < 200);
        let small = json!({"uploadResult": "ok"});
        assert_eq!(bounded_detail(&small), small);
    }

    #[test]
    fn globs_match_like_the_spec_examples() {
        assert!(glob_matches("*", "vod.encode.complete"));
        assert!(glob_matches("video_asset.import.*", "video_asset.import.completed"));
        assert!(!glob_matches("video_asset.import.*", "video_asset.analysis.analyzing"));
        assert!(glob_matches("vod.encode.complete", "vod.encode.complete"));
        assert!(!glob_matches("vod.encode.complete", "vod.encode.completed"));
        assert!(glob_matches("*.failed", "search_image.upload.failed"));
        assert!(glob_matches("video_asset.*.completed", "video_asset.import.completed"));
        assert!(!glob_matches("video_asset.*.completed", "video_asset.import.failed"));
    }

    #[test]
    fn an_event_serializes_with_the_cloudevents_attribute_names() {
        let change = Change {
            kind: ChangeKind::Status,
            previous: Some("IN_PROGRESS".into()),
            observation: Observation {
                resource: Resource::VideoAsset {
                    workspace: "my-workspace".into(),
                    project_id: "1234".into(),
                    asset_id: "5678".into(),
                },
                aspect: Aspect::Import,
                status: "COMPLETED".into(),
                percent: None,
                changed_at_ms: None,
                awaiting_file: false,
                detail: json!({"uploadResult": "Upload completed"}),
            },
        };
        let time = DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let event = CloudEvent::from_change(&change, "prod-1", Some("launch-trailer"), time);
        let v = serde_json::to_value(&event).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "video_asset.import.completed");
        assert_eq!(v["source"], "ncp-watchd/prod-1");
        assert_eq!(v["subject"], "workspaces/my-workspace/projects/1234/video-assets/5678");
        assert_eq!(v["time"], "2026-11-22T10:00:00.123Z");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"]["previous"], "IN_PROGRESS");
        assert_eq!(v["data"]["current"], "COMPLETED");
        assert_eq!(v["data"]["terminal"], true);
        assert_eq!(v["data"]["watch"], "launch-trailer");
        assert_eq!(v["data"]["resource"]["kind"], "video_asset");
        assert_eq!(v["data"]["resource"]["asset_id"], "5678");
        let id = uuid::Uuid::parse_str(v["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert!(v["data"].get("error").is_none());
    }
}
