//! Scenario files: the items the simulator serves and the times their statuses change.

use std::time::Duration;

use serde::Deserialize;

/// The scenario served when none is given: a few items of every kind, reaching every
/// terminal state within about ten seconds.
pub const BUILT_IN: &str = include_str!("../../config/sim-scenario.toml");

/// A whole scenario.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// How assets created by the register endpoint behave.
    #[serde(default)]
    pub register: RegisterTemplate,
    /// Video assets, in their projects.
    #[serde(default)]
    pub video_asset: Vec<VideoAssetSpec>,
    /// Search images.
    #[serde(default)]
    pub search_image: Vec<SearchImageSpec>,
    /// VOD encodes.
    #[serde(default)]
    pub vod: Vec<VodSpec>,
    /// Serve VOD numbers (`percent`, `outputTotalSize`, `total`, `categoryId`) as strings,
    /// the other form the document allows.
    #[serde(default)]
    pub numbers_as_strings: bool,
    /// Answer an empty list page with `"content": null` instead of `[]` (inside `result` for
    /// the asset list, at the top for the VOD status list), as NCP does for empty pages.
    #[serde(default)]
    pub null_empty_lists: bool,
    /// How many milliseconds the simulated gateway's clock runs ahead of the real clock
    /// (negative: behind). The gateway checks the 5-minute timestamp window against this
    /// clock and sends it in every response's `Date` header.
    #[serde(default)]
    pub clock_offset_ms: i64,
    /// List VOD rows newest work start first; oldest first when false (the default).
    #[serde(default)]
    pub vod_newest_first: bool,
}

/// One status at one time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When, after the simulator starts (or after the item was created), as humantime.
    #[serde(with = "humantime_serde_compat")]
    pub at: Duration,
    /// The API's status value.
    pub status: String,
    /// VOD percent.
    #[serde(default)]
    pub percent: Option<f64>,
    /// Search image `uploadMessage`.
    #[serde(default)]
    pub message: Option<String>,
}

/// The register endpoint's template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterTemplate {
    /// Import timeline of a newly registered asset, relative to its registration.
    pub import: Vec<Step>,
    /// Analysis timeline, relative to its registration.
    #[serde(default)]
    pub analysis: Vec<Step>,
    /// The first asset id handed out.
    #[serde(default = "default_first_id")]
    pub first_asset_id: u64,
}

fn default_first_id() -> u64 {
    9000
}

impl Default for RegisterTemplate {
    fn default() -> Self {
        Self {
            import: vec![
                Step {
                    at: Duration::ZERO,
                    status: "IN_PROGRESS".into(),
                    percent: None,
                    message: None,
                },
                Step {
                    at: Duration::from_secs(3),
                    status: "COMPLETED".into(),
                    percent: None,
                    message: None,
                },
            ],
            analysis: Vec::new(),
            first_asset_id: default_first_id(),
        }
    }
}

/// One video asset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoAssetSpec {
    /// Workspace name.
    pub workspace: String,
    /// Project id.
    pub project_id: String,
    /// Asset id.
    pub asset_id: String,
    /// File name.
    #[serde(default)]
    pub file_name: Option<String>,
    /// Resolution.
    #[serde(default)]
    pub resolution: Option<String>,
    /// Length in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// Format.
    #[serde(default)]
    pub format: Option<String>,
    /// Whether the project's asset list shows it.
    #[serde(default = "yes")]
    pub listed: bool,
    /// Import status timeline; the asset exists from its first step.
    pub import: Vec<Step>,
    /// Analysis status timeline.
    #[serde(default)]
    pub analysis: Vec<Step>,
}

fn yes() -> bool {
    true
}

/// One search image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchImageSpec {
    /// Object key.
    pub asset_key: String,
    /// Upload status timeline.
    pub upload: Vec<Step>,
}

/// One encode output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VodSpec {
    /// Category id.
    pub category_id: String,
    /// Category name.
    #[serde(default)]
    pub category_name: Option<String>,
    /// Input file.
    pub file_path: String,
    /// Output type.
    pub output_type: String,
    /// Output size once complete.
    #[serde(default)]
    pub size: Option<u64>,
    /// How long before the simulator's start the encode was requested.
    #[serde(default, with = "humantime_serde_compat")]
    pub started_ago: Duration,
    /// Status timeline.
    pub encode: Vec<Step>,
}

impl Scenario {
    /// Parses a scenario file's text; errors carry toml's line and column.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The built-in scenario.
    #[allow(
        clippy::expect_used,
        reason = "each expect here states an invariant of our own types, never of input"
    )]
    pub fn built_in() -> Self {
        Self::parse(BUILT_IN).expect("the built-in scenario parses")
    }

    /// When the last scheduled step of any item happens.
    pub fn last_step(&self) -> Duration {
        let steps = self
            .video_asset
            .iter()
            .flat_map(|v| v.import.iter().chain(&v.analysis))
            .chain(self.search_image.iter().flat_map(|s| &s.upload))
            .chain(self.vod.iter().flat_map(|v| &v.encode));
        steps.map(|s| s.at).max().unwrap_or_default()
    }
}

/// `humantime` strings for `Duration` fields.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::Scenario;

    #[test]
    fn the_built_in_scenario_has_every_kind_and_ends() {
        let s = Scenario::built_in();
        assert!(!s.video_asset.is_empty() && !s.search_image.is_empty() && !s.vod.is_empty());
        assert!(s.last_step().as_secs() <= 20);
    }

    #[test]
    fn a_bad_scenario_names_its_line() {
        let err = Scenario::parse("[[vod]]\ncategory_id = \"1\"\nfile_paht = \"x\"\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
    }
}
