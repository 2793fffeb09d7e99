//! `payguard chaos`: proves, profile by profile, that no payment is lost or doubled
//! when the PG misbehaves, and measures what it costs. Starts its own simulator and
//! service (child processes of this binary), drives checkouts, audits the database
//! against the simulator's ledger, and prints the figures. Exits non-zero on any
//! broken invariant.

mod audit;
mod drive;
mod profile;
mod report;
mod stack;
mod timeline;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use self::audit::Audit;
pub use self::profile::Profile;
use self::stack::{Protection, Stack};

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// The fault profile; `all` runs each in turn.
    #[arg(long, value_enum, default_value = "all")]
    profile: Profile,
    /// Checkouts per profile. The seeded stock sells 4,000: past that many accepted, the
    /// rest are answered 409 OUT_OF_STOCK (an overload run refuses most before that).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    checkouts: u64,
    /// Checkouts in flight at once (unpaced runs).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Paced: checkouts started per second (a shop's pace), however long their answers
    /// take. Without it, checkouts run back to back at --concurrency.
    #[arg(long)]
    rate: Option<f64>,
    /// The fault window in seconds from the start, START..END (paced runs; default the
    /// middle third). Unpaced runs fault the middle 40% of the checkouts.
    #[arg(long, value_parser = parse_window, requires = "rate")]
    window: Option<(f64, f64)>,
    /// The PG's request failure rate outside the fault window (the reference PG's: 0.4).
    #[arg(long, default_value_t = 0.4)]
    failure_rate: f64,
    /// How late the PG answers in the `late-answers` profile, in ms (the service's
    /// response timeout is 1,000).
    #[arg(long, default_value_t = 1_500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    late_ms: u64,
    /// Seed of the simulator's draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The reference PG's timings (100-500 ms answers, 1-5 s decisions) instead of fast ones.
    #[arg(long)]
    reference_timing: bool,
    /// PostgreSQL for the service (`postgres://.../db`; a fresh database per run is
    /// created next to it). Default: a temporary SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Run each profile again with payguard's protections off, and compare.
    #[arg(long)]
    compare_naive: bool,
    /// PGs: with 2, a second simulator (gateway `pg2`, reference behaviour throughout)
    /// takes the payments the faulty primary cannot.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    gateways: u8,
    /// Also write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write a self-contained HTML report: each run as a timeline (checkouts per
    /// second by outcome, breaker states, the fault window), payguard above naive; and
    /// each profile's picture as an SVG beside it.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Exit non-zero when the naive client sells more than payguard in any profile.
    #[arg(long, requires = "compare_naive")]
    fail_if_naive_sells_more: bool,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

