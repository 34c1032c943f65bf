//! Configuration diagnostics: what is wrong, at which key, on which line.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// At most this many problems are reported from one file. A file with more is usually
/// not a config file at all (or one mistake repeated), and fifty lines are already more
/// than anyone reads; past it the report says that there are more.
pub const MAX_PROBLEMS: usize = 50;

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

/// The first problems found in one file (at most [`MAX_PROBLEMS`]), rendered as
/// `file:line:col: key: message` lines.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The file the problems are in.
    pub file: PathBuf,
    /// The problems, in file order.
    pub items: Vec<Diagnostic>,
    /// Whether more problems were found than `items` holds.
    pub truncated: bool,
}

/// What the report says when it stops at [`MAX_PROBLEMS`].
pub const MORE_PROBLEMS_NOTE: &str = "… and more; fix these first";

impl Diagnostics {
    /// Each problem as one `file:line:col: error: key: message` line (the compilers' form,
    /// which editors and CI annotators jump to).
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.items.iter().map(|d| {
            let key = if d.key.is_empty() {
                String::new()
            } else {
                format!("{}: ", d.key)
            };
            format!(
                "{}:{}:{}: error: {key}{}",
                self.file.display(),
                d.line,
                d.column,
                d.message
            )
        })
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(&line)?;
        }
        if self.truncated {
            write!(f, "\n{MORE_PROBLEMS_NOTE}")?;
        }
        Ok(())
    }
}

/// Collects problems by byte span while the file is read and validated.
///
/// It keeps only the [`MAX_PROBLEMS`] earliest in the file (and counts the rest), so a
/// file with a million mistakes costs as little memory as one with fifty.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    found: Vec<(Range<usize>, String, String)>,
    /// How many problems were pushed, kept or not.
    total: usize,
    /// Keys already reported, so that a key whose value had the wrong type is not also
    /// reported as missing.
    reported: HashSet<String>,
}

impl Collector {
    /// Records a problem at `span` for `key`.
    ///
    /// Control characters in the key or message (a quoted TOML key or an echoed value may
    /// hold a newline) are escaped, so every problem stays on its one line.
    pub fn push(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        self.total += 1;
        if !self.reported.contains(&key) {
            self.reported.insert(key.clone());
        }
        self.found.push((span, one_line(&key), one_line(&message.into())));
        // Trimming in batches keeps pushes amortised O(log n) while memory stays bounded.
        if self.found.len() >= 2 * MAX_PROBLEMS {
            self.keep_earliest();
        }
    }

    /// Whether a problem was already recorded for `key`.
    pub fn reported(&self, key: &str) -> bool {
        self.reported.contains(key)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Whether enough problems were recorded that further ones will not be shown; callers
    /// can skip work whose only result would be more problems.
    pub fn is_full(&self) -> bool {
        self.total > MAX_PROBLEMS
    }

    /// Sorts by position (stably, so problems at one place keep their order) and drops all
    /// but the earliest [`MAX_PROBLEMS`].
    fn keep_earliest(&mut self) {
        self.found.sort_by_key(|(span, _, _)| span.start);
        self.found.truncate(MAX_PROBLEMS);
    }

    /// Turns the spans into lines and columns of `source`, in one pass over it.
    pub fn finish(mut self, file: &Path, source: &str) -> Diagnostics {
        self.keep_earliest();
        let index = LineIndex::new(source);
        let items = self
            .found
            .into_iter()
            .map(|(span, key, message)| {
                let (line, column) = index.line_column(span.start);
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
            truncated: self.total > MAX_PROBLEMS,
        }
    }
}

/// `text` with every control character written as its escape (`\n`, `\u{1b}`).
fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Where each line of a source starts, found in one pass, so that locating a problem is a
/// binary search plus a walk along its own line rather than a rescan of the whole file.
pub(crate) struct LineIndex<'s> {
    source: &'s str,
    /// Byte offset of the start of each line; the first is 0.
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    /// Indexes `source`.
    pub fn new(source: &'s str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { source, starts }
    }

    /// The 1-based line and character column of byte `offset`.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.source.len());
        // A span inside a multi-byte character counts from the character's start.
        while !self.source.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = self.source[start..offset].chars().count() + 1;
        (line, column)
    }
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
        let index = LineIndex::new(src);
        let line_column = |offset| index.line_column(offset);
        assert_eq!(line_column(0), (1, 1));
        assert_eq!(line_column(6), (2, 1));
        assert_eq!(line_column(src.find('=').unwrap()), (1, 3));
        let second_eq = src.rfind('=').unwrap();
        assert_eq!(line_column(second_eq), (2, 4));
        assert_eq!(line_column(src.len()), (3, 1), "the end of a file ending in a newline");
        assert_eq!(line_column(8), (2, 2), "inside é counts from its start");
        assert_eq!(line_column(usize::MAX), (3, 1));
    }

    #[test]
    fn only_the_earliest_problems_are_kept_and_the_rest_are_counted() {
        let mut c = Collector::default();
        for i in (0..1000).rev() {
            c.push(i..i + 1, format!("k{i}"), "bad");
        }
        assert!(c.reported("k999"), "every key counts as reported, kept or not");
        let d = c.finish(Path::new("f.toml"), &"x\n".repeat(1000));
        assert_eq!(d.items.len(), MAX_PROBLEMS);
        assert!(d.truncated);
        assert_eq!(d.items[0].key, "k0");
        assert_eq!(d.items[MAX_PROBLEMS - 1].key, format!("k{}", MAX_PROBLEMS - 1));
        assert!(d.to_string().ends_with(MORE_PROBLEMS_NOTE));
    }

    #[test]
    fn a_problem_stays_on_one_line_whatever_its_key_or_value_holds() {
        let mut c = Collector::default();
        c.push(0..1, "a\nb", "`x\ny\u{1b}` is not valid");
        let d = c.finish(Path::new("f.toml"), "x");
        assert_eq!(d.to_string(), "f.toml:1:1: error: a\\nb: `x\\ny\\u{1b}` is not valid");
        assert!(!d.truncated);
    }

    #[test]
    fn nearest_suggests_a_close_key_and_nothing_for_noise() {
        let keys = ["rate_limit_per_minute", "max_in_flight", "timeout"];
        assert_eq!(nearest("rate_limt_per_minute", keys), Some("rate_limit_per_minute"));
        assert_eq!(nearest("timeot", keys), Some("timeout"));
        assert_eq!(nearest("zzzz", keys), None);
    }
}
