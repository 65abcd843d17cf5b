//! The human table and the JSON object.

use serde::Serialize;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub framework: String,
    pub raw: String,
    pub ratio: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
}

impl Row {
    pub fn new(scenario: impl Into<String>, framework: String, raw: String) -> Row {
        Row {
            scenario: scenario.into(),
            framework,
            raw,
            ratio: None,
            target: String::new(),
            met: None,
        }
    }

    pub fn ratio(mut self, ratio: f64) -> Row {
        self.ratio = Some(ratio);
        self
    }

    /// A target and whether it was met.
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

pub fn eps(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M ev/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k ev/s", v / 1e3)
    } else {
        format!("{v:.0} ev/s")
    }
}

pub fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

pub fn bytes(b: f64) -> String {
    format!("{b:.0} B")
}

pub fn table(rows: &[Row]) -> String {
    let header = ["scenario", "framework", "raw", "ratio", "target", "met?"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.framework.clone(),
                r.raw.clone(),
                r.ratio.map_or_else(|| "-".into(), |x| format!("{x:.2}")),
                if r.target.is_empty() {
                    "-".into()
                } else {
                    r.target.clone()
                },
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 6]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            let pad = w - c.chars().count();
            if i == 0 {
                s += &format!("{c}{}", " ".repeat(pad));
            } else {
                s += &format!(" | {}{c}", " ".repeat(pad));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    out += &format!("{}\n", "-".repeat(widths.iter().sum::<usize>() + 3 * 5));
    for row in &cells {
        out += &line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
    out
}
