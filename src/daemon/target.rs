//! What the daemon keeps state for, and how each is polled.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Config;
use crate::watch::{Aspect, Resource};

/// One item: a target that is polled, or a state fed by a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Target {
    /// A video asset's import status; with `analysis`, its analysis follows once imported.
    Import {
        /// Workspace.
        workspace: String,
        /// Project id.
        project_id: String,
        /// Asset id.
        asset_id: String,
        /// Whether to watch the analysis once imported.
        analysis: bool,
    },
    /// A video asset's analysis status.
    Analysis {
        /// Workspace.
        workspace: String,
        /// Project id.
        project_id: String,
        /// Asset id.
        asset_id: String,
    },
    /// A search image's upload status.
    SearchImage {
        /// Object key.
        asset_key: String,
    },
    /// A project's asset list (discovery).
    ProjectList {
        /// Workspace.
        workspace: String,
        /// Project id.
        project_id: String,
        /// Whether discovered assets get their analysis watched.
        analysis: bool,
    },
    /// VOD Station's status list (discovery and encode states).
    VodList,
    /// An asset's presence in its project's list (fed by `ProjectList`).
    Listing {
        /// Workspace.
        workspace: String,
        /// Project id.
        project_id: String,
        /// Asset id.
        asset_id: String,
    },
    /// One encode output (fed by `VodList`).
    Encode {
        /// Category id.
        category_id: String,
        /// Category name.
        category_name: Option<String>,
        /// Input file.
        file_path: String,
        /// Output type.
        output_type: String,
    },
}

impl Target {
    /// The event subject.
    pub fn subject(&self) -> String {
        match self {
            Self::ProjectList {
                workspace, project_id, ..
            } => format!("workspaces/{workspace}/projects/{project_id}"),
            Self::VodList => "vodstation".to_string(),
            other => other
                .resource()
                .expect("state targets have a resource")
                .subject()
                .to_string(),
        }
    }

    /// The domain resource whose status this item holds; `None` for list targets.
    pub fn resource(&self) -> Option<Resource> {
        Some(match self {
            Self::Import {
                workspace,
                project_id,
                asset_id,
                ..
            }
            | Self::Analysis {
                workspace,
                project_id,
                asset_id,
            } => Resource::VideoAsset {
                workspace: workspace.clone(),
                project_id: project_id.clone(),
                asset_id: asset_id.clone(),
            },
            Self::Listing {
                workspace,
                project_id,
                asset_id,
            } => Resource::ProjectAsset {
                workspace: workspace.clone(),
                project_id: project_id.clone(),
                asset_id: asset_id.clone(),
            },
            Self::SearchImage { asset_key } => Resource::SearchImage {
                asset_key: asset_key.clone(),
            },
            Self::Encode {
                category_id,
                category_name,
                file_path,
                output_type,
            } => Resource::VodEncode {
                category_id: category_id.clone(),
                category_name: category_name.clone(),
                file_path: file_path.clone(),
                output_type: output_type.clone(),
            },
            Self::ProjectList { .. } | Self::VodList => return None,
        })
    }

    /// The status aspect this item holds; `None` for list targets.
    pub fn aspect(&self) -> Option<Aspect> {
        match self {
            Self::Import { .. } => Some(Aspect::Import),
            Self::Analysis { .. } => Some(Aspect::Analysis),
            Self::SearchImage { .. } => Some(Aspect::Upload),
            Self::Listing { .. } => Some(Aspect::Listing),
            Self::Encode { .. } => Some(Aspect::Encode),
            Self::ProjectList { .. } | Self::VodList => None,
        }
    }

    /// A short stable name of the kind, stored and shown by `status`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ProjectList { .. } => "project_list",
            Self::VodList => "vod_list",
            other => other.aspect().expect("state targets have an aspect").as_str(),
        }
    }

    /// The unique key of the item.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind(), self.subject())
    }

    /// Whether the scheduler polls it (list-fed states are not polled on their own).
    pub fn polled(&self) -> bool {
        !matches!(self, Self::Listing { .. } | Self::Encode { .. })
    }

    /// Whether it is a discovery target (read every `discovery_interval`).
    pub fn is_list(&self) -> bool {
        matches!(self, Self::ProjectList { .. } | Self::VodList)
    }

    /// `data.resource` of `watch.failing` events about this item.
    pub fn resource_json(&self) -> Value {
        match self {
            Self::ProjectList {
                workspace, project_id, ..
            } => {
                json!({"kind": "project", "workspace": workspace, "project_id": project_id})
            }
            Self::VodList => json!({"kind": "vod_status_list"}),
            other => crate::event::resource_json(&other.resource().expect("state targets have a resource")),
        }
    }
}

/// A target the configuration asks for, with the watch name it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The target.
    pub target: Target,
    /// The watch's name.
    pub watch: Option<String>,
}

/// Every polled target the configuration names directly.
pub fn from_config(config: &Config) -> Vec<Wanted> {
    let w = &config.watches;
    let mut out = Vec::new();
    for v in &w.video_assets {
        out.push(Wanted {
            target: Target::Import {
                workspace: v.workspace.clone(),
                project_id: v.project_id.clone(),
                asset_id: v.asset_id.clone(),
                analysis: v.analysis,
            },
            watch: v.name.clone(),
        });
    }
    for p in &w.projects {
        out.push(Wanted {
            target: Target::ProjectList {
                workspace: p.workspace.clone(),
                project_id: p.project_id.clone(),
                analysis: p.analysis,
            },
            watch: p.name.clone(),
        });
    }
    for i in &w.search_images {
        out.push(Wanted {
            target: Target::SearchImage {
                asset_key: i.asset_key.clone(),
            },
            watch: i.name.clone(),
        });
    }
    if !w.vods.is_empty() {
        out.push(Wanted {
            target: Target::VodList,
            watch: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_aspects_of_one_subject() {
        let import = Target::Import {
            workspace: "w".into(),
            project_id: "1".into(),
            asset_id: "2".into(),
            analysis: true,
        };
        let analysis = Target::Analysis {
            workspace: "w".into(),
            project_id: "1".into(),
            asset_id: "2".into(),
        };
        assert_eq!(import.subject(), analysis.subject());
        assert_eq!(import.key(), "import:workspaces/w/projects/1/video-assets/2");
        assert_eq!(analysis.key(), "analysis:workspaces/w/projects/1/video-assets/2");
        assert_eq!(Target::VodList.key(), "vod_list:vodstation");
    }

    #[test]
    fn targets_survive_their_stored_form() {
        let t = Target::Encode {
            category_id: "1".into(),
            category_name: None,
            file_path: "a/b.mp4".into(),
            output_type: "hls".into(),
        };
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Target>(&text).unwrap(), t);
    }
}
