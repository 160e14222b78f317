//! Space-padded columns, as Go's tabwriter printed the original's tables, and the `--output`
//! choice of every command that prints a table.

/// How a command that prints a table or a list prints (`--output table|json`): the table (or
/// list, one item a line), or JSON. A listing's JSON is one document, an array ([`json`]),
/// except that `micro jobs` and `micro events` print one JSON object per line (JSON Lines, as
/// `micro events read` streams). Each command's fields are listed in docs/cli.md.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Table,
    Json,
}

/// Formats `rows` as columns separated by at least two spaces; the last column is not padded.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|row| row.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `value` as indented JSON and a newline: what `--output json` prints for a listing.
pub fn json(value: &impl serde::Serialize) -> String {
    format!("{}\n", serde_json::to_string_pretty(value).expect("JSON values serialise"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["KEY".to_string(), "VALUE".to_string(), "EXPIRY".to_string()],
            vec!["a-long-key".to_string(), "v".to_string(), "None".to_string()],
        ];
        assert_eq!(super::render(&rows), "KEY         VALUE  EXPIRY\na-long-key  v      None\n");
        assert_eq!(super::render(&[]), "");
    }
}
