//! Media Intelligence endpoints and wire types (`{"code","message","result"}` envelopes).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::client::{Host, ListPage, NcpClient, collect_pages, decode, path};
use super::error::ApiError;
use super::wire;
use crate::config::MediaAssetPath;
use crate::watch::{Aspect, LISTED, Observation, Resource};

/// The largest `pageSize` the asset list accepts.
pub const MAX_ASSET_PAGE_SIZE: u32 = 1000;

/// File metadata as the import status and the asset list report it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaData {
    /// Such as `1920x1080`.
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub resolution: Option<String>,
    /// Length in milliseconds.
    #[serde(default, deserialize_with = "wire::opt_u64")]
    pub duration_ms: Option<u64>,
    /// Size in bytes.
    #[serde(default, deserialize_with = "wire::opt_u64")]
    pub size: Option<u64>,
    /// Such as `mp4`.
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub format: Option<String>,
}

/// `GET …/{video-assets|assets}/{id}/import-status`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportStatus {
    /// The asset id (an integer in the document).
    #[serde(default, deserialize_with = "wire::opt_id")]
    pub video_id: Option<String>,
    /// `IN_PROGRESS COMPLETED FAILED FILE_NOT_EXIST INVALID_METADATA`, or a newer value.
    pub upload_status: String,
    /// The human message for the status.
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub upload_result: Option<String>,
    /// File metadata, once known.
    #[serde(default)]
    pub meta_data: Option<MetaData>,
    /// The whole `result` object, unknown fields included.
    #[serde(skip)]
    pub raw: Map<String, Value>,
}

/// `GET …/assets/{id}/index/status`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AnalysisStatus {
    /// `BEFORE_ANALYZE WAIT_ANALYZE ANALYZING ANALYZE_COMPLETED ANALYZE_FAIL ANALYZE_CANCEL`.
    pub status: String,
    /// The whole `result` object.
    #[serde(skip)]
    pub raw: Map<String, Value>,
}

/// `POST /api/v1/query-assets/uploads/complete`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchImageStatus {
    /// The key (a HEIC upload reports its JPG key).
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub asset_key: Option<String>,
    /// `COMPLETED` or `FAILED`.
    pub upload_status: String,
    /// Why it failed: `FILE_NOT_EXIST OVER_SIZE_LIMIT RESOLUTION_NOT_SUPPORT`.
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub upload_message: Option<String>,
    /// The whole `result` object.
    #[serde(skip)]
    pub raw: Map<String, Value>,
}

/// One entry of the asset list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetSummary {
    /// The asset id.
    #[serde(deserialize_with = "wire::id")]
    pub asset_id: String,
    /// File name.
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub file_name: Option<String>,
    /// Project id.
    #[serde(default, deserialize_with = "wire::opt_id")]
    pub project_id: Option<String>,
    /// File metadata.
    #[serde(default)]
    pub meta_data: Option<MetaData>,
    /// Object Storage key.
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub key: Option<String>,
    /// Registration time (no zone in the document).
    #[serde(default, deserialize_with = "wire::opt_time")]
    pub created_time: Option<wire::ApiTime>,
    /// Last modification time.
    #[serde(default, deserialize_with = "wire::opt_time")]
    pub updated_time: Option<wire::ApiTime>,
    /// The whole entry.
    #[serde(skip)]
    pub raw: Map<String, Value>,
}

/// One page of the asset list as the wire has it, rows undecoded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetPage {
    /// The entries (`null` is an empty page).
    #[serde(default, deserialize_with = "wire::rows")]
    pub content: Vec<Value>,
    /// Total asset count.
    #[serde(default, deserialize_with = "wire::opt_u64")]
    pub total_count: Option<u64>,
    /// Total page count.
    #[serde(default, deserialize_with = "wire::opt_u64")]
    pub total_page: Option<u64>,
    /// This page's number.
    #[serde(default, deserialize_with = "wire::opt_u64")]
    pub page_no: Option<u64>,
    /// This page's size.
    #[serde(default, deserialize_with = "wire::opt_u64")]
    pub page_size: Option<u64>,
}

/// `POST …/assets/import/object-storage`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredAsset {
    /// The new asset's id.
    #[serde(deserialize_with = "wire::id")]
    pub asset_id: String,
    /// The whole `result` object.
    #[serde(skip)]
    pub raw: Map<String, Value>,
}

/// Decodes a `result` object into `T` and keeps the object itself as `raw`.
fn typed<T: serde::de::DeserializeOwned>(
    result: Value,
    set_raw: impl FnOnce(&mut T, Map<String, Value>),
) -> Result<T, ApiError> {
    let Value::Object(map) = result else {
        return Err(ApiError::Malformed {
            status: 200,
            reason: "`result` is not an object".into(),
        });
    };
    let mut t: T = decode(200, Value::Object(map.clone()))?;
    set_raw(&mut t, map);
    Ok(t)
}

