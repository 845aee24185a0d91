//! Plain-text tables for humans; `--json` output is built by each command. Everything a command prints goes through
//! [`outln!`], which never panics: a reader that has seen enough (`| head`) is not an error, any other failure to
//! write (`> /dev/full`) is reported once the command is done ([`written`]) and exits 1.

use std::io::{self, Write};
use std::sync::Mutex;

/// The first failure to write to standard output; nothing more is written after it.
static FAILED: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes `text` to standard output unless an earlier write failed (the failure is kept for [`written`]).
pub fn out(text: &str) {
    let mut failed = FAILED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if failed.is_none() {
        let mut stdout = io::stdout().lock();
        *failed = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).err();
    }
}

/// `println!` that never panics ([`out`]).
macro_rules! outln {
    () => {
        $crate::output::out("\n")
    };
    ($($arg:tt)*) => {
        $crate::output::out(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics: a closed standard error loses the message, not the command.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// `Err` if standard output could not be written, other than to a reader that had seen enough.
pub fn written() -> anyhow::Result<()> {
    let failed = FAILED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    match failed {
        Some(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::from(e).context("cannot write to standard output"))
        }
        _ => Ok(()),
    }
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn print_json(v: &serde_json::Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A table written row by row as rows arrive, in fixed column widths (a wider cell pushes the rest of its row to
/// the right), so that nothing is held back to measure: memory stays flat however long the listing.
#[derive(Debug)]
pub struct StreamedTable {
    widths: Vec<usize>,
}

impl StreamedTable {
    /// A table with these `(header, width)` columns; a column is never narrower than its header.
    pub fn new(columns: &[(&str, usize)]) -> StreamedTable {
        StreamedTable {
            widths: columns.iter().map(|(h, w)| (*w).max(h.chars().count())).collect(),
        }
    }

    pub fn header(&self, out: &mut impl Write, header: &[&str]) -> io::Result<()> {
        self.row(out, header)
    }

    pub fn row(&self, out: &mut impl Write, cells: &[&str]) -> io::Result<()> {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(&self.widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(&format!("{cell:<w$}"));
        }
        writeln!(out, "{}", line.trim_end())
    }
}
