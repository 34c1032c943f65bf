//! Lenient decoders for what the documents say one way and show another.
//!
//! The documents type VOD `percent` and `outputTotalSize` as strings but show numbers,
//! `link` as a boolean but show a URL, `lastWorkTime` as an object but show a string, ids
//! as integers that callers treat as strings, and timestamps with and without a zone.
//! Each decoder here accepts every form seen, so a document's inconsistency never turns
//! into a failed poll.

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Parses JSON, forgiving trailing commas before `]` or `}` (the VOD document's own
/// response example has one) but nothing else.
pub fn parse_json(body: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(body).or_else(|strict| {
        let relaxed = without_trailing_commas(body);
        if relaxed.len() == body.len() {
            Err(strict)
        } else {
            serde_json::from_slice(&relaxed).map_err(|_| strict)
        }
    })
}

/// `body` without commas that are followed only by whitespace and a closing bracket,
/// leaving string contents alone.
fn without_trailing_commas(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b',' {
            let next = body[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
            if matches!(next, Some(b']' | b'}')) {
                continue;
            }
        }
        out.push(b);
    }
    out
}

/// An id sent as a number or a string, kept as its text.
pub fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected an id, found {}",
            kind(&other)
        ))),
    }
}

/// A required string that is sometimes sent as a number.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string, found {}",
            kind(&other)
        ))),
    }
}

/// An optional id sent as a number or a string.
pub fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "expected an id, found {}",
            kind(&other)
        ))),
    }
}

/// A count sent as a number or a numeric string; anything else reads as unknown.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(number(&Value::deserialize(d)?).filter(|n| *n >= 0.0).map(|n| n as u64))
}

/// A ratio sent as a number or a numeric string (`"45"`, `"45.5"`, `"45%"`).
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(number(&Value::deserialize(d)?))
}

/// A free-form optional string that is sometimes sent as a number.
pub fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_end_matches('%').trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// VOD `link`: documented as a boolean, shown as the output's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The download URL.
    Url(String),
    /// Whether a link exists, when only that is given.
    Available(bool),
}

/// Decodes [`Link`] from a string or a boolean; anything else is absent.
pub fn opt_link<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Link>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() => Some(Link::Url(s)),
        Value::Bool(b) => Some(Link::Available(b)),
        _ => None,
    })
}

/// A timestamp as the APIs send it.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiTime {
    /// With a zone: `2021-09-14T15:49:12+0900` or RFC 3339.
    Zoned(DateTime<FixedOffset>),
    /// Without a zone, as Media Intelligence sends it: `2025-04-23T16:49:23.885456721`.
    /// The zone is not documented, so none is assumed.
    Local(NaiveDateTime),
    /// Epoch milliseconds.
    EpochMillis(i64),
    /// Anything else (the VOD document types `lastWorkTime` as an object), kept verbatim.
    Other(Value),
}

impl ApiTime {
    /// Reads any form; never fails.
    pub fn from_value(v: Value) -> Self {
        match &v {
            Value::String(s) => {
                let s = s.trim();
                if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                    return Self::Zoned(t);
                }
                for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
                    if let Ok(t) = DateTime::parse_from_str(s, format) {
                        return Self::Zoned(t);
                    }
                }
                for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
                    if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
                        return Self::Local(t);
                    }
                }
                Self::Other(v)
            }
            Value::Number(n) => n.as_i64().map_or(Self::Other(v.clone()), Self::EpochMillis),
            _ => Self::Other(v),
        }
    }
}

impl ApiTime {
    /// Epoch milliseconds, when the form says; a zone-less time is read as UTC, which
    /// keeps times of one API comparable with each other (the only use made of them).
    pub fn epoch_ms(&self) -> Option<i64> {
        match self {
            Self::Zoned(t) => Some(t.timestamp_millis()),
            Self::Local(t) => Some(t.and_utc().timestamp_millis()),
            Self::EpochMillis(ms) => Some(*ms),
            Self::Other(_) => None,
        }
    }
}

/// The rows of a list page: `null` or a missing key is an empty page (NCP answers an
/// empty page with `"content": null`); anything but an array is a shape error.
pub fn rows<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(rows) => Ok(rows),
        other => Err(serde::de::Error::custom(format!(
            "expected a list of rows, found {}",
            kind(&other)
        ))),
    }
}

/// Decodes an optional [`ApiTime`].
pub fn opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ApiTime>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => None,
        v => Some(ApiTime::from_value(v)),
    })
}

/// The gateway's error body: `{"error":{"errorCode":"200","message":"...","details":"..."}}`.
/// `errorCode` is a string on the wire but the VOD document types it as an integer (and
/// names it `code`), so both are read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayError {
    /// The errorCode as text, or empty.
    pub code: String,
    /// The message, or empty.
    pub message: String,
}

