//! Configuration diagnostics: what is wrong, at which key, on which line.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file, located by line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// 1-based column (in characters) of the offending key or value.
    pub column: usize,
    /// Dotted key path, such as `watch.video_asset[0].asset_id`; empty for syntax errors.
    pub key: String,
    /// What is wrong and what to do, lowercase, no trailing period.
    pub message: String,
}

/// Every problem found in one file, rendered as `file:line:col: key: message` lines.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The file the problems are in.
    pub file: PathBuf,
    /// The problems, in file order.
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: ", self.file.display(), d.line, d.column)?;
            if !d.key.is_empty() {
                write!(f, "{}: ", d.key)?;
            }
            f.write_str(&d.message)?;
        }
        Ok(())
    }
}

/// Collects problems by byte span while the file is read and validated.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    found: Vec<(Range<usize>, String, String)>,
    /// Keys already reported, so that a key whose value had the wrong type is not also
    /// reported as missing.
    reported: HashSet<String>,
}

impl Collector {
    /// Records a problem at `span` for `key`.
    pub fn push(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        self.reported.insert(key.clone());
        self.found.push((span, key, message.into()));
    }

    /// Whether a problem was already recorded for `key`.
    pub fn reported(&self, key: &str) -> bool {
        self.reported.contains(key)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Turns the spans into lines and columns of `source`.
    pub fn finish(mut self, file: &Path, source: &str) -> Diagnostics {
        self.found.sort_by_key(|(span, _, _)| span.start);
        let items = self
            .found
            .into_iter()
            .map(|(span, key, message)| {
                let (line, column) = line_column(source, span.start);
                Diagnostic {
                    line,
                    column,
                    key,
                    message,
                }
            })
            .collect();
        Diagnostics {
            file: file.to_path_buf(),
            items,
        }
    }
}

/// The 1-based line and character column of byte `offset` in `source`.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub(crate) fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_from_one_in_characters() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 6), (2, 1));
        assert_eq!(line_column(src, src.find('=').unwrap()), (1, 3));
        let second_eq = src.rfind('=').unwrap();
        assert_eq!(line_column(src, second_eq), (2, 4));
    }

    #[test]
    fn nearest_suggests_a_close_key_and_nothing_for_noise() {
        let keys = ["rate_limit_per_minute", "max_in_flight", "timeout"];
        assert_eq!(nearest("rate_limt_per_minute", keys), Some("rate_limit_per_minute"));
        assert_eq!(nearest("timeot", keys), Some("timeout"));
        assert_eq!(nearest("zzzz", keys), None);
    }
}
