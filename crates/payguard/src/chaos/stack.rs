//! The system under test: simulators and a service as child processes of this binary,
//! or already running ones. Knows how to change faults, kill and restart the service,
//! and read what the service and the PG know.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gateway_sim::link::Link;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub const ADMIN_TOKEN: &str = "chaos-harness-admin-token";

/// How the service is configured for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// payguard's defaults.
    On,
    /// What a client without payguard gets: breaker disabled, one attempt, 10 s timeouts.
    Naive,
}

pub struct Stack {
    pub shop: String,
    /// The primary PG: the one the fault profile acts on.
    pub pg: String,
    /// The failover PG (gateway `pg2`) when the run has two; it keeps the reference behaviour.
    pub secondary: Option<String>,
    pub database_url: String,
    pub dir: PathBuf,
    /// The primary PG's request latency as started (`null`: the reference's): what a fault
    /// that ends puts back, so the PG after a fault window is as fast as before it.
    pub pg_latency: Value,
    service: Option<Child>,
    sim: Option<Child>,
    secondary_sim: Option<Child>,
    service_env: Vec<(String, String)>,
    restarts: usize,
    http: reqwest::Client,
    /// The service's way to PostgreSQL, which the `db-outage` profile cuts. The harness's
    /// own queries (`database_url`) go straight to the server.
    database_link: Option<Link>,
}

/// The simulator's request latency in a run without `--reference-timing`, in ms.
const FAST_LATENCY_MS: (u64, u64) = (0, 5);

async fn free_port() -> std::io::Result<u16> {
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port())
}

fn spawn(args: &[String], env: &[(String, String)], log: &Path) -> std::io::Result<Child> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(args).stdout(Stdio::null()).stderr(std::fs::File::create(log)?).kill_on_drop(true);
    command.env("RUST_LOG", "info").env("PAYGUARD_LOG_FORMAT", "json");
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn()
}

