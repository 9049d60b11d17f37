//! `cargo xtask bench-report`: turns criterion's output (`target/criterion`) into BENCHMARKS.md's
//! table and the ratio chart `benches/ratios.svg`, and the gallery scenario's `gallery.json`
//! beside it into BENCHMARKS.md's gallery section and `benches/gallery.svg` (gallery_report.rs),
//! so the published figures are regenerated, never typed by hand.
//!
//! ```sh
//! for run in $(seq 1 7); do cargo bench --bench resolution -- --save-baseline run$run; done
//! cargo bench --bench gallery
//! cargo xtask bench-report
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::gallery_report::{escape, median};

/// One comparison: our function, its baseline, and what the ratio means for a user.
struct Row {
    group: &'static str,
    ours: &'static str,
    baseline: &'static str,
    /// "faster": baseline / ours is the speed-up; "cost": ours / baseline is the relative cost;
    /// "added": ours - baseline, in time; "overhead": (ours - floor) / (baseline - floor) with
    /// `floor` the third entry.
    kind: Kind,
    target: &'static str,
    meaning: &'static str,
}

#[derive(Clone, Copy)]
enum Kind {
    Faster,
    Cost,
    Added,
    Overhead(&'static str),
    Scaling(&'static str, &'static str),
}

const ROWS: &[Row] = &[
    Row {
        group: "embedded_str",
        ours: "secure-media embed",
        baseline: "baseline parse+append_pair",
        kind: Kind::Faster,
        target: ">= 10x",
        meaning: "embedding a FAT into a URL string vs parsing and appending it by hand",
    },
    Row {
        group: "embedded_url",
        ours: "secure-media resolve+apply",
        baseline: "embedded_str/baseline parse+append_pair",
        kind: Kind::Faster,
        target: ">= 2x",
        meaning: "embedding into an already parsed URL vs the naive parse+append",
    },
    Row {
        group: "embedded_url",
        ours: "secure-media resolve+apply",
        baseline: "baseline append_pair",
        kind: Kind::Faster,
        target: "(info)",
        meaning: "vs appending to a parsed URL with no host check and a token encoded per call",
    },
    Row {
        group: "header",
        ours: "secure-media resolve+insert",
        baseline: "baseline insert cloned HeaderValue",
        kind: Kind::Cost,
        target: "<= 2x",
        meaning: "header mode vs inserting a prebuilt header",
    },
    Row {
        group: "passthrough",
        ours: "secure-media applies_to",
        baseline: "baseline SecureHosts check",
        kind: Kind::Cost,
        target: "<= 1.5x",
        meaning: "what every non-secure request pays, vs the bare host check",
    },
    Row {
        group: "passthrough",
        ours: "secure-media applies_to",
        baseline: "baseline host_str compare",
        kind: Kind::Cost,
        target: "(info)",
        meaning: "vs comparing one host string",
    },
    Row {
        group: "presigned_hit",
        ours: "secure-media MemoryPresignCache get",
        baseline: "baseline quick_cache get",
        kind: Kind::Cost,
        target: "<= 1.2x",
        meaning: "our cache (lru shards) vs quick_cache, each handed the request URL's text (ours with the scope) to hash",
    },
    Row {
        group: "presigned_hit",
        ours: "secure-media resolve_ready",
        baseline: "baseline quick_cache get",
        kind: Kind::Cost,
        target: "<= 1x",
        meaning: "the whole hit from the parsed request URL (view, clean key, scope, lookup, expiry, Resolution) vs quick_cache keyed by the URL's text",
    },
    Row {
        group: "presigned_hit",
        ours: "secure-media resolve_ready",
        baseline: "baseline moka get",
        kind: Kind::Cost,
        target: "(info)",
        meaning: "vs moka",
    },
    Row {
        group: "presigned_hit",
        ours: "secure-media resolve_ready",
        baseline: "baseline HashMap get+clone",
        kind: Kind::Cost,
        target: "(info)",
        meaning: "vs an unbounded HashMap without expiry or scoping",
    },
    Row {
        group: "presigned_hit_2_threads",
        ours: "secure-media resolve_ready",
        baseline: "",
        kind: Kind::Scaling("presigned_hit", "secure-media resolve_ready"),
        target: ">= 1.5x",
        meaning: "aggregate hits/s on two threads vs one",
    },
    Row {
        group: "presigned_hit_2_threads",
        ours: "secure-media MemoryPresignCache get",
        baseline: "",
        kind: Kind::Scaling("presigned_hit", "secure-media MemoryPresignCache get"),
        target: ">= 1.5x",
        meaning: "our cache alone: aggregate hits/s on two threads vs one",
    },
    Row {
        group: "presigned_hit_2_threads",
        ours: "baseline quick_cache get",
        baseline: "",
        kind: Kind::Scaling("presigned_hit", "baseline quick_cache get"),
        target: "(info)",
        meaning: "quick_cache's own two-thread scaling",
    },
    Row {
        group: "reqwest_middleware_in_process",
        ours: "secure-media header",
        baseline: "baseline no-op middleware",
        kind: Kind::Overhead("baseline terminal only"),
        target: "<= 1.5x",
        meaning: "our middleware's cost vs a no-op middleware's (the framework's floor), no network",
    },
    Row {
        group: "reqwest_middleware_in_process",
        ours: "secure-media header, without MediaKey",
        baseline: "baseline no-op middleware",
        kind: Kind::Overhead("baseline terminal only"),
        target: "<= 1.5x",
        meaning: "the same with `without_media_key()`: no extension maps started",
    },
    Row {
        group: "reqwest_middleware_in_process",
        ours: "secure-media header, without MediaKey",
        baseline: "baseline header middleware",
        kind: Kind::Overhead("baseline terminal only"),
        target: "(info)",
        meaning: "vs a hand-written middleware that sets a prebuilt header on every request (no host check, no retry)",
    },
    Row {
        group: "reqwest_middleware_in_process",
        ours: "secure-media embedded",
        baseline: "baseline no-op middleware",
        kind: Kind::Overhead("baseline terminal only"),
        target: "<= 3x",
        meaning: "the same in embedded mode",
    },
    Row {
        group: "reqwest_middleware_in_process",
        ours: "secure-media presigned hit",
        baseline: "baseline no-op middleware",
        kind: Kind::Overhead("baseline terminal only"),
        target: "<= 3x",
        meaning: "the same on a presigned cache hit",
    },
    Row {
        group: "reqwest_end_to_end",
        ours: "secure-media header",
        baseline: "baseline reqwest, token by hand",
        kind: Kind::Cost,
        target: "(info)",
        meaning: "a whole loopback request, header mode, vs the bare client with the header set by hand",
    },
    Row {
        group: "reqwest_end_to_end",
        ours: "secure-media presigned hit",
        baseline: "baseline reqwest, token by hand",
        kind: Kind::Cost,
        target: "(info)",
        meaning: "the same on a presigned hit",
    },
    Row {
        group: "tower_in_process",
        ours: "secure-media layer, header mode",
        baseline: "baseline service_fn call",
        kind: Kind::Added,
        target: "<= +200 ns",
        meaning: "what the tower layer adds to an in-process call",
    },
    Row {
        group: "tower_in_process",
        ours: "secure-media layer, header mode, without MediaKey",
        baseline: "baseline service_fn call",
        kind: Kind::Added,
        target: "<= +200 ns",
        meaning: "the same with `without_media_key()`",
    },
    Row {
        group: "tower_in_process",
        ours: "baseline tower-http SetRequestHeader",
        baseline: "baseline service_fn call",
        kind: Kind::Added,
        target: "(info)",
        meaning: "the floor: tower-http's layer setting a prebuilt header on every request (no host check, no retry)",
    },
    Row {
        group: "tower_in_process",
        ours: "secure-media layer, header mode, without MediaKey",
        baseline: "baseline tower-http SetRequestHeader",
        kind: Kind::Overhead("baseline service_fn call"),
        target: "(info)",
        meaning: "ours vs that floor: the host check, the resolution and the retry's state",
    },
];

/// Each saved run's median (`--save-baseline runN`; criterion's `new` when no run was saved), by
/// run name. `function` may name another group as `group/function`.
fn runs(root: &Path, group: &str, function: &str) -> BTreeMap<String, f64> {
    let (group, function) = match function.split_once('/') {
        Some((other, function)) if !other.contains(' ') => (other, function),
        _ => (group, function),
    };
    let dir = root.join(group).join(function.replace(['/', '\\', ':', '*', '?', '"', '<', '>', '|'], "_"));
    let read = |name: &str| -> Option<f64> {
        let text = std::fs::read_to_string(dir.join(name).join("estimates.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["median"]["point_estimate"].as_f64()
    };
    let mut saved: BTreeMap<String, f64> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|name| name.starts_with("run"))
        .filter_map(|name| read(&name).map(|ns| (name, ns)))
        .collect();
    if saved.is_empty() {
        saved.extend(read("new").map(|ns| ("new".to_owned(), ns)));
    }
    saved
}

/// `f(a, b)` for every run both measured: ratios are taken within a run, where both sides met
/// the same machine (this VM slows down for seconds at a time), then summarised across runs.
fn paired(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    a.iter().filter_map(|(run, x)| b.get(run).map(|y| f(*x, *y))).collect()
}

/// "median (lowest-highest)" of per-run values.
fn spread(values: &[f64], unit: &str) -> String {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() > 1 {
        format!(" (runs {lo:.2}{unit}-{hi:.2}{unit})")
    } else {
        String::new()
    }
}

fn show(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// Reads the results under `root` (criterion's, and `gallery.json`), rewrites `workspace`'s
/// BENCHMARKS.md (the criterion table, the gallery section), `benches/ratios.svg` and
/// `benches/gallery.svg` from what is there, and prints them. Either part alone is enough: the
/// other keeps what is published.
pub(crate) fn run(root: &Path, workspace: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if !root.is_dir() {
        return Err(format!(
            "no results in {}: run `cargo bench --bench resolution` or `cargo bench --bench gallery` first, \
             or pass --criterion-dir DIR",
            root.display()
        )
        .into());
    }
    let table = criterion_table(root, workspace)?;
    if !table {
        eprintln!(
            "no results of benches/resolution.rs in {}: BENCHMARKS.md's table and benches/ratios.svg are kept",
            root.display()
        );
    }
    let gallery = crate::gallery_report::run(root, workspace)?;
    if !gallery {
        eprintln!(
            "no gallery.json in {}: BENCHMARKS.md's gallery section and benches/gallery.svg are kept",
            root.display()
        );
    }
    if !table && !gallery {
        return Err(format!("none of the benchmarks this report reads is in {}", root.display()).into());
    }
    Ok(())
}

/// The criterion part: rewrites the table and `benches/ratios.svg`; `Ok(false)` when none of
/// [`ROWS`] was measured (then nothing is written).
fn criterion_table(root: &Path, workspace: &Path) -> Result<bool, Box<dyn std::error::Error>> {
    let mut missing = Vec::new();
    let mut table =
        String::from("| group | ours | baseline | ratio | target | what it means |\n|---|---|---|---|---|---|\n");
    let mut bars: Vec<(String, f64, bool)> = Vec::new();
    for row in ROWS {
        let ours_runs = runs(root, row.group, row.ours);
        if ours_runs.is_empty() {
            missing.push(format!("{}/{}", row.group, row.ours));
            continue;
        }
        let ours = median(&ours_runs.values().copied().collect::<Vec<_>>());
        let base_runs = match row.kind {
            Kind::Scaling(one_group, one_function) => runs(root, one_group, one_function),
            _ => runs(root, row.group, row.baseline),
        };
        let baseline_ns = median(&base_runs.values().copied().collect::<Vec<_>>());
        let (ratio, label, met) = match row.kind {
            Kind::Faster => {
                let per_run = paired(&base_runs, &ours_runs, |b, o| b / o);
                let r = median(&per_run);
                (r, format!("{r:.1}x faster{}", spread(&per_run, "x")), target_met(row.target, r, true))
            }
            Kind::Added => {
                let over = median(&paired(&ours_runs, &base_runs, |o, b| o - b));
                let limit: f64 = row
                    .target
                    .trim_start_matches(['<', '=', ' ', '+'])
                    .trim_end_matches(" ns")
                    .parse()
                    .unwrap_or(f64::NAN);
                (ours / baseline_ns, format!("+{}", show(over)), over <= limit)
            }
            Kind::Cost => {
                let per_run = paired(&ours_runs, &base_runs, |o, b| o / b);
                let r = median(&per_run);
                (r, format!("{r:.2}x the cost{}", spread(&per_run, "x")), target_met(row.target, r, false))
            }
            Kind::Overhead(floor) => {
                let floor_runs = runs(root, row.group, floor);
                let ours_over = median(&paired(&ours_runs, &floor_runs, |o, f| o - f));
                let base_over = median(&paired(&base_runs, &floor_runs, |b, f| b - f));
                // A no-op costs next to nothing in process (within this VM's noise): judged
                // against at least 1 ns.
                let r = ours_over / base_over.max(1.0);
                let label = format!("{} vs {} added", show(ours_over), show(base_over));
                (r, label, target_met(row.target, r, false))
            }
            Kind::Scaling(..) => {
                // Two lookups per iteration on two threads: throughput ratio = 2 * one / two.
                let per_run = paired(&base_runs, &ours_runs, |one, two| 2.0 * one / two);
                let r = median(&per_run);
                let label = format!("{r:.2}x one thread's hits/s{}", spread(&per_run, "x"));
                (r, label, target_met(row.target, r, true))
            }
        };
        let baseline_name = match row.kind {
            Kind::Scaling(..) => "one thread".to_string(),
            _ => row.baseline.rsplit('/').next().unwrap_or(row.baseline).trim_start_matches("baseline ").to_string(),
        };
        let mark = if row.target == "(info)" {
            ""
        } else if met {
            " ✓"
        } else {
            " ✗"
        };
        writeln!(
            table,
            "| {} | {} | {} ({}) | {label} | {}{mark} | {} |",
            row.group,
            show(ours),
            show(baseline_ns),
            baseline_name,
            row.target,
            row.meaning
        )?;
        let speedup = match row.kind {
            Kind::Faster | Kind::Scaling(..) => ratio,
            _ => 1.0 / ratio,
        };
        let ours_name = row.ours.trim_start_matches("secure-media ");
        bars.push((format!("{} {ours_name} vs {baseline_name}", row.group), speedup, met || row.target == "(info)"));
    }
    // Nothing measured: keep the published table and chart rather than blank them.
    if bars.is_empty() {
        return Ok(false);
    }
    for name in missing {
        eprintln!("missing: {name}");
    }
    std::fs::write(workspace.join("benches").join("ratios.svg"), svg(&bars))?;
    let mut generated = table;
    for (name, label) in [
        ("1000 x one URL", "1,000 concurrent cold resolutions of one URL"),
        ("1000 distinct URLs", "1,000 distinct cold URLs"),
    ] {
        let burst = runs(&root.join("presigned_cold_burst"), "secure-media", name);
        if !burst.is_empty() {
            let ns = median(&burst.values().copied().collect::<Vec<_>>());
            writeln!(
                generated,
                "| presigned_cold_burst | {} | in-process presigner | {} | | {label} |",
                show(ns),
                burst_calls(root, name)
            )?;
        }
    }
    // Replace what stands between the markers in BENCHMARKS.md.
    crate::gallery_report::replace_between(
        &workspace.join("BENCHMARKS.md"),
        "<!-- table -->",
        "<!-- /table -->",
        &generated,
    )?;
    print!("{generated}");
    Ok(true)
}

fn burst_calls(root: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(root.join("bursts.txt")).unwrap_or_default();
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split(": ").nth(1)).unwrap_or("").to_owned()
}

fn target_met(target: &str, ratio: f64, higher_is_better: bool) -> bool {
    let number: f64 =
        target.trim_start_matches(['>', '<', '=', ' ']).trim_end_matches('x').trim().parse().unwrap_or(f64::NAN);
    if higher_is_better {
        ratio >= number
    } else {
        ratio <= number
    }
}

/// A horizontal bar chart of speed-ups (ours relative to the baseline; 1 = parity), log scale.
fn svg(bars: &[(String, f64, bool)]) -> String {
    let (width, row_h, left) = (900.0, 26.0, 470.0);
    let height = 40.0 + row_h * bars.len() as f64;
    let scale = |x: f64| left + (x.max(0.05).log10() + 1.5) / 3.0 * (width - left - 20.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"18\" font-weight=\"bold\">secure-media vs baseline (speed-up, log scale; right of the line is faster)</text>\n"
    );
    let one = scale(1.0);
    for (i, (label, speedup, met)) in bars.iter().enumerate() {
        let y = 30.0 + row_h * i as f64;
        let (x0, x1) = if *speedup >= 1.0 { (one, scale(*speedup)) } else { (scale(*speedup), one) };
        let color = if *met { "#2e7d32" } else { "#c62828" };
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{:.0}\">{}</text><rect x=\"{x0:.1}\" y=\"{y:.0}\" width=\"{:.1}\" height=\"{:.0}\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.0}\">{speedup:.2}x</text>",
            y + 15.0,
            escape(label),
            (x1 - x0).max(1.0),
            row_h - 8.0,
            x1.max(x0) + 4.0,
            y + 15.0
        );
    }
    let _ =
        write!(out, "<line x1=\"{one:.1}\" y1=\"26\" x2=\"{one:.1}\" y2=\"{height:.0}\" stroke=\"#000\"/>\n</svg>\n");
    out
}
