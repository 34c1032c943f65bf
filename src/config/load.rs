//! Reading the TOML document into [`RawConfig`], section by section.
//!
//! serde stops at the first error, which would show an operator one mistake per run. This
//! loader parses the document into a spanned tree first, then checks each table's keys
//! against the fields of its raw struct (an unknown key is reported with the nearest valid
//! key) and deserializes each table on its own, dropping a key whose value has the wrong
//! type and trying again, so that every mistake in the file is reported in one run.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diag::{Collector, nearest};
use super::fields::field_names;
use super::raw::*;

/// Top-level keys and tables.
const TOP_KEYS: &[&str] = &[
    "instance",
    "credentials",
    "api",
    "poll",
    "watch",
    "sink",
    "state",
    "server",
    "cluster",
    "callbacks",
    "log",
];
/// Tables under `[watch]`, each an array of tables.
const WATCH_KINDS: &[&str] = &["video_asset", "project", "search_image", "vod"];
/// Tables under `[sink]`, each an array of tables.
const SINK_KINDS: &[&str] = &["webhook", "log"];

/// Parses `source` into raw sections, recording every problem in `diags`; `None` when the
/// TOML syntax itself is broken (then only the syntax errors are reported, since checks on
/// a half-parsed file would mislead).
pub(crate) fn parse(source: &str, diags: &mut Collector) -> Option<RawConfig> {
    let (root, errors) = DeTable::parse_recoverable(source);
    if !errors.is_empty() {
        for e in errors {
            if diags.is_full() {
                break;
            }
            diags.push(e.span().unwrap_or(0..0), "", syntax_message(e.message()));
        }
        return None;
    }
    let mut raw = RawConfig::default();
    for (key, value) in root.into_inner() {
        let name = key.get_ref().as_ref();
        match name {
            "instance" => raw.instance = scalar(diags, "instance", value),
            "credentials" => raw.credentials = table(diags, "credentials", value).unwrap_or_default(),
            "api" => raw.api = table(diags, "api", value).unwrap_or_default(),
            "poll" => raw.poll = table(diags, "poll", value).unwrap_or_default(),
            "state" => raw.state = table(diags, "state", value).unwrap_or_default(),
            "server" => raw.server = table(diags, "server", value).unwrap_or_default(),
            "cluster" => raw.cluster = table(diags, "cluster", value).unwrap_or_default(),
            "log" => raw.log = table(diags, "log", value).unwrap_or_default(),
            "callbacks" => {
                let span = value.span();
                raw.callbacks = table(diags, "callbacks", value).map(|t| Spanned::new(span, t));
            }
            "watch" => {
                for (kind, list) in group(diags, "watch", WATCH_KINDS, value) {
                    let path = format!("watch.{kind}");
                    match kind.as_str() {
                        "video_asset" => raw.video_assets = array_of_tables(diags, &path, list),
                        "project" => raw.projects = array_of_tables(diags, &path, list),
                        "search_image" => raw.search_images = array_of_tables(diags, &path, list),
                        _ => raw.vods = array_of_tables(diags, &path, list),
                    }
                }
            }
            "sink" => {
                for (kind, list) in group(diags, "sink", SINK_KINDS, value) {
                    let path = format!("sink.{kind}");
                    match kind.as_str() {
                        "webhook" => raw.webhooks = array_of_tables(diags, &path, list),
                        _ => raw.logs = array_of_tables(diags, &path, list),
                    }
                }
            }
            other => unknown_key(diags, key.span(), "", other, TOP_KEYS),
        }
    }
    Some(raw)
}

/// toml's messages are multi-line; keep the first line, which says what is wrong.
fn syntax_message(message: &str) -> String {
    let first = message.lines().next().unwrap_or("invalid TOML").trim();
    format!("invalid TOML: {first}")
}

fn unknown_key(diags: &mut Collector, span: Range<usize>, parent: &str, key: &str, valid: &[&str]) {
    let path = join(parent, key);
    let place = if parent.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{parent}]")
    };
    let message = match nearest(key, valid.iter().copied()) {
        Some(near) => format!("unknown key `{key}` {place}; did you mean `{near}`?"),
        None => format!("unknown key `{key}` {place}; valid keys are {}", list(valid)),
    };
    diags.push(span, path, message);
}

