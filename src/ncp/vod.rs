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
/// the one with the latest `lastWorkTime`; among equal (or unreadable) times, the later
/// row in the list.
pub fn newest_jobs(encodes: Vec<VodEncode>) -> Vec<VodEncode> {
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out: Vec<VodEncode> = Vec::with_capacity(encodes.len());
    for e in encodes {
        match index.get(&e.key()) {
            Some(&i) => {
                let time = |x: &VodEncode| x.last_work_time.as_ref().and_then(wire::ApiTime::epoch_ms);
                if time(&e) >= time(&out[i]) {
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
