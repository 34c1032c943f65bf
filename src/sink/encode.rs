//! The only code that knows webhook encodings: CloudEvents structured bodies, Standard
//! Webhooks signatures, and the Slack-style one-line summary.

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::Value;
use sha2::Sha256;

use crate::event::CloudEvent;

/// `Content-Type` of a structured CloudEvent.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// The signing key of a `whsec_<base64>` secret, or `None` when it is not of that form.
pub fn signing_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.trim().strip_prefix("whsec_")?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|k| !k.is_empty())
}

/// The `webhook-signature` value: `v1,` + Base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// `{"text": ...}` for Slack, Mattermost and compatible incoming webhooks.
pub fn slack_body(event: &CloudEvent) -> String {
    serde_json::json!({ "text": slack_text(event) }).to_string()
}

/// How much work one render may do (MiniJinja's fuel: about one unit per instruction): far
/// more than any body needs, and a bound on a template that loops for ever.
const TEMPLATE_FUEL: u64 = 100_000;
/// The largest body a template may produce.
const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// A sandbox for one render: MiniJinja reaches nothing outside the values it is given (no
/// file system, no environment, no includes), and fuel bounds the work.
fn template_env() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(32);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env
}

/// The body `template` makes of `event`. The event is the template's context: `type`,
/// `subject`, `id`, `time`, `source`, `data` (with `data.current`, `data.previous`,
/// `data.detail`, …), and `summary`, the one-line chat summary. JSON-escape strings with
/// the `tojson` filter.
pub fn render_template(template: &str, event: &CloudEvent) -> Result<String, String> {
    let mut ctx = serde_json::to_value(event).map_err(|e| e.to_string())?;
    if let Value::Object(m) = &mut ctx {
        m.insert("summary".into(), Value::String(slack_text(event)));
    }
    let body = template_env()
        .render_str(template, minijinja::value::Serde(&ctx))
        .map_err(|e| format!("the template failed: {e}"))?;
    if body.len() > MAX_RENDERED_BYTES {
        return Err(format!(
            "the template produced {} bytes, over {MAX_RENDERED_BYTES}",
            body.len()
        ));
    }
    Ok(body)
}

/// Checks a template for `check`: it must parse, and render a sample event (every field
/// set) to valid JSON.
pub fn check_template(template: &str) -> Result<(), String> {
    let sample: CloudEvent = serde_json::from_value(serde_json::json!({
        "specversion": "1.0", "id": "0193a5e2-7c4b-7d2e-9f1a-3b2c1d0e9f8a", "source": "ncp-watchd/check",
        "type": "video_asset.import.completed", "subject": "workspaces/ws/projects/1/video-assets/2",
        "time": "2026-11-22T10:00:00.123Z", "datacontenttype": "application/json",
        "data": {"watch": "sample", "resource": {"kind": "video_asset", "workspace": "ws", "project_id": "1", "asset_id": "2"},
                 "previous": "IN_PROGRESS", "current": "COMPLETED", "terminal": true,
                 "detail": {"uploadResult": "Video copy completed"}, "percent": 100.0, "error": "none", "hint": "callback"}
    }))
    .map_err(|e| e.to_string())?;
    let body = render_template(template, &sample)?;
    serde_json::from_str::<Value>(&body).map_err(|e| {
        format!("the template's output for a sample event is not JSON ({e}); escape strings with `| tojson`")
    })?;
    Ok(())
}

/// The body a chat service's incoming webhook takes, carrying the one-line summary. Each
/// service reads its own shape: Slack and Google Chat `text`, Discord `content` (with
/// mentions switched off, so an asset named `@everyone` pings nobody), Teams Workflows an
/// Adaptive Card in a `message` attachment.
pub fn chat_body(format: crate::config::WebhookFormat, event: &CloudEvent) -> String {
    use crate::config::WebhookFormat;
    let text = slack_text(event);
    match format {
        WebhookFormat::Discord => serde_json::json!({
            "content": discord_text(&text),
            "allowed_mentions": { "parse": [] },
        }),
        WebhookFormat::Teams => serde_json::json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        { "type": "TextBlock", "text": event.event_type, "weight": "Bolder", "wrap": true },
                        { "type": "TextBlock", "text": plain(&text), "wrap": true },
                        { "type": "FactSet", "facts": [
                            { "title": "Subject", "value": event.subject },
                            { "title": "Status", "value": event.data.current },
                            { "title": "Time", "value": event.time },
                        ]},
                    ],
                },
            }],
        }),
        WebhookFormat::GoogleChat | WebhookFormat::Slack | WebhookFormat::CloudEvents => {
            serde_json::json!({ "text": text })
        }
    }
    .to_string()
}

