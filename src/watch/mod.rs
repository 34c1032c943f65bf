//! The domain: what is watched, what was observed, and what counts as a change.
//!
//! This module does no I/O and knows no wire format: the NCP client turns responses into
//! [`Observation`]s, and [`detect`] turns an observation and what was seen before into
//! [`Change`]s. Events and storage are built from changes elsewhere.

mod detect;

pub use detect::{Change, ChangeKind, Seen, detect};

use std::fmt;

/// The identity of a watched item, as it appears in event `subject`s.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(String);

impl Subject {
    /// The subject text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A thing NCP reports a status for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A Media Intelligence video asset.
    VideoAsset {
        /// Workspace name.
        workspace: String,
        /// Project id.
        project_id: String,
        /// Asset id.
        asset_id: String,
    },
    /// An asset as listed in a project's asset list.
    ProjectAsset {
        /// Workspace name.
        workspace: String,
        /// Project id.
        project_id: String,
        /// Asset id.
        asset_id: String,
    },
    /// A Media Intelligence search (query) image.
    SearchImage {
        /// Object key.
        asset_key: String,
    },
    /// One output of one VOD Station encode.
    VodEncode {
        /// Category id.
        category_id: String,
        /// Category name, when the list gave one.
        category_name: Option<String>,
        /// Input file path.
        file_path: String,
        /// Output type.
        output_type: String,
    },
}

impl Resource {
    /// The event subject of this resource (SPEC §4).
    pub fn subject(&self) -> Subject {
        Subject(match self {
            Self::VideoAsset {
                workspace,
                project_id,
                asset_id,
            } => {
                format!("workspaces/{workspace}/projects/{project_id}/video-assets/{asset_id}")
            }
            Self::ProjectAsset {
                workspace,
                project_id,
                asset_id,
            } => {
                format!("workspaces/{workspace}/projects/{project_id}/assets/{asset_id}")
            }
            Self::SearchImage { asset_key } => format!("query-assets/{asset_key}"),
            Self::VodEncode {
                category_id,
                file_path,
                output_type,
                ..
            } => {
                format!("vodstation/categories/{category_id}/files/{file_path}/outputs/{output_type}")
            }
        })
    }

    /// The `resource.kind` of events.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::VideoAsset { .. } => "video_asset",
            Self::ProjectAsset { .. } => "project_asset",
            Self::SearchImage { .. } => "search_image",
            Self::VodEncode { .. } => "vod_encode",
        }
    }
}

/// Which status of a resource an observation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aspect {
    /// A video asset's import (`uploadStatus`).
    Import,
    /// A video asset's analysis (`index/status`).
    Analysis,
    /// A search image's upload.
    Upload,
    /// An asset's presence in its project's list.
    Listing,
    /// A VOD encode.
    Encode,
}

impl Aspect {
    /// The event type prefix of status events of this aspect.
    pub fn family(self) -> &'static str {
        match self {
            Self::Import => "video_asset.import",
            Self::Analysis => "video_asset.analysis",
            Self::Upload => "search_image.upload",
            Self::Listing => "project.asset",
            Self::Encode => "vod.encode",
        }
    }

    /// Whether `status` ends the item's life for this aspect (SPEC §1).
    pub fn is_terminal(self, status: &str) -> bool {
        let terminal: &[&str] = match self {
            Self::Import => &["COMPLETED", "FAILED", "FILE_NOT_EXIST", "INVALID_METADATA"],
            Self::Analysis => &["ANALYZE_COMPLETED", "ANALYZE_FAIL", "ANALYZE_CANCEL"],
            Self::Upload => &["COMPLETED", "FAILED"],
            // Being listed is a fact that never changes back.
            Self::Listing => return true,
            Self::Encode => &["COMPLETE", "FAILURE", "CANCELED"],
        };
        terminal.contains(&status)
    }

    /// A stable name for storage and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Import => "import",
            Self::Analysis => "analysis",
            Self::Upload => "upload",
            Self::Listing => "listing",
            Self::Encode => "encode",
        }
    }
}

/// The status that a listed asset is given: being listed.
pub const LISTED: &str = "LISTED";

/// One reading of one status of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// What was read.
    pub resource: Resource,
    /// Which of its statuses.
    pub aspect: Aspect,
    /// The API's status value, verbatim (an unknown value is a new non-terminal state).
    pub status: String,
    /// Encode progress in percent, when the API gave it.
    pub percent: Option<f64>,
    /// When the API says this status was reached (VOD `lastWorkTime`), epoch milliseconds.
    pub changed_at_ms: Option<i64>,
    /// Whether the API says the file is not in Object Storage yet (a search image's
    /// FAILED + FILE_NOT_EXIST), which is not final while the watch is young.
    pub awaiting_file: bool,
    /// The API's own fields besides identity and status, for the event's `detail`.
    pub detail: serde_json::Value,
}

impl Observation {
    /// Whether the observed status is terminal.
    pub fn terminal(&self) -> bool {
        self.aspect.is_terminal(&self.status)
    }
}

/// `<status>` of an event type: the API value lowercased, with anything but letters,
/// digits and `_` turned into `_` so an odd value cannot break type globs.
pub fn status_token(status: &str) -> String {
    status
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_spec_table() {
        let v = Resource::VideoAsset {
            workspace: "ws".into(),
            project_id: "1234".into(),
            asset_id: "5678".into(),
        };
        assert_eq!(v.subject().as_str(), "workspaces/ws/projects/1234/video-assets/5678");
        let p = Resource::ProjectAsset {
            workspace: "ws".into(),
            project_id: "1".into(),
            asset_id: "2".into(),
        };
        assert_eq!(p.subject().as_str(), "workspaces/ws/projects/1/assets/2");
        let s = Resource::SearchImage {
            asset_key: "images/a.jpg".into(),
        };
        assert_eq!(s.subject().as_str(), "query-assets/images/a.jpg");
        let e = Resource::VodEncode {
            category_id: "10019".into(),
            category_name: Some("test2".into()),
            file_path: "a/b.mp4".into(),
            output_type: "auto".into(),
        };
        assert_eq!(
            e.subject().as_str(),
            "vodstation/categories/10019/files/a/b.mp4/outputs/auto"
        );
    }

    #[test]
    fn terminal_states_are_those_of_the_spec() {
        for s in ["COMPLETED", "FAILED", "FILE_NOT_EXIST", "INVALID_METADATA"] {
            assert!(Aspect::Import.is_terminal(s));
        }
        assert!(!Aspect::Import.is_terminal("IN_PROGRESS"));
        assert!(!Aspect::Import.is_terminal("SOMETHING_NEW"));
        assert!(Aspect::Encode.is_terminal("CANCELED"));
        assert!(!Aspect::Encode.is_terminal("RUNNING"));
        assert!(!Aspect::Encode.is_terminal("COMPLETED"));
        assert!(Aspect::Upload.is_terminal("FAILED"));
        assert!(Aspect::Analysis.is_terminal("ANALYZE_CANCEL"));
        assert!(!Aspect::Analysis.is_terminal("ANALYZING"));
    }

    #[test]
    fn status_tokens_are_lowercase_and_glob_safe() {
        assert_eq!(status_token("FILE_NOT_EXIST"), "file_not_exist");
        assert_eq!(status_token("Odd Value.*"), "odd_value__");
    }
}
