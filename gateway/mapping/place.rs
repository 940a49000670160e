//! Where a character of a scalar's text is written in the file, so that a caret points into a path or a
//! template inside the scalar, on whichever line of it the character is: a quoted or plain scalar folds
//! its line breaks (a break is a space, blank lines are line feeds, the indentation around them is no
//! text), escapes take more columns than the character they stand for, and a block scalar (`|`, `>`)
//! drops its indentation. The parser gives the scalar's start only.

use super::yaml::Loc;

/// How the scalar is written, found from the text at and before its start.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    /// `|`: lines kept, each break a line feed.
    Literal,
    /// `>`: breaks between lines of text folded to spaces.
    Folded,
}

/// `(line, column)` of the character `offset` characters into the text of the scalar at `loc`; the
/// scalar's start, shifted by `offset` on its first line, when the text ends before it.
pub fn place_in<'t>(line: impl Fn(u32) -> Option<&'t str>, loc: Loc, offset: usize) -> (u32, u32) {
    let fallback = (loc.line, loc.column + u32::from(loc.quoted) + offset as u32);
    let Some(first) = line(loc.line) else {
        return fallback;
    };
    let start = (loc.column as usize).saturating_sub(1);
    // A block scalar is placed at its first line of text, which may start with a quote (`"Thanks," ...`):
    // its header decides first.
    let (style, header) = match block_style(&line, loc.line, first, start) {
        Some(found) => found,
        None => match first.chars().nth(start) {
            Some('"') if loc.quoted => (Style::Double, 0),
            Some('\'') if loc.quoted => (Style::Single, 0),
            _ => (Style::Plain, 0),
        },
    };
    let found = match style {
        Style::Literal | Style::Folded => block(&line, header + 1, start, style, offset),
        Style::Plain => {
            let end = span_end(&line, loc);
            flow(&line, loc.line, start, style, offset, end)
        }
        _ => flow(&line, loc.line, start + 1, style, offset, None),
    };
    found.unwrap_or(fallback)
}

/// A block scalar's content starts its line, under a line whose value is a block header (`|`, `>-`,
/// `|2`, an anchor or tag before it, a comment after it), blank lines between them. Gives the style
/// and the header's line.
fn block_style<'t>(
    line: &impl Fn(u32) -> Option<&'t str>,
    at: u32,
    first: &str,
    start: usize,
) -> Option<(Style, u32)> {
    if !first.chars().take(start).all(|c| c == ' ') {
        return None;
    }
    let mut n = at.checked_sub(1)?;
    let mut above = line(n)?;
    while above.trim().is_empty() {
        n = n.checked_sub(1)?;
        above = line(n)?;
    }
    let head = above.split(" #").next()?.trim_end();
    let indicators = head.trim_end_matches(|c: char| c.is_ascii_digit() || c == '+' || c == '-');
    let style = match indicators.chars().last()? {
        '|' => Style::Literal,
        '>' => Style::Folded,
        _ => return None,
    };
    // The indicator is the value, after `key:`, `- ` or at the start of the line, past any anchor
    // (`&name`) or tag (`!!str`).
    let mut before = indicators[..indicators.len() - 1].trim_end();
    while let Some((rest, last)) = before.rsplit_once(' ') {
        if !(last.starts_with('&') || last.starts_with('!')) {
            break;
        }
        before = rest.trim_end();
    }
    let valued = before.is_empty() || before.ends_with(':') || before.ends_with('-');
    valued.then_some((style, n))
}

/// Where a plain scalar ends, as `(line, characters before it)`: `loc.width` characters from its start,
/// a line break counting as one. Nothing else in the text marks its end.
fn span_end<'t>(line: &impl Fn(u32) -> Option<&'t str>, loc: Loc) -> Option<(u32, usize)> {
    let mut n = loc.line;
    let mut from = (loc.column as usize).saturating_sub(1);
    let mut remaining = loc.width as usize;
    loop {
        let len = line(n)?.chars().count();
        if from + remaining <= len {
            return Some((n, from + remaining));
        }
        remaining -= len.checked_sub(from)?.min(remaining) + 1;
        n += 1;
        from = 0;
    }
}

/// How many spaces and tabs a line starts with: the indentation a folded line break drops.
fn indentation(chars: &[char]) -> usize {
    chars
        .iter()
        .take_while(|c| **c == ' ' || **c == '\t')
        .count()
}

