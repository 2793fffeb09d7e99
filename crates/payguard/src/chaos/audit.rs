//! After a run: waits for every payment to settle, then audits our database against
//! the simulators' ledgers (each attempt against its own gateway's) and computes the
//! run's figures.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::drive::{Checkout, Driven};
use super::profile::Profile;
use super::stack::{Stack, metric_sum};

const CARD: &str = "1234-5678-9814-1451";
const CARD_DIGITS: &str = "1234567898141451";
/// Seeded stock per product (crates/service/migrations).
const INITIAL_STOCK: [(i64, i64); 5] = [(1, 1000), (2, 1000), (3, 500), (4, 1000), (5, 1000)];

enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Attempt rows, times in unix ms.
struct AttemptRow {
    order_id: i64,
    pg_order_id: String,
    gateway: String,
    status: String,
    key: Option<String>,
    settled_by: Option<String>,
    finalized_at: Option<i64>,
    anomaly: Option<String>,
}

impl Db {
    async fn connect(url: &str) -> Result<Db, String> {
        if url.starts_with("sqlite:") {
            Ok(Db::Sqlite(sqlx::SqlitePool::connect(url).await.map_err(|e| e.to_string())?))
        } else {
            Ok(Db::Postgres(sqlx::PgPool::connect(url).await.map_err(|e| e.to_string())?))
        }
    }

    async fn scalar(&self, sql: &'static str) -> Result<i64, String> {
        match self {
            Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        }
        .map_err(|e| e.to_string())
    }

    /// Orders ever inserted, rolled-back ones included (their rows are deleted, but the
    /// id sequence remembers them).
    async fn orders_inserted(&self) -> Result<i64, String> {
        match self {
            Db::Sqlite(p) => {
                sqlx::query_scalar("SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'orders'), 0)")
                    .fetch_one(p)
                    .await
            }
            Db::Postgres(p) => {
                sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM orders_id_seq")
                    .fetch_one(p)
                    .await
            }
        }
        .map_err(|e| e.to_string())
    }

    async fn attempts(&self) -> Result<Vec<AttemptRow>, String> {
        // Times are BIGINT milliseconds on both databases.
        const SQL: &str =
            "SELECT a.order_id, a.pg_order_id, a.gateway, a.status, a.transaction_key, a.settled_by, a.finalized_at,
                    o.anomaly
             FROM payment_attempts a JOIN orders o ON o.id = a.order_id";
        macro_rules! rows {
            ($rows:expr) => {
                $rows
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|r| AttemptRow {
                        order_id: r.get("order_id"),
                        pg_order_id: r.get("pg_order_id"),
                        gateway: r.get("gateway"),
                        status: r.get("status"),
                        key: r.get("transaction_key"),
                        settled_by: r.get("settled_by"),
                        finalized_at: r.get("finalized_at"),
                        anomaly: r.get("anomaly"),
                    })
                    .collect()
            };
        }
        Ok(match self {
            Db::Sqlite(p) => rows!(sqlx::query(SQL).fetch_all(p).await),
            Db::Postgres(p) => rows!(sqlx::query(SQL).fetch_all(p).await),
        })
    }

    async fn stock(&self) -> Result<Vec<(i64, i64, i64, i64)>, String> {
        const SQL: &str = "SELECT id, available, reserved, sold FROM products ORDER BY id";
        match self {
            Db::Sqlite(p) => sqlx::query_as(SQL).fetch_all(p).await,
            Db::Postgres(p) => sqlx::query_as(SQL).fetch_all(p).await,
        }
        .map_err(|e| e.to_string())
    }
}

/// Each invariant and how many times it was broken.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violations {
    pub not_final: usize,
    pub status_differs_from_pg: usize,
    pub pg_transaction_without_order: usize,
    pub accepted_order_missing: usize,
    pub double_success_not_flagged: usize,
    pub stock_not_conserved: usize,
    pub card_number_exposed: usize,
}

impl Violations {
    pub fn total(&self) -> usize {
        self.not_final
            + self.status_differs_from_pg
            + self.pg_transaction_without_order
            + self.accepted_order_missing
            + self.double_success_not_flagged
            + self.stock_not_conserved
            + self.card_number_exposed
    }
}

