//! The report's pictures: each run as a timeline of checkouts per second by outcome
//! (accepted, refused, failed), the payment breaker's states as bands above it and the
//! fault window shaded, payguard above naive. Plain SVG inside one HTML file, no
//! scripts or fonts fetched, so it opens anywhere; each profile's SVG is also written
//! beside the HTML for the docs.

use std::fmt::Write;
use std::path::Path;

use super::audit::{Audit, Timeline};

const WIDTH: f64 = 900.0;
const PANEL: f64 = 170.0;
const LEFT: f64 = 48.0;
const BUCKET_S: f64 = 0.5;

pub fn write(path: &Path, protected: &[Audit], naive: &[Audit], command: &str) -> std::io::Result<()> {
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>payguard chaos report</title>\
         <style>body{{font-family:sans-serif;margin:24px;color:#222}}code{{background:#f3f3f3;padding:2px 4px}}</style>\
         </head><body><h1>payguard chaos report</h1><p><code>{}</code></p>\
         <p>Checkouts started per second by outcome: <b style=\"color:#2e7d32\">accepted (202)</b>, \
         <b style=\"color:#9e9e9e\">refused (503)</b>, <b style=\"color:#c62828\">failed (other or no answer)</b>. \
         The band above each chart is the primary's payment breaker: <b style=\"color:#c62828\">open</b>, \
         <b style=\"color:#ef6c00\">half-open</b>, nothing while closed. The shaded span is the fault window.</p>",
        escape(command)
    );
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "report".into());
    for (i, audit) in protected.iter().enumerate() {
        let svg = profile_svg(audit, naive.get(i));
        let _ = write!(html, "<h2>{}</h2>{svg}", audit.profile.name());
        let file = path.with_file_name(format!("{stem}-{}.svg", audit.profile.name()));
        std::fs::write(file, &svg)?;
    }
    html.push_str("</body></html>\n");
    std::fs::write(path, html)
}

fn profile_svg(protected: &Audit, naive: Option<&Audit>) -> String {
    let runs: Vec<(&str, &Audit)> =
        std::iter::once(("payguard", protected)).chain(naive.map(|n| ("naive", n))).collect();
    let seconds = runs.iter().map(|(_, a)| a.timeline.elapsed).fold(1.0, f64::max);
    let peak = runs.iter().map(|(_, a)| peak_per_second(&a.timeline)).fold(1.0, f64::max);
    let height = PANEL * runs.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" \
         font-family=\"sans-serif\" font-size=\"11\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    for (i, (label, audit)) in runs.iter().enumerate() {
        panel(&mut svg, label, audit, i as f64 * PANEL, seconds, peak);
    }
    // The time axis, shared.
    let bottom = PANEL * runs.len() as f64;
    let step = if seconds > 40.0 {
        10.0
    } else if seconds > 12.0 {
        2.0
    } else {
        1.0
    };
    let mut t = 0.0;
    while t <= seconds {
        let x = x_of(t, seconds);
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{t:.0}</text>",
            bottom + 14.0
        );
        t += step;
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">seconds</text></svg>",
        WIDTH - 4.0,
        bottom + 28.0
    );
    svg
}

fn x_of(t: f64, seconds: f64) -> f64 {
    LEFT + t / seconds * (WIDTH - LEFT - 10.0)
}

fn peak_per_second(timeline: &Timeline) -> f64 {
    let buckets = (timeline.elapsed / BUCKET_S).ceil() as usize + 1;
    let mut counts = vec![0usize; buckets];
    for (at, _) in &timeline.checkouts {
        counts[((at / BUCKET_S) as usize).min(buckets - 1)] += 1;
    }
    counts.into_iter().max().unwrap_or(0) as f64 / BUCKET_S
}

fn panel(svg: &mut String, label: &str, audit: &Audit, top: f64, seconds: f64, peak: f64) {
    let timeline = &audit.timeline;
    let (chart_top, chart_bottom) = (top + 34.0, top + PANEL - 12.0);
    let y_of = |per_second: f64| chart_bottom - per_second / peak * (chart_bottom - chart_top);
    let f = &audit.figures;
    let _ = write!(
        svg,
        "<text x=\"{LEFT}\" y=\"{:.1}\" font-weight=\"bold\">{label}: paid {}, accepted {} of {} (in the window {} of {})</text>",
        top + 14.0,
        f.paid,
        f.accepted,
        f.checkouts,
        f.outage_accepted,
        f.outage_checkouts
    );
    if let Some((from, to)) = timeline.window {
        let (x1, x2) = (x_of(from, seconds), x_of(to, seconds));
        let _ = write!(
            svg,
            "<rect x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#fff3c4\"/>",
            top + 20.0,
            x2 - x1,
            chart_bottom - top - 20.0
        );
    }
    // Breaker bands.
    for (i, (from, state)) in timeline.breaker.iter().enumerate() {
        let to = timeline.breaker.get(i + 1).map_or(timeline.elapsed, |(t, _)| *t);
        let color = match state.as_str() {
            "open" | "forced_open" => "#c62828",
            "half_open" => "#ef6c00",
            _ => continue,
        };
        let (x1, x2) = (x_of(*from, seconds), x_of(to, seconds));
        let _ = write!(
            svg,
            "<rect x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"8\" fill=\"{color}\"><title>{state} {from:.2}-{to:.2} s</title></rect>",
            top + 22.0,
            (x2 - x1).max(1.0)
        );
    }
    // Stacked bars per bucket: accepted, refused, failed.
    let buckets = (timeline.elapsed / BUCKET_S).ceil() as usize + 1;
    let mut counts = vec![[0usize; 3]; buckets];
    for (at, status) in &timeline.checkouts {
        let kind = match status {
            202 => 0,
            503 => 1,
            _ => 2,
        };
        counts[((at / BUCKET_S) as usize).min(buckets - 1)][kind] += 1;
    }
    let bar = (x_of(BUCKET_S, seconds) - x_of(0.0, seconds) - 1.0).max(1.0);
    for (i, c) in counts.iter().enumerate() {
        let x = x_of(i as f64 * BUCKET_S, seconds);
        let mut base = 0.0;
        for (kind, color) in [(0, "#2e7d32"), (1, "#9e9e9e"), (2, "#c62828")] {
            if c[kind] == 0 {
                continue;
            }
            let per_second = c[kind] as f64 / BUCKET_S;
            let (y_top, y_bottom) = (y_of(base + per_second), y_of(base));
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y_top:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{color}\"/>",
                (y_bottom - y_top).max(0.5)
            );
            base += per_second;
        }
    }
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{chart_bottom:.1}\" x2=\"{:.1}\" y2=\"{chart_bottom:.1}\" stroke=\"#999\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{peak:.0}/s</text>\
         <text x=\"{:.1}\" y=\"{chart_bottom:.1}\" text-anchor=\"end\" fill=\"#555\">0</text>",
        WIDTH - 10.0,
        LEFT - 4.0,
        chart_top + 4.0,
        LEFT - 4.0
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
