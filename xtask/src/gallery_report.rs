//! The gallery scenario's part of `cargo xtask bench-report`: `gallery.json` (written by
//! `cargo bench --bench gallery` beside criterion's results) -> BENCHMARKS.md's section between
//! `<!-- gallery -->` and `<!-- /gallery -->` (the tables and the targets) and the chart
//! `benches/gallery.svg` (time against concurrency, one line per approach and per limit).

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

/// What `benches/gallery.rs` writes (version 1).
#[derive(Deserialize)]
struct Report {
    version: u32,
    unix_time: u64,
    images: usize,
    presign_delay_ms: f64,
    media_delay_ms: f64,
    batch_limit: usize,
    max_concurrent_calls: usize,
    runs: usize,
    statistic: String,
    cpus: usize,
    load_average: LoadAverage,
    concurrency: Vec<usize>,
    cold: Vec<Cell>,
    warm: Vec<Cell>,
    rotation: Vec<Rotation>,
}

#[derive(Deserialize)]
struct LoadAverage {
    before: Option<String>,
    after: Option<String>,
}

/// Every measurement of one approach on one stack at one concurrency.
#[derive(Deserialize)]
struct Cell {
    approach: String,
    stack: String,
    concurrency: usize,
    ms: Vec<f64>,
    presign_calls: Vec<u64>,
    failures: u64,
}

#[derive(Deserialize)]
struct Rotation {
    mode: String,
    stack: String,
    concurrency: usize,
    images: usize,
    ms: f64,
    failures: u64,
    relogins: u64,
    token_refreshes: u64,
    retries: u64,
    presign_calls: u64,
    expired_fat_refusals: u64,
}

/// An approach as shown: its id in gallery.json, its label in the tables and in the chart's
/// legend, its colour in the chart.
struct Approach {
    id: &'static str,
    label: &'static str,
    legend: &'static str,
    colour: &'static str,
}

/// In the order they are shown.
const APPROACHES: &[Approach] = &[
    Approach {
        id: "presigned-ahead",
        label: "ours, presigned, asking ahead (`prefetch`, then the loads)",
        legend: "ours, presigned, asking ahead",
        colour: "#2e7d32",
    },
    Approach {
        id: "presigned-windowed",
        label: "ours, presigned, without asking ahead (the loads alone)",
        legend: "ours, presigned, not asking ahead",
        colour: "#1565c0",
    },
    Approach { id: "header", label: "ours, header mode", legend: "ours, header mode", colour: "#6a1b9a" },
    Approach { id: "embedded", label: "ours, embedded mode", legend: "ours, embedded mode", colour: "#ef6c00" },
    Approach {
        id: "recipe",
        label: "vendor recipe by hand: a presign call per image, a `HashMap`, a bare GET",
        legend: "vendor recipe by hand",
        colour: "#c62828",
    },
    Approach {
        id: "bare-header",
        label: "bare reqwest GET, Bearer set by hand (no library, no presign)",
        legend: "bare GET, Bearer by hand",
        colour: "#6d4c41",
    },
];

fn approach(id: &str) -> Option<&'static Approach> {
    APPROACHES.iter().find(|a| a.id == id)
}

fn label(id: &str) -> &str {
    approach(id).map_or(id, |a| a.label)
}

/// Where an approach sorts: the order of [`APPROACHES`], unknown ones last.
fn rank(id: &str) -> usize {
    APPROACHES.iter().position(|a| a.id == id).unwrap_or(APPROACHES.len())
}

/// The median (upper middle for an even count); NaN for none.
/// The middle value (the upper one of an even count), `NaN` for none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn show_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// The three bounds, from the delays alone.
struct Limits {
    images: usize,
    presign: f64,
    media: f64,
}

