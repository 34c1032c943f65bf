//! VOD Station's encoding status list (`{"content":[...],"total":N}`).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::client::{Host, NcpClient, collect_pages, decode, path};
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

/// One page of the status list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VodPage {
    /// Entries.
    #[serde(default)]
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
            detail: Value::Object(
                self.raw
                    .iter()
                    .filter(|(k, _)| keep(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }
    }

    /// The identity of an encode output: (category id, file path, output type).
    pub fn key(&self) -> String {
        format!("{}\u{0}{}\u{0}{}", self.category_id, self.file_path, self.output_type)
    }
}

/// Decodes one page of the status list.
pub fn decode_vod_page(body: Value) -> Result<(Vec<VodEncode>, VodPage), ApiError> {
    let page: VodPage = decode(200, body)?;
    let mut encodes = Vec::with_capacity(page.content.len());
    for entry in &page.content {
        let Value::Object(map) = entry else {
            return Err(ApiError::Malformed {
                status: 200,
                reason: "a `content` entry is not an object".into(),
            });
        };
        let mut e: VodEncode = decode(200, entry.clone())?;
        e.raw = map.clone();
        encodes.push(e);
    }
    Ok((encodes, page))
}

impl NcpClient {
    /// One page of encodes started between `from_ms` and `to_ms` (epoch milliseconds).
    pub async fn vod_page(
        &self,
        page_no: u32,
        page_size_no: u32,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<VodEncode>, VodPage), ApiError> {
        let query = [
            ("pageNo", page_no.to_string()),
            ("pageSizeNo", page_size_no.max(MIN_PAGE_SIZE).to_string()),
            ("workStartTimeFrom", from_ms.to_string()),
            ("workStartTimeTo", to_ms.to_string()),
        ];
        decode_vod_page(self.get(Host::Vod, &path(&["api", "v2", "status"]), &query).await?)
    }

    /// Every encode started between `from_ms` and `to_ms`, page by page.
    pub async fn vod_statuses(&self, from_ms: i64, to_ms: i64) -> Result<Vec<VodEncode>, ApiError> {
        collect_pages(PAGE_SIZE, VodEncode::key, |page| async move {
            let (encodes, meta) = self.vod_page(page, PAGE_SIZE, from_ms, to_ms).await?;
            Ok((encodes, meta.total))
        })
        .await
    }
}
