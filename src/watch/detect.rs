//! The change detector: a pure function from what was seen and what is observed now to
//! the changes worth an event. It cannot fail and does no I/O.

use super::{Aspect, Observation};

/// What was last recorded of an item.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The last status.
    pub status: String,
    /// The last percent, for encodes.
    pub percent: Option<f64>,
}

/// Why an event is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The status changed, or the item was seen for the first time.
    Status,
    /// A running encode's percent crossed a multiple of the progress step.
    Progress,
    /// An asset appeared in a watched project's list.
    Discovered,
}

/// One change, ready to become one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Why.
    pub kind: ChangeKind,
    /// The status before, `None` on first sight.
    pub previous: Option<String>,
    /// The observation that caused it.
    pub observation: Observation,
}

impl Change {
    /// The CloudEvents `type` of this change.
    pub fn event_type(&self) -> String {
        match self.kind {
            ChangeKind::Discovered => "project.asset.discovered".to_string(),
            ChangeKind::Progress => "vod.encode.progress".to_string(),
            ChangeKind::Status => format!(
                "{}.{}",
                self.observation.aspect.family(),
                super::status_token(&self.observation.status)
            ),
        }
    }
}

/// The changes between `previous` and `observed`; `progress_step` is the encode percent
/// step (0 = no progress events).
pub fn detect(previous: Option<&Seen>, observed: &Observation, progress_step: u8) -> Vec<Change> {
    let change = |kind, previous: Option<String>| Change {
        kind,
        previous,
        observation: observed.clone(),
    };
    if observed.aspect == Aspect::Listing {
        return match previous {
            None => vec![change(ChangeKind::Discovered, None)],
            Some(_) => Vec::new(),
        };
    }
    let Some(previous) = previous else {
        return vec![change(ChangeKind::Status, None)];
    };
    if previous.status != observed.status {
        return vec![change(ChangeKind::Status, Some(previous.status.clone()))];
    }
    if observed.aspect == Aspect::Encode && progress_step > 0 && !observed.terminal() {
        let bucket = |p: Option<f64>| p.map(|p| (p / f64::from(progress_step)).floor() as i64);
        if let (Some(before), Some(now)) = (bucket(previous.percent), bucket(observed.percent))
            && now > before
        {
            return vec![change(ChangeKind::Progress, Some(previous.status.clone()))];
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::Resource;

    fn obs(aspect: Aspect, status: &str, percent: Option<f64>) -> Observation {
        Observation {
            resource: Resource::SearchImage { asset_key: "k".into() },
            aspect,
            status: status.into(),
            percent,
            changed_at_ms: None,
            awaiting_file: false,
            detail: serde_json::Value::Null,
        }
    }

    /// One row: what was seen, what is observed, the step, and the expected
    /// (event type, previous) pairs.
    fn check(seen: Option<(&str, Option<f64>)>, now: Observation, step: u8, expected: &[(&str, Option<&str>)]) {
        let seen = seen.map(|(s, p)| Seen {
            status: s.into(),
            percent: p,
        });
        let got: Vec<(String, Option<String>)> = detect(seen.as_ref(), &now, step)
            .into_iter()
            .map(|c| (c.event_type(), c.previous))
            .collect();
        let want: Vec<(String, Option<String>)> = expected
            .iter()
            .map(|(t, p)| (t.to_string(), p.map(str::to_string)))
            .collect();
        assert_eq!(got, want, "seen {seen:?}, observed {} {:?}", now.status, now.percent);
    }

    #[test]
    fn first_sight_is_a_change_from_nothing() {
        check(
            None,
            obs(Aspect::Import, "IN_PROGRESS", None),
            0,
            &[("video_asset.import.in_progress", None)],
        );
        check(
            None,
            obs(Aspect::Upload, "COMPLETED", None),
            0,
            &[("search_image.upload.completed", None)],
        );
        check(
            None,
            obs(Aspect::Encode, "RUNNING", Some(60.0)),
            25,
            &[("vod.encode.running", None)],
        );
    }

    #[test]
    fn a_status_change_names_the_previous_status() {
        check(
            Some(("IN_PROGRESS", None)),
            obs(Aspect::Import, "COMPLETED", None),
            0,
            &[("video_asset.import.completed", Some("IN_PROGRESS"))],
        );
        check(
            Some(("RUNNING", Some(90.0))),
            obs(Aspect::Encode, "COMPLETE", Some(100.0)),
            25,
            &[("vod.encode.complete", Some("RUNNING"))],
        );
        check(
            Some(("WAIT_ANALYZE", None)),
            obs(Aspect::Analysis, "ANALYZING", None),
            0,
            &[("video_asset.analysis.analyzing", Some("WAIT_ANALYZE"))],
        );
    }

    #[test]
    fn the_same_status_again_is_no_change() {
        check(
            Some(("IN_PROGRESS", None)),
            obs(Aspect::Import, "IN_PROGRESS", None),
            0,
            &[],
        );
        check(
            Some(("RUNNING", Some(10.0))),
            obs(Aspect::Encode, "RUNNING", Some(20.0)),
            25,
            &[],
        );
        check(
            Some(("RUNNING", Some(10.0))),
            obs(Aspect::Encode, "RUNNING", Some(90.0)),
            0,
            &[],
        );
    }

    #[test]
    fn progress_fires_once_per_crossed_step_even_when_several_are_crossed() {
        check(
            Some(("RUNNING", Some(20.0))),
            obs(Aspect::Encode, "RUNNING", Some(25.0)),
            25,
            &[("vod.encode.progress", Some("RUNNING"))],
        );
        check(
            Some(("RUNNING", Some(20.0))),
            obs(Aspect::Encode, "RUNNING", Some(80.0)),
            25,
            &[("vod.encode.progress", Some("RUNNING"))],
        );
        check(
            Some(("RUNNING", Some(50.0))),
            obs(Aspect::Encode, "RUNNING", Some(40.0)),
            25,
            &[],
        );
        check(
            Some(("RUNNING", None)),
            obs(Aspect::Encode, "RUNNING", Some(40.0)),
            25,
            &[],
        );
    }

    #[test]
    fn an_unknown_status_is_a_new_state_not_an_error() {
        let now = obs(Aspect::Import, "QUEUED_FOR_RETRY", None);
        assert!(!now.terminal());
        check(
            Some(("IN_PROGRESS", None)),
            now,
            0,
            &[("video_asset.import.queued_for_retry", Some("IN_PROGRESS"))],
        );
    }

    #[test]
    fn a_listed_asset_is_discovered_once() {
        check(
            None,
            obs(Aspect::Listing, "LISTED", None),
            0,
            &[("project.asset.discovered", None)],
        );
        check(Some(("LISTED", None)), obs(Aspect::Listing, "LISTED", None), 0, &[]);
    }

    fn any_aspect() -> impl proptest::strategy::Strategy<Value = Aspect> {
        proptest::prop_oneof![
            proptest::strategy::Just(Aspect::Import),
            proptest::strategy::Just(Aspect::Analysis),
            proptest::strategy::Just(Aspect::Upload),
            proptest::strategy::Just(Aspect::Listing),
            proptest::strategy::Just(Aspect::Encode),
        ]
    }

    proptest::proptest! {
        /// `detect` never panics, gives at most one change, a first sight always gives
        /// one, the same observation twice gives none the second time, and `previous` is
        /// what was seen.
        #[test]
        fn detect_is_total_and_keeps_its_promises(
            aspect in any_aspect(),
            before in proptest::option::of(("[A-Z_]{0,12}", proptest::option::of(-1e9f64..1e9))),
            status in "[A-Z_]{0,12}|\\PC{0,20}",
            percent in proptest::option::of(proptest::num::f64::ANY),
            step in 0u8..=100,
        ) {
            let now = obs(aspect, &status, percent);
            let seen = before.map(|(s, p)| Seen { status: s, percent: p });
            let changes = detect(seen.as_ref(), &now, step);
            proptest::prop_assert!(changes.len() <= 1);
            match &seen {
                None => proptest::prop_assert_eq!(changes.len(), 1),
                Some(s) => {
                    for c in &changes {
                        proptest::prop_assert_eq!(c.previous.as_deref(), Some(s.status.as_str()));
                    }
                    if s.status != now.status && aspect != Aspect::Listing {
                        proptest::prop_assert_eq!(changes.len(), 1);
                    }
                }
            }
            let again = Seen { status: now.status.clone(), percent: now.percent };
            proptest::prop_assert!(detect(Some(&again), &now, step).is_empty());
            for c in &changes {
                let t = c.event_type();
                proptest::prop_assert!(t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'), "{}", t);
            }
        }
    }
}
