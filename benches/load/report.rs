//! The printed table, and how its figures are written.

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

pub(crate) struct Report {
    pub(crate) lines: Vec<String>,
}

impl Report {
    pub(crate) fn row(&mut self, what: &str, figure: String, limit: String, ratio: String) {
        let line = format!("| {what} | {figure} | {limit} | {ratio} |");
        println!("{line}");
        self.lines.push(line);
    }
}

pub(crate) fn mb(bytes: f64) -> String {
    format!("{:.0} MB", bytes / 1e6)
}

pub(crate) fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