impl Limits {
    fn rounds(&self, c: usize) -> f64 {
        self.images.div_ceil(c.max(1)) as f64
    }
    /// Asking ahead: one presign round (the batches go out together), then the media rounds.
    fn ahead(&self, c: usize) -> f64 {
        self.presign + self.rounds(c) * self.media
    }
    /// A loader that asks one window of `c` URLs at a time: a presign round per window at best.
    fn windowed(&self, c: usize) -> f64 {
        self.rounds(c) * (self.presign + self.media)
    }
    /// Header and embedded mode, and any warm scroll: the media rounds alone.
    fn tokens(&self, c: usize) -> f64 {
        self.rounds(c) * self.media
    }
}

/// The results of one table, by (approach, stack) in the order shown, then by concurrency.
type Series<'a> = BTreeMap<(usize, &'a str, &'a str), BTreeMap<usize, &'a Cell>>;

fn series(cells: &[Cell]) -> Series<'_> {
    let mut out: Series<'_> = BTreeMap::new();
    for cell in cells {
        out.entry((rank(&cell.approach), cell.approach.as_str(), cell.stack.as_str()))
            .or_default()
            .insert(cell.concurrency, cell);
    }
    out
}

/// The median time of `approach` on `stack` at `c`.
fn time(series: &Series<'_>, approach: &str, stack: &str, c: usize) -> Option<f64> {
    series.get(&(rank(approach), approach, stack))?.get(&c).map(|cell| median(&cell.ms))
}

/// Reads `gallery.json` under `root`, rewrites BENCHMARKS.md's gallery section and
/// `benches/gallery.svg`, and prints the section. `Ok(false)` when there is no `gallery.json`.
pub(crate) fn run(root: &Path, workspace: &Path) -> Result<bool, Box<dyn Error>> {
    let path = root.join("gallery.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(format!("{}: {error}", path.display()).into()),
    };
    let report: Report = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if report.version != 1 {
        return Err(format!("{}: version {}, this report reads version 1", path.display(), report.version).into());
    }
    let section = markdown(&report)?;
    std::fs::write(workspace.join("benches").join("gallery.svg"), svg(&report))?;
    replace_between(&workspace.join("BENCHMARKS.md"), "<!-- gallery -->", "<!-- /gallery -->", &section)?;
    print!("{section}");
    Ok(true)
}

/// Replaces what stands between `start` and `end` in the file at `path` (kept as is, with a
/// warning, when the markers are missing).
pub(crate) fn replace_between(path: &Path, start: &str, end: &str, generated: &str) -> Result<(), Box<dyn Error>> {
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    match (doc.find(start), doc.find(end)) {
        (Some(a), Some(b)) if a < b => {
            let updated = format!("{}{start}\n{generated}{}", &doc[..a], &doc[b..]);
            std::fs::write(path, updated)?;
        }
        _ => eprintln!("{} has no {start} ... {end} markers; printing only", path.display()),
    }
    Ok(())
}

