//! Inline SVG charts for `report.html` (pure: data in, markup out; no script, no network).
//! Colours are CSS variables (`--c0` … `--c7`, `--ok`, `--bad`, `--muted`, `--fg`, `--grid`)
//! so that the page's light, dark and print themes apply to them.

use std::fmt::Write;

/// Escape `text` for HTML and SVG text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The colour variable of series `i`.
pub fn colour(i: usize) -> String {
    format!("var(--c{})", i % 8)
}

/// A "nice" upper bound ≥ `max` for an axis (1, 2 or 5 times a power of ten).
pub fn nice_max(max: f64) -> f64 {
    if max.is_nan() || max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * magnitude)
}

/// `value` short: 1.2k, 3.4M, or as is below 1000 (integers without decimals).
pub fn short(value: f64) -> String {
    let abs = value.abs();
    if abs >= 1e9 {
        format!("{:.1}G", value / 1e9)
    } else if abs >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if abs >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// Session seconds as `1h 02m`, `3m 05s` or `12.5s`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "–".into();
    }
    let whole = secs.round() as u64;
    if whole >= 3600 {
        format!("{}h {:02}m", whole / 3600, whole % 3600 / 60)
    } else if whole >= 60 {
        format!("{}m {:02}s", whole / 60, whole % 60)
    } else {
        format!("{secs:.1}s")
    }
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 120.0;
const RIGHT: f64 = 16.0;

/// One series of a line chart: its name and (x, y) points in x order.
pub struct Series {
    /// The legend's name.
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

/// A step line chart of `series` over x ∈ [0, `x_max`] (session seconds); `title` names it for
/// screen readers. Empty series draw an empty frame with "no data".
pub fn line_chart(title: &str, series: &[Series], x_max: f64, y_unit: &str) -> String {
    let height = 220.0;
    let (top, bottom) = (12.0, 30.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = height - top - bottom;
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let x_max = if x_max > 0.0 { x_max } else { 1.0 };
    let x = |v: f64| LEFT + (v / x_max).clamp(0.0, 1.0) * plot_w;
    let y = |v: f64| top + plot_h - (v / y_max).clamp(0.0, 1.0) * plot_h;
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    axes(&mut out, x_max, y_max, y_unit, top, plot_h, &x, &y);
    if series.iter().all(|s| s.points.is_empty()) {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" class=\"muted\" text-anchor=\"middle\">no data</text>",
            LEFT + plot_w / 2.0,
            top + plot_h / 2.0
        );
    }
    for (i, s) in series.iter().enumerate() {
        if s.points.is_empty() {
            continue;
        }
        let mut path = format!("M{:.1},{:.1}", x(0.0), y(0.0));
        let mut last_y = 0.0;
        for (px, py) in &s.points {
            let _ = write!(path, " H{:.1} V{:.1}", x(*px), y(*py));
            last_y = *py;
        }
        let _ = write!(path, " H{:.1}", x(x_max));
        let _ = write!(
            out,
            "<path d=\"{path}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"><title>{}: {} {}</title></path>",
            colour(i),
            esc(&s.name),
            short(last_y),
            esc(y_unit)
        );
    }
    out.push_str("</svg>");
    out.push_str(&legend(series.iter().map(|s| s.name.as_str())));
    out
}

#[allow(clippy::too_many_arguments)]
fn axes(
    out: &mut String,
    x_max: f64,
    y_max: f64,
    y_unit: &str,
    top: f64,
    plot_h: f64,
    x: &dyn Fn(f64) -> f64,
    y: &dyn Fn(f64) -> f64,
) {
    for i in 0..=4 {
        let value = y_max * i as f64 / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"tick\">{} {}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(value) + 4.0,
            short(value),
            esc(y_unit),
            y = y(value),
        );
    }
    time_ticks(out, x_max, top + plot_h + 18.0, x);
}

/// Seven session-time labels along the x axis at height `y`.
fn time_ticks(out: &mut String, x_max: f64, y: f64, x: &dyn Fn(f64) -> f64) {
    for i in 0..=6 {
        let value = x_max * i as f64 / 6.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" class=\"tick\">{}</text>",
            x(value),
            duration(value)
        );
    }
}

fn legend<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("<div class=\"legend\">");
    for (i, name) in names.enumerate() {
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>{}</span>",
            colour(i),
            esc(name)
        );
    }
    out.push_str("</div>");
    out
}

/// A horizontal bar chart of (label, value) pairs, largest first as given.
pub fn bar_chart(title: &str, items: &[(String, f64)], unit: &str) -> String {
    if items.is_empty() {
        return "<p class=\"muted\">no data</p>".into();
    }
    let row = 22.0;
    let height = row * items.len() as f64 + 8.0;
    let max = nice_max(items.iter().map(|i| i.1).fold(0.0, f64::max));
    let plot_w = WIDTH - LEFT - RIGHT - 80.0;
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    for (i, (label, value)) in items.iter().enumerate() {
        let y = 4.0 + i as f64 * row;
        let w = (value / max).clamp(0.0, 1.0) * plot_w;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"tick\">{}</text>\
             <rect x=\"{LEFT}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"var(--c0)\"><title>{}: {} {}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\">{} {}</text>",
            LEFT - 6.0,
            y + 15.0,
            esc(&truncate(label, 18)),
            row - 6.0,
            esc(label),
            short(*value),
            esc(unit),
            LEFT + w + 6.0,
            y + 15.0,
            short(*value),
            esc(unit),
        );
    }
    out.push_str("</svg>");
    out
}

