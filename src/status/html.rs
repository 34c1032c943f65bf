//! The status page: one self-contained HTML document rendered from a [`StatusReport`],
//! with its CSS and script inline (no external asset, so it works on an air-gapped host).
//!
//! Every string that came from outside (names, subjects, statuses, errors) reaches the
//! page through [`Html::text`], the one place that escapes; markup can only be written
//! from `&'static str` literals ([`Html::raw`]), so data cannot be written unescaped by
//! mistake. The script refreshes the page in place every 5 s by fetching it again and
//! swapping the sections marked `data-live` (parsed by `DOMParser`, never `innerHTML`),
//! and filters the items table with `hidden`; without the script the page is complete.

use std::sync::OnceLock;

use base64::Engine as _;
use sha2::Digest as _;

use super::{HostCalls, ItemStatus, StatusReport};

/// The page's style sheet.
const CSS: &str = r#"
:root{--fg:#1d2329;--muted:#5d6873;--line:#d8dee4;--bg:#f6f8fa;--bad:#b42318;--warn:#b54708;--ok:#067647;--info:#175cd3}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:#fff}
header{padding:14px 24px;border-bottom:1px solid var(--line);background:var(--bg);display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}
header .meta{color:var(--muted);font-size:12px}
main{padding:8px 24px 24px}
section{margin:18px 0}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--bg);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td{white-space:nowrap}
td.subject{word-break:break-all;white-space:normal}
td.error{overflow-wrap:anywhere;white-space:normal}
td.error{color:var(--bad);max-width:28em}
.counts td.num{min-width:5em}
.state{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;font-weight:600;background:#eef2f6}
.state-failing,.state-paused{background:#fee4e2;color:var(--bad)}
.state-stalled,.state-retrying{background:#fef0c7;color:var(--warn)}
.state-final{background:#dcfae6;color:var(--ok)}
.state-watching,.state-running{background:#d1e9ff;color:var(--info)}
.state-removed{color:var(--muted)}
.note{color:var(--muted);font-size:12px;margin:6px 0}
.filter{display:flex;gap:8px;margin:8px 0}
.filter input{flex:1;max-width:28em;padding:4px 8px;border:1px solid var(--line);border-radius:6px;font:inherit}
.filter select{padding:4px;border:1px solid var(--line);border-radius:6px;font:inherit}
.charts{display:flex;gap:24px;flex-wrap:wrap}
figure{margin:0;width:560px}
figcaption{font-size:12px;color:var(--muted)}
svg .bar{fill:#53b1fd}
svg .over{fill:var(--bad)}
svg .quota{stroke:var(--bad);stroke-dasharray:4 3;stroke-width:1}
svg .axis{stroke:var(--line)}
svg text{font-size:10px;fill:var(--muted)}
footer{padding:12px 24px;color:var(--muted);font-size:12px;border-top:1px solid var(--line)}
"#;

/// The page's script: in-place refresh and the items filter. It never puts data into
/// `innerHTML`: fresh sections come from `DOMParser` (which runs no script) and are
/// adopted whole, and messages are set with `textContent`.
const SCRIPT: &str = r#"
(function () {
  'use strict';
  var query = document.getElementById('filter');
  var state = document.getElementById('state-filter');
  var shown = document.getElementById('filter-count');
  var refreshed = document.getElementById('refreshed');
  function applyFilter() {
    var q = query.value.trim().toLowerCase();
    var s = state.value;
    var rows = document.querySelectorAll('#items tbody tr');
    var n = 0;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var ok = (!q || row.textContent.toLowerCase().indexOf(q) !== -1) &&
        (!s || row.getAttribute('data-state') === s);
      row.hidden = !ok;
      if (ok) { n++; }
    }
    shown.textContent = (q || s) ? n + ' of ' + rows.length + ' rows match' : '';
  }
  function refresh() {
    fetch(window.location.pathname, { cache: 'no-store', headers: { 'Accept': 'text/html' } })
      .then(function (r) {
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, 'text/html');
        var live = document.querySelectorAll('[data-live]');
        for (var i = 0; i < live.length; i++) {
          var next = fresh.getElementById(live[i].id);
          if (next) { live[i].replaceWith(document.adoptNode(next)); }
        }
        applyFilter();
        refreshed.textContent = 'refreshed ' + new Date().toLocaleTimeString();
      })
      .catch(function (e) {
        refreshed.textContent = 'refresh failed (' + e.message + '); retrying in 5 s';
      });
  }
  query.addEventListener('input', applyFilter);
  state.addEventListener('change', applyFilter);
  applyFilter();
  window.setInterval(refresh, 5000);
})();
"#;

/// `sha256-…` of a text, as a Content-Security-Policy source expression.
fn csp_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()))
    )
}