fn markdown(report: &Report) -> Result<String, Box<dyn Error>> {
    let limits = Limits { images: report.images, presign: report.presign_delay_ms, media: report.media_delay_ms };
    let (p, m, n) = (report.presign_delay_ms, report.media_delay_ms, report.images);
    let mut out = String::new();
    writeln!(
        out,
        "Run of {} ({} CPUs, load average {} before, {} after): {n} thumbnails, presign endpoint \
         +{p} ms a call, media +{m} ms a request, batch limit {}, up to {} presign calls at once. \
         Each figure is the {} of {} loads (each cold one with a fresh login, client, cache and \
         connections), with the presign calls the server answered.\n",
        date(report.unix_time),
        report.cpus,
        report.load_average.before.as_deref().unwrap_or("n/a"),
        report.load_average.after.as_deref().unwrap_or("n/a"),
        report.batch_limit,
        report.max_concurrent_calls,
        report.statistic,
        report.runs,
    )?;
    let header: String = report.concurrency.iter().map(|c| format!(" c = {c} |")).collect();
    let rule: String = report.concurrency.iter().map(|_| "---:|").collect();

    // Cold.
    let cold = series(&report.cold);
    writeln!(out, "**Cold gallery** (c: loads in flight at once)\n")?;
    writeln!(out, "| approach | stack |{header}\n|---|---|{rule}")?;
    for ((_, approach, stack), by_c) in &cold {
        let cells: String = report
            .concurrency
            .iter()
            .map(|c| match by_c.get(c) {
                Some(cell) => format!(" {} |", cold_cell(cell)),
                None => " - |".to_owned(),
            })
            .collect();
        writeln!(out, "| {} | {stack} |{cells}", label(approach))?;
    }
    let bounds: [(String, &dyn Fn(usize) -> f64); 3] = [
        (format!("limit asking ahead: {p} + ceil({n} / c) x {m}"), &|c| limits.ahead(c)),
        (format!("bound of a windowed loader: ceil({n} / c) x ({p} + {m})"), &|c| limits.windowed(c)),
        (format!("limit of the token modes: ceil({n} / c) x {m}"), &|c| limits.tokens(c)),
    ];
    for (name, f) in &bounds {
        let cells: String = report.concurrency.iter().map(|&c| format!(" {} |", show_ms(f(c)))).collect();
        writeln!(out, "| *{name}* | |{cells}")?;
    }

    writeln!(out, "\n![cold gallery: time against concurrency](benches/gallery.svg)")?;

    // Warm.
    let warm = series(&report.warm);
    writeln!(out, "\n**Warm scroll** (the same {n} again through the same client, all cached)\n")?;
    writeln!(out, "| approach | stack |{header}\n|---|---|{rule}")?;
    for ((_, approach, stack), by_c) in &warm {
        let cells: String = report
            .concurrency
            .iter()
            .map(|c| match by_c.get(c) {
                Some(cell) => format!(" {} |", warm_cell(cell)),
                None => " - |".to_owned(),
            })
            .collect();
        let name = match *approach {
            "presigned-ahead" => "ours, presigned mode",
            "recipe" => "vendor recipe by hand (its map filled)",
            other => label(other),
        };
        writeln!(out, "| {name} | {stack} |{cells}")?;
    }
    let cells: String = report.concurrency.iter().map(|&c| format!(" {} |", show_ms(limits.tokens(c)))).collect();
    writeln!(out, "| *limit: ceil({n} / c) x {m}* | |{cells}")?;

    // Rotation.
    writeln!(
        out,
        "\n**Token rotation**: a cold scroll without asking ahead, every FAT expired once half the \
         images are in; the login cell's relogin hook logs in again at the chat API.\n"
    )?;
    writeln!(
        out,
        "| mode | stack | images, c | time | failed images | relogins | renewals asked (strategy) | retries | presign calls | expired-FAT refusals |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in &report.rotation {
        writeln!(
            out,
            "| {} | {} | {}, {} | {} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.stack,
            r.images,
            r.concurrency,
            show_ms(r.ms),
            r.failures,
            r.relogins,
            r.token_refreshes,
            r.retries,
            r.presign_calls,
            r.expired_fat_refusals
        )?;
    }

    writeln!(out, "\n**Targets** (ratios of the medians above, all from this one run)\n")?;
    writeln!(out, "| target | stack | measured | |\n|---|---|---|---|")?;
    for row in targets(report, &cold, &warm, &limits) {
        let mark = match row.met {
            Some(true) => "✓",
            Some(false) => "✗",
            None => "(info)",
        };
        writeln!(out, "| {} | {} | {} | {mark} |", row.target, row.stack, row.measured)?;
    }
    Ok(out)
}

/// "93.0 ms, 4 calls" (the calls' range when the runs differ), and the failures if any.
fn cold_cell(cell: &Cell) -> String {
    let mut text = show_ms(median(&cell.ms));
    let (lo, hi) = (cell.presign_calls.iter().min(), cell.presign_calls.iter().max());
    match (lo, hi) {
        (Some(0), Some(0)) | (None, _) | (_, None) => {}
        (Some(lo), Some(hi)) if lo == hi => text += &format!(", {lo} calls"),
        (Some(lo), Some(hi)) => text += &format!(", {lo}-{hi} calls"),
    }
    if cell.failures > 0 {
        text += &format!(", **{} failed**", cell.failures);
    }
    text
}