/// Discord caps `content` at 2,000 characters.
fn discord_text(text: &str) -> String {
    const MAX: usize = 2000;
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX - 1).collect();
    cut.push('…');
    cut
}

/// The summary without Slack's `:emoji:` shortcodes, which Teams shows verbatim.
fn plain(text: &str) -> String {
    let mut out = text.to_string();
    for code in [
        ":rotating_light:",
        ":white_check_mark:",
        ":zzz:",
        ":new:",
        ":hourglass_flowing_sand:",
        ":x:",
        ":arrows_counterclockwise:",
    ] {
        out = out.replace(code, "");
    }
    out.trim().to_string()
}

/// A one-line human summary: what happened, to what, and the facts NCP gave.
pub fn slack_text(e: &CloudEvent) -> String {
    let d = &e.data;
    let icon = match e.event_type.as_str() {
        "watch.failing" | "account.failing" => ":rotating_light:",
        "watch.recovered" | "account.recovered" => ":white_check_mark:",
        "watch.stalled" => ":zzz:",
        "project.asset.discovered" => ":new:",
        "vod.encode.progress" => ":hourglass_flowing_sand:",
        _ if d.terminal && is_success(&d.current) => ":white_check_mark:",
        _ if d.terminal => ":x:",
        _ => ":arrows_counterclockwise:",
    };
    let name = d.watch.as_deref().map(|w| format!(" {w}")).unwrap_or_default();
    let change = match (&d.previous, e.event_type.as_str()) {
        (_, "project.asset.discovered") => "discovered".to_string(),
        (_, "watch.failing" | "account.failing") => "failing".to_string(),
        (_, "watch.recovered" | "account.recovered") => "recovered".to_string(),
        (_, "watch.stalled") => format!("stalled at {}", d.current),
        (Some(p), _) if p != &d.current => format!("{p} → {}", d.current),
        _ => d.current.clone(),
    };
    let mut facts: Vec<String> = Vec::new();
    let detail = &d.detail;
    let meta = detail.get("metaData").unwrap_or(&Value::Null);
    if let Some(r) = meta.get("resolution").and_then(Value::as_str) {
        facts.push(r.to_string());
    }
    if let Some(ms) = number(meta.get("durationMs")) {
        facts
            .push(humantime::format_duration(std::time::Duration::from_secs((ms / 1000.0).round() as u64)).to_string());
    }
    if let Some(bytes) = number(meta.get("size")).or_else(|| number(detail.get("outputTotalSize")).filter(|b| *b > 0.0))
    {
        facts.push(size(bytes));
    }
    if let Some(p) = d
        .percent
        .filter(|_| !d.terminal || e.event_type == "vod.encode.progress")
    {
        facts.push(format!("{p:.0}%"));
    }
    for key in ["uploadMessage", "uploadResult"] {
        if let Some(m) = detail
            .get(key)
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty() && d.current != "COMPLETED")
        {
            facts.push(m.to_string());
            break;
        }
    }
    if let Some(err) = &d.error {
        facts.push(err.clone());
    }
    if let Some(link) = detail.get("link").and_then(Value::as_str) {
        facts.push(format!("<{link}|output>"));
    }
    let facts = if facts.is_empty() {
        String::new()
    } else {
        format!(" · {}", facts.join(" · "))
    };
    format!("{icon} *{}*{name}: {change} — `{}`{facts}", e.event_type, e.subject)
}