/// The page's Content-Security-Policy: only its own inline style and script (by hash, so
/// even a markup injection could run nothing), fetches to itself, nothing else.
pub fn content_security_policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            csp_hash(SCRIPT),
            csp_hash(CSS)
        )
    })
}

/// A document being written: markup from literals, text escaped.
struct Html(String);

impl Html {
    /// Markup: only literals, never data.
    fn raw(&mut self, markup: &'static str) -> &mut Self {
        self.0.push_str(markup);
        self
    }

    /// Text or an attribute value from anywhere, escaped for both (attributes are always
    /// double-quoted): the one place the page escapes.
    fn text(&mut self, text: &str) -> &mut Self {
        for c in text.chars() {
            match c {
                '&' => self.0.push_str("&amp;"),
                '<' => self.0.push_str("&lt;"),
                '>' => self.0.push_str("&gt;"),
                '"' => self.0.push_str("&quot;"),
                '\'' => self.0.push_str("&#39;"),
                c => self.0.push(c),
            }
        }
        self
    }

    /// A number (through [`Html::text`] like everything else that is not a literal).
    fn num(&mut self, n: impl std::fmt::Display) -> &mut Self {
        self.text(&n.to_string())
    }

    /// `<td>text</td>`.
    fn cell(&mut self, text: &str) -> &mut Self {
        self.raw("<td>").text(text).raw("</td>")
    }

    /// A right-aligned number cell.
    fn num_cell(&mut self, n: impl std::fmt::Display) -> &mut Self {
        self.raw("<td class=\"num\">").num(n).raw("</td>")
    }

    /// A state badge.
    fn state(&mut self, state: &str) -> &mut Self {
        self.raw("<span class=\"state state-")
            .text(state)
            .raw("\">")
            .text(state)
            .raw("</span>")
    }
}

