//! `GET /status`: a page for the people who run the registry. Server-rendered HTML and CSS (no
//! script), refreshing itself every [`REFRESH_SECS`] seconds. Per storage location: its
//! health, the blobs and bytes it holds and lacks, the jobs acting on it, its oldest job and
//! how far behind it is; then the queue, the workers seen recently and the latest
//! dead-lettered jobs.
//!
//! With access control on, the page asks what `/v2/_catalog` asks: a caller allowed to list
//! the catalog (a token with the `registry:catalog:*` scope, or HTTP Basic credentials, which a
//! browser prompts for).

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use quay_core::{HealthStatus, LocationId, LocationState, Registry};
use quay_replication::status::{
    self, human_bytes, human_duration, LocationReport, StatusReport, WORKER_SEEN_WITHIN,
};

use crate::access_log::AccessNote;
use crate::AppState;

/// The path of the page.
pub const STATUS_PATH: &str = "/status";

/// How often the page reloads itself, in seconds.
pub const REFRESH_SECS: u32 = 10;

/// Dead-lettered jobs shown.
const DEAD_SHOWN: u64 = 20;

pub(crate) async fn page(
    State(state): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    note: Option<Extension<AccessNote>>,
    headers: HeaderMap,
) -> Response {
    let client = connect.map(|c| c.0 .0.ip());
    let note = note.as_ref().map(|n| &n.0);
    if let Err(refused) = crate::auth::catalog_access(&state, &headers, client, note).await {
        return refused;
    }
    let registry = &state.registry;
    let locations = shown_locations(registry);
    let report = match registry.queue().or(registry.outbox()) {
        Some(queue) => {
            status::gather(
                registry.metadata().as_ref(),
                queue.as_ref(),
                &locations,
                DEAD_SHOWN,
            )
            .await
        }
        None => Err(quay_core::Error::new(
            quay_core::ErrorKind::Unsupported,
            "the metadata store has no job queue",
        )),
    };
    let (code, html) = match report {
        Ok(mut report) => {
            let latest = state.health.latest();
            for l in &mut report.locations {
                if let Ok(id) = l.location.parse::<LocationId>() {
                    l.health = Some(health_of(registry, &latest, &id));
                }
            }
            (StatusCode::OK, render(&state, &report))
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            render_error(&state, &e.to_string()),
        ),
    };
    (
        code,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

/// Every configured location: this instance's preference first, then the others by name.
fn shown_locations(registry: &Registry) -> Vec<LocationId> {
    let mut ids: Vec<LocationId> = registry.config().preference.clone();
    for id in registry.locations().keys() {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids
}

/// `up`, `degraded: …` or `down: …`: the worse of the latest probe and the circuit breaker.
fn health_of(
    registry: &Registry,
    latest: &std::collections::BTreeMap<String, HealthStatus>,
    id: &LocationId,
) -> String {
    match registry.health().state(id) {
        LocationState::Down(why) => return format!("down: {why}"),
        LocationState::Degraded(why) => return format!("degraded: {why}"),
        LocationState::Up => {}
    }
    match latest.get(&format!("storage_{id}")) {
        Some(HealthStatus::Failed(why)) => format!("down: {why}"),
        Some(HealthStatus::Degraded(why)) => format!("degraded: {why}"),
        Some(HealthStatus::Healthy) => "up".to_owned(),
        None => "not probed yet".to_owned(),
    }
}

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped.
fn esc(text: &str) -> String {
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

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f5f7;color:#1d2125}
header{background:#1d2b3a;color:#fff;padding:14px 24px;display:flex;justify-content:space-between;align-items:baseline}
header h1{font-size:18px;margin:0;font-weight:600}
header .meta{font-size:12px;opacity:.8}
main{padding:16px 24px;max-width:1200px}
section{background:#fff;border:1px solid #dfe1e6;border-radius:6px;margin:0 0 16px;padding:12px 16px}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #ebecf0;vertical-align:top}
th{font-size:12px;text-transform:uppercase;letter-spacing:.03em;color:#5e6c84}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.banner{padding:10px 14px;border-radius:6px;margin:0 0 16px;font-weight:600}
.ok{background:#e3fcef;color:#006644}.warn{background:#fffae6;color:#974f0c}.bad{background:#ffebe6;color:#bf2600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.missing{color:#bf2600;font-weight:600}
.muted{color:#6b778c}
code{font-size:12px;word-break:break-all}
";

fn render(state: &AppState, report: &StatusReport) -> String {
    let defaults = &state.registry.config().default_locations;
    let replication = state.registry.config().replication;
    let mut h = head(state);
    // The verdict.
    let missing = report
        .locations
        .iter()
        .filter(|l| is_default(defaults, l))
        .map(|l| l.missing_blobs)
        .sum::<u64>();
    if report.nobody_working() && replication {
        let _ = write!(
            h,
            "<div class=\"banner bad\" id=\"verdict\">{missing} {} missing, and {}</div>",
            if missing == 1 { "copy" } else { "copies" },
            esc(&StatusReport::no_worker_warning())
        );
    } else if missing > 0 {
        let _ = write!(
            h,
            "<div class=\"banner warn\" id=\"verdict\">Replication in progress: {missing} \
             {} missing</div>",
            if missing == 1 { "copy" } else { "copies" }
        );
    } else if !replication {
        h.push_str(
            "<div class=\"banner warn\" id=\"verdict\">Replication is off \
                    (FEATURE_STORAGE_REPLICATION)</div>",
        );
    } else {
        h.push_str(
            "<div class=\"banner ok\" id=\"verdict\">Replication complete: every \
                    blob is in every default location</div>",
        );
    }
    locations_table(&mut h, defaults, report);
    queue_section(&mut h, report);
    workers_section(&mut h, report);
    dead_section(&mut h, report);
    h.push_str("</main></body></html>\n");
    h
}

fn is_default(defaults: &[LocationId], l: &LocationReport) -> bool {
    defaults.iter().any(|d| d.as_str() == l.location)
}

fn head(state: &AppState) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>quay-rs status: {inst}</title><style>{STYLE}</style></head><body>\
         <header><h1>quay-rs status</h1><span class=\"meta\">instance {inst} · {now} UTC · \
         refreshes every {REFRESH_SECS}s</span></header><main>",
        inst = esc(&state.instance),
        now = utc_now(),
    )
}

fn locations_table(h: &mut String, defaults: &[LocationId], report: &StatusReport) {
    h.push_str(
        "<section><h2>Storage locations</h2><table id=\"locations\"><tr><th>Location</th>\
         <th>Health</th><th>Blobs held</th><th>Bytes held</th><th>Blobs missing</th>\
         <th>Bytes missing</th><th>Jobs waiting / running / dead</th><th>Oldest job</th>\
         <th>Lag</th></tr>",
    );
    for l in &report.locations {
        let health = l.health.as_deref().unwrap_or("unknown");
        let class = if health == "up" {
            "ok"
        } else if health.starts_with("down") {
            "bad"
        } else {
            "warn"
        };
        let _ = write!(
            h,
            "<tr data-location=\"{loc}\" data-missing=\"{miss}\"><td><b>{loc}</b></td>\
             <td><span class=\"badge {class}\" title=\"{health}\">{short}</span></td>\
             <td class=\"n\">{blobs}</td><td class=\"n\">{bytes}</td>",
            loc = esc(&l.location),
            miss = l.missing_blobs,
            health = esc(health),
            short = esc(health.split(':').next().unwrap_or(health)),
            blobs = l.blobs,
            bytes = human_bytes(l.bytes),
        );
        if is_default(defaults, l) {
            let missing_class = if l.missing_blobs > 0 {
                "n missing"
            } else {
                "n"
            };
            let _ = write!(
                h,
                "<td class=\"{missing_class}\">{}</td><td class=\"{missing_class}\">{}</td>",
                l.missing_blobs,
                human_bytes(l.missing_bytes)
            );
        } else {
            h.push_str(
                "<td class=\"muted\" colspan=\"2\">not a default location: not replicated \
                 here</td>",
            );
        }
        match &l.queue {
            Some(q) => {
                let _ = write!(
                    h,
                    "<td class=\"n\">{} / {} / {}</td><td class=\"n\">{}</td>",
                    q.pending,
                    q.leased,
                    q.dead,
                    q.oldest_pending_age_secs
                        .map_or("-".to_owned(), human_duration)
                );
            }
            None => h.push_str("<td class=\"muted\" colspan=\"2\">not counted by this queue</td>"),
        }
        let _ = write!(
            h,
            "<td class=\"n\">{}</td></tr>",
            l.lag_secs.map_or("-".to_owned(), human_duration)
        );
    }
    h.push_str(
        "</table><p class=\"muted\">Lag: how long ago the oldest blob the location lacks was \
         pushed. Oldest job: the age of the oldest job acting on it.</p></section>",
    );
}

fn queue_section(h: &mut String, report: &StatusReport) {
    let _ = write!(
        h,
        "<section><h2>Replication queue</h2><p id=\"queue\">{} waiting, {} running, {} dead; \
         oldest waiting job: {}</p></section>",
        report.pending_jobs,
        report.leased_jobs,
        report.dead_jobs,
        report
            .oldest_pending_age_secs
            .map_or("none".to_owned(), human_duration)
    );
}

fn workers_section(h: &mut String, report: &StatusReport) {
    h.push_str("<section><h2>Workers</h2>");
    if !report.workers_recorded {
        h.push_str("<p class=\"muted\">This queue does not record workers.</p></section>");
        return;
    }
    if report.workers.is_empty() {
        let _ = write!(
            h,
            "<p id=\"workers\" class=\"{}\">No worker seen in the last {}s.</p></section>",
            if report.nobody_working() {
                "missing"
            } else {
                "muted"
            },
            WORKER_SEEN_WITHIN.as_secs()
        );
        return;
    }
    h.push_str(
        "<table id=\"workers\"><tr><th>Worker</th><th>Role</th><th>Up</th><th>Jobs done</th>\
         <th>Failed</th><th>Copied</th><th>Running</th><th>Last seen</th></tr>",
    );
    for w in &report.workers {
        let _ = write!(
            h,
            "<tr><td>{}:{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{} ago</td></tr>",
            esc(&w.host),
            w.pid,
            esc(&w.role),
            human_duration(w.up_secs),
            w.jobs_done,
            w.jobs_failed,
            human_bytes(w.bytes_copied),
            w.running,
            human_duration(w.seen_secs_ago)
        );
    }
    h.push_str("</table></section>");
}

fn dead_section(h: &mut String, report: &StatusReport) {
    h.push_str("<section><h2>Recent dead letters</h2>");
    if report.dead.is_empty() {
        h.push_str("<p class=\"muted\" id=\"dead\">None.</p></section>");
        return;
    }
    h.push_str(
        "<table id=\"dead\"><tr><th>Location</th><th>Kind</th><th>Blob</th><th>Attempts</th>\
         <th>Last error</th></tr>",
    );
    for d in &report.dead {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td>\
             <td>{}</td></tr>",
            esc(&d.target),
            esc(&d.kind),
            esc(&d.digest),
            d.attempts,
            esc(d.error.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table></section>");
}

fn render_error(state: &AppState, error: &str) -> String {
    let mut h = head(state);
    let _ = writeln!(
        h,
        "<div class=\"banner bad\" id=\"verdict\">Cannot read the registry's state: {}</div>\
         </main></body></html>",
        esc(error)
    );
    h
}

/// The time now as `YYYY-MM-DD HH:MM:SS` (UTC).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<b>\"a\" & 'b'</b>"),
            "&lt;b&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn utc_dates_are_civil() {
        let now = utc_now();
        assert_eq!(now.len(), 19, "{now}");
        assert!(now.starts_with("20"), "{now}");
    }
}