/// The same PostgreSQL database reached through a link on a loopback port.
async fn through_link(url: &str) -> Result<(String, Link), String> {
    let mut url = reqwest::Url::parse(url).map_err(|e| format!("database URL: {e}"))?;
    let host = url.host_str().ok_or("the database URL has no host")?.to_string();
    let upstream = tokio::net::lookup_host((host.as_str(), url.port().unwrap_or(5432)))
        .await
        .map_err(|e| format!("database host {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("database host {host} has no address"))?;
    let link = Link::to(upstream).await.map_err(|e| e.to_string())?;
    url.set_host(Some("127.0.0.1")).map_err(|e| e.to_string())?;
    url.set_port(Some(link.local_addr().port())).map_err(|()| "cannot set the port")?;
    Ok((url.to_string(), link))
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

impl Stack {
    /// Starts fresh simulators (one per gateway) and a service (SQLite in `dir`, or
    /// `database_url`).
    pub async fn start(
        dir: &Path,
        seed: u64,
        reference_timing: bool,
        protection: Protection,
        database_url: Option<&str>,
        gateways: u8,
    ) -> Result<Stack, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let (pg_port, shop_port) =
            (free_port().await.map_err(|e| e.to_string())?, free_port().await.map_err(|e| e.to_string())?);
        let pg = format!("http://127.0.0.1:{pg_port}");
        let shop = format!("http://127.0.0.1:{shop_port}");
        let sim_args = |port: u16, seed: u64| {
            let mut args: Vec<String> =
                ["gateway-sim", "--listen", &format!("127.0.0.1:{port}"), "--seed", &seed.to_string()]
                    .map(String::from)
                    .to_vec();
            if !reference_timing {
                let (min, max) = FAST_LATENCY_MS;
                args.extend([
                    "--latency-ms".into(),
                    format!("{min}-{max}"),
                    "--processing-delay-ms".into(),
                    "0-50".into(),
                ]);
            }
            args
        };
        let sim = spawn(&sim_args(pg_port, seed), &[], &dir.join("sim.log"))
            .map_err(|e| format!("cannot start the simulator: {e}"))?;
        let (secondary, secondary_sim) = if gateways > 1 {
            let port = free_port().await.map_err(|e| e.to_string())?;
            let child = spawn(&sim_args(port, seed + 1), &[], &dir.join("sim-pg2.log"))
                .map_err(|e| format!("cannot start the second simulator: {e}"))?;
            (Some(format!("http://127.0.0.1:{port}")), Some(child))
        } else {
            (None, None)
        };
        let database_url =
            database_url.map(String::from).unwrap_or_else(|| format!("sqlite://{}", dir.join("shop.db").display()));
        let (service_database_url, database_link) = if database_url.starts_with("postgres") {
            let (url, link) = through_link(&database_url).await?;
            (url, Some(link))
        } else {
            (database_url.clone(), None)
        };
        let mut env: Vec<(String, String)> = vec![
            ("PAYGUARD_DATABASE_URL".into(), service_database_url),
            ("PAYGUARD_ADMIN__TOKEN".into(), ADMIN_TOKEN.into()),
            ("PAYGUARD_CHECKOUT__RATE_LIMIT_BURST".into(), "1000000".into()),
            ("PAYGUARD_CHECKOUT__RATE_LIMIT_PER_SECOND".into(), "1000000".into()),
            ("PAYGUARD_RECONCILER__INTERVAL_MS".into(), "200".into()),
        ];
        if !reference_timing {
            env.extend([
                ("PAYGUARD_RECONCILER__GRACE_MS".into(), "500".into()),
                ("PAYGUARD_RECONCILER__ACCEPTANCE_WINDOW_MS".into(), "6000".into()),
                ("PAYGUARD_RECONCILER__BACKOFF_INITIAL_MS".into(), "200".into()),
                ("PAYGUARD_RECONCILER__BACKOFF_MAX_MS".into(), "1000".into()),
            ]);
        }
        // The naive client's settings, for every gateway.
        let naive = protection == Protection::Naive;
        if naive {
            env.extend([
                ("PAYGUARD_GATEWAY__RESILIENCE__RETRY__MAX_ATTEMPTS".into(), "1".into()),
                ("PAYGUARD_GATEWAY__RESILIENCE__RESPONSE_TIMEOUT".into(), "10000".into()),
                ("PAYGUARD_GATEWAY__RESILIENCE__DEADLINE".into(), "10000".into()),
            ]);
        }
        if let Some(url) = &secondary {
            let resilience =
                if naive { ",resilience={retry={max_attempts=1},response_timeout=10000,deadline=10000}" } else { "" };
            env.push((
                "PAYGUARD_FAILOVER_GATEWAYS".into(),
                format!("[{{name=\"pg2\",base_url=\"{url}\"{resilience}}}]"),
            ));
        }
        let mut stack = Stack {
            shop,
            pg,
            database_url,
            dir: dir.to_path_buf(),
            pg_latency: if reference_timing {
                Value::Null
            } else {
                json!({"min": FAST_LATENCY_MS.0, "max": FAST_LATENCY_MS.1})
            },
            service: None,
            sim: Some(sim),
            secondary,
            secondary_sim,
            service_env: env,
            restarts: 0,
            database_link,
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().map_err(|e| e.to_string())?,
        };
        stack.wait_ready(&format!("{}/sim/faults", stack.pg)).await?;
        if let Some(url) = &stack.secondary {
            stack.wait_ready(&format!("{url}/sim/faults")).await?;
        }
        // The port was free when chosen, but an outgoing connection may take it before the
        // service binds it (both come from the ephemeral range): then try another.
        let mut attempts = 0;
        while let Err(e) = stack.start_service().await {
            attempts += 1;
            if attempts == 3 || !e.contains("Address already in use") {
                return Err(e);
            }
            stack.shop = format!("http://127.0.0.1:{}", free_port().await.map_err(|e| e.to_string())?);
        }
        if naive {
            let names = if stack.secondary.is_some() { &["pg", "pg2"][..] } else { &["pg"][..] };
            for name in names {
                for kind in ["payments", "status"] {
                    stack.admin(&format!("/breakers/{name}.{kind}/disable")).await?;
                }
            }
        }
        Ok(stack)
    }

    async fn start_service(&mut self) -> Result<(), String> {
        let log = self.dir.join(format!("service-{}.log", self.restarts));
        let listen = self.shop.trim_start_matches("http://").to_string();
        let args =
            ["serve", "--listen", &listen, "--gateway-url", &self.pg, "--public-url", &self.shop].map(String::from);
        let mut service =
            spawn(&args, &self.service_env, &log).map_err(|e| format!("cannot start the service: {e}"))?;
        let url = format!("{}/readyz", self.shop);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let outcome = loop {
            if self.http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                break Ok(());
            }
            if let Ok(Some(status)) = service.try_wait() {
                break Err(format!("the service exited ({status}) before it was ready; its log ends:\n{}", tail(&log)));
            }
            if tokio::time::Instant::now() > deadline {
                break Err(format!("{url} not ready after 30 s; the service's log ends:\n{}", tail(&log)));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        self.service = Some(service);
        outcome
    }

    async fn wait_ready(&self, url: &str) -> Result<(), String> {
        for _ in 0..400 {
            if self.http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!("{url} never became ready"))
    }

    /// SIGKILL, then start again on the same port and database.
    pub async fn crash_and_restart(&mut self) -> Result<(), String> {
        if let Some(mut service) = self.service.take() {
            let _ = service.start_kill();
            let _ = service.wait().await;
        }
        self.restarts += 1;
        self.start_service().await
    }

    pub fn service_pid(&self) -> Option<u32> {
        self.service.as_ref().and_then(|s| s.id())
    }

    /// Applies a fault patch: the PG's (`/sim/faults`), or `{"database": "down"|"up"}`,
    /// which cuts or mends the service's connection to PostgreSQL.
    pub async fn set_faults(&self, patch: &Value) -> Result<(), String> {
        if let Some(database) = patch.get("database") {
            let link = self.database_link.as_ref().ok_or("a database fault needs --database-url postgres://...")?;
            match database.as_str() {
                Some("down") => link.cut(),
                Some("up") => link.mend(),
                _ => return Err(format!("database fault {database}: expected \"down\" or \"up\"")),
            }
            return Ok(());
        }
        let response =
            self.http.put(format!("{}/sim/faults", self.pg)).json(patch).send().await.map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("faults refused: {}", response.text().await.unwrap_or_default()))
        }
    }

    pub async fn admin(&self, path: &str) -> Result<Value, String> {
        let response = self
            .http
            .post(format!("{}/api/v1/admin{path}", self.shop))
            .bearer_auth(ADMIN_TOKEN)
            .header("X-OPERATOR", "chaos-harness")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        response.json().await.map_err(|e| e.to_string())
    }

    pub async fn get_json(&self, url: &str) -> Option<Value> {
        self.http.get(url).send().await.ok()?.json().await.ok()
    }

    /// Payment requests that reached the primary PG so far, by its own count.
    pub async fn pg_payment_requests(&self) -> u64 {
        let ledger = self.get_json(&format!("{}/sim/ledger", self.pg)).await.unwrap_or(Value::Null);
        ledger["counts"]["paymentRequests"].as_u64().unwrap_or(0)
    }

    pub async fn metrics(&self) -> Option<String> {
        self.http.get(format!("{}/metrics", self.shop)).send().await.ok()?.text().await.ok()
    }

    /// Peak resident memory of the service process so far, in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.service_pid()?)).ok()?;
        let kb: u64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    pub async fn stop(mut self) {
        for child in [self.service.take(), self.sim.take(), self.secondary_sim.take()].into_iter().flatten() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            }
            let mut child = child;
            let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
        }
    }

    pub fn log_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect())
            .unwrap_or_default()
    }
}

/// The value of a sample line in a Prometheus exposition, summed over label sets that
/// contain every one of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' ')))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        // Not `sum()`: an empty float sum is -0.0.
        .fold(0.0, |total, x| total + x)
}
