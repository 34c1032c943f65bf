//! VOD Station's encoding status list (`{"content":[...],"total":N}`).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::client::{Host, ListPage, NcpClient, collect_pages, decode, path};
use super::error::ApiError;
use super::wire;
use crate::watch::{Aspect, Observation, Resource};

/// VOD Station rejects pages smaller than this.
pub const MIN_PAGE_SIZE: u32 = 10;
/// The page size the daemon asks for: few calls, modest bodies.
pub const PAGE_SIZE: u32 = 100;

/// One output of one encode.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VodEncode {
    /// Category id (a number on the wire, a string in the table).
    #[serde(deserialize_with = "wire::id")]
    pub category_id: String,
    /// Category name.
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub category_name: Option<String>,
    /// Input file.
    pub file_path: String,
    /// Output type (a name on the wire, an integer in the table).
    #[serde(deserialize_with = "wire::id")]
    pub output_type: String,
    /// Download URL, or whether there is one.
    #[serde(default, deserialize_with = "wire::opt_link")]
    pub link: Option<wire::Link>,
    /// Output size in bytes.
    #[serde(default, deserialize_with = "wire::opt_u64")]
    pub output_total_size: Option<u64>,
    /// Last work time.
    #[serde(default, deserialize_with = "wire::opt_time")]
    pub last_work_time: Option<wire::ApiTime>,
    /// `WAITING RUNNING COMPLETE FAILURE CANCELED`, or a newer value.
    pub status: String,
    /// Progress in percent.
    #[serde(default, deserialize_with = "wire::opt_f64")]
    pub percent: Option<f64>,
    /// The whole entry.
    #[serde(skip)]
    pub raw: Map<String, Value>,
}

/// One page of the status list as the wire has it, rows undecoded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VodPage {
    /// Entries (`null` is an empty page).
    #[serde(default, deserialize_with = "wire::rows")]
    pub content: Vec<Value>,
    /// Total encodes (a number or a string; not to be trusted for paging).
    #[serde(default, deserialize_with = "wire::opt_u64")]
    pub total: Option<u64>,
}

