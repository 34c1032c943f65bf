//! The simulated world: items, their timelines, and the JSON the documents show for them.
//!
//! Everything here is in memory and driven by the time elapsed since the simulator
//! started; the server module decides who may ask, and this module answers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::scenario::{Scenario, Step};

/// A status timeline: the status at time t is the last step at or before t.
#[derive(Debug, Clone, Default)]
pub struct Timeline(Vec<Step>);

impl Timeline {
    fn new(mut steps: Vec<Step>, offset: Duration) -> Self {
        for s in &mut steps {
            s.at += offset;
        }
        steps.sort_by_key(|s| s.at);
        Self(steps)
    }

    /// The step in force at `t`, or `None` before the first.
    pub fn at(&self, t: Duration) -> Option<&Step> {
        self.0.iter().rev().find(|s| s.at <= t)
    }

    /// When the item first exists.
    fn start(&self) -> Option<Duration> {
        self.0.first().map(|s| s.at)
    }

    /// Whether every step has happened by `t`.
    fn done(&self, t: Duration) -> bool {
        self.0.last().is_none_or(|s| s.at <= t)
    }

    /// From `t` on, the status is `step`; later scheduled steps are dropped.
    fn set(&mut self, t: Duration, mut step: Step) {
        self.0.retain(|s| s.at < t);
        step.at = t;
        self.0.push(step);
    }
}

/// One video asset.
#[derive(Debug, Clone)]
struct Asset {
    file_name: Option<String>,
    key: Option<String>,
    meta: Value,
    listed: bool,
    import: Timeline,
    analysis: Timeline,
    created: Duration,
}

/// One encode output.
#[derive(Debug, Clone)]
struct Encode {
    category_id: String,
    category_name: Option<String>,
    file_path: String,
    output_type: String,
    size: Option<u64>,
    /// Epoch milliseconds of the encode request.
    work_start_ms: i64,
    timeline: Timeline,
}

/// A status change requested through the admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SetState {
    /// A video asset's import status (the asset is created when unknown).
    VideoAsset {
        /// Workspace.
        workspace: String,
        /// Project id.
        project_id: String,
        /// Asset id.
        asset_id: String,
        /// New status.
        status: String,
    },
    /// A video asset's analysis status.
    Analysis {
        /// Workspace.
        workspace: String,
        /// Project id.
        project_id: String,
        /// Asset id.
        asset_id: String,
        /// New status.
        status: String,
    },
    /// A search image's upload status.
    SearchImage {
        /// Object key.
        asset_key: String,
        /// New status.
        status: String,
        /// `uploadMessage`.
        #[serde(default)]
        message: Option<String>,
    },
    /// An encode's status (created when unknown).
    Vod {
        /// Category id.
        category_id: String,
        /// Category name.
        #[serde(default)]
        category_name: Option<String>,
        /// Input file.
        file_path: String,
        /// Output type.
        output_type: String,
        /// New status.
        status: String,
        /// Percent.
        #[serde(default)]
        percent: Option<f64>,
        /// Start a new job for this (category, file, output type), with work start now and
        /// this status as its first step: a retry after FAILURE, or a re-upload under the same
        /// name. When false, the newest job (latest work start) of the identity is updated.
        #[serde(default)]
        new_job: bool,
    },
}

/// The world.
#[derive(Debug)]
pub struct World {
    assets: BTreeMap<(String, String, String), Asset>,
    images: BTreeMap<String, Timeline>,
    encodes: Vec<Encode>,
    register: super::scenario::RegisterTemplate,
    next_asset_id: u64,
    numbers_as_strings: bool,
    null_empty_lists: bool,
    vod_newest_first: bool,
    /// Epoch milliseconds when the simulator started.
    epoch_start_ms: i64,
}

/// An answer: HTTP status and JSON body.
pub type Answer = (u16, Value);

