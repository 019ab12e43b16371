//! The interactive console's line editor (spec 1.7, fixed per B12): pure, fed raw bytes from a
//! pty client, answers with the bytes to echo and the lines the user entered.
//!
//! Keys: ←/→ ^B/^F, Home/End ^A/^E, ↑/↓ ^P/^N (history), Alt-←/→ and ESC b/f (word moves),
//! Backspace (0x7f) and ^H, Delete, ^W, ^U, ^K, ^L, ^C (drop the line), ^D (end on an empty
//! line, else delete forward). A line ends on CR or LF (a CRLF pair counts once). Input is
//! UTF-8; a line holds at most [`MAX_RUNES`] characters (more rings the bell).

/// Red `> `, as the original.
pub const PROMPT: &[u8] = b"\x1b[31m> \x1b[0m";
/// Columns the prompt takes on screen.
const PROMPT_WIDTH: usize = 2;
/// Longest line, in characters (the original's limit).
pub const MAX_RUNES: usize = 4096;
/// Lines kept for ↑/↓.
const HISTORY: usize = 100;

/// What a chunk of input produced, besides echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete line (without its terminator).
    Line(String),
    /// Ctrl-D on an empty line: the session should end with status 0.
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Esc,
    /// After `ESC [` or `ESC O`, collecting parameter bytes.
    Csi,
}

/// Line editor state for one terminal.
#[derive(Debug)]
pub struct Editor {
    line: Vec<char>,
    pos: usize,
    width: usize,
    /// Row of the cursor, counted from the prompt's row.
    cursor_row: usize,
    history: Vec<String>,
    /// Index into `history` while browsing it; the line being edited is kept in `draft`.
    browsing: Option<usize>,
    draft: Vec<char>,
    escape: Escape,
    csi: Vec<u8>,
    utf8: Vec<u8>,
    after_cr: bool,
}

impl Editor {
    pub fn new(width: u32) -> Editor {
        Editor {
            line: Vec::new(),
            pos: 0,
            width: clamp_width(width),
            cursor_row: 0,
            history: Vec::new(),
            browsing: None,
            draft: Vec::new(),
            escape: Escape::None,
            csi: Vec::new(),
            utf8: Vec::new(),
            after_cr: false,
        }
    }

    /// Terminal width changed (`window-change`).
    pub fn set_width(&mut self, width: u32) {
        self.width = clamp_width(width);
    }

    /// Writes a fresh prompt; call at start and after each command's output.
    pub fn prompt(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(PROMPT);
        self.cursor_row = 0;
    }

    /// Feeds input bytes; echo and redraws go to `out`.
    /// Feeds all of `input` (for tests and callers that do not interleave output).
    #[cfg(test)]
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Vec<Event> {
        let mut events = Vec::new();
        while !input.is_empty() {
            let (event, used) = self.step(input, out);
            input = &input[used..];
            match event {
                Some(Event::Eof) => {
                    events.push(Event::Eof);
                    break;
                }
                Some(event) => events.push(event),
                None => {}
            }
        }
        events
    }