/// A line's characters without the carriage return of a CRLF file.
fn chars_of(text: &str) -> Vec<char> {
    text.strip_suffix('\r').unwrap_or(text).chars().collect()
}

/// A quoted or plain scalar: `skip` characters of its first line come before its text.
fn flow<'t>(
    line: &impl Fn(u32) -> Option<&'t str>,
    first: u32,
    skip: usize,
    style: Style,
    offset: usize,
    end: Option<(u32, usize)>,
) -> Option<(u32, u32)> {
    let mut n = first;
    let mut chars = chars_of(line(n)?);
    let mut i = skip;
    let mut produced = 0usize;
    loop {
        // A plain scalar's end: where its text ends, one past its last character.
        if end.is_some_and(|(l, c)| n > l || (n == l && i >= c)) {
            return (produced == offset).then_some((n, i as u32 + 1));
        }
        let rest_blank = chars[i.min(chars.len())..]
            .iter()
            .all(|c| *c == ' ' || *c == '\t');
        if i >= chars.len() || rest_blank {
            // A line break: the blank lines after it are line feeds; with none, it is one space.
            n += 1;
            chars = chars_of(line(n)?);
            let mut blanks = 0;
            while chars.iter().all(|c| *c == ' ' || *c == '\t') {
                if produced == offset {
                    return Some((n, 1));
                }
                produced += 1;
                blanks += 1;
                n += 1;
                chars = chars_of(line(n)?);
            }
            i = indentation(&chars);
            if blanks == 0 {
                if produced == offset {
                    return Some((n, i as u32 + 1));
                }
                produced += 1;
            }
            continue;
        }
        let c = chars[i];
        // The closing quote: where the text ends, one past its last character.
        let end = (produced == offset).then_some((n, i as u32 + 1));
        let width = match (style, c) {
            (Style::Double, '"') => return end,
            (Style::Single, '\'') if chars.get(i + 1) == Some(&'\'') => 2,
            (Style::Single, '\'') => return end,
            (Style::Double, '\\') => match chars.get(i + 1) {
                // An escaped line break: no space, and the next line's indentation is no text.
                None => {
                    n += 1;
                    chars = chars_of(line(n)?);
                    i = indentation(&chars);
                    continue;
                }
                Some('x') => 4,
                Some('u') => 6,
                Some('U') => 10,
                Some(_) => 2,
            },
            _ => 1,
        };
        if produced == offset {
            return Some((n, i as u32 + 1));
        }
        produced += 1;
        i += width;
    }
}

