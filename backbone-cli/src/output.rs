//! Printing: an aligned table for people, or one JSON document per line (`--json`).

use serde_json::{Map, Value};

/// Where results go.
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    /// Whether output is JSON.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `rows` (objects with the keys of `columns`): one JSON document per row, or a
    /// table with a header.
    pub fn rows(&self, columns: &[&str], rows: &[Map<String, Value>]) {
        if self.json {
            for row in rows {
                println!("{}", Value::Object(row.clone()));
            }
            return;
        }
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|row| columns.iter().map(|c| text(row.get(*c))).collect())
            .collect();
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cells
                    .iter()
                    .map(|r| r[i].len())
                    .chain([c.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |values: Vec<String>| {
            let padded: Vec<String> = values
                .iter()
                .zip(&widths)
                .map(|(v, w)| format!("{v:<w$}"))
                .collect();
            println!("{}", padded.join("  ").trim_end());
        };
        line(columns.iter().map(|c| c.to_string()).collect());
        for row in cells {
            line(row);
        }
    }

    /// Prints one document: JSON, or `key: value` lines.
    pub fn document(&self, doc: &Map<String, Value>) {
        if self.json {
            println!("{}", Value::Object(doc.clone()));
            return;
        }
        for (key, value) in doc {
            println!("{key}: {}", text(Some(value)));
        }
    }

    /// A line for people only (nothing under `--json`).
    pub fn note(&self, text: &str) {
        if !self.json {
            println!("{text}");
        }
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}