#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub checkouts: usize,
    /// Orders whose payment ended SUCCESS: what the shop actually sold.
    pub paid: usize,
    pub accepted: usize,
    pub unavailable: usize,
    pub no_answer: usize,
    pub other: usize,
    pub throughput_per_second: f64,
    /// Checkout latency by outcome: (p50, p95, p99) in ms.
    pub accepted_latency_ms: Option<(f64, f64, f64)>,
    pub unavailable_latency_ms: Option<(f64, f64, f64)>,
    /// 503s started while the breaker was open: (p50, p99) in ms.
    pub fast_fail_ms: Option<(f64, f64)>,
    /// Our final status after the PG's, settled by callback / by the reconciler: (p50, p99) in ms.
    pub consistency_callback_ms: Option<(f64, f64)>,
    pub consistency_reconciler_ms: Option<(f64, f64)>,
    pub settled_by_callback: usize,
    pub settled_by_reconciler: usize,
    pub time_to_open_s: Option<f64>,
    pub breaker_opens: usize,
    pub retries_share_of_pg_requests: Option<f64>,
    pub pg_requests: usize,
    pub settle_wait_s: f64,
    pub peak_rss_mb: Option<f64>,
    /// Checkouts started while the primary PG was faulty, and of those the ones
    /// answered 202 and the ones that ended paid.
    pub outage_checkouts: usize,
    pub outage_accepted: usize,
    pub outage_paid: usize,
    /// The fault window, in seconds from the start of the run.
    pub window_s: Option<(f64, f64)>,
    /// Checkouts started in the window as long again after it, and those answered 202:
    /// how fast selling comes back.
    pub after_checkouts: usize,
    pub after_accepted: usize,
    /// 503 answers: (p50, p99) in ms.
    pub refusal_ms: Option<(f64, f64)>,
    /// Payment requests the PGs received (their own count) per checkout.
    pub pg_requests_per_checkout: f64,
    /// From the end of the window to the first checkout answered 202 that started after it.
    pub first_accept_after_recovery_s: Option<f64>,
    /// In an outage: PG payment requests per checkout from 2 s into the window to its end.
    pub reach_after_2s: Option<f64>,
    /// Orders paid through each gateway: (name, count).
    pub paid_by_gateway: Vec<(String, usize)>,
    /// Orders the service inserted, the ones it rolled back and deleted included: a
    /// checkout refused before any work inserts none.
    pub orders_written: usize,
}