    /// Feeds `input` up to the first event (a line or end of input) and returns it with the
    /// number of bytes used, so the caller can run a line and print its output before the
    /// echo of anything typed after it.
    pub fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> (Option<Event>, usize) {
        for (i, &b) in input.iter().enumerate() {
            let cr_before = std::mem::replace(&mut self.after_cr, false);
            match self.escape {
                Escape::Esc => {
                    self.escape = Escape::None;
                    match b {
                        b'[' | b'O' => {
                            self.escape = Escape::Csi;
                            self.csi.clear();
                        }
                        b'b' => self.word_left(out),
                        b'f' => self.word_right(out),
                        _ => {}
                    }
                    continue;
                }
                Escape::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        self.escape = Escape::None;
                        let params = std::mem::take(&mut self.csi);
                        self.csi_key(&params, b, out);
                    } else if self.csi.len() < 16 {
                        self.csi.push(b);
                    }
                    continue;
                }
                Escape::None => {}
            }
            if !self.utf8.is_empty() || b >= 0x80 {
                self.utf8_byte(b, out);
                continue;
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    return (Some(self.enter(out)), i + 1);
                }
                b'\n' if cr_before => {}
                b'\n' => return (Some(self.enter(out)), i + 1),
                0x1b => self.escape = Escape::Esc,
                0x01 => self.move_to(0, out),
                0x05 => self.move_to(self.line.len(), out),
                0x02 => self.move_to(self.pos.saturating_sub(1), out),
                0x06 => self.move_to((self.pos + 1).min(self.line.len()), out),
                0x03 => {
                    // Ctrl-C drops the line and starts a fresh prompt.
                    self.move_to(self.line.len(), out);
                    out.extend_from_slice(b"^C\r\n");
                    self.line.clear();
                    self.pos = 0;
                    self.browsing = None;
                    self.prompt(out);
                }
                0x04 => {
                    if self.line.is_empty() {
                        out.extend_from_slice(b"\r\n");
                        return (Some(Event::Eof), i + 1);
                    }
                    self.delete_forward(out);
                }
                0x08 | 0x7f if self.pos > 0 => {
                    self.pos -= 1;
                    self.line.remove(self.pos);
                    self.redraw(out);
                }
                0x0b => {
                    self.line.truncate(self.pos);
                    self.redraw(out);
                }
                0x15 => {
                    self.line.drain(..self.pos);
                    self.pos = 0;
                    self.redraw(out);
                }
                0x17 => {
                    let start = self.word_start();
                    self.line.drain(start..self.pos);
                    self.pos = start;
                    self.redraw(out);
                }
                0x0c => {
                    out.extend_from_slice(b"\x1b[H\x1b[2J");
                    self.cursor_row = 0;
                    self.redraw(out);
                }
                0x10 => self.history_back(out),
                0x0e => self.history_forward(out),
                0x20..=0x7e => self.insert(char::from(b), out),
                _ => {}
            }
        }
        (None, input.len())
    }

    fn csi_key(&mut self, params: &[u8], last: u8, out: &mut Vec<u8>) {
        let alt = params.ends_with(b";3") || params.ends_with(b";5");
        match (last, params) {
            (b'A', _) => self.history_back(out),
            (b'B', _) => self.history_forward(out),
            (b'C', _) if alt => self.word_right(out),
            (b'D', _) if alt => self.word_left(out),
            (b'C', _) => self.move_to((self.pos + 1).min(self.line.len()), out),
            (b'D', _) => self.move_to(self.pos.saturating_sub(1), out),
            (b'H', _) | (b'~', b"1" | b"7") => self.move_to(0, out),
            (b'F', _) | (b'~', b"4" | b"8") => self.move_to(self.line.len(), out),
            (b'~', b"3") => self.delete_forward(out),
            // Bracketed-paste markers and anything else: ignored, pasted text is just typed.
            _ => {}
        }
    }

    fn utf8_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        self.utf8.push(b);
        match std::str::from_utf8(&self.utf8) {
            Ok(s) => {
                let c = s.chars().next();
                self.utf8.clear();
                if let Some(c) = c {
                    self.insert(c, out);
                }
            }
            Err(e) if e.error_len().is_some() || self.utf8.len() >= 4 => self.utf8.clear(),
            Err(_) => {}
        }
    }

    fn insert(&mut self, c: char, out: &mut Vec<u8>) {
        if self.line.len() >= MAX_RUNES {
            out.push(0x07);
            return;
        }
        self.line.insert(self.pos, c);
        self.pos += 1;
        let end_col = (PROMPT_WIDTH + self.line.len()) % self.width;
        if self.pos == self.line.len() && end_col != 0 {
            // Typing at the end of a line that does not wrap: plain echo.
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        } else {
            self.redraw(out);
        }
    }

    fn delete_forward(&mut self, out: &mut Vec<u8>) {
        if self.pos < self.line.len() {
            self.line.remove(self.pos);
            self.redraw(out);
        }
    }

    fn enter(&mut self, out: &mut Vec<u8>) -> Event {
        self.move_to(self.line.len(), out);
        out.extend_from_slice(b"\r\n");
        let line: String = self.line.drain(..).collect();
        self.pos = 0;
        self.cursor_row = 0;
        self.browsing = None;
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            if self.history.len() == HISTORY {
                self.history.remove(0);
            }
            self.history.push(line.clone());
        }
        Event::Line(line)
    }

    fn history_back(&mut self, out: &mut Vec<u8>) {
        let next = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.line.clone();
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.browsing = Some(next);
        self.line = self.history[next].chars().collect();
        self.pos = self.line.len();
        self.redraw(out);
    }

    fn history_forward(&mut self, out: &mut Vec<u8>) {
        let Some(i) = self.browsing else { return };
        if i + 1 < self.history.len() {
            self.browsing = Some(i + 1);
            self.line = self.history[i + 1].chars().collect();
        } else {
            self.browsing = None;
            self.line = std::mem::take(&mut self.draft);
        }
        self.pos = self.line.len();
        self.redraw(out);
    }

    fn word_start(&self) -> usize {
        let mut i = self.pos;
        while i > 0 && self.line[i - 1] == ' ' {
            i -= 1;
        }
        while i > 0 && self.line[i - 1] != ' ' {
            i -= 1;
        }
        i
    }

    fn word_left(&mut self, out: &mut Vec<u8>) {
        let start = self.word_start();
        self.move_to(start, out);
    }

    fn word_right(&mut self, out: &mut Vec<u8>) {
        let mut i = self.pos;
        while i < self.line.len() && self.line[i] == ' ' {
            i += 1;
        }
        while i < self.line.len() && self.line[i] != ' ' {
            i += 1;
        }
        self.move_to(i, out);
    }

    fn move_to(&mut self, pos: usize, out: &mut Vec<u8>) {
        if pos != self.pos {
            self.pos = pos;
            self.place_cursor(out, self.cursor_row);
        }
    }

    /// Redraws prompt and line from the prompt's row, then puts the cursor at `pos`.
    fn redraw(&mut self, out: &mut Vec<u8>) {
        if self.cursor_row > 0 {
            out.extend_from_slice(format!("\x1b[{}A", self.cursor_row).as_bytes());
        }
        out.push(b'\r');
        out.extend_from_slice(PROMPT);
        let text: String = self.line.iter().collect();
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\x1b[J");
        let end = PROMPT_WIDTH + self.line.len();
        if end.is_multiple_of(self.width) {
            // Terminals defer the wrap at the last column; force the cursor onto the next row.
            out.extend_from_slice(b"\r\n");
        }
        self.place_cursor(out, end / self.width);
    }

    /// Moves the cursor from row `from_row` (relative to the prompt) to where `pos` is.
    fn place_cursor(&mut self, out: &mut Vec<u8>, from_row: usize) {
        let target = PROMPT_WIDTH + self.pos;
        let (row, col) = (target / self.width, target % self.width);
        if from_row > row {
            out.extend_from_slice(format!("\x1b[{}A", from_row - row).as_bytes());
        } else if row > from_row {
            out.extend_from_slice(format!("\x1b[{}B", row - from_row).as_bytes());
        }
        out.push(b'\r');
        if col > 0 {
            out.extend_from_slice(format!("\x1b[{col}C").as_bytes());
        }
        self.cursor_row = row;
    }
}