/// The `result` of a Media Intelligence envelope, or the refusal its `code` says.
pub fn envelope_result(body: Value) -> Result<Value, ApiError> {
    // Media Intelligence also refuses with its own `responseError{code,message}`.
    if body.get("responseError").is_some_and(Value::is_object)
        && let Some(e) = wire::GatewayError::parse(&body)
    {
        return Err(ApiError::Rejected {
            status: 200,
            code: e.code,
            message: e.message,
        });
    }
    let code = match body.get("code") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    };
    if code != "0" {
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return Err(ApiError::Rejected {
            status: 200,
            code,
            message,
        });
    }
    match body {
        Value::Object(mut m) => m
            .remove("result")
            .filter(|r| !r.is_null())
            .ok_or_else(|| ApiError::Malformed {
                status: 200,
                reason: "the envelope has no `result`".into(),
            }),
        _ => Err(ApiError::Malformed {
            status: 200,
            reason: "the body is not a JSON object".into(),
        }),
    }
}

/// `raw` without the keys that events carry elsewhere.
fn detail(raw: &Map<String, Value>, drop: &[&str]) -> Value {
    Value::Object(
        raw.iter()
            .filter(|(k, _)| !drop.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

impl ImportStatus {
    /// The observation of the asset `workspace/project_id/asset_id`.
    pub fn observation(&self, workspace: &str, project_id: &str, asset_id: &str) -> Observation {
        Observation {
            resource: Resource::VideoAsset {
                workspace: workspace.into(),
                project_id: project_id.into(),
                asset_id: asset_id.into(),
            },
            aspect: Aspect::Import,
            status: self.upload_status.clone(),
            percent: None,
            changed_at_ms: None,
            awaiting_file: false,
            detail: detail(&self.raw, &["videoId", "uploadStatus"]),
        }
    }
}

impl AnalysisStatus {
    /// The observation of the asset's analysis.
    pub fn observation(&self, workspace: &str, project_id: &str, asset_id: &str) -> Observation {
        Observation {
            resource: Resource::VideoAsset {
                workspace: workspace.into(),
                project_id: project_id.into(),
                asset_id: asset_id.into(),
            },
            aspect: Aspect::Analysis,
            status: self.status.clone(),
            percent: None,
            changed_at_ms: None,
            awaiting_file: false,
            detail: detail(&self.raw, &["assetId", "status"]),
        }
    }
}

impl SearchImageStatus {
    /// The observation of the image watched as `asset_key`.
    pub fn observation(&self, asset_key: &str) -> Observation {
        Observation {
            resource: Resource::SearchImage {
                asset_key: asset_key.into(),
            },
            aspect: Aspect::Upload,
            status: self.upload_status.clone(),
            percent: None,
            changed_at_ms: None,
            // The file is not in Object Storage (yet): NCP says FAILED with this message.
            awaiting_file: self.upload_status == "FAILED" && self.upload_message.as_deref() == Some("FILE_NOT_EXIST"),
            detail: detail(&self.raw, &["uploadStatus"]),
        }
    }
}

impl AssetSummary {
    /// The observation that the asset is listed in `workspace/project_id`.
    pub fn observation(&self, workspace: &str, project_id: &str) -> Observation {
        Observation {
            resource: Resource::ProjectAsset {
                workspace: workspace.into(),
                project_id: project_id.into(),
                asset_id: self.asset_id.clone(),
            },
            aspect: Aspect::Listing,
            status: LISTED.to_string(),
            percent: None,
            changed_at_ms: None,
            awaiting_file: false,
            detail: detail(&self.raw, &["assetId"]),
        }
    }
}

/// Decodes an import-status answer.
pub fn decode_import_status(body: Value) -> Result<ImportStatus, ApiError> {
    typed(envelope_result(body)?, |t: &mut ImportStatus, raw| t.raw = raw)
}

/// Decodes an import-status answer to a question about `asset_id`: an answer about
/// another asset is malformed, never an observation of this one. (The newer `assets`
/// path leaves `videoId` out; then there is nothing to compare.)
pub fn decode_import_status_of(body: Value, asset_id: &str) -> Result<ImportStatus, ApiError> {
    let status = decode_import_status(body)?;
    match status.video_id.as_deref() {
        Some(id) if id != asset_id => Err(ApiError::Malformed {
            status: 200,
            reason: format!(
                "the answer is about asset {} but asset {} was asked for",
                id.escape_default(),
                asset_id.escape_default()
            ),
        }),
        _ => Ok(status),
    }
}

/// Decodes an analysis-status answer.
pub fn decode_analysis_status(body: Value) -> Result<AnalysisStatus, ApiError> {
    typed(envelope_result(body)?, |t: &mut AnalysisStatus, raw| t.raw = raw)
}

/// Decodes a search-image upload-status answer.
pub fn decode_search_image_status(body: Value) -> Result<SearchImageStatus, ApiError> {
    typed(envelope_result(body)?, |t: &mut SearchImageStatus, raw| t.raw = raw)
}

/// Decodes one page of the asset list. An entry that does not decode (no `assetId`, an id
/// that is not a positive integer) is skipped and reported; the others are kept.
pub fn decode_asset_page(body: Value) -> Result<ListPage<AssetSummary>, ApiError> {
    let page: AssetPage = decode(200, envelope_result(body)?)?;
    Ok(ListPage::from_rows(page.content, page.total_count, |map| {
        let mut a: AssetSummary = serde_json::from_value(Value::Object(map.clone())).map_err(|e| e.to_string())?;
        if !crate::config::is_positive_integer(&a.asset_id) {
            return Err("`assetId` is not a positive integer".to_string());
        }
        a.raw = map;
        Ok(a)
    }))
}

/// Decodes a register answer.
pub fn decode_registered_asset(body: Value) -> Result<RegisteredAsset, ApiError> {
    typed(envelope_result(body)?, |t: &mut RegisteredAsset, raw| t.raw = raw)
}

impl NcpClient {
    /// The import status of one video asset.
    pub async fn import_status(
        &self,
        workspace: &str,
        project_id: &str,
        asset_id: &str,
    ) -> Result<ImportStatus, ApiError> {
        let p = path(&[
            "api",
            "v1",
            "workspaces",
            workspace,
            "projects",
            project_id,
            self.asset_path.as_str(),
            asset_id,
            "import-status",
        ]);
        match self.get(Host::Media, &p, &[]).await {
            Ok(body) => decode_import_status_of(body, asset_id),
            Err(ApiError::NotFound { code, message, .. }) => Err(ApiError::NotFound {
                code,
                message,
                hint: match self.asset_path {
                    MediaAssetPath::VideoAssets => {
                        "; if they are right, the account may use the newer path: set [api] media_asset_path = \"assets\""
                    }
                    MediaAssetPath::Assets => {
                        "; if they are right, the account may use the documented path: set [api] media_asset_path = \"video-assets\""
                    }
                },
            }),
            Err(e) => Err(e),
        }
    }

    /// The analysis status of one asset.
    pub async fn analysis_status(
        &self,
        workspace: &str,
        project_id: &str,
        asset_id: &str,
    ) -> Result<AnalysisStatus, ApiError> {
        let p = path(&[
            "api",
            "v1",
            "workspaces",
            workspace,
            "projects",
            project_id,
            "assets",
            asset_id,
            "index",
            "status",
        ]);
        decode_analysis_status(self.get(Host::Media, &p, &[]).await?)
    }

    /// The upload status of one search image.
    pub async fn search_image_status(&self, asset_key: &str) -> Result<SearchImageStatus, ApiError> {
        let p = path(&["api", "v1", "query-assets", "uploads", "complete"]);
        let body = serde_json::json!({ "assetKey": asset_key });
        decode_search_image_status(self.post(Host::Media, &p, &body).await?)
    }

    /// One page of a project's asset list (`page_num` from 1, `page_size` 1 to 1000).
    pub async fn asset_page(
        &self,
        workspace: &str,
        project_id: &str,
        page_num: u32,
        page_size: u32,
    ) -> Result<ListPage<AssetSummary>, ApiError> {
        let p = path(&["api", "v1", "workspaces", workspace, "projects", project_id, "assets"]);
        let query = [
            ("pageNum", page_num.to_string()),
            ("pageSize", page_size.clamp(1, MAX_ASSET_PAGE_SIZE).to_string()),
        ];
        decode_asset_page(self.get(Host::Media, &p, &query).await?)
    }

    /// Every asset of a project, page by page; entries that do not decode are logged once
    /// and skipped.
    pub async fn list_assets(&self, workspace: &str, project_id: &str) -> Result<Vec<AssetSummary>, ApiError> {
        collect_pages(MAX_ASSET_PAGE_SIZE, |page| async move {
            let page = self
                .asset_page(workspace, project_id, page, MAX_ASSET_PAGE_SIZE)
                .await?;
            self.report_skipped("asset list", &page.skipped);
            Ok(page)
        })
        .await
    }

    /// Registers an Object Storage file as a media asset of a project.
    pub async fn register_asset(
        &self,
        workspace: &str,
        project_id: &str,
        bucket: &str,
        key: &str,
    ) -> Result<RegisteredAsset, ApiError> {
        let p = path(&[
            "api",
            "v1",
            "workspaces",
            workspace,
            "projects",
            project_id,
            "assets",
            "import",
            "object-storage",
        ]);
        let body = serde_json::json!({ "key": key, "bucketName": bucket });
        decode_registered_asset(self.post(Host::Media, &p, &body).await?)
    }
}