fn warm_cell(cell: &Cell) -> String {
    let mut text = show_ms(median(&cell.ms));
    let calls: u64 = cell.presign_calls.iter().sum();
    if calls > 0 {
        text += &format!(", **{calls} presign calls**");
    }
    if cell.failures > 0 {
        text += &format!(", **{} failed**", cell.failures);
    }
    text
}

struct Target {
    target: String,
    stack: String,
    measured: String,
    /// `None` for a row shown for information (no target).
    met: Option<bool>,
}

/// Per-concurrency ratios: "c = 1: 1.02x, c = 16: 0.84x", and whether every one passes.
fn per_c(concurrency: &[usize], ratio: impl Fn(usize) -> Option<f64>, pass: impl Fn(f64) -> bool) -> (String, bool) {
    let mut parts = Vec::new();
    let mut met = true;
    for &c in concurrency {
        match ratio(c) {
            Some(r) => {
                met &= pass(r);
                parts.push(format!("c = {c}: {r:.2}x"));
            }
            None => {
                met = false;
                parts.push(format!("c = {c}: not measured"));
            }
        }
    }
    (parts.join(", "), met)
}

fn targets(report: &Report, cold: &Series<'_>, warm: &Series<'_>, limits: &Limits) -> Vec<Target> {
    let cs = &report.concurrency;
    let mut rows = Vec::new();
    let stacks = ["reqwest", "tower"];
    let recipe = |c| time(cold, "recipe", "reqwest", c);
    if cs.contains(&16) {
        for stack in stacks {
            let (ours, recipe) = (time(cold, "presigned-ahead", stack, 16), recipe(16));
            let (measured, met) = match (ours, recipe) {
                (Some(o), Some(r)) => {
                    (format!("{:.2}x faster ({} vs {})", r / o, show_ms(o), show_ms(r)), r / o >= 3.0)
                }
                _ => ("not measured".to_owned(), false),
            };
            rows.push(Target {
                target: "cold, asking ahead, c = 16: at least 3x faster than the recipe".into(),
                stack: stack.into(),
                measured,
                met: Some(met),
            });
        }
        for stack in stacks {
            let limit = limits.ahead(16);
            let (measured, met) = match time(cold, "presigned-ahead", stack, 16) {
                Some(o) => (format!("{:.2}x ({} vs {})", o / limit, show_ms(o), show_ms(limit)), o / limit <= 1.3),
                None => ("not measured".to_owned(), false),
            };
            rows.push(Target {
                target: "cold, asking ahead, c = 16: within 1.3x of the limit".into(),
                stack: stack.into(),
                measured,
                met: Some(met),
            });
        }
    }
    // What the machine adds to every request (the timer's rounding, TLS, the loopback) is in the
    // bare GET's time too: ours against the delays plus that.
    for stack in stacks {
        let (measured, _) = per_c(
            cs,
            |c| {
                Some(
                    time(cold, "presigned-ahead", stack, c)?
                        / (limits.presign + time(cold, "bare-header", "reqwest", c)?),
                )
            },
            |_| true,
        );
        rows.push(Target {
            target: format!(
                "cold, asking ahead, against the measured floor: {} ms (one presign round) + the bare GET's time",
                limits.presign
            ),
            stack: stack.into(),
            measured,
            met: None,
        });
    }
    let windowed = |c, stack| time(cold, "presigned-windowed", stack, c);
    for stack in stacks {
        let (measured, met) = per_c(cs, |c| Some(windowed(c, stack)? / recipe(c)?), |r| r <= 1.0);
        rows.push(Target {
            target: "cold, without asking ahead: never slower than the recipe (time / recipe's, every c)".into(),
            stack: stack.into(),
            measured,
            met: Some(met),
        });
    }
    for stack in stacks {
        let (measured, met) = per_c(cs, |c| Some(windowed(c, stack)? / limits.windowed(c)), |r| r <= 1.2);
        rows.push(Target {
            target: "cold, without asking ahead: within 1.2x of the windowed bound (every c)".into(),
            stack: stack.into(),
            measured,
            met: Some(met),
        });
    }
    for stack in stacks {
        let (measured, met) = per_c(
            cs,
            |c| Some(time(warm, "presigned-ahead", stack, c)? / time(warm, "header", stack, c)?),
            |r| r <= 1.1,
        );
        rows.push(Target {
            target: "warm scroll: presigned within 1.1x of header mode (every c)".into(),
            stack: stack.into(),
            measured,
            met: Some(met),
        });
    }
    for mode in ["header", "embedded"] {
        for stack in stacks {
            let (measured, met) = per_c(cs, |c| Some(time(warm, mode, stack, c)? / limits.tokens(c)), |r| r <= 1.2);
            rows.push(Target {
                target: format!("warm scroll: {mode} mode within 1.2x of the limit (every c)"),
                stack: stack.into(),
                measured,
                met: Some(met),
            });
        }
    }
    for mode in ["header", "embedded"] {
        for stack in stacks {
            let (measured, _) =
                per_c(cs, |c| Some(time(warm, mode, stack, c)? / time(warm, "bare-header", "reqwest", c)?), |_| true);
            rows.push(Target {
                target: format!("warm scroll, {mode} mode, against the bare GET with the Bearer set by hand"),
                stack: stack.into(),
                measured,
                met: None,
            });
        }
    }
    for r in &report.rotation {
        rows.push(Target {
            target: format!("token rotation, {} mode: 0 failed images, 1 renewal (relogin)", r.mode),
            stack: r.stack.clone(),
            measured: format!(
                "{} failed, {} relogin{} ({} renewals asked, by the loads that met the refusal)",
                r.failures,
                r.relogins,
                if r.relogins == 1 { "" } else { "s" },
                r.token_refreshes
            ),
            met: Some(r.failures == 0 && r.relogins == 1),
        });
    }
    rows
}