fn clamp_width(width: u32) -> usize {
    // 0 (unknown) and absurd sizes fall back to something sane.
    match usize::try_from(width) {
        Ok(w) if (PROMPT_WIDTH + 1..=10_000).contains(&w) => w,
        _ => 80,
    }
}

/// Converts console output for a terminal in raw mode: `\n` becomes `\r\n`.
pub fn crlf(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 16);
    for b in text.bytes() {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Splits piped (non-pty) input into LF-terminated lines, bounded in length.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// The current line went over the limit: drop bytes until its LF.
    overflow: bool,
}

/// What [`LineSplitter`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piped {
    Line(String),
    /// A line longer than the limit was discarded.
    TooLong,
}

impl LineSplitter {
    pub fn feed(&mut self, input: &[u8], max: usize) -> Vec<Piped> {
        let mut lines = Vec::new();
        for &b in input {
            if b == b'\n' {
                if std::mem::take(&mut self.overflow) {
                    lines.push(Piped::TooLong);
                } else {
                    let mut line = std::mem::take(&mut self.buf);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    lines.push(Piped::Line(String::from_utf8_lossy(&line).into_owned()));
                }
                self.buf.clear();
            } else if !self.overflow {
                if self.buf.len() >= max {
                    self.overflow = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.push(b);
                }
            }
        }
        lines
    }