fn gateway_error(status: u16, code: &str, message: &str) -> Answer {
    (
        status,
        json!({"error": {"errorCode": code, "message": message, "details": message}}),
    )
}

fn not_found() -> Answer {
    (
        404,
        json!({"error": {"errorCode": "300", "message": "Not Found Exception", "details": "no such item"}}),
    )
}

fn bad_request(details: &str) -> Answer {
    (
        400,
        json!({"error": {"errorCode": "100", "message": "Bad Request Exception", "details": details}}),
    )
}

fn success(result: Value) -> Answer {
    (200, json!({"code": "0", "message": "success", "result": result}))
}

/// Numbers as the documents show them (numbers), or as their tables type them (strings).
fn num(n: impl Into<Value>, as_string: bool) -> Value {
    let v: Value = n.into();
    if as_string { Value::String(v.to_string()) } else { v }
}

/// An id that is numeric on the wire when it looks like a number.
fn id_value(id: &str) -> Value {
    id.parse::<u64>()
        .map_or_else(|_| Value::String(id.to_string()), Value::from)
}

impl World {
    /// A world playing `scenario`, started at `epoch_start_ms`.
    pub fn new(scenario: &Scenario, epoch_start_ms: i64) -> Self {
        let mut assets = BTreeMap::new();
        for v in &scenario.video_asset {
            let mut meta = json!({
                "resolution": v.resolution, "durationMs": v.duration_ms, "size": v.size, "format": v.format,
            });
            // The service leaves out what it does not know rather than sending nulls.
            if let Value::Object(m) = &mut meta {
                m.retain(|_, v| !v.is_null());
            }
            let import = Timeline::new(v.import.clone(), Duration::ZERO);
            assets.insert(
                (v.workspace.clone(), v.project_id.clone(), v.asset_id.clone()),
                Asset {
                    file_name: v.file_name.clone(),
                    key: v.file_name.clone(),
                    meta,
                    listed: v.listed,
                    created: import.start().unwrap_or_default(),
                    import,
                    analysis: Timeline::new(v.analysis.clone(), Duration::ZERO),
                },
            );
        }
        let images = scenario
            .search_image
            .iter()
            .map(|s| (s.asset_key.clone(), Timeline::new(s.upload.clone(), Duration::ZERO)))
            .collect();
        let encodes = scenario
            .vod
            .iter()
            .map(|v| Encode {
                category_id: v.category_id.clone(),
                category_name: v.category_name.clone(),
                file_path: v.file_path.clone(),
                output_type: v.output_type.clone(),
                size: v.size,
                work_start_ms: epoch_start_ms - v.started_ago.as_millis() as i64,
                timeline: Timeline::new(v.encode.clone(), Duration::ZERO),
            })
            .collect();
        Self {
            assets,
            images,
            encodes,
            next_asset_id: scenario.register.first_asset_id,
            register: scenario.register.clone(),
            numbers_as_strings: scenario.numbers_as_strings,
            null_empty_lists: scenario.null_empty_lists,
            vod_newest_first: scenario.vod_newest_first,
            epoch_start_ms,
        }
    }

    /// Whether every scheduled step has happened by `t`.
    pub fn done(&self, t: Duration) -> bool {
        self.assets.values().all(|a| a.import.done(t) && a.analysis.done(t))
            && self.images.values().all(|i| i.done(t))
            && self.encodes.iter().all(|e| e.timeline.done(t))
    }

