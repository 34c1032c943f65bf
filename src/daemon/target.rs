//! What the daemon keeps state for, and how each is polled.

use std::sync::Arc;

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
        workspace: Arc<str>,
        /// Project id.
        project_id: Arc<str>,
        /// Asset id.
        asset_id: Arc<str>,
        /// Whether to watch the analysis once imported.
        analysis: bool,
    },
    /// A video asset's analysis status.
    Analysis {
        /// Workspace.
        workspace: Arc<str>,
        /// Project id.
        project_id: Arc<str>,
        /// Asset id.
        asset_id: Arc<str>,
    },
    /// A search image's upload status.
    SearchImage {
        /// Object key.
        asset_key: Arc<str>,
    },
    /// A project's asset list (discovery).
    ProjectList {
        /// Workspace.
        workspace: Arc<str>,
        /// Project id.
        project_id: Arc<str>,
        /// Whether discovered assets get their analysis watched.
        analysis: bool,
    },
    /// VOD Station's status list (discovery and encode states).
    VodList,
    /// An asset's presence in its project's list (fed by `ProjectList`).
    Listing {
        /// Workspace.
        workspace: Arc<str>,
        /// Project id.
        project_id: Arc<str>,
        /// Asset id.
        asset_id: Arc<str>,
    },
    /// The account whose key signs every call: its state is whether the gateway accepts
    /// the key (fed by every poll's answer, never polled on its own).
    Account {
        /// The first characters of the access key id, enough to tell keys apart.
        key_prefix: Arc<str>,
    },
    /// One encode output (fed by `VodList`). Boxed: it is the largest variant, and every
    /// item in memory would otherwise be its size.
    Encode(Box<EncodeOutput>),
}

/// An encode output: the item a VOD Station job's output type is followed as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeOutput {
    /// Category id.
    pub category_id: Arc<str>,
    /// Category name.
    pub category_name: Option<Arc<str>>,
    /// Input file.
    pub file_path: Arc<str>,
    /// Output type.
    pub output_type: Arc<str>,
}