/// `12s ago`, `in 3m`, `-`.
fn relative(ms: Option<i64>, now: i64) -> String {
    let Some(ms) = ms else { return "-".to_string() };
    let secs = ((ms - now).unsigned_abs() + 500) / 1000;
    let text = match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    };
    if ms > now {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// An age in seconds as `45s`, `12m`, `3h`, `2d`.
fn age(secs: i64) -> String {
    relative(Some(0), secs.max(0) * 1000)
        .trim_end_matches(" ago")
        .to_string()
}

/// The whole page.
pub fn render(r: &StatusReport) -> String {
    let now = r.generated_at_ms;
    let mut h = Html(String::with_capacity(64 * 1024 + r.items.len() * 400));
    h.raw("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<link rel=\"icon\" href=\"data:,\"><title>ncp-watchd ")
        .text(&r.instance)
        .raw("</title><style>")
        .raw(CSS)
        .raw("</style></head><body><header><h1>ncp-watchd <span id=\"instance\">")
        .text(&r.instance)
        .raw("</span></h1><span class=\"meta\" id=\"generated\" data-live>version ")
        .text(r.version)
        .raw(" · store ")
        .text(&r.store)
        .raw(" · generated ")
        .text(&r.generated_at)
        .raw("</span><span class=\"meta\" id=\"refreshed\">refreshes every 5 s</span></header><main>");

    watches(&mut h, r, now);
    events(&mut h, r, now);
    sinks(&mut h, r);
    api(&mut h, r);
    replicas(&mut h, r, now);

    h.raw("</main><footer>Read-only. The same data as JSON: <a href=\"/api/status\">/api/status</a>; metrics: <a href=\"/metrics\">/metrics</a>.</footer><script>")
        .raw(SCRIPT)
        .raw("</script></body></html>\n");
    h.0
}

fn watches(h: &mut Html, r: &StatusReport, now: i64) {
    h.raw("<section id=\"watches\"><h2>Watches</h2><div id=\"counts\" data-live><table class=\"counts\"><thead><tr><th>kind</th><th class=\"num\">total</th><th class=\"num\">failing</th><th class=\"num\">stalled</th><th class=\"num\">watching</th><th class=\"num\">final</th><th class=\"num\">removed</th></tr></thead><tbody>");
    for c in &r.counts {
        h.raw("<tr data-kind=\"")
            .text(&c.kind)
            .raw("\">")
            .cell(&c.kind)
            .num_cell(c.total)
            .num_cell(c.failing)
            .num_cell(c.stalled)
            .num_cell(c.watching)
            .num_cell(c.r#final)
            .num_cell(c.removed)
            .raw("</tr>");
    }
    if r.counts.is_empty() {
        h.raw("<tr><td colspan=\"7\">nothing watched yet</td></tr>");
    }
    h.raw("</tbody></table>");
    if r.callbacks || r.last_callback.is_some() {
        h.raw("<p class=\"note\">VOD Station callbacks: ");
        match &r.last_callback {
            Some(at) => h.raw("the last came ").text(at),
            None => h.raw("none has come yet"),
        };
        h.raw("</p>");
    }
    h.raw("</div>");

    h.raw("<div class=\"filter\"><input id=\"filter\" type=\"search\" placeholder=\"filter by name, subject, status, error\" aria-label=\"filter the items\"><select id=\"state-filter\" aria-label=\"state\"><option value=\"\">every state</option><option>failing</option><option>stalled</option><option>retrying</option><option>watching</option><option>final</option><option>removed</option></select><span class=\"note\" id=\"filter-count\"></span></div>");

    h.raw("<div id=\"items\" data-live><table><thead><tr><th>name</th><th>kind</th><th>subject</th><th>state</th><th>status</th><th class=\"num\">percent</th><th>last change</th><th>next poll</th><th class=\"num\">failures</th><th>last error</th></tr></thead><tbody>");
    for i in &r.items {
        item_row(h, i, now);
    }
    h.raw("</tbody></table>");
    if r.items_omitted > 0 {
        h.raw("<p class=\"note\" id=\"items-omitted\">Showing the first ")
            .num(r.items.len())
            .raw(" of ")
            .num(r.items_total)
            .raw(" items (problems first); ")
            .num(r.items_omitted)
            .raw(" more are not listed: see <code>ncp-watchd status</code>.</p>");
    }
    h.raw("</div></section>");
}

fn item_row(h: &mut Html, i: &ItemStatus, now: i64) {
    h.raw("<tr data-state=\"").text(i.state).raw("\">");
    h.cell(i.watch.as_deref().unwrap_or("-"))
        .cell(&i.kind)
        .raw("<td class=\"subject\">")
        .text(&i.subject)
        .raw("</td><td>")
        .state(i.state)
        .raw("</td>")
        .cell(i.status.as_deref().unwrap_or("-"));
    match i.percent {
        Some(p) => h.raw("<td class=\"num\">").num(format!("{p:.0}%")).raw("</td>"),
        None => h.raw("<td class=\"num\">-</td>"),
    };
    h.cell(&relative(i.last_change_ms, now))
        .cell(&relative(i.next_due_ms, now))
        .num_cell(i.failures)
        .raw("<td class=\"error\">")
        .text(
            i.last_error
                .as_deref()
                .filter(|_| i.failures > 0 || i.failing)
                .unwrap_or(""),
        )
        .raw("</td></tr>");
}

fn events(h: &mut Html, r: &StatusReport, now: i64) {
    h.raw("<section id=\"events\" data-live><h2>Last ")
        .num(r.events.len())
        .raw(" events</h2><table><thead><tr><th>when</th><th>type</th><th>subject</th><th>name</th><th>change</th></tr></thead><tbody>");
    for e in &r.events {
        h.raw("<tr>")
            .cell(&relative(Some(e.created_ms), now))
            .cell(&e.r#type)
            .raw("<td class=\"subject\">")
            .text(&e.subject)
            .raw("</td>")
            .cell(e.watch.as_deref().unwrap_or("-"))
            .raw("<td>")
            .text(e.previous.as_deref().unwrap_or("(new)"))
            .raw(" → ")
            .text(e.current.as_deref().unwrap_or("-"))
            .raw("</td></tr>");
    }
    if r.events.is_empty() {
        h.raw("<tr><td colspan=\"5\">no events yet</td></tr>");
    }
    h.raw("</tbody></table></section>");
}

fn sinks(h: &mut Html, r: &StatusReport) {
    h.raw("<section id=\"sinks\" data-live><h2>Sinks</h2><table><thead><tr><th>sink</th><th>kind</th><th>receiver</th><th>state</th><th class=\"num\">pending</th><th class=\"num\">oldest pending</th><th class=\"num\">retrying</th><th class=\"num\">dead letters</th></tr></thead><tbody>");
    for s in &r.sinks {
        h.raw("<tr>")
            .cell(&s.name)
            .cell(&s.kind)
            .cell(s.receiver.as_deref().unwrap_or("(no longer configured)"))
            .raw("<td>");
        match &s.paused {
            Some(why) => h.state("paused").raw(" ").text(why),
            None => h.state("running"),
        };
        h.raw("</td>")
            .num_cell(s.pending)
            .num_cell(s.oldest_pending_seconds.map_or("-".to_string(), age))
            .num_cell(s.retrying)
            .num_cell(s.dead_letters)
            .raw("</tr>");
    }
    if r.sinks.is_empty() {
        h.raw("<tr><td colspan=\"8\">no sink has started yet</td></tr>");
    }
    h.raw("</tbody></table></section>");
}

fn api(h: &mut Html, r: &StatusReport) {
    h.raw("<section id=\"api\" data-live><h2>API calls per minute, last hour</h2><div class=\"charts\">");
    for c in &r.api {
        chart(h, c);
    }
    if r.api.is_empty() {
        h.raw("<p class=\"note\">no call history in this process</p>");
    }
    h.raw("</div></section>");
}

/// A bar per minute with the quota as a dashed line. The scale reaches the quota when
/// the calls come within a quarter of it; far below it, the scale follows the peak (so the
/// hour's shape stays visible) and the caption says the quota is off the chart.
fn chart(h: &mut Html, c: &HostCalls) {
    const W: usize = 540;
    const H: usize = 100;
    const BAR: usize = W / crate::ncp::calls::MINUTES;
    let peak = c.per_minute.iter().copied().max().unwrap_or(0);
    let last = c.per_minute.last().copied().unwrap_or(0);
    let total: u64 = c.per_minute.iter().map(|&n| u64::from(n)).sum();
    let quota = c.quota_per_minute;
    let quota_shown = u64::from(peak) * 4 >= u64::from(quota);
    let top = if quota_shown {
        peak.max(quota)
    } else {
        peak.saturating_mul(2)
    }
    .max(1);
    let scale = f64::from(top);
    h.raw("<figure class=\"chart\" data-host=\"")
        .text(c.host)
        .raw("\"><svg width=\"560\" height=\"118\" viewBox=\"0 0 560 118\" role=\"img\" aria-label=\"calls per minute over the last hour\"><line class=\"axis\" x1=\"0\" y1=\"100\" x2=\"540\" y2=\"100\"/><text x=\"544\" y=\"10\">")
        .num(top)
        .raw("</text><text x=\"544\" y=\"100\">0</text>");
    let n = c.per_minute.len();
    for (i, &calls) in c.per_minute.iter().enumerate() {
        if calls == 0 {
            continue;
        }
        let height = ((f64::from(calls) / scale) * H as f64).max(1.0);
        let class: &'static str = if calls > quota { "bar over" } else { "bar" };
        h.raw("<rect class=\"")
            .raw(class)
            .raw("\" x=\"")
            .num(i * BAR)
            .raw("\" y=\"")
            .num(format!("{:.1}", H as f64 - height))
            .raw("\" width=\"")
            .num(BAR - 1)
            .raw("\" height=\"")
            .num(format!("{height:.1}"))
            .raw("\"><title>")
            .num(calls)
            .raw(" calls, ")
            .num(n - 1 - i)
            .raw(" min ago</title></rect>");
    }
    if quota_shown {
        let quota_y = H as f64 - f64::from(quota) / scale * H as f64;
        h.raw("<line class=\"quota\" x1=\"0\" x2=\"540\" y1=\"")
            .num(format!("{quota_y:.1}"))
            .raw("\" y2=\"")
            .num(format!("{quota_y:.1}"))
            .raw("\"/>");
    }
    h.raw("<text x=\"0\" y=\"114\">60 min ago</text><text x=\"515\" y=\"114\">now</text></svg><figcaption><strong>")
        .text(c.host)
        .raw("</strong> ")
        .text(&c.url)
        .raw(": ")
        .num(last)
        .raw(" calls this minute, peak ")
        .num(peak)
        .raw("/min, ")
        .num(total)
        .raw(" in the hour; quota ")
        .num(quota)
        .raw("/min");
    if quota_shown {
        h.raw(" (dashed line)");
    } else {
        h.raw(" (far above this scale)");
    }
    h.raw("</figcaption></figure>");
}

fn replicas(h: &mut Html, r: &StatusReport, now: i64) {
    if r.replicas.is_empty() {
        return;
    }
    h.raw("<section id=\"replicas\" data-live><h2>Replicas</h2><table><thead><tr><th>instance</th><th>host</th><th class=\"num\">pid</th><th>shards</th><th>lease</th><th>last seen</th></tr></thead><tbody>");
    for p in &r.replicas {
        let shards = p.shards.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        let lease = match p.lease_expires_in_ms {
            Some(ms) if ms >= 0 => format!("expires in {}", age(ms / 1000)),
            Some(ms) => format!("expired {} ago", age(-ms / 1000)),
            None => "standby".to_string(),
        };
        let seen = p
            .last_seen
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
        h.raw("<tr>")
            .cell(&p.instance)
            .cell(&p.host)
            .num_cell(p.pid)
            .cell(if shards.is_empty() { "-" } else { &shards })
            .cell(&lease)
            .cell(&relative(seen, now))
            .raw("</tr>");
    }
    h.raw("</tbody></table></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_both_text_and_attributes() {
        let mut h = Html(String::new());
        h.raw("<td title=\"")
            .text("\"><img src=x onerror='alert(1)'>&")
            .raw("\">");
        assert_eq!(
            h.0,
            "<td title=\"&quot;&gt;&lt;img src=x onerror=&#39;alert(1)&#39;&gt;&amp;\">"
        );
    }

    #[test]
    fn the_policy_names_the_hashes_of_the_inline_style_and_script() {
        let policy = content_security_policy();
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
        assert!(policy.contains(&csp_hash(SCRIPT)) && policy.contains(&csp_hash(CSS)));
        assert!(!policy.contains("unsafe-inline"));
    }

    #[test]
    fn the_chart_draws_the_quota_when_calls_come_near_it_and_says_so_when_not() {
        let mut minutes = vec![0u32; crate::ncp::calls::MINUTES];
        minutes[59] = 10;
        let calls = |per_minute: Vec<u32>| HostCalls {
            host: "media",
            url: "https://mi.apigw.ntruss.com".into(),
            quota_per_minute: 1000,
            per_minute,
        };
        let mut h = Html(String::new());
        chart(&mut h, &calls(minutes.clone()));
        assert!(
            h.0.contains("far above this scale") && !h.0.contains("class=\"quota\""),
            "{}",
            h.0
        );
        assert_eq!(h.0.matches("<rect").count(), 1);
        minutes[10] = 1200;
        let mut h = Html(String::new());
        chart(&mut h, &calls(minutes));
        assert!(
            h.0.contains("class=\"quota\"") && h.0.contains("class=\"bar over\""),
            "{}",
            h.0
        );
    }

    fn report() -> StatusReport {
        StatusReport {
            version: "0",
            instance: "i".into(),
            store: "s".into(),
            generated_at: String::new(),
            generated_at_ms: 100_000,
            counts: Vec::new(),
            items_total: 0,
            items_omitted: 0,
            items: Vec::new(),
            events: Vec::new(),
            sinks: Vec::new(),
            api: Vec::new(),
            replicas: Vec::new(),
            callbacks: false,
            last_callback: None,
        }
    }

    #[test]
    fn the_replicas_section_appears_only_with_replicas_and_escapes_their_names() {
        assert!(!render(&report()).contains("id=\"replicas\""));
        let mut r = report();
        r.replicas.push(super::super::ReplicaStatus {
            instance: "<b>replica-a</b>".into(),
            host: "db-1".into(),
            pid: 42,
            shards: vec![0, 3, 7],
            lease_expires_in_ms: Some(9_000),
            last_seen: Some("1970-01-01T00:01:39.000Z".into()),
        });
        let page = render(&r);
        assert!(page.contains("id=\"replicas\""), "{page}");
        assert!(page.contains("<td>&lt;b&gt;replica-a&lt;/b&gt;</td>") && !page.contains("<b>"));
        assert!(
            page.contains("<td>0, 3, 7</td><td>expires in 9s</td><td>1s ago</td>"),
            "{page}"
        );
    }

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(None, 0), "-");
        assert_eq!(relative(Some(0), 12_000), "12s ago");
        assert_eq!(relative(Some(180_000), 0), "in 3m");
        assert_eq!(age(3 * 3600), "3h");
    }
}