fn list(keys: &[&str]) -> String {
    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A top-level scalar such as `instance`.
fn scalar<T: DeserializeOwned>(diags: &mut Collector, path: &str, value: Spanned<DeValue<'_>>) -> Option<Spanned<T>> {
    let span = value.span();
    match Spanned::<T>::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            diags.push(e.span().unwrap_or(span), path, e.message().to_string());
            None
        }
    }
}

/// The entries of a grouping table such as `[watch]`, with unknown entries reported.
fn group<'i>(
    diags: &mut Collector,
    path: &str,
    valid: &[&str],
    value: Spanned<DeValue<'i>>,
) -> Vec<(String, Spanned<DeValue<'i>>)> {
    let span = value.span();
    let DeValue::Table(entries) = value.into_inner() else {
        diags.push(span, path, format!("expected tables such as [[{path}.{}]]", valid[0]));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in entries {
        let name = key.get_ref().to_string();
        if valid.contains(&name.as_str()) {
            out.push((name, value));
        } else {
            unknown_key(diags, key.span(), path, &name, valid);
        }
    }
    out
}

/// An array of tables such as `[[watch.vod]]`, each element read on its own.
fn array_of_tables<T: DeserializeOwned>(
    diags: &mut Collector,
    path: &str,
    value: Spanned<DeValue<'_>>,
) -> Vec<Spanned<T>> {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        diags.push(
            span,
            path,
            format!("expected an array of tables: write [[{path}]] with double brackets"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let span = item.span();
        if let Some(t) = table::<T>(diags, &format!("{path}[{i}]"), item) {
            out.push(Spanned::new(span, t));
        }
    }
    out
}

/// One table read into its raw struct: unknown keys reported and dropped, and every key
/// whose value fails to deserialize reported and dropped, so the rest still loads.
fn table<T: DeserializeOwned>(diags: &mut Collector, path: &str, value: Spanned<DeValue<'_>>) -> Option<T> {
    let span = value.span();
    let DeValue::Table(mut entries) = value.into_inner() else {
        diags.push(span, path, format!("expected a table: write [{path}]"));
        return None;
    };
    let fields = field_names::<T>();
    let unknown: Vec<(String, Range<usize>)> = entries
        .keys()
        .filter(|k| !fields.contains(&k.get_ref().as_ref()))
        .map(|k| (k.get_ref().to_string(), k.span()))
        .collect();
    for (key, key_span) in &unknown {
        unknown_key(diags, key_span.clone(), path, key, fields);
    }
    // One pass: removing unknown keys one at a time would shift the rest of the table
    // each time, quadratic in a table of ten thousand unknown keys.
    if !unknown.is_empty() {
        entries = std::mem::take(&mut entries)
            .into_iter()
            .filter(|(k, _)| fields.contains(&k.get_ref().as_ref()))
            .collect();
    }
    // Each failed attempt removes one key, so this ends after at most one pass per key.
    loop {
        let candidate = Spanned::new(span.clone(), DeValue::Table(entries.clone()));
        match T::deserialize(ValueDeserializer::from(candidate)) {
            Ok(t) => return Some(t),
            Err(e) => {
                let at = e.span().unwrap_or(span.clone());
                let culprit = entries
                    .iter()
                    .find(|(k, v)| v.span().start <= at.start && at.end <= v.span().end || k.span() == at)
                    .map(|(k, _)| k.get_ref().to_string());
                match culprit {
                    Some(key) => {
                        diags.push(at, join(path, &key), type_message(e.message()));
                        entries.remove(key.as_str());
                    }
                    None => {
                        diags.push(at, path, type_message(e.message()));
                        return None;
                    }
                }
            }
        }
    }
}

/// serde's messages say "invalid type: string \"x\", expected i64"; say it for a person.
fn type_message(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    let friendly = first
        .replace("expected i64", "expected an integer")
        .replace("expected a boolean", "expected true or false")
        .replace("expected a string", "expected a quoted string");
    if friendly.starts_with("data did not match any variant of untagged enum IdOrName") {
        "expected an id: a quoted string or an integer".to_string()
    } else {
        friendly
    }
}

use serde::Deserialize as _;
