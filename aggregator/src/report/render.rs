//! The report's HTML: one file, inline CSS and SVG, no script, nothing
//! loaded from elsewhere. Every number is labelled a DP estimate with its
//! 95% error bound.

use std::fmt::Write as _;

use super::ReportData;
use crate::query::SeriesPoint;

const CSS: &str = "body{font-family:'DejaVu Sans',system-ui,sans-serif;color:#1b2430;max-width:1050px;margin:24px auto;padding:0 20px;font-size:14px}\
h1{font-size:24px;margin:0}h2{font-size:17px;border-bottom:2px solid #1f6feb;padding-bottom:4px;margin-top:30px}\
.sub{color:#5b6778}.note{background:#eef5ff;border-left:4px solid #1f6feb;padding:8px 12px;margin:14px 0;font-size:13px}\
table{border-collapse:collapse;width:100%;font-size:13px}th{text-align:left;border-bottom:1px solid #b9c3d0;padding:5px 6px;color:#38475a}\
td{border-bottom:1px solid #e3e8ef;padding:5px 6px;font-variant-numeric:tabular-nums}.num{text-align:right}\
.crit{color:#c62828;font-weight:700}.warn{color:#a36a00;font-weight:700}.info{color:#1f6feb;font-weight:700}\
.pm{color:#5b6778;font-size:12px}.mono{font-family:'DejaVu Sans Mono',monospace;font-size:12px;word-break:break-all}\
.grid{display:grid;grid-template-columns:repeat(3,1fr);gap:10px}.cell{border:1px solid #e3e8ef;border-radius:6px;padding:6px}\
.cell h3{font-size:13px;margin:0 0 4px}svg text{font-size:10px;fill:#5b6778}.kpis{display:flex;gap:14px;flex-wrap:wrap}\
.kpi{border:1px solid #e3e8ef;border-radius:6px;padding:8px 12px;min-width:150px}.kpi b{font-size:20px;display:block}\
@media print{h2{break-after:avoid}.cell{break-inside:avoid}}";

/// HTML-escapes `s`.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn hhmm(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| format!("{:02}:{:02}", t.hour(), t.minute()))
        .unwrap_or_else(|_| "?".into())
}