impl GatewayError {
    /// Reads a gateway error, or a Media Intelligence `{"code","message"}` body, from `body`.
    pub fn parse(body: &Value) -> Option<Self> {
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        if let Some(e) = body.get("error").filter(|e| e.is_object()) {
            let code = text(e.get("errorCode").or_else(|| e.get("code")));
            let mut message = text(e.get("message"));
            let details = text(e.get("details"));
            if !details.is_empty() {
                message = format!("{message} ({details})");
            }
            return Some(Self { code, message });
        }
        // Media Intelligence's own refusals: `{"responseError":{"code","message"}}`, on its
        // own or beside an envelope.
        if let Some(e) = body.get("responseError").filter(|e| e.is_object()) {
            return Some(Self {
                code: text(e.get("code").or_else(|| e.get("errorCode"))),
                message: text(e.get("message")),
            });
        }
        if body.get("code").is_some() {
            return Some(Self {
                code: text(body.get("code")),
                message: text(body.get("message")),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "opt_u64")]
        size: Option<u64>,
        #[serde(default, deserialize_with = "opt_f64")]
        percent: Option<f64>,
        #[serde(default, deserialize_with = "opt_link")]
        link: Option<Link>,
        #[serde(default, deserialize_with = "opt_time")]
        time: Option<ApiTime>,
        #[serde(default, deserialize_with = "opt_id")]
        id: Option<String>,
    }

    fn probe(v: Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn numbers_arrive_as_numbers_or_strings() {
        assert_eq!(probe(json!({"size": 81040256})).size, Some(81040256));
        assert_eq!(probe(json!({"size": "81040256"})).size, Some(81040256));
        assert_eq!(probe(json!({"size": "n/a"})).size, None);
        assert_eq!(probe(json!({"percent": 100})).percent, Some(100.0));
        assert_eq!(probe(json!({"percent": "45.5"})).percent, Some(45.5));
        assert_eq!(probe(json!({"percent": "45%"})).percent, Some(45.0));
        assert_eq!(probe(json!({"id": 10019})).id.as_deref(), Some("10019"));
        assert_eq!(probe(json!({"id": "10019"})).id.as_deref(), Some("10019"));
        assert_eq!(probe(json!({})).id, None);
    }

    #[test]
    fn link_is_a_url_or_a_boolean() {
        assert_eq!(
            probe(json!({"link": "https://x/y.mp4"})).link,
            Some(Link::Url("https://x/y.mp4".into()))
        );
        assert_eq!(probe(json!({"link": true})).link, Some(Link::Available(true)));
        assert_eq!(probe(json!({"link": null})).link, None);
    }

    #[test]
    fn timestamps_with_and_without_zones() {
        let t = probe(json!({"time": "2021-09-14T15:49:12+0900"})).time.unwrap();
        let ApiTime::Zoned(z) = t else { panic!("{t:?}") };
        assert_eq!(z.to_rfc3339(), "2021-09-14T15:49:12+09:00");
        assert!(matches!(
            probe(json!({"time": "2025-04-23T16:49:23.885456721"})).time,
            Some(ApiTime::Local(_))
        ));
        assert!(matches!(
            probe(json!({"time": "2025-04-23T16:49:24"})).time,
            Some(ApiTime::Local(_))
        ));
        assert!(matches!(
            probe(json!({"time": "2026-11-22T10:00:00Z"})).time,
            Some(ApiTime::Zoned(_))
        ));
        assert!(matches!(
            probe(json!({"time": 1631404800000i64})).time,
            Some(ApiTime::EpochMillis(_))
        ));
        assert!(matches!(
            probe(json!({"time": {"epochSecond": 1}})).time,
            Some(ApiTime::Other(_))
        ));
    }

    #[test]
    fn trailing_commas_are_forgiven_outside_strings_only() {
        assert_eq!(parse_json(b"{\"a\": [1, 2,\n ],}").unwrap(), json!({"a": [1, 2]}));
        assert_eq!(parse_json(b"{\"a\": \",]\"}").unwrap(), json!({"a": ",]"}));
        assert!(parse_json(b"{\"a\": 1,, }").is_err());
        assert!(parse_json(b"{\"a\": ").is_err());
    }

    #[test]
    fn gateway_errors_of_each_shape() {
        let e = GatewayError::parse(&json!({"error": {"errorCode": "200", "message": "Authentication Failed", "details": "Invalid authentication information."}})).unwrap();
        assert_eq!(e.code, "200");
        assert_eq!(e.message, "Authentication Failed (Invalid authentication information.)");
        let e = GatewayError::parse(&json!({"error": {"code": 410, "message": "Throttled"}})).unwrap();
        assert_eq!(e.code, "410");
        let e = GatewayError::parse(&json!({"code": "4001", "message": "asset not found"})).unwrap();
        assert_eq!(e.code, "4001");
        assert_eq!(GatewayError::parse(&json!({"content": []})), None);
    }
}