pub async fn run(args: ChaosArgs) -> Result<(), Box<dyn std::error::Error>> {
    let profiles: Vec<Profile> = match args.profile {
        Profile::All => Profile::EACH.to_vec(),
        one => vec![one],
    };
    if profiles.contains(&Profile::DbOutage) && args.database_url.is_none() {
        return Err(
            "--profile db-outage cuts the service's PostgreSQL connection: give --database-url postgres://...".into()
        );
    }
    let root = std::env::temp_dir().join(format!("payguard-chaos-{}", std::process::id()));
    let mut protected = Vec::new();
    let mut naive = Vec::new();
    for (i, &profile) in profiles.iter().enumerate() {
        protected.push(run_one(&args, profile, Protection::On, &root.join(format!("{i}-{}", profile.name()))).await?);
        if args.compare_naive {
            naive.push(
                run_one(&args, profile, Protection::Naive, &root.join(format!("{i}-{}-naive", profile.name()))).await?,
            );
        }
    }
    report::print(&protected, &naive, &args_line(&args));
    if let Some(path) = &args.json {
        let json = serde_json::json!({"command": args_line(&args), "payguard": protected, "naive": naive});
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if let Some(path) = &args.report {
        timeline::write(path, &protected, &naive, &args_line(&args))?;
    }
    let _ = std::fs::remove_dir_all(&root);
    let broken: usize = protected.iter().map(|a| a.violations.total()).sum();
    if broken > 0 {
        return Err(format!("{broken} invariant violations (see the table above)").into());
    }
    if args.fail_if_naive_sells_more {
        let worse: Vec<String> = protected
            .iter()
            .zip(&naive)
            .filter(|(p, n)| p.figures.paid < n.figures.paid)
            .map(|(p, n)| format!("{}: paid {} vs naive {}", p.profile.name(), p.figures.paid, n.figures.paid))
            .collect();
        if !worse.is_empty() {
            return Err(format!("payguard sold less than a client without protections: {}", worse.join("; ")).into());
        }
    }
    Ok(())
}

fn parse_window(raw: &str) -> Result<(f64, f64), String> {
    let (from, to) = raw.split_once("..").ok_or("expected START..END in seconds, e.g. 8..16")?;
    let (from, to): (f64, f64) = (from.trim().parse().map_err(|_| "START")?, to.trim().parse().map_err(|_| "END")?);
    if !(0.0 <= from && from < to) {
        return Err("the window needs 0 <= START < END".into());
    }
    Ok((from, to))
}

/// How the runs of these arguments are driven.
fn plan(args: &ChaosArgs) -> Result<drive::Plan, String> {
    let total = args.checkouts as usize;
    let window = match (args.rate, args.window) {
        (Some(rate), Some((from, to))) => {
            let duration = total as f64 / rate;
            if to > duration {
                return Err(format!("the window ends after the run ({duration:.1} s at {rate}/s)"));
            }
            (from / duration, to / duration)
        }
        (Some(_), None) => (1.0 / 3.0, 2.0 / 3.0),
        (None, _) => (0.3, 0.7),
    };
    if args.rate.is_some_and(|r| !(r > 0.0 && r <= 5_000.0)) {
        return Err("--rate must be in (0, 5000] checkouts per second".into());
    }
    if !(0.0..=1.0).contains(&args.failure_rate) {
        return Err("--failure-rate must be in [0, 1]".into());
    }
    Ok(drive::Plan {
        total,
        concurrency: args.concurrency,
        rate: args.rate,
        window,
        baseline_failure_rate: args.failure_rate,
        late_ms: args.late_ms,
        quiet: args.quiet,
    })
}

async fn run_one(
    args: &ChaosArgs,
    profile: Profile,
    protection: Protection,
    dir: &std::path::Path,
) -> Result<Audit, String> {
    let database = match &args.database_url {
        Some(server) => Some(fresh_postgres(server).await?),
        None => None,
    };
    let plan = plan(args)?;
    let mut stack = Stack::start(
        dir,
        args.seed,
        args.reference_timing,
        protection,
        database.as_ref().map(|d| d.1.as_str()),
        args.gateways,
    )
    .await?;
    let driven = drive::drive(&mut stack, profile, plan).await;
    let settle = if args.reference_timing { Duration::from_secs(180) } else { Duration::from_secs(60) };
    let audited = match driven {
        Ok(driven) => audit::audit(&stack, profile, &driven, settle).await,
        Err(e) => Err(e),
    };
    stack.stop().await;
    if let Some((server, _, name)) = database {
        drop_postgres(&server, &name).await;
    }
    audited
}

/// (server URL, database URL, database name): a new database on the given server.
async fn fresh_postgres(server: &str) -> Result<(String, String, String), String> {
    let name = format!("payguard_chaos_{}_{:x}", std::process::id(), rand::random::<u32>());
    let pool = sqlx::PgPool::connect(server).await.map_err(|e| e.to_string())?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
    Ok((server.to_string(), format!("{base}/{name}"), name))
}

async fn drop_postgres(server: &str, name: &str) {
    if let Ok(pool) = sqlx::PgPool::connect(server).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&pool)
            .await;
    }
}

fn args_line(args: &ChaosArgs) -> String {
    let mut line = format!(
        "payguard chaos --profile {} --checkouts {} --concurrency {} --seed {}",
        args.profile.name(),
        args.checkouts,
        args.concurrency,
        args.seed
    );
    if let Some(rate) = args.rate {
        line.push_str(&format!(" --rate {rate}"));
    }
    if let Some((from, to)) = args.window {
        line.push_str(&format!(" --window {from}..{to}"));
    }
    if args.failure_rate != 0.4 {
        line.push_str(&format!(" --failure-rate {}", args.failure_rate));
    }
    if args.late_ms != 1_500 {
        line.push_str(&format!(" --late-ms {}", args.late_ms));
    }
    if args.reference_timing {
        line.push_str(" --reference-timing");
    }
    if args.database_url.is_some() {
        line.push_str(" --database-url <postgres>");
    }
    if args.compare_naive {
        line.push_str(" --compare-naive");
    }
    if args.gateways > 1 {
        line.push_str(&format!(" --gateways {}", args.gateways));
    }
    line
}
