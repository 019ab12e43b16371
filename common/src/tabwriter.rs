//! Go `text/tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)`: every TAB-terminated cell is padded to
//! its column's widest cell (in runes) plus 3; the last TAB-terminated column too, so lines
//! end in spaces. Text after the last TAB of a line is not a cell and is written as is.

/// Formats `text` (lines separated by `\n`). Columns are aligned within blocks of consecutive
/// lines, as Go does.
pub fn format(text: &str) -> String {
    let _ = text;
    todo!()
}