/// `YYYY-MM-DD` (UTC) of a unix time.
fn date(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|unix| time::OffsetDateTime::from_unix_timestamp(unix).ok())
        .map_or_else(|| "an unknown date".to_owned(), |at| at.date().to_string())
}

/// Text safe inside SVG and Markdown.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('`', "")
}

/// One line of the chart.
struct Line {
    label: String,
    colour: &'static str,
    dash: &'static str,
    width: f64,
    points: Vec<(usize, f64)>,
}

/// The cold gallery's time against concurrency, log-log: one line per approach and stack
/// (reqwest solid, tower dashed) and one per limit (grey).
fn svg(report: &Report) -> String {
    let limits = Limits { images: report.images, presign: report.presign_delay_ms, media: report.media_delay_ms };
    let cs = &report.concurrency;
    let mut lines: Vec<Line> = series(&report.cold)
        .iter()
        .map(|((_, id, stack), by_c)| Line {
            label: format!("{} ({stack})", approach(id).map_or(*id, |a| a.legend)),
            colour: approach(id).map_or("#000000", |a| a.colour),
            dash: if *stack == "tower" { "7 4" } else { "" },
            width: 2.0,
            points: by_c.iter().map(|(&c, cell)| (c, median(&cell.ms))).collect(),
        })
        .collect();
    let (p, m, n) = (report.presign_delay_ms, report.media_delay_ms, report.images);
    let bound = |label: String, colour: &'static str, dash: &'static str, f: &dyn Fn(usize) -> f64| Line {
        label,
        colour,
        dash,
        width: 1.5,
        points: cs.iter().map(|&c| (c, f(c))).collect(),
    };
    lines.push(bound(format!("limit asking ahead: {p} + ceil({n}/c) x {m}"), "#000000", "2 3", &|c| limits.ahead(c)));
    lines.push(bound(format!("windowed bound: ceil({n}/c) x ({p} + {m})"), "#757575", "9 4", &|c| limits.windowed(c)));
    lines.push(bound(format!("limit, token modes: ceil({n}/c) x {m}"), "#9e9e9e", "2 3", &|c| limits.tokens(c)));

    let (width, height) = (1000.0, 520.0);
    let (left, right, top, bottom) = (70.0, 560.0, 50.0, 460.0);
    let values = lines.iter().flat_map(|l| l.points.iter().map(|(_, ms)| *ms)).filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (1.0, 10.0) };
    // From the 1-2-5 step at or below the lowest value to the one at or above the highest.
    let steps = |decade: f64| [1.0, 2.0, 5.0].map(|step: f64| (step * 10f64.powf(decade)).log10());
    let y0 = steps(lo.log10().floor()).into_iter().filter(|s| *s <= lo.log10() + 1e-9).fold(f64::MIN, f64::max);
    let y1 = steps(hi.log10().floor())
        .into_iter()
        .chain([hi.log10().floor() + 1.0])
        .filter(|s| *s >= hi.log10() - 1e-9)
        .fold(f64::MAX, f64::min);
    let y1 = if y1 > y0 { y1 } else { y0 + 1.0 };
    let y = |ms: f64| bottom - (ms.max(1e-3).log10() - y0) / (y1 - y0) * (bottom - top);
    let (cmin, cmax) = (cs.iter().copied().min().unwrap_or(1).max(1), cs.iter().copied().max().unwrap_or(1).max(1));
    let x = |c: usize| {
        if cmax == cmin {
            (left + right) / 2.0
        } else {
            left + ((c as f64).log10() - (cmin as f64).log10()) / ((cmax as f64).log10() - (cmin as f64).log10())
                * (right - left)
        }
    };

    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>\n\
         <text x=\"10\" y=\"20\" font-weight=\"bold\">Cold gallery of {n} thumbnails: wall time against loads in flight (presign +{p} ms a call, media +{m} ms a request; log-log)</text>\n\
         <text x=\"10\" y=\"38\" fill=\"#555\">median of {} runs each, {}; lower is faster</text>\n",
        report.runs,
        date(report.unix_time),
    );
    // Horizontal grid: 1, 2, 5 times each power of ten.
    for decade in (y0.floor() as i32)..=(y1.ceil() as i32) {
        for step in [1.0, 2.0, 5.0] {
            let ms = step * 10f64.powi(decade);
            if ms.log10() < y0 - 1e-9 || ms.log10() > y1 + 1e-9 {
                continue;
            }
            let yy = y(ms);
            let text = if ms >= 1000.0 { format!("{} s", ms / 1000.0) } else { format!("{ms} ms") };
            let _ = writeln!(
                out,
                "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{right}\" y2=\"{yy:.1}\" stroke=\"#e0e0e0\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{text}</text>",
                left - 6.0,
                yy + 4.0
            );
        }
    }
    for &c in cs {
        let xx = x(c);
        let _ = writeln!(
            out,
            "<line x1=\"{xx:.1}\" y1=\"{top}\" x2=\"{xx:.1}\" y2=\"{bottom}\" stroke=\"#e0e0e0\"/><text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{c}</text>",
            bottom + 16.0
        );
    }
    let _ = writeln!(
        out,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#000\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">loads in flight at once (c)</text>",
        right - left,
        bottom - top,
        (left + right) / 2.0,
        bottom + 34.0
    );
    for line in &lines {
        let points: Vec<String> = line.points.iter().map(|&(c, ms)| format!("{:.1},{:.1}", x(c), y(ms))).collect();
        let dash = if line.dash.is_empty() { String::new() } else { format!(" stroke-dasharray=\"{}\"", line.dash) };
        let _ = writeln!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"{dash}/>",
            points.join(" "),
            line.colour,
            line.width
        );
        for &(c, ms) in &line.points {
            let _ =
                writeln!(out, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"/>", x(c), y(ms), line.colour);
        }
    }
    // The legend, right of the plot.
    for (i, line) in lines.iter().enumerate() {
        let yy = top + 8.0 + 20.0 * i as f64;
        let dash = if line.dash.is_empty() { String::new() } else { format!(" stroke-dasharray=\"{}\"", line.dash) };
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"{}\" stroke-width=\"{}\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            right + 15.0,
            right + 45.0,
            line.colour,
            line.width,
            right + 52.0,
            yy + 4.0,
            escape(&line.label)
        );
    }
    out.push_str("</svg>\n");
    out
}
