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
    /// Checkouts per profile (at most 4,000: the seeded stock).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=4_000))]
    checkouts: u64,
    /// Checkouts in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
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
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

pub async fn run(args: ChaosArgs) -> Result<(), Box<dyn std::error::Error>> {
    let profiles: Vec<Profile> = match args.profile {
        Profile::All => Profile::EACH.to_vec(),
        one => vec![one],
    };
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
    let _ = std::fs::remove_dir_all(&root);
    let broken: usize = protected.iter().map(|a| a.violations.total()).sum();
    if broken > 0 {
        return Err(format!("{broken} invariant violations (see the table above)").into());
    }
    Ok(())
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
    let mut stack = Stack::start(
        dir,
        args.seed,
        args.reference_timing,
        protection,
        database.as_ref().map(|d| d.1.as_str()),
        args.gateways,
    )
    .await?;
    let driven = drive::drive(&mut stack, profile, args.checkouts as usize, args.concurrency, args.quiet).await;
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
