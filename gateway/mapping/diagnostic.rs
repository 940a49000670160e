//! Problems in mapping files, reported the way ops read them: `file:line:col: message`, then the
//! source line with a caret under the spot and a hint when one helps.

use std::fmt;

/// One problem in a file, shown as `file:line:col: message` (`file:line:col: warning: message` for a
/// warning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// 1-based; 0 when the problem is about the file as a whole (e.g. it cannot be read).
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
    pub message: String,
    pub hint: Option<String>,
    /// How many characters the caret underlines (at least 1).
    pub width: u32,
    /// The text of `line`, for [`Diagnostic::render`]; filled by the parser.
    pub source_line: Option<String>,
}

/// An error keeps the file from loading; a warning is something that loads and works but is likely
/// not what the author meant (a table nothing uses, a rule no event reaches), or leaves out what the
/// sender needs (dedup where it retries with an id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Severity {
    #[default]
    Error,
    Warning,
}

/// Where something is written, kept past parsing for a diagnostic found later (a rule that no
/// embedded test reaches is known only once `check` has run the tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Site {
    pub line: u32,
    pub column: u32,
    pub width: u32,
    pub source_line: Option<String>,
}

impl Site {
    pub fn warning(&self, file: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        let mut d = Diagnostic::new(file, self.line, self.column, message).with_width(self.width);
        d.source_line = self.source_line.clone();
        d.severity = Severity::Warning;
        d
    }
}

impl Diagnostic {
    pub fn new(
        file: impl Into<String>,
        line: u32,
        column: u32,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            file: file.into(),
            line,
            column,
            message: message.into(),
            hint: None,
            width: 1,
            source_line: None,
        }
    }

    /// Add a hint (`did you mean ...?`, what was expected, ...).
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Underline `width` characters instead of one.
    pub fn with_width(mut self, width: u32) -> Self {
        self.width = width.max(1);
        self
    }

    /// Attach the offending line from the file's text, so `render` can show it. For one diagnostic; a
    /// parser reporting many uses [`LineIndex`], since finding a line this way reads the text up to it.
    pub fn with_source(self, text: &str) -> Self {
        let line = text.lines().nth((self.line as usize).wrapping_sub(1));
        self.with_source_line(line)
    }

    fn with_source_line(mut self, line: Option<&str>) -> Self {
        if self.line > 0 {
            self.source_line = line.map(|l| l.trim_end_matches('\r').to_owned());
        }
        self
    }

    /// Star out `width` characters of the excerpt from `column` (1-based), keeping the caret's place: for
    /// a value that must not be printed (a literal secret), whatever the problem is about.
    pub fn conceal(&mut self, column: u32, width: u32) {
        if let Some(line) = &mut self.source_line {
            let from = column.max(1) as usize - 1;
            let to = from.saturating_add(width as usize);
            *line = line
                .chars()
                .enumerate()
                .map(|(i, c)| if (from..to).contains(&i) { '*' } else { c })
                .collect();
        }
    }

    /// [`Diagnostic::with_source`] through an index of the text's lines.
    pub fn with_source_in(self, index: &LineIndex<'_>) -> Self {
        let line = index.line(self.line);
        self.with_source_line(line)
    }

    /// The full report: the `file:line:col: message` line, the source line with a caret under the
    /// column, and the hint.
    pub fn render(&self) -> String {
        let mut out = self.to_string();
        if let Some(src) = &self.source_line {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            // Tabs are shown as one space so the caret lines up with the column (counted in chars).
            let shown: String = src
                .chars()
                .map(|c| if c == '\t' { ' ' } else { c })
                .collect();
            let col = self.column.max(1) as usize - 1;
            let avail = shown.chars().count().saturating_sub(col).max(1);
            let width = (self.width as usize).min(avail).max(1);
            out.push_str(&format!(
                "\n{pad} |\n{num} | {shown}\n{pad} | {}{}",
                " ".repeat(col),
                "^".repeat(width)
            ));
        }
        if let Some(h) = &self.hint {
            out.push_str(&format!("\n  = hint: {h}"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(
            f,
            "{}:{}:{}: {severity}{}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// The closest candidate to `word`, if it is close enough to be the intended one.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lower, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The hint for an unknown name: the likely one, the known names containing it (`properties` →
/// `contact_properties` or `event_properties`), or the whole list.
pub(crate) fn suggest(word: &str, known: &[&str]) -> String {
    if let Some(c) = did_you_mean(word, known.iter().copied()) {
        return format!("did you mean `{c}`?");
    }
    let containing: Vec<String> = known
        .iter()
        .filter(|k| word.len() >= 4 && k.contains(word))
        .map(|k| format!("`{k}`"))
        .collect();
    if containing.is_empty() {
        format!("expected one of: {}", known.join(", "))
    } else {
        format!("did you mean {}?", containing.join(" or "))
    }
}

/// Sorts diagnostics by file, line and column (the order ops read them in).
pub(crate) fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
}

/// Where each line of a text starts, found once: a file with thousands of problems would otherwise
/// read its text from the top for each one (a 100,000-line file took 70 s to check).
pub struct LineIndex<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub fn new(text: &'t str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    /// Line `n` (1-based) without its line break, as `str::lines` gives it; `None` past the end.
    pub fn line(&self, n: u32) -> Option<&'t str> {
        let start = *self.starts.get((n as usize).checked_sub(1)?)?;
        if start == self.text.len() {
            return None; // an empty text, or after a final newline: `lines` gives no line there
        }
        let end = self
            .starts
            .get(n as usize)
            .map_or(self.text.len(), |next| next - 1);
        Some(&self.text[start..end])
    }
}

#[cfg(test)]
mod line_index_tests {
    use super::LineIndex;

    /// The index gives each line exactly as `str::lines` does (CRLF's `\r` is trimmed by the caller).
    #[test]
    fn lines_as_str_lines_gives_them() {
        for text in [
            "",
            "a",
            "a\n",
            "a\nb",
            "a\n\nb\n",
            "\n",
            "x\r\ny\r\n",
            "é\n💡\nz",
        ] {
            let index = LineIndex::new(text);
            let want: Vec<&str> = text.lines().collect();
            let got: Vec<&str> = (1..=want.len() as u32 + 2)
                .map_while(|n| index.line(n))
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .collect();
            assert_eq!(got, want, "{text:?}");
            assert_eq!(index.line(0), None);
        }
    }
}