    /// At EOF: a last line without LF still counts.
    pub fn finish(&mut self) -> Option<Piped> {
        if std::mem::take(&mut self.overflow) {
            return Some(Piped::TooLong);
        }
        let line = std::mem::take(&mut self.buf);
        (!line.is_empty()).then(|| Piped::Line(String::from_utf8_lossy(&line).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(ed: &mut Editor, input: &[u8]) -> (Vec<Event>, Vec<u8>) {
        let mut out = Vec::new();
        let ev = ed.feed(input, &mut out);
        (ev, out)
    }

    fn line(s: &str) -> Event {
        Event::Line(s.to_string())
    }

    #[test]
    fn cr_lf_and_crlf_each_end_one_line() {
        let mut ed = Editor::new(80);
        let (ev, out) = feed(&mut ed, b"help\r");
        assert_eq!(ev, vec![line("help")]);
        assert_eq!(out, b"help\r\n");
        assert_eq!(
            feed(&mut ed, b"a\nb\r\nc\r").0,
            vec![line("a"), line("b"), line("c")]
        );
        // CR at the end of one chunk, LF at the start of the next: still one line.
        assert_eq!(feed(&mut ed, b"d\r").0, vec![line("d")]);
        assert_eq!(feed(&mut ed, b"\ne\n").0, vec![line("e")]);
        assert_eq!(feed(&mut ed, b"\r\r").0, vec![line(""), line("")]);
    }

    #[test]
    fn step_stops_after_each_line_so_output_can_come_first() {
        let mut ed = Editor::new(80);
        let mut out = Vec::new();
        let input = b"ab\r\ncd\x04";
        let (ev, used) = ed.step(input, &mut out);
        assert_eq!(
            (ev, used, out.as_slice()),
            (Some(line("ab")), 3, &b"ab\r\n"[..])
        );
        out.clear();
        let (ev, used) = ed.step(&input[3..], &mut out);
        // The LF of the CRLF pair is swallowed, then "cd" and ^D (delete forward: nothing).
        assert_eq!((ev, used, out.as_slice()), (None, 4, &b"cd"[..]));
    }

    #[test]
    fn editing_keys() {
        let mut ed = Editor::new(80);
        // Backspace and ^H.
        assert_eq!(feed(&mut ed, b"helpx\x7f\r").0, vec![line("help")]);
        assert_eq!(feed(&mut ed, b"helpx\x08\r").0, vec![line("help")]);
        // ←, insert, Home, End.
        assert_eq!(feed(&mut ed, b"hlp\x1b[D\x1b[De\r").0, vec![line("help")]);
        assert_eq!(feed(&mut ed, b"elp\x01h\x05!\r").0, vec![line("help!")]);
        assert_eq!(feed(&mut ed, b"elp\x1b[Hh\x1b[F!\r").0, vec![line("help!")]);
        // ^W deletes the word before the cursor, ^U to start, ^K to end.
        assert_eq!(
            feed(&mut ed, b"showconf -name x\x17y\r").0,
            vec![line("showconf -name y")]
        );
        assert_eq!(feed(&mut ed, b"junk\x15help\r").0, vec![line("help")]);
        assert_eq!(
            feed(&mut ed, b"helpjunk\x1b[D\x1b[D\x1b[D\x1b[D\x0b\r").0,
            vec![line("help")]
        );
        // Delete key and ^D in the middle delete forward.
        assert_eq!(
            feed(&mut ed, b"hxelp\x01\x1b[C\x1b[3~\r").0,
            vec![line("help")]
        );
        assert_eq!(feed(&mut ed, b"hxelp\x01\x06\x04\r").0, vec![line("help")]);
        // Word moves: Alt-← and ESC b.
        assert_eq!(feed(&mut ed, b"a b\x1b[1;3DX\r").0, vec![line("a Xb")]);
        assert_eq!(feed(&mut ed, b"a b\x1bbX\x1bfY\r").0, vec![line("a XbY")]);
    }

    #[test]
    fn history_up_down() {
        let mut ed = Editor::new(80);
        feed(&mut ed, b"one\rtwo\r");
        assert_eq!(feed(&mut ed, b"\x1b[A\r").0, vec![line("two")]);
        assert_eq!(feed(&mut ed, b"\x10\x10\r").0, vec![line("one")]);
        // Down past the newest returns to the draft.
        assert_eq!(feed(&mut ed, b"dr\x1b[A\x1b[B\r").0, vec![line("dr")]);
        assert_eq!(
            feed(&mut ed, b"\x10\x10\x10\x10\x0e\r").0,
            vec![line("two")]
        );
        // Blank lines are not remembered.
        feed(&mut ed, b"  \r");
        assert_eq!(feed(&mut ed, b"\x1bOA\r").0, vec![line("two")]);
    }

    #[test]
    fn ctrl_c_ctrl_d_and_eof() {
        let mut ed = Editor::new(80);
        let (ev, out) = feed(&mut ed, b"junk\x03");
        assert!(ev.is_empty());
        assert!(out.ends_with(b"^C\r\n\x1b[31m> \x1b[0m"));
        assert_eq!(feed(&mut ed, b"\x04").0, vec![Event::Eof]);
        let mut ed = Editor::new(80);
        assert_eq!(
            feed(&mut ed, b"help\r\x04ignored\r").0,
            vec![line("help"), Event::Eof]
        );
    }

    #[test]
    fn utf8_and_limits() {
        let mut ed = Editor::new(80);
        let (ev, out) = feed(&mut ed, "showconf -name żółw\r".as_bytes());
        assert_eq!(ev, vec![line("showconf -name żółw")]);
        assert!(out.starts_with("showconf -name żółw".as_bytes()));
        // Split multi-byte sequences across chunks; a stray continuation byte is dropped.
        let bytes = "ż".as_bytes();
        feed(&mut ed, &bytes[..1]);
        assert_eq!(feed(&mut ed, &[bytes[1], 0x80, b'\r']).0, vec![line("ż")]);
        // Backspace removes a whole character.
        assert_eq!(feed(&mut ed, "żx\x7f\x7fa\r".as_bytes()).0, vec![line("a")]);
        // More than MAX_RUNES: bell, extra ignored.
        let long = vec![b'a'; MAX_RUNES + 3];
        let (ev, out) = feed(&mut ed, &long);
        assert!(ev.is_empty());
        assert_eq!(out.iter().filter(|&&b| b == 0x07).count(), 3);
        let (ev, _) = feed(&mut ed, b"\r");
        assert_eq!(ev, vec![Event::Line("a".repeat(MAX_RUNES))]);
    }

    #[test]
    fn wrapping_redraw_moves_rows() {
        // Width 10: prompt (2) + 8 characters fills the first row exactly.
        let mut ed = Editor::new(10);
        let (_, out) = feed(&mut ed, b"abcdefgh");
        assert!(
            out.ends_with(b"\r\n\r"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(ed.cursor_row, 1);
        let (_, out) = feed(&mut ed, b"\x01");
        assert_eq!(out, b"\x1b[1A\r\x1b[2C");
        assert_eq!(ed.cursor_row, 0);
        let (ev, _) = feed(&mut ed, b"\r");
        assert_eq!(ev, vec![line("abcdefgh")]);
        ed.set_width(0);
        assert_eq!(ed.width, 80);
    }

    #[test]
    fn ctrl_l_clears_and_redraws() {
        let mut ed = Editor::new(80);
        let (_, out) = feed(&mut ed, b"ab\x0c");
        assert_eq!(out, b"ab\x1b[H\x1b[2J\r\x1b[31m> \x1b[0mab\x1b[J\r\x1b[4C");
    }

    #[test]
    fn piped_lines() {
        let mut s = LineSplitter::default();
        assert_eq!(s.feed(b"help\ncompo", 12), vec![Piped::Line("help".into())]);
        assert_eq!(
            s.feed(b"nents\r\n", 12),
            vec![Piped::Line("components".into())]
        );
        assert_eq!(
            s.feed(b"0123456789abc\nok\n", 12),
            vec![Piped::TooLong, Piped::Line("ok".into())]
        );
        assert_eq!(s.feed(b"last", 12), vec![]);
        assert_eq!(s.finish(), Some(Piped::Line("last".into())));
        assert_eq!(s.finish(), None);
        assert_eq!(crlf("a\nb\n"), b"a\r\nb\r\n");
    }
}
