//! Go `text/tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)`: every TAB-terminated cell is padded to
//! its column's widest cell (in runes) plus 3; the last TAB-terminated column too, so lines
//! end in spaces. Text after the last TAB of a line is not a cell and is written as is.

const PADDING: usize = 3;

struct Cell<'a> {
    text: &'a str,
    width: usize,
}

/// Formats `text` (lines separated by `\n`). Columns are aligned within blocks of consecutive
/// lines, as Go does.
///
/// Go's rules, all kept: `\v` ends a cell like TAB; `\f` ends a line like `\n` (and is written
/// as `\n`) but also ends every column block; a column block is a run of consecutive lines
/// that have a cell in that column, and within it the next column's blocks are found the same
/// way (Go's recursive `format`).
pub fn format(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    // Each '\f' flushes the writer: the text up to and including it is formatted alone.
    for seg in text.split_inclusive('\u{c}') {
        let lines = cells(seg);
        let mut widths = Vec::new();
        format_block(&mut out, &lines, &mut widths, 0, lines.len());
    }
    out
}

/// Splits one flush segment into lines of cells, the way Go's `Write` + `Flush` does: every
/// TAB/`\v`/newline terminates a cell (possibly empty); text after the last newline becomes a
/// cell only if non-empty. The returned lines end with the (possibly empty) partial line.
fn cells(seg: &str) -> Vec<Vec<Cell<'_>>> {
    let mut lines = vec![Vec::new()];
    let mut start = 0;
    for (i, ch) in seg.char_indices() {
        if matches!(ch, '\t' | '\u{b}' | '\n' | '\u{c}') {
            let text = &seg[start..i];
            if let Some(line) = lines.last_mut() {
                line.push(Cell {
                    text,
                    width: text.chars().count(),
                });
            }
            start = i + ch.len_utf8();
            if matches!(ch, '\n' | '\u{c}') {
                lines.push(Vec::new());
            }
        }
    }
    if start < seg.len() {
        let text = &seg[start..];
        if let Some(line) = lines.last_mut() {
            line.push(Cell {
                text,
                width: text.chars().count(),
            });
        }
    }
    lines
}

/// Go's `Writer.format`: `widths` holds the widths of the columns left of the one examined.
fn format_block(
    out: &mut String,
    lines: &[Vec<Cell<'_>>],
    widths: &mut Vec<usize>,
    line0: usize,
    line1: usize,
) {
    let column = widths.len();
    let mut line0 = line0;
    let mut this = line0;
    while this < line1 {
        // The last cell of a line is not part of any column.
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(out, lines, widths, line0, this);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].width + PADDING);
            this += 1;
        }
        widths.push(width);
        format_block(out, lines, widths, line0, this);
        widths.pop();
        line0 = this;
    }
    write_lines(out, lines, widths, line0, line1);
}

fn write_lines(
    out: &mut String,
    lines: &[Vec<Cell<'_>>],
    widths: &[usize],
    line0: usize,
    line1: usize,
) {
    for (i, line) in lines.iter().enumerate().take(line1).skip(line0) {
        for (j, c) in line.iter().enumerate() {
            out.push_str(c.text);
            if let Some(&w) = widths.get(j) {
                out.extend(std::iter::repeat_n(' ', w.saturating_sub(c.width)));
            }
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn showconf_rows_as_observed() {
        let text = "code\tv01\t2026-11-22T07:26:19Z\t\nconfig\tv01\t2026-11-22T07:26:19Z\t\n";
        assert_eq!(
            format(text),
            "code     v01   2026-11-22T07:26:19Z   \nconfig   v01   2026-11-22T07:26:19Z   \n"
        );
    }

    #[test]
    fn showcomp_rows_as_observed() {
        let text = "2026-11-22T07:26:19Z\tv01\t\n2026-11-22T07:26:24Z\tv01-again\t\n";
        assert_eq!(
            format(text),
            "2026-11-22T07:26:19Z   v01         \n2026-11-22T07:26:24Z   v01-again   \n"
        );
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert_eq!(format(""), "");
    }

    #[test]
    fn text_after_last_tab_is_not_padded() {
        assert_eq!(format("a\tb\nccc\td\n"), "a     b\nccc   d\n");
    }

    #[test]
    fn width_counts_runes_not_bytes() {
        assert_eq!(format("é\tx\t\nab\ty\t\n"), "é    x   \nab   y   \n");
    }

    #[test]
    fn empty_cells_get_padding() {
        assert_eq!(format("\tx\t\n"), "   x   \n");
    }

    #[test]
    fn lines_without_tabs_split_blocks() {
        assert_eq!(
            format("a\tb\t\nplain\nlonger\tc\t\n"),
            "a   b   \nplain\nlonger   c   \n"
        );
    }

    #[test]
    fn column_blocks_are_per_column() {
        // Column 0 spans all three lines; column 1 exists only in the first two.
        let text = "a\tbbbbbb\tx\nccc\td\ty\neeeee\tz\n";
        assert_eq!(
            format(text),
            "a       bbbbbb   x\nccc     d        y\neeeee   z\n"
        );
    }

    #[test]
    fn inner_column_block_restarts_after_a_gap() {
        // Column 1 is interrupted by the middle line, so its two blocks are sized separately.
        let text = "a\tlong-cell\t.\nb\tc\nd\te\t.\n";
        assert_eq!(format(text), "a   long-cell   .\nb   c\nd   e   .\n");
    }

    #[test]
    fn unterminated_last_line_kept_without_newline() {
        assert_eq!(format("a\tb\t\ncc\td"), "a    b   \ncc   d");
    }

    #[test]
    fn form_feed_ends_blocks_and_becomes_newline() {
        assert_eq!(format("a\tx\t\u{c}bbbb\ty\t\n"), "a   x   \nbbbb   y   \n");
    }

    #[test]
    fn vertical_tab_ends_a_cell() {
        assert_eq!(
            format("a\u{b}b\t\nccc\u{b}d\t\n"),
            "a     b   \nccc   d   \n"
        );
    }
}