    /// The page-number query key of a list request (the asset list's `pageNum`, the VOD
    /// status list's `pageNo`), or `None` for any other request.
    pub fn list_page_key(method: &str, segments: &[String]) -> Option<&'static str> {
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method, s.as_slice()) {
            ("GET", ["api", "v1", "workspaces", _, "projects", _, "assets"]) => Some("pageNum"),
            ("GET", ["api", "v2", "status"]) => Some("pageNo"),
            _ => None,
        }
    }

    /// Appends `row` to a list page's content (`result.content` of the asset list, `content`
    /// of the VOD status list), making the array when the content is `null`.
    pub fn append_row(answer: &mut Value, row: Value) {
        let content = match answer.get_mut("result") {
            Some(result) => result.get_mut("content"),
            None => answer.get_mut("content"),
        };
        if let Some(content) = content {
            if content.is_null() {
                *content = Value::Array(Vec::new());
            }
            if let Value::Array(rows) = content {
                rows.push(row);
            }
        }
    }

    /// Answers one API request. `segments` are the percent-decoded path segments.
    pub fn answer(
        &mut self,
        method: &str,
        segments: &[String],
        query: &BTreeMap<String, String>,
        body: &[u8],
        t: Duration,
    ) -> Answer {
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method, s.as_slice()) {
            (
                "GET",
                [
                    "api",
                    "v1",
                    "workspaces",
                    ws,
                    "projects",
                    pid,
                    path @ ("video-assets" | "assets"),
                    id,
                    "import-status",
                ],
            ) => self.import_status(ws, pid, id, *path == "video-assets", t),
            (
                "GET",
                [
                    "api",
                    "v1",
                    "workspaces",
                    ws,
                    "projects",
                    pid,
                    "assets",
                    id,
                    "index",
                    "status",
                ],
            ) => self.analysis_status(ws, pid, id, t),
            ("GET", ["api", "v1", "workspaces", ws, "projects", pid, "assets"]) => self.asset_list(ws, pid, query, t),
            (
                "POST",
                [
                    "api",
                    "v1",
                    "workspaces",
                    ws,
                    "projects",
                    pid,
                    "assets" | "video-assets",
                    "import",
                    "object-storage",
                ],
            ) => self.register(ws, pid, body, t),
            ("POST", ["api", "v1", "query-assets", "uploads", "complete"]) => self.search_image(body, t),
            ("GET", ["api", "v2", "status"]) => self.vod_status(query, t),
            _ => gateway_error(404, "300", "Not Found Exception"),
        }
    }

    /// The newer `assets` revision of the path leaves `videoId` out of the result.
    fn import_status(&self, ws: &str, pid: &str, id: &str, with_video_id: bool, t: Duration) -> Answer {
        let Some(asset) = self.assets.get(&(ws.to_string(), pid.to_string(), id.to_string())) else {
            return not_found();
        };
        let Some(step) = asset.import.at(t) else {
            return not_found();
        };
        let result_text = match step.status.as_str() {
            "IN_PROGRESS" => "Upload in progress",
            "COMPLETED" => "Video copy completed",
            "FAILED" => "Upload failed",
            "FILE_NOT_EXIST" => "No file",
            "INVALID_METADATA" => "Unsupported resolution (supported resolutions: 360p to 1080p)",
            _ => "",
        };
        let mut result = json!({"uploadStatus": step.status, "uploadResult": result_text});
        if with_video_id {
            result["videoId"] = id_value(id);
        }
        if step.status == "COMPLETED" {
            result["metaData"] = asset.meta.clone();
        }
        success(result)
    }

    fn analysis_status(&self, ws: &str, pid: &str, id: &str, t: Duration) -> Answer {
        let Some(asset) = self.assets.get(&(ws.to_string(), pid.to_string(), id.to_string())) else {
            return not_found();
        };
        if asset.import.at(t).is_none() {
            return not_found();
        }
        let status = asset.analysis.at(t).map_or("BEFORE_ANALYZE", |s| s.status.as_str());
        success(json!({"assetId": id_value(id), "status": status}))
    }

    fn asset_list(&self, ws: &str, pid: &str, query: &BTreeMap<String, String>, t: Duration) -> Answer {
        let page_num: u64 = match query.get("pageNum").map(|p| p.parse()) {
            Some(Ok(n)) if n >= 1 => n,
            _ => return bad_request("pageNum is required and must be 1 or more"),
        };
        let page_size: u64 = match query.get("pageSize").map(|p| p.parse()) {
            None => 1000,
            Some(Ok(n)) if (1..=1000).contains(&n) => n,
            _ => return bad_request("pageSize must be from 1 to 1000"),
        };
        let mut listed: Vec<(&String, &Asset)> = self
            .assets
            .iter()
            .filter(|((w, p, _), a)| w == ws && p == pid && a.listed && a.import.at(t).is_some())
            .map(|((_, _, id), a)| (id, a))
            .collect();
        listed.sort_by_key(|(id, _)| (id.parse::<u64>().unwrap_or(u64::MAX), id.to_string()));
        let total = listed.len() as u64;
        let start = ((page_num - 1) * page_size) as usize;
        let content: Vec<Value> = listed
            .iter()
            .skip(start)
            .take(page_size as usize)
            .map(|(id, a)| {
                let created = self.local_time(a.created);
                json!({
                    "assetId": id_value(id), "fileName": a.file_name, "projectId": id_value(pid),
                    "metaData": a.meta, "key": a.key, "createUserName": "ncp-sim", "createdTime": created,
                    "updateUserName": "ncp-sim", "updatedTime": created,
                })
            })
            .collect();
        success(json!({
            "content": self.list_content(content), "totalCount": total, "totalPage": total.div_ceil(page_size),
            "pageNo": page_num, "pageSize": page_size,
        }))
    }

    /// A page's rows, or `null` for an empty page when the scenario plays that.
    fn list_content(&self, rows: Vec<Value>) -> Value {
        if rows.is_empty() && self.null_empty_lists {
            Value::Null
        } else {
            Value::Array(rows)
        }
    }

    /// A zone-less timestamp, as Media Intelligence sends them.
    fn local_time(&self, offset: Duration) -> String {
        let ms = self.epoch_start_ms + offset.as_millis() as i64;
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S%.9f")
            .to_string()
    }

    fn register(&mut self, ws: &str, pid: &str, body: &[u8], t: Duration) -> Answer {
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return bad_request("the body must be JSON");
        };
        let (Some(key), Some(_bucket)) = (
            body.get("key").and_then(Value::as_str),
            body.get("bucketName").and_then(Value::as_str),
        ) else {
            return bad_request("key and bucketName are required");
        };
        let id = self.next_asset_id.to_string();
        self.next_asset_id += 1;
        let asset = Asset {
            file_name: Some(key.rsplit('/').next().unwrap_or(key).to_string()),
            key: Some(key.to_string()),
            meta: json!({"resolution": "1920x1080", "durationMs": 60000, "size": 10485760, "format": "mp4"}),
            listed: true,
            import: Timeline::new(self.register.import.clone(), t),
            analysis: Timeline::new(self.register.analysis.clone(), t),
            created: t,
        };
        self.assets.insert((ws.to_string(), pid.to_string(), id.clone()), asset);
        let created = self.local_time(t);
        success(json!({
            "assetId": id_value(&id), "createUserName": "ncp-sim", "createdTime": created,
            "updateUserName": "ncp-sim", "updatedTime": created,
        }))
    }

    fn search_image(&self, body: &[u8], t: Duration) -> Answer {
        let Some(key) = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|b| b.get("assetKey").and_then(Value::as_str).map(str::to_string))
        else {
            return bad_request("assetKey is required");
        };
        // A key whose file is not in Object Storage (yet) is not a 404: the service answers
        // success with a FAILED upload, which is only final once the file never comes.
        let step = self.images.get(&key).and_then(|tl| tl.at(t));
        let (status, message) = match step {
            Some(s) => (s.status.clone(), s.message.clone()),
            None => ("FAILED".to_string(), Some("FILE_NOT_EXIST".to_string())),
        };
        success(json!({"assetKey": key, "uploadStatus": status, "uploadMessage": message}))
    }

    #[allow(
        clippy::expect_used,
        reason = "each expect here states an invariant of our own types, never of input"
    )]
    fn vod_status(&self, query: &BTreeMap<String, String>, t: Duration) -> Answer {
        let number = |k: &str| query.get(k).map(|v| v.parse::<i64>());
        let page_no = match number("pageNo") {
            None => 1,
            Some(Ok(n)) if n >= 1 => n,
            _ => return bad_request("pageNo must be 1 or more"),
        };
        let page_size = match number("pageSizeNo") {
            None => 20,
            Some(Ok(n)) if n >= 10 => n,
            _ => return bad_request("pageSizeNo must be 10 or more"),
        };
        let (mut from, mut to) = (i64::MIN, i64::MAX);
        for (k, slot) in [("workStartTimeFrom", &mut from), ("workStartTimeTo", &mut to)] {
            match number(k) {
                None => {}
                Some(Ok(n)) => *slot = n,
                Some(Err(_)) => return bad_request("work start times are epoch milliseconds"),
            }
        }
        // The document's own example sends From after To, but the service refuses a reversed
        // window rather than reading it either way.
        if from > to {
            return bad_request("workStartTimeFrom must not be after workStartTimeTo");
        }
        let s = self.numbers_as_strings;
        let mut rows: Vec<(&Encode, &Step)> = self
            .encodes
            .iter()
            .filter(|e| e.work_start_ms >= from && e.work_start_ms <= to)
            .filter_map(|e| e.timeline.at(t).map(|step| (e, step)))
            .collect();
        rows.sort_by(|a, b| {
            let by_start = if self.vod_newest_first {
                b.0.work_start_ms.cmp(&a.0.work_start_ms)
            } else {
                a.0.work_start_ms.cmp(&b.0.work_start_ms)
            };
            by_start.then_with(|| (&a.0.file_path, &a.0.output_type).cmp(&(&b.0.file_path, &b.0.output_type)))
        });
        let total = rows.len();
        let content: Vec<Value> = rows
            .iter()
            .skip(((page_no - 1) * page_size) as usize)
            .take(page_size as usize)
            .map(|(e, step)| {
                let complete = step.status == "COMPLETE";
                let link = if complete {
                    json!(format!(
                        "https://kr.object.ncloudstorage.com/vod-sim/{}/{}",
                        e.output_type, e.file_path
                    ))
                } else {
                    json!(false)
                };
                let size = if complete { e.size.unwrap_or(0) } else { 0 };
                let last_work =
                    chrono::DateTime::from_timestamp_millis(self.epoch_start_ms + step.at.as_millis() as i64)
                        .unwrap_or_default()
                        .with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).expect("KST is a valid offset"))
                        .format("%Y-%m-%dT%H:%M:%S%z")
                        .to_string();
                let category_id = if s {
                    Value::String(e.category_id.clone())
                } else {
                    id_value(&e.category_id)
                };
                json!({
                    "categoryId": category_id, "categoryName": e.category_name, "filePath": e.file_path,
                    "outputType": e.output_type, "link": link, "outputTotalSize": num(size, s),
                    "lastWorkTime": last_work, "status": step.status,
                    "percent": num(step.percent.map_or(0, |p| p.round() as i64), s),
                })
            })
            .collect();
        (
            200,
            json!({"content": self.list_content(content), "total": num(total as u64, s)}),
        )
    }

    /// Each encode output's status at `t`, in a fixed order (new jobs are added at the end).
    pub fn encode_statuses(&self, t: Duration) -> Vec<Option<String>> {
        self.encodes
            .iter()
            .map(|e| e.timeline.at(t).map(|s| s.status.clone()))
            .collect()
    }

    /// When the next scheduled encode step after `t` happens.
    pub fn next_encode_step_after(&self, t: Duration) -> Option<Duration> {
        self.encodes
            .iter()
            .flat_map(|e| e.timeline.0.iter().map(|s| s.at))
            .filter(|at| *at > t)
            .min()
    }

    /// The callback VOD Station would POST for encode output `index` at `t` (SPEC §10):
    /// `filePath` is "" while WAITING, `link` the output's URL once COMPLETE and "" before,
    /// ids are numbers when they look like numbers. `fileId` is the input's (one per
    /// category and file) and `encodingOptionId` the output type's, both stable.
    pub fn callback_body(&self, index: usize, t: Duration) -> Option<Value> {
        let e = self.encodes.get(index)?;
        let step = e.timeline.at(t)?;
        let first_of = |same: &dyn Fn(&Encode) -> bool| self.encodes.iter().position(same).unwrap_or(index);
        let file_id = 100_000 + first_of(&|o| o.category_id == e.category_id && o.file_path == e.file_path) as u64;
        let option_id = 1 + first_of(&|o| o.output_type == e.output_type) as u64;
        let waiting = step.status == "WAITING";
        let link = if step.status == "COMPLETE" {
            format!(
                "https://kr.object.ncloudstorage.com/vod-sim/{}/{}",
                e.output_type, e.file_path
            )
        } else {
            String::new()
        };
        Some(json!({
            "categoryId": id_value(&e.category_id), "categoryName": e.category_name, "fileId": file_id,
            "filePath": if waiting { "" } else { e.file_path.as_str() }, "encodingOptionId": option_id,
            "outputType": e.output_type, "link": link, "status": step.status,
        }))
    }

    /// Applies an admin state change at time `t`.
    pub fn set(&mut self, change: SetState, t: Duration) {
        let step = |status: String, percent: Option<f64>, message: Option<String>| Step {
            at: t,
            status,
            percent,
            message,
        };
        match change {
            SetState::VideoAsset {
                workspace,
                project_id,
                asset_id,
                status,
            } => {
                let asset = self
                    .assets
                    .entry((workspace, project_id, asset_id.clone()))
                    .or_insert_with(|| Asset {
                        file_name: Some(format!("{asset_id}.mp4")),
                        key: Some(format!("{asset_id}.mp4")),
                        meta: json!({"resolution": "1280x720", "durationMs": 1000, "size": 1000, "format": "mp4"}),
                        listed: true,
                        import: Timeline::default(),
                        analysis: Timeline::default(),
                        created: t,
                    });
                asset.import.set(t, step(status, None, None));
            }
            SetState::Analysis {
                workspace,
                project_id,
                asset_id,
                status,
            } => {
                if let Some(asset) = self.assets.get_mut(&(workspace, project_id, asset_id)) {
                    asset.analysis.set(t, step(status, None, None));
                }
            }
            SetState::SearchImage {
                asset_key,
                status,
                message,
            } => {
                self.images
                    .entry(asset_key)
                    .or_default()
                    .set(t, step(status, None, message));
            }
            SetState::Vod {
                category_id,
                category_name,
                file_path,
                output_type,
                status,
                percent,
                new_job,
            } => {
                let now_ms = self.epoch_start_ms + t.as_millis() as i64;
                // The list has no job id: jobs of one identity differ only by work start, and
                // the newest one (the last of equals) is the one an update means.
                let newest = self
                    .encodes
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| {
                        e.category_id == category_id && e.file_path == file_path && e.output_type == output_type
                    })
                    .max_by_key(|(_, e)| e.work_start_ms)
                    .map(|(i, _)| i);
                let index = match newest {
                    Some(i) if !new_job => i,
                    _ => {
                        let sibling = newest.map(|i| &self.encodes[i]);
                        let encode = Encode {
                            category_name: category_name.or_else(|| sibling.and_then(|e| e.category_name.clone())),
                            size: sibling.map_or(Some(1_000_000), |e| e.size),
                            category_id,
                            file_path,
                            output_type,
                            work_start_ms: now_ms,
                            timeline: Timeline::default(),
                        };
                        self.encodes.push(encode);
                        self.encodes.len() - 1
                    }
                };
                self.encodes[index].timeline.set(t, step(status, percent, None));
            }
        }
    }
}
