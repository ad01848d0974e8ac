//! `kefu mine --html FILE`: the clusters as one self-contained page (the house style of
//! `kefu report --html`: its head and escaping, no scripts, no external resources), each
//! cluster a card with its figures, examples, neighbours, suggestion and accept command.

use std::fmt::Write as _;

use super::MineReport;
use super::text::{action_words, reasons, trend};
use crate::data::html::{esc, page_head};
use crate::data::report::thousands;

/// The page; `command` as for [`MineReport::render`].
pub fn render(report: &MineReport, command: &str) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let _ = write_page(&mut h, report, command);
    h
}

fn write_page(h: &mut String, r: &MineReport, command: &str) -> std::fmt::Result {
    page_head(h, "kefu mine")?;
    let day = |t: Option<chrono::DateTime<chrono::FixedOffset>>| {
        t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string())
    };
    writeln!(
        h,
        "<style>.card{{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}}\
         .card h2{{border:0;margin:0 0 .3em}} .up{{color:#c0392b}} .down{{color:#2a7d2a}}\
         code{{background:#f4f4f4;padding:1px 4px;word-break:break-all}} q{{display:block;margin:.1em 0 .1em 1em}}</style>"
    )?;
    writeln!(
        h,
        "<h1>Unanswered questions</h1><p>{} customer turns, {} to {}: {} not answered well in {} conversations; \
         {} lines read from {} files, {} bad.</p>",
        thousands(r.turns),
        esc(&day(r.first)),
        esc(&day(r.last)),
        thousands(r.misses),
        thousands(r.conversations),
        thousands(r.read.lines),
        r.read.files,
        thousands(r.read.bad_lines)
    )?;
    if let Some(rules) = &r.rules {
        writeln!(
            h,
            "<p>Nearest intents and FAQ entries in rules <code>{}</code>.</p>",
            esc(rules)
        )?;
    }
    writeln!(
        h,
        "<p>{} clusters; {} misses in none of them.</p>",
        r.clusters.len(),
        thousands(r.unclustered)
    )?;
    for c in &r.clusters {
        let class = match trend(c) {
            "↑" => "up",
            "↓" => "down",
            _ => "",
        };
        writeln!(
            h,
            "<div class=card><h2>#{} · {} conversations · {} messages · <span class={class}>{} {} this week, {} the week before</span></h2><p>{}</p>",
            c.rank,
            thousands(c.conversations as u64),
            thousands(c.size as u64),
            trend(c),
            c.this_week,
            c.last_week,
            esc(&reasons(c))
        )?;
        for e in &c.examples {
            writeln!(h, "<q>{}</q>", esc(e))?;
        }
        for (what, n) in [("intent", &c.nearest_intent), ("FAQ entry", &c.nearest_faq)] {
            if let Some(n) = n {
                writeln!(h, "<p>Nearest {what}: <b>{}</b> {:.2}</p>", esc(&n.name), n.score)?;
            }
        }
        writeln!(
            h,
            "<p>Suggestion: {}</p><p><code>{} --accept {}</code></p></div>",
            esc(&action_words(&c.action, c.messages.len())),
            esc(command),
            c.rank
        )?;
    }
    if !r.read.bad.is_empty() {
        writeln!(h, "<h2>Bad lines</h2><ul>")?;
        for b in &r.read.bad {
            writeln!(h, "<li>{}:{}: {}</li>", esc(&b.file), b.line, esc(&b.error))?;
        }
        writeln!(h, "</ul>")?;
    }
    writeln!(h, "</body></html>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::mine::{Action, Cluster};

    #[test]
    fn texts_are_escaped_and_the_page_is_whole() {
        let report = MineReport {
            clusters: vec![Cluster {
                rank: 1,
                size: 2,
                conversations: 2,
                this_week: 2,
                last_week: 0,
                reasons: Default::default(),
                examples: vec!["<script>alert(1)</script>".into()],
                messages: vec!["<script>alert(1)</script>".into()],
                nearest_intent: None,
                nearest_faq: None,
                action: Action::NewFaq { id: "a&b".into() },
            }],
            ..Default::default()
        };
        let page = render(&report, "kefu mine --log \"x\"");
        assert!(page.starts_with("<!doctype html>") && page.trim_end().ends_with("</html>"));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;") && page.contains("a&amp;b") && page.contains("&quot;x&quot;"));
    }
}