impl VodEncode {
    /// The observation of this encode output.
    pub fn observation(&self) -> Observation {
        let keep = |k: &str| !["categoryId", "categoryName", "filePath", "outputType", "status"].contains(&k);
        Observation {
            resource: Resource::VodEncode {
                category_id: self.category_id.clone(),
                category_name: self.category_name.clone(),
                file_path: self.file_path.clone(),
                output_type: self.output_type.clone(),
            },
            aspect: Aspect::Encode,
            status: self.status.clone(),
            percent: self.percent,
            changed_at_ms: self.last_work_time.as_ref().and_then(wire::ApiTime::epoch_ms),
            awaiting_file: false,
            detail: Value::Object(
                self.raw
                    .iter()
                    .filter(|(k, _)| keep(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }
    }

    /// Why this row cannot be an item, if it cannot: its identity must be usable in a
    /// subject (no empty, `.` or `..` part, no control character).
    fn unusable(&self) -> Option<&'static str> {
        let bad = |s: &str| s.is_empty() || s.chars().any(char::is_control);
        if bad(&self.category_id) || self.category_id.contains('/') {
            Some("`categoryId` is empty or not an id")
        } else if bad(&self.output_type) || self.output_type.contains('/') {
            Some("`outputType` is empty or not a name")
        } else if bad(&self.file_path) || self.file_path.split('/').any(|seg| seg == "." || seg == "..") {
            Some("`filePath` is empty or has a `.` or `..` segment")
        } else {
            None
        }
    }

    /// The identity of an encode output: (category id, file path, output type).
    pub fn key(&self) -> String {
        format!("{}\u{0}{}\u{0}{}", self.category_id, self.file_path, self.output_type)
    }
}

/// Decodes one page of the status list. A row that does not decode (a null `filePath`,
/// an unknown shape) is skipped and reported, and the other rows are kept: only a body
/// that does not decode as a whole is an error.
pub fn decode_vod_page(body: Value) -> Result<ListPage<VodEncode>, ApiError> {
    let page: VodPage = decode(200, body)?;
    Ok(ListPage::from_rows(page.content, page.total, |map| {
        let mut e: VodEncode = serde_json::from_value(Value::Object(map.clone())).map_err(|e| e.to_string())?;
        if let Some(why) = e.unusable() {
            return Err(why.to_string());
        }
        e.raw = map;
        Ok(e)
    }))
}

/// The newest job of each encode output, in list order of first appearance.
///
/// The status list has no job id: a retry after FAILURE or a re-upload under the same
/// name lists a second row for the same (category, file, output type). The newest job is
/// the one with the latest `lastWorkTime`. Times are whole seconds, so a retry started in
/// the second its predecessor failed ties with it: then an unfinished row wins over a
/// finished one (a finished job never runs again, so the unfinished row is the newer job,
/// whichever order the list is in), and among rows alike, the later row in the list.
pub fn newest_jobs(encodes: Vec<VodEncode>) -> Vec<VodEncode> {
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out: Vec<VodEncode> = Vec::with_capacity(encodes.len());
    let rank = |x: &VodEncode| {
        (
            x.last_work_time.as_ref().and_then(wire::ApiTime::epoch_ms),
            !crate::watch::Aspect::Encode.is_terminal(&x.status),
        )
    };
    for e in encodes {
        match index.get(&e.key()) {
            Some(&i) => {
                if rank(&e) >= rank(&out[i]) {
                    out[i] = e;
                }
            }
            None => {
                index.insert(e.key(), out.len());
                out.push(e);
            }
        }
    }
    out
}

/// The body VOD Station POSTs to a category's callback URL on each status change of an
/// encoding option (SPEC §10): `{"categoryId","categoryName","fileId","filePath",
/// "encodingOptionId","outputType","link","status"}`. It is a hint, never state: the daemon
/// reads only which category moved, and learns what changed from the status list.
///
/// Decoded tolerantly, like the list: ids as numbers or strings, `filePath` empty while
/// WAITING, `link` a URL, a boolean or absent, unknown fields kept. Only `categoryId` and
/// `status` are required, since without them the callback says nothing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VodCallback {
    /// The category whose encode changed.
    #[serde(deserialize_with = "wire::id")]
    pub category_id: String,
    /// Its name.
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub category_name: Option<String>,
    /// The input file's id.
    #[serde(default, deserialize_with = "wire::opt_id")]
    pub file_id: Option<String>,
    /// The input file (empty while WAITING).
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub file_path: Option<String>,
    /// The encoding option's id.
    #[serde(default, deserialize_with = "wire::opt_id")]
    pub encoding_option_id: Option<String>,
    /// The output type.
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub output_type: Option<String>,
    /// The output's URL, or whether there is one.
    #[serde(default, deserialize_with = "wire::opt_link")]
    pub link: Option<wire::Link>,
    /// The status it says the encode has now (not trusted: the list says).
    #[serde(deserialize_with = "wire::text")]
    pub status: String,
    /// Every other field, kept.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Decodes a callback body, or says why it cannot.
pub fn decode_vod_callback(body: &[u8]) -> Result<VodCallback, String> {
    let callback: VodCallback = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let id = &callback.category_id;
    if id.is_empty() || id.contains('/') || id.chars().any(char::is_control) {
        return Err("`categoryId` is empty or not an id".to_string());
    }
    Ok(callback)
}

impl NcpClient {
    /// One page of encodes started between `from_ms` and `to_ms` (epoch milliseconds).
    pub async fn vod_page(
        &self,
        page_no: u32,
        page_size_no: u32,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<ListPage<VodEncode>, ApiError> {
        // NCP refuses a reversed window; never send one, whatever the clock did.
        let from_ms = from_ms.min(to_ms);
        let query = [
            ("pageNo", page_no.to_string()),
            ("pageSizeNo", page_size_no.max(MIN_PAGE_SIZE).to_string()),
            ("workStartTimeFrom", from_ms.to_string()),
            ("workStartTimeTo", to_ms.to_string()),
        ];
        decode_vod_page(self.get(Host::Vod, &path(&["api", "v2", "status"]), &query).await?)
    }

    /// Every encode started between `from_ms` and `to_ms`, page by page; rows that do
    /// not decode are logged once and skipped.
    pub async fn vod_statuses(&self, from_ms: i64, to_ms: i64) -> Result<Vec<VodEncode>, ApiError> {
        collect_pages(PAGE_SIZE, |page| async move {
            let page = self.vod_page(page, PAGE_SIZE, from_ms, to_ms).await?;
            self.report_skipped("VOD status list", &page.skipped);
            Ok(page)
        })
        .await
    }
}

#[cfg(test)]
mod callback_tests {
    use super::decode_vod_callback;

    #[test]
    fn a_callback_decodes_in_every_documented_and_observed_form() {
        let waiting = br#"{"categoryId":10019,"categoryName":"test2","fileId":123,"filePath":"","encodingOptionId":7,"outputType":"hls","link":"","status":"WAITING"}"#;
        let c = decode_vod_callback(waiting).unwrap();
        assert_eq!((c.category_id.as_str(), c.status.as_str()), ("10019", "WAITING"));
        assert_eq!(c.file_path.as_deref(), Some(""));
        assert_eq!(c.file_id.as_deref(), Some("123"));
        let strings = br#"{"categoryId":"10019","fileId":"123","encodingOptionId":"7","filePath":"a.mp4","status":"COMPLETE","link":"https://x/a.mp4","newField":{"x":1}}"#;
        let c = decode_vod_callback(strings).unwrap();
        assert_eq!(c.encoding_option_id.as_deref(), Some("7"));
        assert!(c.other.contains_key("newField"), "unknown fields are kept");
        let minimal = br#"{"categoryId":1,"status":"RUNNING","link":false}"#;
        assert!(decode_vod_callback(minimal).is_ok());
    }

    #[test]
    fn a_callback_without_a_category_or_a_status_or_not_json_is_refused() {
        for body in [
            &br#"{"status":"COMPLETE"}"#[..],
            br#"{"categoryId":1}"#,
            br#"{"categoryId":null,"status":"COMPLETE"}"#,
            br#"{"categoryId":"","status":"COMPLETE"}"#,
            br#"{"categoryId":"a/b","status":"COMPLETE"}"#,
            br#"[1,2]"#,
            b"categoryId=1&status=COMPLETE",
            b"",
        ] {
            assert!(decode_vod_callback(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