/// A block scalar whose first line of text starts at `indent` characters.
fn block<'t>(
    line: &impl Fn(u32) -> Option<&'t str>,
    first: u32,
    indent: usize,
    style: Style,
    offset: usize,
) -> Option<(u32, u32)> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Text,
        Blank,
        /// More indented than the block: a folded scalar keeps the breaks around it.
        More,
    }
    let mut produced = 0usize;
    let mut previous = Kind::Text;
    // The kind of the last line that was not blank: a folded scalar's break dropped before blank lines
    // comes back when a more indented line follows them.
    let mut last_text = Kind::Blank;
    let mut n = first;
    loop {
        let chars = chars_of(line(n)?);
        let spaces = chars.iter().take_while(|c| **c == ' ').count();
        let kind = if spaces == chars.len() && spaces <= indent {
            Kind::Blank
        } else if spaces < indent {
            return None; // less indented: the scalar has ended
        } else if matches!(chars.get(indent), Some(' ' | '\t')) {
            Kind::More
        } else {
            Kind::Text
        };
        // The break before this line. A literal scalar keeps each as a line feed. A folded one makes a
        // space of a break between two lines of text, drops the one before blank lines (each blank
        // line's own break is its line feed) and keeps those around more indented lines.
        let mut breaks = 0;
        if n > first {
            let dropped = style == Style::Folded && previous == Kind::Text && kind == Kind::Blank;
            breaks += usize::from(!dropped);
            let restored = style == Style::Folded
                && previous == Kind::Blank
                && kind == Kind::More
                && last_text == Kind::Text;
            breaks += usize::from(restored);
        }
        for _ in 0..breaks {
            if produced == offset {
                return Some((n, indent as u32 + 1));
            }
            produced += 1;
        }
        if kind != Kind::Blank {
            for k in 0..chars.len() - indent {
                if produced == offset {
                    return Some((n, (indent + k) as u32 + 1));
                }
                produced += 1;
            }
            last_text = kind;
        }
        previous = kind;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::diagnostic::LineIndex;
    use crate::mapping::yaml::{self, Kind};

    /// Every character of the scalar's text that is written as itself (not an escape, a fold or a
    /// removed indentation) is found where it is written: the YAML parser's reading is the judge.
    fn check(doc: &str) {
        let root = yaml::parse("t.yaml", doc).unwrap_or_else(|d| panic!("{}", d.render()));
        let Some((_, node)) = root.as_map().and_then(|m| m.first()) else {
            panic!("no value in {doc}");
        };
        let Kind::Str(text) = &node.kind else {
            panic!("not text: {doc}");
        };
        let index = LineIndex::new(doc);
        let mut checked = 0;
        for (offset, want) in text.chars().enumerate() {
            if !want.is_ascii_alphanumeric() {
                continue;
            }
            let (l, c) = place_in(|n| index.line(n), node.loc, offset);
            let got = index.line(l).and_then(|t| t.chars().nth(c as usize - 1));
            assert_eq!(got, Some(want), "offset {offset} of {text:?} in\n{doc}");
            checked += 1;
        }
        assert!(checked > 5, "{doc}");
    }

    #[test]
    fn quoted_scalars_over_several_lines() {
        check("k: \"Order {{ $.a }} by\n   {{ $.b..c }} and\n\n   more\"\n");
        check("k: \"tab\\there \\u00e9 x\\\n    joined \\\"q\\\" end\"\n");
        check("k: 'it''s {{ $.a }}\n   by {{ $.b[ }} today'\n");
        check("k: 'one  \n  two\n\n\n  three'\n");
        check("k: \"crlf line\r\n  next line\"\r\n");
    }

    #[test]
    fn plain_scalars_over_several_lines() {
        check("k: Order {{ $.a }} placed by\n  {{ $.customer[ }} today\n");
        check("k:\n  first line\n  second line\n\n  after blank\n");
    }

    #[test]
    fn block_scalars_as_ops_write_them() {
        // Text that starts with a quote; blank lines after the header; a paragraph, a blank line and
        // a more indented list; a line of spaces that is text; an anchor before the header.
        check("k: >\n  \"Thanks,\" said {{ $.a }} to\n  {{ $.b }} twice\n");
        check("k: |\n\n\n  after two blank lines {{ $.a }}\n  next\n");
        check("k: >\n\n  folded after a blank line\n  more text\n");
        check("k: >\n  para one text\n\n    - item one {{ $.a }}\n    - item two\n  back again\n");
        check("k: |\n  a1\n     \n  b2 c3 d4\n");
        check("k: &anchor |\n  anchored text\n\n  second para\n");
        check("k: !!str >\n  tagged text\n\n  second para\n");
    }

    #[test]
    fn block_scalars() {
        check("k: |\n  Order {{ $.a }}\n  by {{ $.b[ }}\n\n  last\n");
        check("k: >-\n  folded line one\n  folded two\n\n  para two\n    more indented\n  back\n");
        check("k: |2 # comment\n   indented text\n   more\n");
        check("k: >\n  a1 b2\n  c3\n");
    }

    #[test]
    fn single_line_scalars_as_before() {
        check("k: \"A {{ $.customer[ }} b\"\n");
        check("k: plain text here\n");
        // One past the last character (a path that ends too soon) is the closing quote, after escapes.
        let doc = "k: \"a\\\"b\" # c\n";
        let index = LineIndex::new(doc);
        let loc = Loc {
            line: 1,
            column: 4,
            width: 6,
            quoted: true,
        };
        assert_eq!(place_in(|n| index.line(n), loc, 3), (1, 9));
        assert_eq!(place_in(|n| index.line(n), loc, 2), (1, 8));
        // Past the end of the text: the start, shifted, on the first line.
        let index = LineIndex::new("k: \"ab\"\n");
        let loc = Loc {
            line: 1,
            column: 4,
            width: 4,
            quoted: true,
        };
        assert_eq!(place_in(|n| index.line(n), loc, 9), (1, 14));
    }
}