impl Target {
    /// The event subject.
    #[allow(
        clippy::expect_used,
        reason = "each expect here states an invariant of our own types, never of input"
    )]
    pub fn subject(&self) -> String {
        match self {
            Self::ProjectList {
                workspace, project_id, ..
            } => format!("workspaces/{workspace}/projects/{project_id}"),
            Self::VodList => "vodstation".to_string(),
            Self::Account { key_prefix } => format!("accounts/{key_prefix}"),
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
                workspace: workspace.to_string(),
                project_id: project_id.to_string(),
                asset_id: asset_id.to_string(),
            },
            Self::Listing {
                workspace,
                project_id,
                asset_id,
            } => Resource::ProjectAsset {
                workspace: workspace.to_string(),
                project_id: project_id.to_string(),
                asset_id: asset_id.to_string(),
            },
            Self::SearchImage { asset_key } => Resource::SearchImage {
                asset_key: asset_key.to_string(),
            },
            Self::Encode(e) => Resource::VodEncode {
                category_id: e.category_id.to_string(),
                category_name: e.category_name.as_deref().map(str::to_string),
                file_path: e.file_path.to_string(),
                output_type: e.output_type.to_string(),
            },
            Self::ProjectList { .. } | Self::VodList | Self::Account { .. } => return None,
        })
    }

    /// The status aspect this item holds; `None` for list targets.
    pub fn aspect(&self) -> Option<Aspect> {
        match self {
            Self::Import { .. } => Some(Aspect::Import),
            Self::Analysis { .. } => Some(Aspect::Analysis),
            Self::SearchImage { .. } => Some(Aspect::Upload),
            Self::Listing { .. } => Some(Aspect::Listing),
            Self::Encode(_) => Some(Aspect::Encode),
            Self::ProjectList { .. } | Self::VodList | Self::Account { .. } => None,
        }
    }

    /// A short stable name of the kind, stored and shown by `status`.
    #[allow(
        clippy::expect_used,
        reason = "each expect here states an invariant of our own types, never of input"
    )]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ProjectList { .. } => "project_list",
            Self::VodList => "vod_list",
            Self::Account { .. } => "account",
            other => other.aspect().expect("state targets have an aspect").as_str(),
        }
    }

    /// The unique key of the item.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind(), self.subject())
    }

    /// Whether the scheduler polls it (list-fed states are not polled on their own).
    pub fn polled(&self) -> bool {
        !matches!(self, Self::Listing { .. } | Self::Encode(_) | Self::Account { .. })
    }

    /// Whether it is a discovery target (read every `discovery_interval`).
    pub fn is_list(&self) -> bool {
        matches!(self, Self::ProjectList { .. } | Self::VodList)
    }

    /// `data.resource` of `watch.failing` events about this item.
    #[allow(
        clippy::expect_used,
        reason = "each expect here states an invariant of our own types, never of input"
    )]
    pub fn resource_json(&self) -> Value {
        match self {
            Self::ProjectList {
                workspace, project_id, ..
            } => {
                json!({"kind": "project", "workspace": workspace, "project_id": project_id})
            }
            Self::VodList => json!({"kind": "vod_status_list"}),
            Self::Account { key_prefix } => json!({"kind": "account", "access_key_prefix": key_prefix}),
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
                workspace: v.workspace.as_str().into(),
                project_id: v.project_id.as_str().into(),
                asset_id: v.asset_id.as_str().into(),
                analysis: v.analysis,
            },
            watch: v.name.clone(),
        });
    }
    for p in &w.projects {
        out.push(Wanted {
            target: Target::ProjectList {
                workspace: p.workspace.as_str().into(),
                project_id: p.project_id.as_str().into(),
                analysis: p.analysis,
            },
            watch: p.name.clone(),
        });
    }
    for i in &w.search_images {
        out.push(Wanted {
            target: Target::SearchImage {
                asset_key: i.asset_key.as_str().into(),
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
        let t = Target::Encode(Box::new(EncodeOutput {
            category_id: "1".into(),
            category_name: None,
            file_path: "a/b.mp4".into(),
            output_type: "hls".into(),
        }));
        let text = serde_json::to_string(&t).unwrap();
        // The form stored before the variant was boxed, which stores still hold.
        assert_eq!(
            text,
            r#"{"t":"encode","category_id":"1","category_name":null,"file_path":"a/b.mp4","output_type":"hls"}"#
        );
        assert_eq!(serde_json::from_str::<Target>(&text).unwrap(), t);
    }
}

/// Shares one allocation among equal strings: workspaces, project ids, statuses and watch
/// names repeat across thousands of items.
#[derive(Debug, Default)]
pub struct Interner(std::collections::HashSet<Arc<str>>);

impl Interner {
    /// The shared copy of `s`.
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.0.get(s) {
            return found.clone();
        }
        let shared: Arc<str> = s.into();
        self.0.insert(shared.clone());
        shared
    }
}

impl Target {
    /// The same target with its repeated strings shared through `interner`.
    pub fn interned(self, i: &mut Interner) -> Self {
        match self {
            Self::Import {
                workspace,
                project_id,
                asset_id,
                analysis,
            } => Self::Import {
                workspace: i.get(&workspace),
                project_id: i.get(&project_id),
                asset_id,
                analysis,
            },
            Self::Analysis {
                workspace,
                project_id,
                asset_id,
            } => Self::Analysis {
                workspace: i.get(&workspace),
                project_id: i.get(&project_id),
                asset_id,
            },
            Self::ProjectList {
                workspace,
                project_id,
                analysis,
            } => Self::ProjectList {
                workspace: i.get(&workspace),
                project_id: i.get(&project_id),
                analysis,
            },
            Self::Listing {
                workspace,
                project_id,
                asset_id,
            } => Self::Listing {
                workspace: i.get(&workspace),
                project_id: i.get(&project_id),
                asset_id,
            },
            Self::Encode(e) => Self::Encode(Box::new(EncodeOutput {
                category_id: i.get(&e.category_id),
                category_name: e.category_name.as_deref().map(|n| i.get(n)),
                file_path: e.file_path,
                output_type: i.get(&e.output_type),
            })),
            other @ (Self::SearchImage { .. } | Self::VodList | Self::Account { .. }) => other,
        }
    }
}