/// `text` cut to `max` characters with an ellipsis.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A bar across the lane from `start` to `end` (session seconds).
pub struct Span {
    /// Session seconds.
    pub start: f64,
    /// Session seconds.
    pub end: f64,
    /// `ok`, `bad` or `muted` (the colour class).
    pub class: &'static str,
    /// Its tooltip.
    pub label: String,
}

/// A symbol on a lane.
pub struct Point {
    /// Session seconds.
    pub at: f64,
    /// `checkpoint`, `check`, `recovery`, `escalation`, `vote` (the symbol).
    pub kind: String,
    /// Drawn in the failure colour when false.
    pub ok: bool,
    /// Its tooltip.
    pub label: String,
}

/// One lane of the timeline.
pub struct Lane {
    /// Its name (left of it).
    pub name: String,
    /// Its bars.
    pub spans: Vec<Span>,
    /// Its symbols.
    pub points: Vec<Point>,
}

/// The phase timeline: phase bands `(name, start, end)` across the top, then one lane per
/// entry of `lanes`, over [0, `x_max`] session seconds.
pub fn timeline(phases: &[(String, f64, f64)], lanes: &[Lane], x_max: f64) -> String {
    let lane_h = 26.0;
    let top = 28.0;
    let height = top + lane_h * lanes.len() as f64 + 26.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x_max = if x_max > 0.0 { x_max } else { 1.0 };
    let x = |v: f64| LEFT + (v / x_max).clamp(0.0, 1.0) * plot_w;
    let mut out = format!(
        "<svg class=\"chart timeline\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"phase timeline\">"
    );
    for (i, (name, start, end)) in phases.iter().enumerate() {
        let (x0, x1) = (x(*start), x(*end).max(x(*start) + 1.0));
        let _ = write!(
            out,
            "<rect x=\"{x0:.1}\" y=\"0\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"{}\" opacity=\"0.10\"/>\
             <rect x=\"{x0:.1}\" y=\"2\" width=\"{:.1}\" height=\"20\" fill=\"{}\" opacity=\"0.55\"><title>{}: {} – {}</title></rect>\
             <text x=\"{:.1}\" y=\"16\" class=\"phase\">{}</text>",
            x1 - x0,
            colour(i + 2),
            x1 - x0,
            colour(i + 2),
            esc(name),
            duration(*start),
            duration(*end),
            x0 + 4.0,
            esc(&truncate(name, ((x1 - x0) / 7.0).max(1.0) as usize)),
        );
    }
    for (i, lane) in lanes.iter().enumerate() {
        let y = top + i as f64 * lane_h;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"grid\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"tick\">{}</text>",
            WIDTH - RIGHT,
            y + lane_h - 1.0,
            y + lane_h - 1.0,
            LEFT - 6.0,
            y + 17.0,
            esc(&truncate(&lane.name, 16)),
        );
        for span in &lane.spans {
            let (x0, x1) = (x(span.start), x(span.end));
            let _ = write!(
                out,
                "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"2\" class=\"span {}\"><title>{}</title></rect>",
                y + 5.0,
                (x1 - x0).max(1.5),
                lane_h - 10.0,
                span.class,
                esc(&span.label),
            );
        }
        for point in &lane.points {
            let (cx, cy) = (x(point.at), y + lane_h / 2.0);
            let class = if point.ok { "mark" } else { "mark bad" };
            let shape = match point.kind.as_str() {
                "checkpoint" => format!(
                    "<path d=\"M{cx:.1},{:.1} l5,6 l-5,6 l-5,-6 z\" class=\"{class}\">",
                    cy - 6.0
                ),
                "recovery" | "escalation" => format!(
                    "<path d=\"M{cx:.1},{:.1} l6,11 h-12 z\" class=\"{class}\">",
                    cy - 6.0
                ),
                "vote" => {
                    format!("<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\" class=\"{class}\">")
                }
                _ => format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" class=\"{class}\">",
                    cx - 4.0,
                    cy - 4.0
                ),
            };
            let tag = if shape.starts_with("<path") {
                "path"
            } else if shape.starts_with("<circle") {
                "circle"
            } else {
                "rect"
            };
            let _ = write!(
                out,
                "{shape}<title>{} at {}</title></{tag}>",
                esc(&point.label),
                duration(point.at)
            );
        }
    }
    time_ticks(&mut out, x_max, height - 8.0, &x);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_bounds_and_figures_read_well() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(70_809.0), 100_000.0);
        assert_eq!(short(70_809.0), "70.8k");
        assert_eq!(short(12.0), "12");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(duration(36.66), "36.7s");
        assert_eq!(duration(3725.0), "1h 02m");
        assert_eq!(duration(185.0), "3m 05s");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }

    #[test]
    fn untrusted_labels_are_escaped_in_every_chart() {
        let evil = "<script>alert(1)</script>\"'&";
        let series = [Series {
            name: evil.into(),
            points: vec![(1.0, 2.0)],
        }];
        let lanes = [Lane {
            name: evil.into(),
            spans: vec![Span {
                start: 0.0,
                end: 1.0,
                class: "ok",
                label: evil.into(),
            }],
            points: vec![Point {
                at: 0.5,
                kind: "vote".into(),
                ok: false,
                label: evil.into(),
            }],
        }];
        for svg in [
            line_chart(evil, &series, 10.0, evil),
            bar_chart(evil, &[(evil.into(), 3.0)], evil),
            timeline(&[(evil.into(), 0.0, 5.0)], &lanes, 10.0),
        ] {
            assert!(!svg.contains("<script"), "{svg}");
            assert!(!svg.contains("\"'&"), "{svg}");
            assert!(svg.contains("&lt;script&gt;"), "{svg}");
        }
    }
}
