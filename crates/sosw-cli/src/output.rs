//! Plain-text tables for humans; `--json` output is built by each command.

use std::io::{self, Write};

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
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
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
