//! `kefu report --html FILE`: the report as one self-contained page for people who would
//! rather look than read: the matrix, answers by source over time (stacked bars) and the
//! latency histogram (log scale), as inline SVG. No scripts, no fonts, no external
//! resources: the file can be mailed or opened offline.

use std::fmt::Write as _;

use super::report::{Report, ms, thousands};

/// Colours of the sources, fixed so charts of different days compare.
pub(super) fn colour(source: &str) -> &'static str {
    match source {
        "rule" => "#4e79a7",
        "flow" => "#59a14f",
        "promotion" => "#edc948",
        "faq" => "#76b7b2",
        "cache" => "#b07aa1",
        "llm" | "model" => "#f28e2b",
        "fallback" => "#9c755f",
        "context" => "#8cd17d",
        "safety" => "#e15759",
        "handoff" => "#ff9da7",
        "human" => "#bab0ac",
        _ => "#888888",
    }
}

/// Escapes text for HTML and SVG.
pub(super) fn esc(text: &str) -> String {
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

/// The page.
pub fn render(report: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let _ = write_page(&mut h, report);
    h
}

/// The start of a page: the document head with the house style, titled `title` (what
/// `kefu replay --html` shares with this page).
pub(super) fn page_head(h: &mut String, title: &str) -> std::fmt::Result {
    writeln!(
        h,
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title>\n<style>\
         body{{font:14px/1.5 system-ui,sans-serif;margin:2em auto;max-width:960px;padding:0 1em;color:#222}}\
         h1{{font-size:1.4em}} h2{{font-size:1.1em;margin-top:2em;border-bottom:1px solid #ddd}}\
         table{{border-collapse:collapse}} td,th{{padding:2px 10px;text-align:left}}\
         td.n{{text-align:right;font-variant-numeric:tabular-nums}} .met{{color:#2a7d2a}} .miss{{color:#c0392b;font-weight:bold}}\
         .key span{{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}} svg text{{font-size:11px;fill:#444}}\
         </style></head><body>",
        esc(title)
    )
}

fn write_page(h: &mut String, r: &Report) -> std::fmt::Result {
    page_head(h, "kefu report")?;
    writeln!(
        h,
        "<h1>kefu report</h1><p>{} turns in {} sessions, {} to {}; {} lines read from {} files, {} bad.</p>",
        thousands(r.turns),
        thousands(r.sessions),
        esc(r.from.as_deref().unwrap_or("-")),
        esc(r.to.as_deref().unwrap_or("-")),
        thousands(r.read.lines),
        r.read.files,
        thousands(r.read.bad_lines)
    )?;

    writeln!(
        h,
        "<h2>Evaluation matrix</h2><table><tr><th>measure</th><th>value</th><th>target</th><th></th></tr>"
    )?;
    for t in &r.matrix {
        let value = match t.value {
            None => "-".to_string(),
            Some(v) if t.name.starts_with("first") => format!("{:.1}%", v * 100.0),
            Some(v) if t.name.starts_with("cost") => format!("{v:.4}"),
            Some(v) => format!("{v:.2}"),
        };
        let (class, word) = match t.met {
            Some(true) => ("met", "met"),
            Some(false) => ("miss", "not met"),
            None => ("", ""),
        };
        writeln!(
            h,
            "<tr><td>{}</td><td class=n>{value}</td><td>{}</td><td class={class}>{word}</td></tr>",
            esc(&t.name),
            esc(&t.target)
        )?;
    }
    writeln!(h, "</table>")?;

    writeln!(h, "<h2>Answers by source</h2><table>")?;
    for c in &r.sources {
        writeln!(
            h,
            "<tr><td><span style=\"color:{}\">■</span> {}</td><td class=n>{}</td><td class=n>{:.1}%</td>\
             <td><svg width=\"300\" height=\"12\"><rect width=\"{:.1}\" height=\"12\" fill=\"{}\"/></svg></td></tr>",
            colour(&c.name),
            esc(&c.name),
            thousands(c.count),
            c.share * 100.0,
            c.share * 300.0,
            colour(&c.name)
        )?;
    }
    writeln!(h, "</table>")?;

    writeln!(
        h,
        "<h2>Sources over time</h2><p>turns per {} minutes</p>",
        r.timeline.bucket_minutes
    )?;
    timeline_chart(h, r)?;

    writeln!(
        h,
        "<h2>Latency</h2><p>turns by the engine's time, log scale; percentiles are exact (nearest rank)</p>"
    )?;
    histogram_chart(h, r)?;
    writeln!(
        h,
        "<table><tr><th></th><th>turns</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>"
    )?;
    for l in &r.latency_ms {
        writeln!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td>\
             <td class=n>{}</td><td class=n>{}</td></tr>",
            esc(&l.source),
            thousands(l.turns),
            ms(l.mean),
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max)
        )?;
    }
    writeln!(h, "</table>")?;

    writeln!(
        h,
        "<h2>Intents</h2><table><tr><th>intent</th><th>turns</th><th>share</th><th>mean confidence</th></tr>"
    )?;
    for i in &r.intents {
        writeln!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{:.1}%</td><td class=n>{:.2}</td></tr>",
            esc(&i.name),
            thousands(i.count),
            i.share * 100.0,
            i.mean_confidence
        )?;
    }
    writeln!(h, "</table>")?;

    let hd = &r.handoffs;
    writeln!(
        h,
        "<h2>Handoffs and satisfaction</h2><p>{} sessions handed to people ({} by the bot, {} taken over by an agent), \
         {} agent answers. First-contact resolution {} of {}.</p><table>",
        thousands(hd.sessions.count),
        thousands(hd.by_bot),
        thousands(hd.by_agent),
        thousands(hd.agent_replies),
        thousands(r.first_contact_resolution.count),
        thousands(r.first_contact_resolution.of)
    )?;
    for c in &hd.reasons {
        writeln!(
            h,
            "<tr><td>{}</td><td class=n>{}</td></tr>",
            esc(&c.name),
            thousands(c.count)
        )?;
    }
    writeln!(h, "</table>")?;
    let s = &r.satisfaction;
    writeln!(
        h,
        "<p>{} scores from {} sessions; mean {}; 4 or 5: {}.</p><table>",
        thousands(s.scores),
        thousands(s.sessions),
        s.mean.map_or_else(|| "-".into(), |m| format!("{m:.2}")),
        s.share_4_or_5
            .map_or_else(|| "-".into(), |x| format!("{:.1}%", x * 100.0))
    )?;
    let most = s.by_score.iter().copied().max().unwrap_or(0).max(1);
    for (n, score) in s.by_score.iter().zip(1..) {
        writeln!(
            h,
            "<tr><td>{score}</td><td class=n>{}</td><td><svg width=\"300\" height=\"12\">\
             <rect width=\"{:.1}\" height=\"12\" fill=\"#4e79a7\"/></svg></td></tr>",
            thousands(*n),
            *n as f64 / most as f64 * 300.0
        )?;
    }
    writeln!(h, "</table>")?;

    writeln!(
        h,
        "<h2>Safety</h2><p>{} turns with findings, {} blocked.</p><table>",
        thousands(r.safety.turns.count),
        thousands(r.safety.blocked)
    )?;
    for c in &r.safety.findings {
        writeln!(
            h,
            "<tr><td>{}</td><td class=n>{}</td></tr>",
            esc(&c.name),
            thousands(c.count)
        )?;
    }
    writeln!(h, "</table>")?;

    if r.versions.len() > 1 {
        let rate = |x: Option<f64>| x.map_or_else(|| "-".into(), |x| format!("{:.1}%", x * 100.0));
        writeln!(
            h,
            "<h2>Rules versions</h2><p>share of turns answered by the rules, the FAQ and the model; \
             rates per turn; feedback counted for the version that answered the session's last turn</p>\
             <table><tr><th>version</th><th>from</th><th>turns</th><th>rules</th><th>faq</th><th>model</th>\
             <th>handoffs</th><th>fallbacks</th><th>feedback</th><th>errors</th></tr>"
        )?;
        for v in &r.versions {
            writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{:.1}%</td><td class=n>{:.1}%</td>\
                 <td class=n>{:.1}%</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                esc(&v.version),
                esc(&v.from),
                thousands(v.turns),
                v.rules * 100.0,
                v.faq * 100.0,
                v.model * 100.0,
                rate(v.handoffs.rate),
                rate(v.fallbacks.rate),
                v.feedback_mean
                    .map_or_else(|| "-".into(), |m| format!("{m:.2} ({})", v.feedback)),
                rate(v.errors.rate)
            )?;
        }
        writeln!(h, "</table>")?;
    }

    if !r.channels.is_empty() {
        let rate = |x: Option<f64>| x.map_or_else(|| "-".into(), |x| format!("{:.1}%", x * 100.0));
        writeln!(
            h,
            "<h2>Channels</h2><p>share of turns answered by the rules, the FAQ and the model; \
             fallbacks per turn, handoffs per conversation; feedback counted for the channel of the \
             session's last turn</p>\
             <table><tr><th>channel</th><th>turns</th><th>conversations</th><th>rules</th><th>faq</th>\
             <th>model</th><th>fallbacks</th><th>handoffs</th><th>feedback</th></tr>"
        )?;
        for c in &r.channels {
            writeln!(
                h,
                "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.1}%</td><td class=n>{:.1}%</td>\
                 <td class=n>{:.1}%</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                esc(&c.channel),
                thousands(c.turns),
                thousands(c.conversations),
                c.rules * 100.0,
                c.faq * 100.0,
                c.model * 100.0,
                rate(c.fallbacks.rate),
                rate(c.handoffs.rate),
                c.feedback_mean
                    .map_or_else(|| "-".into(), |m| format!("{m:.2} ({})", c.feedback))
            )?;
        }
        writeln!(h, "</table>")?;
    }

    if !r.agents.is_empty() {
        let spread = |s: &super::report::Spread| match (s.p50, s.p90) {
            (Some(p50), Some(p90)) => format!("{p50:.0} / {p90:.0}"),
            _ => "-".into(),
        };
        writeln!(
            h,
            "<h2>Agents</h2><p>times in seconds, p50 / p90; satisfaction: the mean score of the \
             conversations they served last</p><table><tr><th></th><th>served</th><th>first response</th>\
             <th>handling</th><th>waiting</th><th>satisfaction</th></tr>"
        )?;
        for (title, rows) in [("agent", &r.agents.by_agent), ("queue", &r.agents.by_group)] {
            for a in rows.iter() {
                writeln!(
                    h,
                    "<tr><td>{} {}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td>\
                     <td class=n>{}</td><td class=n>{}</td></tr>",
                    title,
                    esc(&a.name),
                    thousands(a.conversations),
                    spread(&a.first_response),
                    spread(&a.handling),
                    spread(&a.waiting),
                    a.satisfaction
                        .map_or_else(|| "-".into(), |m| format!("{m:.2} ({})", a.scores)),
                )?;
            }
        }
        writeln!(h, "</table>")?;
    }

    super::proactive::write_html(h, &r.proactive)?;
    hits_table(h, r)?;

    let m = &r.model;
    writeln!(
        h,
        "<h2>Model</h2><p>{} turns used the model: {} prompt and {} generated tokens. Estimated cost {:.4} 元, \
         {} 元 per conversation, at {} 元 (prompt) and {} 元 (generated) per 1,000 tokens.</p>",
        thousands(m.turns),
        thousands(m.prompt_tokens),
        thousands(m.completion_tokens),
        m.cost,
        m.cost_per_conversation
            .map_or_else(|| "-".into(), |c| format!("{c:.4}")),
        m.price_prompt_per_1k,
        m.price_completion_per_1k
    )?;
    writeln!(h, "</body></html>")
}

/// How many items of each kind the page's hit table shows.
const HITS_SHOWN: usize = 100;

/// The hits per rule, promotion, flow step and FAQ entry as one table (the most hit
/// [`HITS_SHOWN`] of each kind), then the items not hit lately.
fn hits_table(h: &mut String, r: &Report) -> std::fmt::Result {
    use super::hits::HitKind;
    writeln!(
        h,
        "<h2>Hits</h2><p>turns each rule, promotion, flow step and FAQ entry answered, the \
         conversations they were in, and its last turn</p><table><tr><th>kind</th><th>name</th>\
         <th>turns</th><th>conversations</th><th>last hit</th></tr>"
    )?;
    for kind in HitKind::ALL {
        let list = r.hits.get(kind);
        for hit in list.items.iter().take(HITS_SHOWN) {
            writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td>{}</td></tr>",
                kind.name(),
                esc(&hit.name),
                thousands(hit.turns),
                thousands(hit.conversations),
                esc(&hit.last)
            )?;
        }
        if list.items.len() > HITS_SHOWN {
            writeln!(
                h,
                "<tr><td>{}</td><td colspan=4>… and {} more</td></tr>",
                kind.name(),
                thousands((list.items.len() - HITS_SHOWN) as u64)
            )?;
        }
    }
    writeln!(h, "</table>")?;
    if let Some(never) = &r.never_hit {
        writeln!(
            h,
            "<h2>Not hit in the last {} days</h2><p>since {}</p><table><tr><th>kind</th><th>names</th></tr>",
            never.days,
            esc(never.since.as_deref().unwrap_or("-"))
        )?;
        for kind in HitKind::ALL {
            let names = never.items.get(kind);
            if !names.is_empty() {
                let names: Vec<String> = names.iter().map(|n| esc(n)).collect();
                writeln!(h, "<tr><td>{}</td><td>{}</td></tr>", kind.name(), names.join(", "))?;
            }
        }
        writeln!(h, "</table>")?;
    }
    Ok(())
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 50.0;
const BOTTOM: f64 = 30.0;

/// A y axis with four gridlines up to `max`.
fn y_axis(h: &mut String, max: u64) -> std::fmt::Result {
    for i in 0..=4 {
        let value = max as f64 * f64::from(i) / 4.0;
        let y = HEIGHT - BOTTOM - (HEIGHT - BOTTOM - 10.0) * f64::from(i) / 4.0;
        writeln!(
            h,
            "<line x1=\"{LEFT}\" x2=\"{WIDTH}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 4.0,
            y + 4.0,
            thousands(value.round() as u64)
        )?;
    }
    Ok(())
}

fn timeline_chart(h: &mut String, r: &Report) -> std::fmt::Result {
    let t = &r.timeline;
    if t.buckets.is_empty() {
        return writeln!(h, "<p>no turns</p>");
    }
    let max = t
        .buckets
        .iter()
        .map(|b| b.counts.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    writeln!(
        h,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" role=\"img\" aria-label=\"turns by source over time\">"
    )?;
    y_axis(h, max)?;
    let slot = (WIDTH - LEFT) / t.buckets.len() as f64;
    let scale = (HEIGHT - BOTTOM - 10.0) / max as f64;
    let label_every = t.buckets.len().div_ceil(8);
    for (i, bucket) in t.buckets.iter().enumerate() {
        let x = LEFT + slot * i as f64;
        let mut y = HEIGHT - BOTTOM;
        for (n, source) in bucket.counts.iter().zip(&t.sources) {
            if *n == 0 {
                continue;
            }
            let height = *n as f64 * scale;
            y -= height;
            writeln!(
                h,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"{}\">\
                 <title>{} {}: {}</title></rect>",
                x + 1.0,
                (slot - 2.0).max(1.0),
                colour(source),
                esc(&bucket.start),
                esc(source),
                thousands(*n)
            )?;
        }
        if i % label_every == 0 {
            writeln!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x + 1.0,
                HEIGHT - BOTTOM + 16.0,
                esc(bucket.start.get(5..).unwrap_or(&bucket.start))
            )?;
        }
    }
    writeln!(h, "</svg><p class=key>")?;
    for source in &t.sources {
        write!(
            h,
            "<span style=\"background:{}\"></span>{}",
            colour(source),
            esc(source)
        )?;
    }
    writeln!(h, "</p>")
}

fn histogram_chart(h: &mut String, r: &Report) -> std::fmt::Result {
    let bins = &r.latency_histogram;
    if bins.is_empty() {
        return writeln!(h, "<p>no turns</p>");
    }
    let max = bins.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    writeln!(
        h,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" role=\"img\" aria-label=\"latency histogram\">"
    )?;
    y_axis(h, max)?;
    let slot = (WIDTH - LEFT) / bins.len() as f64;
    let scale = (HEIGHT - BOTTOM - 10.0) / max as f64;
    for (i, bin) in bins.iter().enumerate() {
        let x = LEFT + slot * i as f64;
        let height = bin.count as f64 * scale;
        writeln!(
            h,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"#4e79a7\">\
             <title>{}-{} ms: {}</title></rect>",
            x + 1.0,
            HEIGHT - BOTTOM - height,
            (slot - 2.0).max(1.0),
            ms(bin.from_ms),
            ms(bin.to_ms),
            thousands(bin.count)
        )?;
        // Label the decades (every fourth edge).
        if (bin.from_ms.log10() * 4.0).round() as i64 % 4 == 0 {
            writeln!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\">{} ms</text>",
                x,
                HEIGHT - BOTTOM + 16.0,
                ms(bin.from_ms)
            )?;
        }
    }
    writeln!(h, "</svg>")
}
