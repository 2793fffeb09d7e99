//! The results as tables: invariants (each must be 0) and figures per profile, and
//! payguard against the naive client when both ran.

use super::audit::Audit;

/// The figures table's header and rule, shared by the payguard and naive tables.
const FIGURES_HEADER: &str = "| profile | paid | checkouts: 202 / 503 / no answer | checkouts/s | 202 latency | 503 latency \
| fast-fail while open | to consistency: callback (n) | reconciler (n) | time to open | breaker opens \
| retries / PG requests | peak RSS |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn q3(v: Option<(f64, f64, f64)>) -> String {
    v.map_or("-".into(), |(a, b, c)| format!("{a:.1} / {b:.1} / {c:.1}"))
}

fn q2(v: Option<(f64, f64)>) -> String {
    v.map_or("-".into(), |(a, b)| format!("{a:.1} / {b:.1}"))
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("-".into(), |x| format!("{x:.2}{unit}"))
}

pub fn print(protected: &[Audit], naive: &[Audit], command: &str) {
    println!("\n{command}\n");
    println!("Invariants (violations; every one must be 0)\n");
    println!(
        "| profile | not final | status != PG | PG tx without order | 202 order missing | double success unflagged | stock | card number exposed |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for a in protected {
        let v = &a.violations;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            a.profile.name(),
            v.not_final,
            v.status_differs_from_pg,
            v.pg_transaction_without_order,
            v.accepted_order_missing,
            v.double_success_not_flagged,
            v.stock_not_conserved,
            v.card_number_exposed
        );
    }
    println!("\nFigures (latencies in ms as p50 / p95 / p99, or p50 / p99)\n");
    println!("{FIGURES_HEADER}");
    for a in protected {
        row(a);
    }
    outage_table(protected);
    answers_table(protected);
    if !naive.is_empty() {
        println!("\nWithout payguard's protections (breaker disabled, one attempt, 10 s timeouts)\n");
        println!("{FIGURES_HEADER}");
        for a in naive {
            row(a);
        }
        keep_selling(protected, naive);
        println!("\npayguard vs naive\n");
        println!(
            "| profile | paid: payguard / naive | 202 answers: payguard / naive | checkout p99 ms: payguard / naive (ratio) | violations: payguard / naive |"
        );
        println!("|---|---|---|---|---|");
        for (p, n) in protected.iter().zip(naive) {
            let p99 = |a: &Audit| {
                let mut all: Vec<f64> = [a.figures.accepted_latency_ms, a.figures.unavailable_latency_ms]
                    .iter()
                    .flatten()
                    .map(|q| q.2)
                    .collect();
                all.sort_by(f64::total_cmp);
                all.last().copied()
            };
            let ratio = match (p99(p), p99(n)) {
                (Some(a), Some(b)) if a > 0.0 => format!("{a:.0} / {b:.0} ({:.1}x)", b / a),
                (a, b) => format!("{} / {}", opt(a, ""), opt(b, "")),
            };
            println!(
                "| {} | {} / {} | {} / {} | {ratio} | {} / {} |",
                p.profile.name(),
                p.figures.paid,
                n.figures.paid,
                p.figures.accepted,
                n.figures.accepted,
                p.violations.total(),
                n.violations.total()
            );
        }
    }
    println!();
}

/// Every kind of answer a checkout got, by phase: what a buyer saw, and how fast.
fn answers_table(audits: &[Audit]) {
    println!("\nAnswers by kind (checkouts started before, in and after the fault window; latency ms)\n");
    println!("| profile | phase | answer | checkouts | p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    for a in audits {
        println!(
            "| {} | run | orders inserted (rolled back ones included) | {} | | |",
            a.profile.name(),
            a.figures.orders_written
        );
        for x in &a.answers {
            println!(
                "| {} | {} | {} | {} | {:.1} | {:.1} |",
                a.profile.name(),
                x.phase,
                x.answer,
                x.count,
                x.p50_ms,
                x.p99_ms
            );
        }
    }
}

/// What the shop could still sell while the primary PG was faulty.
fn outage_table(audits: &[Audit]) {
    let during: Vec<&Audit> = audits.iter().filter(|a| a.figures.outage_checkouts > 0).collect();
    if during.is_empty() {
        return;
    }
    println!("\nWhile the primary PG was faulty (checkouts started in the fault window)\n");
    println!(
        "| profile | gateways | checkouts | answered 202 | accepted share | paid | paid per gateway (whole run) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for a in during {
        let f = &a.figures;
        let per_gateway: Vec<String> = f.paid_by_gateway.iter().map(|(name, n)| format!("{name} {n}")).collect();
        println!(
            "| {} | {} | {} | {} | {:.1}% | {} | {} |",
            a.profile.name(),
            f.paid_by_gateway.len(),
            f.outage_checkouts,
            f.outage_accepted,
            100.0 * f.outage_accepted as f64 / f.outage_checkouts as f64,
            f.outage_paid,
            per_gateway.join(", ")
        );
    }
}

fn row(a: &Audit) {
    let f = &a.figures;
    println!(
        "| {} | {} | {} / {} / {} | {:.0} | {} | {} | {} | {} ({}) | {} ({}) | {} | {} | {} | {} |",
        a.profile.name(),
        f.paid,
        f.accepted,
        f.unavailable,
        f.no_answer,
        f.throughput_per_second,
        q3(f.accepted_latency_ms),
        q3(f.unavailable_latency_ms),
        q2(f.fast_fail_ms),
        q2(f.consistency_callback_ms),
        f.settled_by_callback,
        q2(f.consistency_reconciler_ms),
        f.settled_by_reconciler,
        opt(f.time_to_open_s, " s"),
        f.breaker_opens,
        f.retries_share_of_pg_requests.map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
        opt(f.peak_rss_mb, " MB"),
    );
}

/// Selling through the fault window and after it, payguard beside naive.
fn keep_selling(protected: &[Audit], naive: &[Audit]) {
    println!(
        "\nKeep selling: payguard / naive (window and after: checkouts started in the fault window, and as long again after it)\n"
    );
    println!(
        "| profile | paid | accepted in window | accepted after window | refusal ms p50 / p99 | PG requests per checkout | first 202 after recovery | PG reach 2 s into an outage |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let share = |n: usize, of: usize| if of == 0 { "-".to_string() } else { format!("{n}/{of}") };
    for (p, n) in protected.iter().zip(naive) {
        let (pf, nf) = (&p.figures, &n.figures);
        println!(
            "| {} | {} / {} | {} / {} | {} / {} | {} / {} | {:.2} / {:.2} | {} / {} | {} |",
            p.profile.name(),
            pf.paid,
            nf.paid,
            share(pf.outage_accepted, pf.outage_checkouts),
            share(nf.outage_accepted, nf.outage_checkouts),
            share(pf.after_accepted, pf.after_checkouts),
            share(nf.after_accepted, nf.after_checkouts),
            q2(pf.refusal_ms),
            q2(nf.refusal_ms),
            pf.pg_requests_per_checkout,
            nf.pg_requests_per_checkout,
            opt(pf.first_accept_after_recovery_s, " s"),
            opt(nf.first_accept_after_recovery_s, " s"),
            pf.reach_after_2s.map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
        );
    }
}
