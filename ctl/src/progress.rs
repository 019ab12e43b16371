//! The upload progress line, shown only when stdout is a terminal.

use std::io::Write;
use std::time::{Duration, Instant};

/// Go-style size: `%.2f` and a unit in 1024 steps (`131.00B`, `1.50KB`, `2.00MB`), as the
/// original printed.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2}{}", UNITS[unit])
}

/// One progress line (without the leading `\r`): `  1.50MB/2.00MB  75%  12.3 MB/s`.
pub fn line(done: u64, total: u64, elapsed: Duration) -> String {
    let pct = done
        .saturating_mul(100)
        .checked_div(total)
        .map_or(100, |p| p.min(100));
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        done as f64 / secs / 1e6
    } else {
        0.0
    };
    format!(
        "{:>9}/{} {:>3}% {:>7.1} MB/s",
        size(done),
        size(total),
        pct,
        rate
    )
}

/// Redraws the line in place (`\r`) at most every 100 ms, and a final time plus newline at
/// the end.
pub struct Bar<W: Write> {
    out: W,
    total: u64,
    done: u64,
    started: Instant,
    last_draw: Option<Instant>,
}

impl<W: Write> Bar<W> {
    pub fn new(out: W, total: u64) -> Bar<W> {
        Bar {
            out,
            total,
            done: 0,
            started: Instant::now(),
            last_draw: None,
        }
    }

    pub fn advance(&mut self, n: u64) {
        self.done += n;
        let now = Instant::now();
        if self
            .last_draw
            .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(100))
        {
            self.last_draw = Some(now);
            self.draw();
        }
    }

    fn draw(&mut self) {
        // A broken terminal must not fail the upload.
        let _ = write!(
            self.out,
            "\r{}",
            line(self.done, self.total, self.started.elapsed())
        );
        let _ = self.out.flush();
    }

    pub fn finish(mut self) {
        self.draw();
        let _ = writeln!(self.out);
        let _ = self.out.flush();
    }
}

/// Whether stdout is a terminal.
pub fn stdout_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    #[allow(unsafe_code)]
    unsafe {
        libc::isatty(libc::STDOUT_FILENO) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_the_original() {
        assert_eq!(size(131), "131.00B");
        assert_eq!(size(1536), "1.50KB");
        assert_eq!(size(2 * 1024 * 1024), "2.00MB");
        assert_eq!(size(0), "0.00B");
        assert_eq!(size(3 * 1024 * 1024 * 1024), "3.00GB");
    }

    #[test]
    fn line_shows_done_total_percent_rate() {
        let l = line(1536, 2048, Duration::from_secs(1));
        assert_eq!(l, "   1.50KB/2.00KB  75%     0.0 MB/s");
        let l = line(10_000_000, 10_000_000, Duration::from_secs(2));
        assert!(l.ends_with("100%     5.0 MB/s"), "{l}");
        assert!(line(0, 0, Duration::ZERO).contains("100%"));
    }

    #[test]
    fn bar_redraws_in_place_and_ends_with_newline() {
        let mut out = Vec::new();
        let mut bar = Bar::new(&mut out, 10);
        bar.advance(5);
        bar.advance(5); // within 100 ms: not drawn
        bar.finish();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.matches('\r').count(), 2, "{s:?}");
        assert!(s.contains(" 50%"), "{s:?}");
        let last = s.rsplit('\r').next().unwrap();
        assert!(last.starts_with("   10.00B/10.00B 100% "), "{s:?}");
        assert!(last.ends_with(" MB/s\n"), "{s:?}");
    }
}
