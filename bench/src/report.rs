//! The report every subcommand prints: a readable table, or one JSON object.
//!
//! Shape (see DESIGN.md, "Benchmark output"):
//! `{"bench", "machine", "runs", "results": {system: {...}}, "ratios": {...}, "unavailable": {...}}`.
//! A reference that could not run is listed under `unavailable` with the reason,
//! never silently dropped.

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub bench: String,
    pub machine: Value,
    pub runs: usize,
    pub results: Map<String, Value>,
    pub ratios: Map<String, Value>,
    pub unavailable: Map<String, Value>,
}

impl Report {
    pub fn new(bench: &str, runs: usize) -> Self {
        Report {
            bench: bench.to_string(),
            machine: machine(),
            runs,
            ..Default::default()
        }
    }

    /// Record one system's (or one figure group's) results.
    pub fn result(&mut self, system: &str, value: Value) {
        self.results.insert(system.to_string(), value);
    }

    /// Record a ratio `a/b`, named `<a>_over_<b>_<what>`; a missing or zero
    /// denominator records `null`.
    pub fn ratio(&mut self, name: &str, a: f64, b: f64) {
        let v = if b != 0.0 && a.is_finite() && b.is_finite() {
            Value::from((a / b * 1000.0).round() / 1000.0)
        } else {
            Value::Null
        };
        self.ratios.insert(name.to_string(), v);
    }

    /// Record that a reference could not be measured, and why.
    pub fn unavailable(&mut self, system: &str, why: &str) {
        self.unavailable
            .insert(system.to_string(), Value::from(why.to_string()));
    }

    /// Print as JSON (one object on stdout) or as a readable table.
    pub fn print(&self, json: bool) {
        if json {
            match serde_json::to_string(self) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("kiln-bench: cannot encode report: {e}"),
            }
            return;
        }
        println!("== kiln-bench {} ({} runs)", self.bench, self.runs);
        for (system, v) in &self.results {
            println!("-- {system}");
            print_flat(v, "   ");
        }
        if !self.ratios.is_empty() {
            println!("-- ratios");
            print_flat(&Value::Object(self.ratios.clone()), "   ");
        }
        for (system, why) in &self.unavailable {
            println!("-- {system}: not measured: {}", why.as_str().unwrap_or(""));
        }
    }
}

fn print_flat(v: &Value, indent: &str) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::Object(_) => {
                        println!("{indent}{k}:");
                        print_flat(v, &format!("{indent}  "));
                    }
                    Value::Number(n) => match n.as_f64() {
                        Some(f) if n.is_f64() => println!("{indent}{k:<40} {f:>12.3}"),
                        _ => println!("{indent}{k:<40} {n:>12}"),
                    },
                    other => println!("{indent}{k:<40} {other:>12}"),
                }
            }
        }
        other => println!("{indent}{other}"),
    }
}

/// Facts about the machine the figures were measured on.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "mem_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": kernel,
        "kvm": std::path::Path::new("/dev/kvm").exists(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_with_zero_denominator_is_null() {
        let mut r = Report::new("t", 1);
        r.ratio("a_over_b_x", 1.0, 0.0);
        r.ratio("a_over_b_y", 3.0, 2.0);
        assert_eq!(r.ratios["a_over_b_x"], Value::Null);
        assert_eq!(r.ratios["a_over_b_y"], Value::from(1.5));
    }
}