fn f(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A value with its bound: "1234 ± 12".
fn pm(v: f64, e: f64) -> String {
    format!("{} <span class=pm>± {} (95%)</span>", f(v), f(e))
}

/// A small occupancy chart with its 95% band and incident spans.
fn chart(points: &[SeriesPoint], incidents: &[(i64, i64)], limit: Option<f64>) -> String {
    let pts: Vec<&SeriesPoint> = points.iter().filter(|p| !p.suppressed).collect();
    let (w, h, l, r, t, b) = (320.0, 120.0, 34.0, 6.0, 6.0, 16.0);
    let mut s = format!("<svg viewBox=\"0 0 {w} {h}\" width=\"100%\" role=img>");
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        s.push_str("<text x=10 y=60>no occupancy releases</text></svg>");
        return s;
    };
    let x0 = first.window_start_ms as f64;
    let x1 = (last.window_start_ms as f64).max(x0 + 60_000.0);
    let mut y1 = pts
        .iter()
        .map(|p| p.value + p.error95)
        .fold(1.0_f64, f64::max);
    if let Some(l) = limit {
        y1 = y1.max(l * 1.05);
    }
    let y0 = pts
        .iter()
        .map(|p| p.value - p.error95)
        .fold(0.0_f64, f64::min);
    let x = |ms: f64| l + (w - l - r) * (ms - x0) / (x1 - x0);
    let y = |v: f64| t + (h - t - b) * (1.0 - (v - y0) / (y1 - y0));
    for &(a, z) in incidents {
        let (a, z) = ((a as f64).max(x0), (z as f64).min(x1));
        if z >= a {
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{t}\" width=\"{:.1}\" height=\"{}\" fill=\"#f8514933\"/>",
                x(a),
                (x(z) - x(a)).max(1.5),
                h - t - b
            );
        }
    }
    for i in 0..=2 {
        let v = y0 + (y1 - y0) * f64::from(i) / 2.0;
        let _ = write!(
            s,
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#e3e8ef\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=end>{}</text>",
            w - r,
            l - 3.0,
            y(v) + 3.0,
            f(v),
            yy = y(v)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{l}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=end>{}</text>",
        h - 3.0,
        hhmm(first.window_start_ms),
        w - r,
        h - 3.0,
        hhmm(last.window_start_ms)
    );
    let mut band = String::new();
    for p in &pts {
        let _ = write!(
            band,
            "{:.1},{:.1} ",
            x(p.window_start_ms as f64),
            y(p.value + p.error95)
        );
    }
    for p in pts.iter().rev() {
        let _ = write!(
            band,
            "{:.1},{:.1} ",
            x(p.window_start_ms as f64),
            y(p.value - p.error95)
        );
    }
    let line: String = pts
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.window_start_ms as f64), y(p.value)))
        .collect::<Vec<_>>()
        .join(" ");
    let _ = write!(
        s,
        "<polygon points=\"{band}\" fill=\"#4cc2ff40\"/><polyline points=\"{line}\" fill=none stroke=\"#1f6feb\" stroke-width=1.4/>"
    );
    if let Some(lim) = limit {
        let _ = write!(
            s,
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#c62828\" stroke-dasharray=\"4 3\"/>",
            w - r,
            yy = y(lim)
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars of epsilon per metric.
fn budget_bars(lines: &[(String, String, f64, f64)]) -> String {
    let max = lines.iter().map(|l| l.2).fold(0.0_f64, f64::max).max(1e-9);
    let row = 20.0;
    let h = row * lines.len() as f64 + 4.0;
    let mut s = format!("<svg viewBox=\"0 0 600 {h}\" width=\"100%\" role=img>");
    for (i, (metric, purpose, eps, _)) in lines.iter().enumerate() {
        let yy = 2.0 + row * i as f64;
        let wbar = 360.0 * eps / max;
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{:.1}\">{} · {}</text><rect x=\"200\" y=\"{:.1}\" width=\"{wbar:.1}\" height=\"13\" fill=\"#1f6feb\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{eps:.2} ε</text>",
            yy + 11.0,
            esc(metric),
            esc(purpose),
            yy,
            205.0 + wbar,
            yy + 11.0
        );
    }
    s.push_str("</svg>");
    s
}

/// Renders the report.
pub fn render(d: &ReportData) -> String {
    let mut h = String::with_capacity(64 << 10);
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Veil post-event report · {v} · {day}</title>\
         <style>{CSS}</style></head><body>\
         <h1>Post-event report · {v}</h1><p class=sub>Event day {day} (UTC) · generated by veil-aggregator from its database</p>\
         <div class=note><b>How to read this.</b> Every figure below is a <b>differentially private (DP) estimate</b> \
         computed from releases the venue's nodes made; it is shown with its <b>95% privacy-noise bound</b> (it bounds the noise Veil adds, not sensor error) (± half-width, from \
         the public noise parameters of the releases combined). Durations above a limit are given by the estimate and, \
         in brackets, counting only windows whose whole 95% interval is above the limit. Computing this report spent \
         no privacy budget. <b>The guarantee:</b> {g}.</div>",
        v = esc(&d.venue),
        day = esc(&d.day),
        g = esc(&d.guarantee)
    );

    // Audit checkpoint and policy.
    h.push_str("<h2>Provenance: audit checkpoint and policy</h2>");
    match &d.checkpoint {
        Some((size, root, _)) => {
            let _ = write!(
                h,
                "<p>Computed from the aggregator database whose audit log verified against its latest signed checkpoint: \
                 <b>checkpoint size {size}</b>, <b>root hash</b> <span class=mono>{}</span>.",
                esc(root)
            );
            if d.audit_size > *size {
                let _ = write!(
                    h,
                    " The log held {} entries when this report was made; the {} after the checkpoint are not yet covered by a signature \
                     (<code>veil-aggregator audit export</code> signs one).",
                    d.audit_size,
                    d.audit_size - size
                );
            }
            h.push_str(" Verify it offline with <code>veil-aggregator audit verify</code> and the pinned key.</p>");
        }
        None => h.push_str("<p class=crit>The database holds no signed audit checkpoint.</p>"),
    }
    let (pname, pversion, phash) = &d.policy_now;
    h.push_str("<table><tr><th>policy SHA-256</th><th>policy</th><th class=num>releases of the day under it</th></tr>");
    for (hash, n) in &d.policies {
        let name = if hash == phash {
            format!("{} (schema v{pversion}, in force now)", esc(pname))
        } else {
            "an earlier version (not in force now)".into()
        };
        let _ = write!(
            h,
            "<tr><td class=mono>{}</td><td>{name}</td><td class=num>{n}</td></tr>",
            esc(hash)
        );
    }
    if d.policies.is_empty() {
        let _ = write!(
            h,
            "<tr><td class=mono>{}</td><td>{} (schema v{pversion}, in force now)</td><td class=num>0</td></tr>",
            esc(phash),
            esc(pname)
        );
    }
    h.push_str("</table>");

    // Incidents.
    let _ = write!(h, "<h2>Incidents ({})</h2>", d.incidents.len());
    if d.incidents.is_empty() {
        h.push_str("<p>No alerts were raised on this day.</p>");
    } else {
        h.push_str(
            "<table><tr><th>start</th><th>end</th><th>zone</th><th>rule / source</th><th>metric</th><th>severity</th><th>acknowledged</th><th>runbook</th></tr>",
        );
        for a in &d.incidents {
            let end = match a.state {
                crate::alerts::AlertState::Resolved => {
                    hhmm(a.last_window_ms + i64::from(a.window_len_s) * 1000)
                }
                crate::alerts::AlertState::Raised => "open".into(),
            };
            let cls = match a.severity.as_str() {
                "critical" => "crit",
                "warning" => "warn",
                _ => "info",
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{end}</td><td>{}</td><td>{}<div class=pm>{}</div></td><td>{}</td><td class={cls}>{}</td><td>{}</td><td>{}</td></tr>",
                hhmm(a.window_start_ms),
                esc(&a.zone),
                esc(&a.source),
                esc(&a.detail),
                esc(&a.metric),
                esc(&a.severity),
                if a.acked_by.is_empty() {
                    "—".into()
                } else {
                    esc(a.acked_by.trim_start_matches("spiffe://veil/role/"))
                },
                esc(&a.runbook)
            );
        }
        h.push_str("</table><p class=pm>Alerts are evaluated on DP estimates: the anomaly detector's baseline accounts for the known noise variance.</p>");
    }

    // KPIs.
    h.push_str(
        "<h2>Zones: key figures</h2><p class=pm>Each value is a DP estimate; ± is its 95% privacy-noise bound (sensor error is not in it).</p>\
         <table><tr><th>zone</th><th class=num>peak occupancy (DP estimate)</th><th>at</th><th class=num>ingress: minutes to 90% of peak</th>\
         <th class=num>occupancy limit</th><th class=num>minutes above it</th><th class=num>peak sound dB (DP estimate)</th><th class=num>minutes above the sound limit</th></tr>",
    );
    for z in &d.zones {
        let peak = z.peak.map_or("—".into(), |(v, e, _)| pm(v, e));
        let at = z.peak.map_or("—".into(), |(_, _, ms)| hhmm(ms));
        let to90 = z.to_90.map_or("—".into(), |m| {
            format!("{m:.0} <span class=pm>(first window ≥ 90% of the estimated peak)</span>")
        });
        let lim = z.occupancy_limit.map_or("not set".into(), f);
        let over = if z.occupancy_limit.is_some() {
            format!(
                "{:.0} <span class=pm>({:.0} above it beyond the privacy noise at 95%)</span>",
                z.over_occupancy.0, z.over_occupancy.1
            )
        } else {
            "—".into()
        };
        let snd = z.peak_sound.map_or("—".into(), |(v, e)| pm(v, e));
        let over_snd = if d.sound_limit_db.is_some() && z.peak_sound.is_some() {
            format!(
                "{:.0} <span class=pm>({:.0} above it beyond the privacy noise at 95%)</span>",
                z.over_sound.0, z.over_sound.1
            )
        } else {
            "—".into()
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=num>{peak}</td><td>{at}</td><td class=num>{to90}</td><td class=num>{lim}</td><td class=num>{over}</td><td class=num>{snd}</td><td class=num>{over_snd}</td></tr>",
            esc(&z.zone)
        );
    }
    h.push_str("</table>");
    if let Some(l) = d.sound_limit_db {
        let _ = write!(
            h,
            "<p class=pm>Sound limit: {} dB (<code>[report] sound_limit_db</code>); occupancy limits from <code>[report.occupancy_limits]</code>.</p>",
            f(l)
        );
    }

    // Charts.
    h.push_str("<h2>Occupancy per zone</h2><p class=pm>Line: combined DP estimate; shaded band: 95% privacy-noise bound; red spans: alerts; dashed line: the zone's occupancy limit.</p><div class=grid>");
    for (zone, pts) in &d.occupancy {
        let spans: Vec<(i64, i64)> = d
            .incidents
            .iter()
            .filter(|a| &a.zone == zone)
            .map(|a| {
                (
                    a.window_start_ms,
                    a.last_window_ms.max(a.window_start_ms) + i64::from(a.window_len_s) * 1000,
                )
            })
            .collect();
        let limit = d
            .zones
            .iter()
            .find(|z| &z.zone == zone)
            .and_then(|z| z.occupancy_limit);
        let _ = write!(
            h,
            "<div class=cell><h3>{}</h3>{}</div>",
            esc(zone),
            chart(pts, &spans, limit)
        );
    }
    h.push_str("</div>");

    // Budget.
    let b = &d.budget;
    let _ = write!(
        h,
        "<h2>Privacy budget: what it was spent on</h2><div class=kpis>\
         <div class=kpi><b>{:.2} ε</b>spent (composed exactly, at δ = {:e})</div>\
         <div class=kpi><b>{:.2} ε</b>left of the day's {:.0} ε</div></div>",
        b.spent_epsilon, b.delta, b.remaining_epsilon, b.budget_epsilon
    );
    if !b.lines.is_empty() {
        h.push_str(&budget_bars(&b.lines));
    }
    h.push_str("<table><tr><th>metric</th><th>purpose</th><th class=num>ε charged (ledger)</th><th class=num>ρ charged</th><th class=num>releases stored</th><th class=num>Σ per-release ε</th></tr>");
    for (metric, purpose, eps, rho) in &b.lines {
        let (n, sum) = d
            .releases
            .iter()
            .find(|r| &r.0 == metric && &r.1 == purpose)
            .map_or((0, 0.0), |r| (r.2, r.3));
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=num>{eps:.3}</td><td class=num>{rho:.5}</td><td class=num>{n}</td><td class=num>{sum:.2}</td></tr>",
            esc(metric),
            esc(purpose)
        );
    }
    for (metric, purpose, n, _, _) in d
        .releases
        .iter()
        .filter(|r| !b.lines.iter().any(|l| l.0 == r.0 && l.1 == r.1))
    {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=num>0 (non-personal)</td><td class=num>0</td><td class=num>{n}</td><td class=num>0</td></tr>",
            esc(metric),
            esc(purpose)
        );
    }
    h.push_str("</table><p class=pm>The ledger charges budget when it grants a lease, before any noise is drawn; leases not fully used still count.</p>");
    h.push_str("</body></html>\n");
    h
}