/// One kind of answer in one phase of the run: how many, and how fast (from the client).
#[derive(Debug, Clone, Serialize)]
pub struct Answers {
    /// `before`, `window` or `after` the fault window; `run` without one.
    pub phase: &'static str,
    /// `202`, `503 STORE_UNAVAILABLE` (status and errorCode), or `no answer`.
    pub answer: String,
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Answers grouped by phase and kind, in phase order.
fn answers(checkouts: &[Checkout], window: Option<(f64, f64)>) -> Vec<Answers> {
    let mut groups: std::collections::BTreeMap<(u8, &'static str, String), Vec<f64>> = Default::default();
    for c in checkouts {
        let at = c.started_at.as_secs_f64();
        let phase = match window {
            None => (0, "run"),
            Some((from, _)) if at < from => (0, "before"),
            Some((_, to)) if at < to => (1, "window"),
            Some(_) => (2, "after"),
        };
        let answer = match (c.status, &c.code) {
            (0, _) => "no answer".to_string(),
            (status, Some(code)) => format!("{status} {code}"),
            (status, None) => status.to_string(),
        };
        groups.entry((phase.0, phase.1, answer)).or_default().push(ms(c.latency));
    }
    groups
        .into_iter()
        .map(|((_, phase, answer), latencies)| {
            let count = latencies.len();
            let q = quantiles(latencies, &[0.5, 0.99]).unwrap_or_default();
            Answers { phase, answer, count, p50_ms: q[0], p99_ms: q[1] }
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    pub profile: Profile,
    pub violations: Violations,
    pub figures: Figures,
    pub answers: Vec<Answers>,
    /// What the timeline draws.
    #[serde(skip)]
    pub timeline: Timeline,
}

/// A run over time, for the report's pictures.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// (started at, status) of every checkout, in seconds from the start.
    pub checkouts: Vec<(f64, u16)>,
    /// (from, state) of the primary's payment breaker.
    pub breaker: Vec<(f64, String)>,
    pub window: Option<(f64, f64)>,
    pub elapsed: f64,
}

fn quantiles(mut values: Vec<f64>, ps: &[f64]) -> Option<Vec<f64>> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(ps.iter().map(|p| values[((values.len() - 1) as f64 * p).round() as usize]).collect())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

pub async fn audit(
    stack: &Stack,
    profile: Profile,
    driven: &Driven,
    settle_timeout: Duration,
) -> Result<Audit, String> {
    let db = Db::connect(&stack.database_url).await?;
    let waited = Instant::now();
    let mut unsettled =
        db.scalar("SELECT COUNT(*) FROM payment_attempts WHERE status IN ('REQUESTED', 'PENDING')").await?;
    while unsettled > 0 && waited.elapsed() < settle_timeout {
        tokio::time::sleep(Duration::from_millis(200)).await;
        unsettled = db.scalar("SELECT COUNT(*) FROM payment_attempts WHERE status IN ('REQUESTED', 'PENDING')").await?;
    }
    let settle_wait_s = waited.elapsed().as_secs_f64();

    // Each gateway's books; an attempt is judged against its own gateway's only.
    let mut ledgers = vec![("pg", stack.pg.clone())];
    ledgers.extend(stack.secondary.iter().map(|url| ("pg2", url.clone())));
    let mut books = Vec::new();
    for (name, url) in &ledgers {
        let ledger = stack.get_json(&format!("{url}/sim/ledger")).await.ok_or("a simulator's ledger is unreachable")?;
        books.push((*name, ledger));
    }
    let mut pg_by_order: HashMap<(&str, &str), Vec<&Value>> = HashMap::new();
    for (name, ledger) in &books {
        for tx in ledger["transactions"].as_array().ok_or("no ledger")? {
            pg_by_order.entry((name, tx["orderId"].as_str().unwrap_or_default())).or_default().push(tx);
        }
    }
    let attempts = db.attempts().await?;
    let mut v = Violations { not_final: unsettled as usize, ..Violations::default() };
    let mut consistency: HashMap<&str, Vec<f64>> = HashMap::new();
    for a in &attempts {
        let transactions = pg_by_order.get(&(a.gateway.as_str(), a.pg_order_id.as_str())).cloned().unwrap_or_default();
        match transactions.iter().find(|t| Some(t["transactionKey"].as_str().unwrap_or_default()) == a.key.as_deref()) {
            Some(tx) => {
                if tx["status"].as_str() != Some(a.status.as_str()) {
                    v.status_differs_from_pg += 1;
                }
                let pg_final = tx["finalizedAt"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                if let (Some(pg_final), Some(ours), Some(by)) = (pg_final, a.finalized_at, a.settled_by.as_deref()) {
                    let lag = (ours - pg_final.timestamp_millis()).max(0) as f64;
                    consistency.entry(if by == "callback" { "callback" } else { "reconciler" }).or_default().push(lag);
                }
            }
            // No transaction of ours at the PG: only right for an attempt the PG never got.
            None if transactions.is_empty() && a.status == "FAILED" && a.key.is_none() => {}
            None => v.status_differs_from_pg += 1,
        }
        let successes = transactions.iter().filter(|t| t["status"] == "SUCCESS").count();
        if successes > 1 && a.anomaly.is_none() {
            v.double_success_not_flagged += 1;
        }
    }
    v.pg_transaction_without_order = pg_by_order
        .keys()
        .filter(|(gateway, id)| !attempts.iter().any(|a| a.gateway == *gateway && a.pg_order_id == *id))
        .count();
    let known: std::collections::HashSet<i64> = attempts.iter().map(|a| a.order_id).collect();
    v.accepted_order_missing = driven
        .checkouts
        .iter()
        .filter(|c| c.status == 202)
        .filter(|c| c.order_id.is_none_or(|id| !known.contains(&id)))
        .count();
    let orders_written = db.orders_inserted().await? as usize;
    let sold_expected = db
        .scalar("SELECT CAST(COALESCE(SUM(i.quantity), 0) AS BIGINT) FROM order_items i JOIN payment_attempts a ON a.order_id = i.order_id WHERE a.status = 'SUCCESS'")
        .await?;
    let stock = db.stock().await?;
    v.stock_not_conserved = stock
        .iter()
        .zip(INITIAL_STOCK)
        .filter(|((id, available, reserved, sold), (initial_id, initial))| {
            id != initial_id || available + reserved + sold != *initial || (v.not_final == 0 && *reserved != 0)
        })
        .count()
        + usize::from(stock.iter().map(|s| s.3).sum::<i64>() != sold_expected);
    let mut scanned = stack.log_files();
    if let Some(path) = stack.database_url.strip_prefix("sqlite://") {
        scanned.extend(["", "-wal"].iter().map(|s| std::path::PathBuf::from(format!("{path}{s}"))));
    }
    v.card_number_exposed = scanned
        .iter()
        // The PGs themselves hold card numbers.
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("sim")))
        .filter_map(|p| std::fs::read(p).ok())
        .filter(|bytes| {
            let text = String::from_utf8_lossy(bytes);
            text.contains(CARD) || text.contains(CARD_DIGITS)
        })
        .count();

    let c = &driven.checkouts;
    let latencies = |status: u16| c.iter().filter(|x| x.status == status).map(|x| ms(x.latency)).collect::<Vec<_>>();
    let three = |v: Vec<f64>| quantiles(v, &[0.5, 0.95, 0.99]).map(|q| (q[0], q[1], q[2]));
    let two = |v: Vec<f64>| quantiles(v, &[0.5, 0.99]).map(|q| (q[0], q[1]));
    let metrics = stack.metrics().await.unwrap_or_default();
    let pg_requests = metric_sum(&metrics, "payguard_gateway_requests_total", &["request_payment"]);
    let retries = metric_sum(&metrics, "payguard_gateway_retries_total", &["request_payment"]);
    let state = stack.get_json(&format!("{}/ops/state", stack.shop)).await.unwrap_or(Value::Null);
    let mut opened = driven.opened.clone();
    opened.extend(super::drive::opens_of_the_primary(&state["data"]["transitions"]));
    let time_to_open_s = driven.outage_started.and_then(|start| {
        opened
            .iter()
            .filter(|at| **at >= start)
            .min()
            .map(|at| (*at - start.fixed_offset()).num_milliseconds() as f64 / 1_000.0)
    });
    let paid: std::collections::HashSet<i64> =
        attempts.iter().filter(|a| a.status == "SUCCESS").map(|a| a.order_id).collect();
    let window = driven.window.map(|(from, to)| (from.as_secs_f64(), to.as_secs_f64()));
    let at = |x: &Checkout| x.started_at.as_secs_f64();
    let in_window = |x: &&Checkout| window.is_some_and(|(from, to)| at(x) >= from && at(x) < to);
    let after_window = |x: &&Checkout| window.is_some_and(|(from, to)| at(x) >= to && at(x) < to + (to - from));
    let mut pg_requests_seen = 0.0;
    for (_, ledger) in &books {
        pg_requests_seen += ledger["counts"]["paymentRequests"].as_f64().unwrap_or(0.0);
    }
    let figures = Figures {
        checkouts: c.len(),
        paid: paid.len(),
        accepted: c.iter().filter(|x| x.status == 202).count(),
        unavailable: c.iter().filter(|x| x.status == 503).count(),
        no_answer: c.iter().filter(|x| x.status == 0).count(),
        other: c.iter().filter(|x| ![0, 202, 503].contains(&x.status)).count(),
        throughput_per_second: c.len() as f64 / driven.elapsed.as_secs_f64(),
        accepted_latency_ms: three(latencies(202)),
        unavailable_latency_ms: three(latencies(503)),
        fast_fail_ms: two(c.iter().filter(|x| x.status == 503 && x.breaker_open).map(|x| ms(x.latency)).collect()),
        consistency_callback_ms: two(consistency.get("callback").cloned().unwrap_or_default()),
        consistency_reconciler_ms: two(consistency.get("reconciler").cloned().unwrap_or_default()),
        settled_by_callback: consistency.get("callback").map_or(0, Vec::len),
        settled_by_reconciler: consistency.get("reconciler").map_or(0, Vec::len),
        time_to_open_s,
        breaker_opens: opened.len(),
        retries_share_of_pg_requests: (pg_requests > 0.0).then(|| retries / pg_requests),
        pg_requests: pg_requests as usize,
        settle_wait_s,
        peak_rss_mb: driven.peak_rss.map(|b| b as f64 / (1024.0 * 1024.0)),
        outage_checkouts: c.iter().filter(in_window).count(),
        outage_accepted: c.iter().filter(in_window).filter(|x| x.status == 202).count(),
        outage_paid: c.iter().filter(in_window).filter_map(|x| x.order_id).filter(|id| paid.contains(id)).count(),
        window_s: window,
        after_checkouts: c.iter().filter(after_window).count(),
        after_accepted: c.iter().filter(after_window).filter(|x| x.status == 202).count(),
        refusal_ms: two(latencies(503)),
        pg_requests_per_checkout: pg_requests_seen / c.len().max(1) as f64,
        first_accept_after_recovery_s: window.and_then(|(_, to)| {
            c.iter()
                .filter(|x| x.status == 202 && at(x) >= to)
                .map(|x| at(x) + x.latency.as_secs_f64() - to)
                .min_by(f64::total_cmp)
        }),
        reach_after_2s: driven.reach_after_2s,
        paid_by_gateway: ledgers
            .iter()
            .map(|(name, _)| {
                let paid = attempts.iter().filter(|a| a.gateway == *name && a.status == "SUCCESS").count();
                (name.to_string(), paid)
            })
            .collect(),
        orders_written,
    };
    let timeline = Timeline {
        checkouts: c.iter().map(|x| (at(x), x.status)).collect(),
        breaker: driven.breaker.iter().map(|(t, state)| (t.as_secs_f64(), state.clone())).collect(),
        window,
        elapsed: driven.elapsed.as_secs_f64(),
    };
    Ok(Audit { profile, violations: v, figures, answers: answers(c, window), timeline })
}