fn is_success(status: &str) -> bool {
    matches!(status, "COMPLETED" | "COMPLETE" | "ANALYZE_COMPLETED" | "LISTED")
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn size(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_spec_vector_signs_as_published() {
        let key = signing_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            signature(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn secrets_without_the_prefix_or_base64_have_no_key() {
        assert!(signing_key("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_none());
        assert!(signing_key("whsec_%%%").is_none());
        assert!(signing_key("whsec_").is_none());
    }

    fn event(event_type: &str, previous: Option<&str>, current: &str, terminal: bool, detail: Value) -> CloudEvent {
        serde_json::from_value(serde_json::json!({
            "specversion": "1.0", "id": "0193a5e2-7c4b-7d2e-9f1a-3b2c1d0e9f8a", "source": "ncp-watchd/t",
            "type": event_type, "subject": "workspaces/ws/projects/1/video-assets/2", "time": "2026-11-22T10:00:00.123Z",
            "datacontenttype": "application/json",
            "data": {"watch": "launch", "resource": {"kind": "video_asset"}, "previous": previous, "current": current,
                     "terminal": terminal, "detail": detail}
        }))
        .unwrap()
    }

    #[test]
    fn a_template_renders_the_event_in_a_sandbox_with_bounded_work() {
        let e = event(
            "video_asset.import.completed",
            Some("IN_PROGRESS"),
            "COMPLETED",
            true,
            serde_json::json!({"uploadResult": "ok"}),
        );
        let body = render_template(
            r#"{"kind": {{ type | tojson }}, "what": {{ subject | tojson }}, "now": {{ data.current | tojson }}, "was": {{ data.previous | tojson }}, "note": {{ summary | tojson }}}"#,
            &e,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "video_asset.import.completed");
        assert_eq!(v["now"], "COMPLETED");
        assert_eq!(v["was"], "IN_PROGRESS");
        assert!(v["note"].as_str().unwrap().contains("IN_PROGRESS → COMPLETED"));
        // Endless work runs out of fuel; nothing outside the event is reachable.
        let spin = "{% for a in range(1000) %}{% for b in range(1000) %}{{ b }}{% endfor %}{% endfor %}";
        assert!(
            render_template(spin, &e).unwrap_err().contains("fuel"),
            "a runaway loop stops"
        );
        assert!(render_template(r#"{% include "/etc/passwd" %}"#, &e).is_err());
        assert!(
            render_template("{{ nope.deeper }}", &e).is_err(),
            "undefined names are errors, not empty"
        );
        assert!(check_template("{{ subject }}").unwrap_err().contains("not JSON"));
        assert!(check_template("{% if %}").is_err());
        assert!(check_template(r#"{"s": {{ subject | tojson }}}"#).is_ok());
    }

    #[test]
    fn every_chat_format_carries_every_kind_of_event_in_its_services_shape() {
        use crate::config::WebhookFormat;
        for event_type in crate::event::KNOWN_EVENT_TYPES {
            let mut e = event(
                event_type,
                Some("IN_PROGRESS"),
                "COMPLETED",
                true,
                serde_json::json!({}),
            );
            e.data.watch = Some("@everyone <b>launch</b>".into());
            let summary = slack_text(&e);
            for format in [
                WebhookFormat::Slack,
                WebhookFormat::GoogleChat,
                WebhookFormat::Discord,
                WebhookFormat::Teams,
            ] {
                let body: Value = serde_json::from_str(&chat_body(format, &e)).unwrap();
                match format {
                    WebhookFormat::Slack | WebhookFormat::GoogleChat => {
                        assert_eq!(body, serde_json::json!({ "text": summary }), "{event_type}");
                    }
                    WebhookFormat::Discord => {
                        assert_eq!(body["content"], summary.as_str(), "{event_type}");
                        assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]), "no pings");
                    }
                    WebhookFormat::Teams => {
                        assert_eq!(body["type"], "message");
                        let card = &body["attachments"][0];
                        assert_eq!(card["contentType"], "application/vnd.microsoft.card.adaptive");
                        assert_eq!(card["content"]["type"], "AdaptiveCard");
                        let blocks = card["content"]["body"].as_array().unwrap();
                        assert_eq!(blocks[0]["text"], *event_type);
                        assert!(!blocks[1]["text"].as_str().unwrap().contains(":white_check_mark:"));
                        assert_eq!(blocks[2]["facts"][0]["value"], e.subject.as_str());
                    }
                    WebhookFormat::CloudEvents => unreachable!(),
                }
            }
            assert!(
                summary.contains(&e.subject) || summary.contains("launch"),
                "{event_type}: {summary}"
            );
        }
        let mut long = event("vod.encode.complete", None, "COMPLETE", true, serde_json::json!({}));
        long.subject = "x".repeat(5000);
        let body: Value = serde_json::from_str(&chat_body(WebhookFormat::Discord, &long)).unwrap();
        assert!(body["content"].as_str().unwrap().chars().count() <= 2000);
    }

    #[test]
    fn slack_lines_for_each_kind_of_event_say_what_a_person_needs() {
        let meta = serde_json::json!({"uploadResult": "Video copy completed",
            "metaData": {"resolution": "1920x1080", "durationMs": 253702, "size": 120333399, "format": "mp4"}});
        let cases: Vec<(CloudEvent, &[&str])> = vec![
            (
                event(
                    "video_asset.import.completed",
                    Some("IN_PROGRESS"),
                    "COMPLETED",
                    true,
                    meta,
                ),
                &[
                    ":white_check_mark:",
                    "*video_asset.import.completed* launch",
                    "IN_PROGRESS → COMPLETED",
                    "1920x1080",
                    "4m 14s",
                    "114.8 MiB",
                ],
            ),
            (
                event(
                    "video_asset.import.invalid_metadata",
                    Some("IN_PROGRESS"),
                    "INVALID_METADATA",
                    true,
                    serde_json::json!({"uploadResult": "Unsupported resolution"}),
                ),
                &[":x:", "IN_PROGRESS → INVALID_METADATA", "Unsupported resolution"],
            ),
            (
                event(
                    "search_image.upload.failed",
                    None,
                    "FAILED",
                    true,
                    serde_json::json!({"uploadMessage": "OVER_SIZE_LIMIT"}),
                ),
                &[":x:", ": FAILED", "OVER_SIZE_LIMIT"],
            ),
            (
                event("project.asset.discovered", None, "LISTED", true, serde_json::json!({})),
                &[":new:", "discovered"],
            ),
            (
                event(
                    "video_asset.analysis.analyzing",
                    Some("WAIT_ANALYZE"),
                    "ANALYZING",
                    false,
                    serde_json::json!({}),
                ),
                &[":arrows_counterclockwise:", "WAIT_ANALYZE → ANALYZING"],
            ),
            (
                event(
                    "vod.encode.complete",
                    Some("RUNNING"),
                    "COMPLETE",
                    true,
                    serde_json::json!({"link": "https://x/out.mp4", "outputTotalSize": 81040256}),
                ),
                &[
                    ":white_check_mark:",
                    "RUNNING → COMPLETE",
                    "77.3 MiB",
                    "<https://x/out.mp4|output>",
                ],
            ),
        ];
        for (e, needles) in cases {
            let text = slack_text(&e);
            for n in needles {
                assert!(text.contains(n), "{text} lacks {n}");
            }
            assert!(!text.contains('\n'), "one line: {text}");
        }
        let mut progress = event(
            "vod.encode.progress",
            Some("RUNNING"),
            "RUNNING",
            false,
            serde_json::json!({}),
        );
        progress.data.percent = Some(55.0);
        assert!(slack_text(&progress).contains(":hourglass_flowing_sand:") && slack_text(&progress).contains("55%"));
        let mut failing = event("watch.failing", None, "UNKNOWN", false, serde_json::json!({}));
        failing.data.error = Some("server error (HTTP 503)".into());
        let text = slack_text(&failing);
        assert!(
            text.contains(":rotating_light:") && text.contains("failing") && text.contains("HTTP 503"),
            "{text}"
        );
        let body: Value = serde_json::from_str(&slack_body(&failing)).unwrap();
        assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["text"]);
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(size(512.0), "512 B");
        assert_eq!(size(120333399.0), "114.8 MiB");
    }
}
