//! Command-line interface. Every option is also an environment variable `PAYGUARD_...`.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use gateway_sim::faults::{CallbackRetry, DownMode, MsRange, StoreThenTimeout, StoreThenTimeoutMode};
use gateway_sim::{CallbackAllowList, Faults, SimConfig};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "payguard",
    version,
    about = "An order-and-payment service that keeps selling when the payment gateway fails."
)]
pub struct Cli {
    /// Log line format (default: pretty for `dev`, json otherwise).
    #[arg(long, global = true, env = "PAYGUARD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything locally: the service on 127.0.0.1:8080 (SQLite ./payguard-dev.db)
    /// and the bundled PG simulator on 127.0.0.1:8082 (with `--gateways 2`, a second one
    /// on 8083 that payments fail over to).
    Dev(crate::dev::DevArgs),
    /// Run the service in production mode against a real PG.
    Serve(ServeArgs),
    /// Run the PG simulator alone: the reference PG's API plus fault injection.
    GatewaySim(Box<SimArgs>),
    /// Drive checkouts under PG faults and audit that nothing was lost or doubled.
    Chaos(crate::chaos::ChaosArgs),
    /// Print the shop API's OpenAPI document (what `/openapi.json` serves), e.g.
    /// `payguard openapi > docs/openapi.json`.
    Openapi,
}

/// Options of `payguard serve`. Every setting, these included, can also come from the
/// config file or a `PAYGUARD_...` variable (nested with `__`): see docs/configuration.md.
#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "PAYGUARD_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// The PG's base URL.
    #[arg(long, env = "PAYGUARD_GATEWAY__BASE_URL")]
    gateway_url: String,
    /// Our base URL as the PG reaches it (callbacks go to {public-url}/api/v1/payments/callback).
    #[arg(long, env = "PAYGUARD_PUBLIC_URL")]
    public_url: String,
    #[arg(long, env = "PAYGUARD_LISTEN")]
    listen: Option<SocketAddr>,
    /// `sqlite://path.db`.
    #[arg(long, env = "PAYGUARD_DATABASE_URL")]
    database_url: Option<String>,
}

impl Cli {
    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or(match self.command {
            Command::Dev(_) => LogFormat::Pretty,
            _ => LogFormat::Json,
        })
    }

    pub async fn run(self) -> Result<(), Box<dyn std::error::Error>> {
        match self.command {
            Command::Dev(args) => crate::dev::run(args).await,
            Command::Chaos(args) => crate::chaos::run(args).await,
            Command::Openapi => {
                println!("{}", service::http::openapi::DOCUMENT.as_str());
                Ok(())
            }
            Command::Serve(args) => {
                let mut settings = service::Settings::load(args.config.as_deref())?;
                settings.gateway.base_url = args.gateway_url;
                settings.public_url = args.public_url;
                settings.listen = args.listen.unwrap_or(settings.listen);
                settings.database_url = args.database_url.unwrap_or(settings.database_url);
                settings.validate()?;
                tracing::info!(?settings, "starting payguard");
                let app = service::Application::build(settings).await?;
                app.run_until(crate::shutdown::signal()).await;
                Ok(())
            }
            Command::GatewaySim(args) => {
                let config = args.into_config()?;
                tracing::info!(?config, "starting gateway simulator");
                let sim = gateway_sim::spawn(config).await?;
                sim.run_until(crate::shutdown::signal()).await;
                Ok(())
            }
        }
    }
}

/// Options of `payguard gateway-sim`. Unset fault options keep the reference PG's values.
#[derive(Debug, Args)]
struct SimArgs {
    /// Address of the PG API.
    #[arg(long, env = "PAYGUARD_SIM_LISTEN", default_value = "127.0.0.1:8082")]
    listen: SocketAddr,
    /// Extra address serving only /sim/*, reachable while `--down refuse` closes the API port.
    #[arg(long, env = "PAYGUARD_SIM_CONTROL_LISTEN")]
    control_listen: Option<SocketAddr>,
    /// Seed for every random draw (reproducible runs).
    #[arg(long, env = "PAYGUARD_SIM_SEED")]
    seed: Option<u64>,
    /// Callback URL prefixes accepted, comma-separated (default: any loopback URL).
    #[arg(long, env = "PAYGUARD_SIM_CALLBACK_ALLOW", value_delimiter = ',')]
    callback_allow: Vec<String>,
    /// Sign callbacks with HMAC-SHA256 using this secret (header X-PG-Signature).
    #[arg(long, env = "PAYGUARD_SIM_CALLBACK_SECRET", hide_env_values = true)]
    callback_secret: Option<String>,
    /// Start from zero delays instead of the reference's 100-500 ms and 1-5 s.
    #[arg(long, env = "PAYGUARD_SIM_INSTANT")]
    instant: bool,
    /// Offer a refund API the reference PG lacks: POST /api/v1/payments/{key}/cancel
    /// (whole or partial, with an Idempotency-Key) and GET /api/v1/payments/{key}/cancels.
    #[arg(long, env = "PAYGUARD_SIM_REFUNDS")]
    refunds: bool,

    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "PAYGUARD_SIM_TLS_CERT", requires = "tls_key", help_heading = "HTTPS")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "PAYGUARD_SIM_TLS_KEY", requires = "tls_cert", help_heading = "HTTPS")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "PAYGUARD_SIM_TLS_CLIENT_CA", help_heading = "HTTPS")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Serve HTTPS with a fresh certificate for localhost and 127.0.0.1, signed by a fresh
    /// CA whose certificate is written to DIR/ca.pem (give it to payguard as
    /// `gateway.tls.ca_file`).
    #[arg(
        long,
        env = "PAYGUARD_SIM_TLS_SELF_SIGNED",
        value_name = "DIR",
        conflicts_with = "tls_cert",
        help_heading = "HTTPS"
    )]
    tls_self_signed: Option<std::path::PathBuf>,

    /// Share of valid payment requests answered 500 with nothing stored [reference: 0.4].
    #[arg(long, env = "PAYGUARD_SIM_FAILURE_RATE", help_heading = "Faults")]
    failure_rate: Option<f64>,
    /// Payment request latency, ms range like 100-500 [reference: 100-500].
    #[arg(long, env = "PAYGUARD_SIM_LATENCY_MS", help_heading = "Faults")]
    latency_ms: Option<MsRange>,
    /// Lookup latency, ms range like 100-500 [reference: 0, lookups answer at once].
    #[arg(long, env = "PAYGUARD_SIM_LOOKUP_LATENCY_MS", help_heading = "Faults")]
    lookup_latency_ms: Option<MsRange>,
    /// Delay from acceptance to the final status, ms range [reference: 1000-5000].
    #[arg(long, env = "PAYGUARD_SIM_PROCESSING_DELAY_MS", help_heading = "Faults")]
    processing_delay_ms: Option<MsRange>,
    /// Share of transactions declined for limit exceeded [reference: 0.2].
    #[arg(long, env = "PAYGUARD_SIM_LIMIT_EXCEEDED_RATE", help_heading = "Faults")]
    limit_exceeded_rate: Option<f64>,
    /// Share of transactions declined as invalid card [reference: 0.1].
    #[arg(long, env = "PAYGUARD_SIM_INVALID_CARD_RATE", help_heading = "Faults")]
    invalid_card_rate: Option<f64>,
    /// Start down: `refuse` closes the port, `unavailable` answers 503 at once.
    #[arg(long, env = "PAYGUARD_SIM_DOWN", value_parser = parse_down, help_heading = "Faults")]
    down: Option<DownMode>,
    /// Accept API calls and never answer.
    #[arg(long, env = "PAYGUARD_SIM_HANG", help_heading = "Faults")]
    hang: bool,
    /// Store accepted payments, then `delay` the answer 60 s or `drop` the connection.
    #[arg(long, env = "PAYGUARD_SIM_STORE_THEN_TIMEOUT", value_parser = parse_store_then_timeout, help_heading = "Faults")]
    store_then_timeout: Option<StoreThenTimeoutMode>,
    /// Share of accepted payments `--store-then-timeout` applies to.
    #[arg(long, env = "PAYGUARD_SIM_STORE_THEN_TIMEOUT_RATE", default_value_t = 1.0, help_heading = "Faults")]
    store_then_timeout_rate: f64,
    /// Share of callbacks never sent.
    #[arg(long, env = "PAYGUARD_SIM_CALLBACK_DROP_RATE", help_heading = "Callback faults")]
    callback_drop_rate: Option<f64>,
    /// Share of callbacks sent twice.
    #[arg(long, env = "PAYGUARD_SIM_CALLBACK_DUPLICATE_RATE", help_heading = "Callback faults")]
    callback_duplicate_rate: Option<f64>,
    /// Extra delay before a callback, ms range.
    #[arg(long, env = "PAYGUARD_SIM_CALLBACK_DELAY_MS", help_heading = "Callback faults")]
    callback_delay_ms: Option<MsRange>,
    /// Share of transactions followed by a stale PENDING delivery.
    #[arg(long, env = "PAYGUARD_SIM_CALLBACK_STALE_RATE", help_heading = "Callback faults")]
    callback_stale_rate: Option<f64>,
    /// Share of transactions followed by a contradictory final delivery.
    #[arg(long, env = "PAYGUARD_SIM_CALLBACK_CONTRADICTORY_RATE", help_heading = "Callback faults")]
    callback_contradictory_rate: Option<f64>,
    /// Callback attempts until a 2xx answer [reference: 1, no retry].
    #[arg(long, env = "PAYGUARD_SIM_CALLBACK_MAX_ATTEMPTS", help_heading = "Callback faults")]
    callback_max_attempts: Option<u32>,
    /// First backoff between callback attempts, doubled each time.
    #[arg(long, env = "PAYGUARD_SIM_CALLBACK_RETRY_BACKOFF_MS", help_heading = "Callback faults")]
    callback_retry_backoff_ms: Option<u64>,
}

fn parse_down(s: &str) -> Result<DownMode, String> {
    match s {
        "refuse" => Ok(DownMode::Refuse),
        "unavailable" => Ok(DownMode::Unavailable),
        _ => Err("expected `refuse` or `unavailable`".into()),
    }
}

fn parse_store_then_timeout(s: &str) -> Result<StoreThenTimeoutMode, String> {
    match s {
        "delay" => Ok(StoreThenTimeoutMode::Delay),
        "drop" => Ok(StoreThenTimeoutMode::Drop),
        _ => Err("expected `delay` or `drop`".into()),
    }
}

impl SimArgs {
    fn into_config(self) -> Result<SimConfig, String> {
        let mut f = if self.instant { Faults::instant() } else { Faults::default() };
        let set = |slot: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut f.request_failure_rate, self.failure_rate);
        set(&mut f.outcome.limit_exceeded, self.limit_exceeded_rate);
        set(&mut f.outcome.invalid_card, self.invalid_card_rate);
        set(&mut f.callback.drop_rate, self.callback_drop_rate);
        set(&mut f.callback.duplicate_rate, self.callback_duplicate_rate);
        set(&mut f.callback.stale_rate, self.callback_stale_rate);
        set(&mut f.callback.contradictory_rate, self.callback_contradictory_rate);
        f.request_latency_ms = self.latency_ms.unwrap_or(f.request_latency_ms);
        f.lookup_latency_ms = self.lookup_latency_ms.unwrap_or(f.lookup_latency_ms);
        f.processing_delay_ms = self.processing_delay_ms.unwrap_or(f.processing_delay_ms);
        f.callback.delay_ms = self.callback_delay_ms.unwrap_or(f.callback.delay_ms);
        f.down = self.down;
        f.hang = self.hang;
        f.store_then_timeout = self.store_then_timeout.map(|mode| StoreThenTimeout {
            mode,
            rate: self.store_then_timeout_rate,
            delay_ms: 60_000,
        });
        let default_retry = CallbackRetry::default();
        f.callback.retry = CallbackRetry {
            max_attempts: self.callback_max_attempts.unwrap_or(default_retry.max_attempts),
            initial_backoff_ms: self.callback_retry_backoff_ms.unwrap_or(default_retry.initial_backoff_ms),
        };
        f.validate()?;
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let client_ca_pem = self.tls_client_ca.as_deref().map(read).transpose()?;
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_self_signed) {
            (Some(cert), Some(key), _) => {
                Some(gateway_sim::tls::TlsIdentity { cert_chain_pem: read(cert)?, key_pem: read(key)?, client_ca_pem })
            }
            (_, _, Some(dir)) => {
                let ca = gateway_sim::tls::TestCa::new("payguard gateway-sim CA").map_err(|e| e.to_string())?;
                let mut identity = ca.localhost().map_err(|e| e.to_string())?;
                identity.client_ca_pem = client_ca_pem;
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                let ca_file = dir.join("ca.pem");
                std::fs::write(&ca_file, ca.cert_pem())
                    .map_err(|e| format!("cannot write {}: {e}", ca_file.display()))?;
                eprintln!("gateway-sim: HTTPS certificate signed by the CA in {}", ca_file.display());
                Some(identity)
            }
            _ => None,
        };
        Ok(SimConfig {
            tls,
            listen: self.listen,
            control_listen: self.control_listen,
            seed: self.seed,
            callback_allow: if self.callback_allow.is_empty() {
                CallbackAllowList::Loopback
            } else {
                CallbackAllowList::Prefixes(self.callback_allow)
            },
            callback_secret: self.callback_secret,
            faults: f,
            refunds: self.refunds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn sim_args(args: &[&str]) -> SimConfig {
        let cli = Cli::try_parse_from([&["payguard", "gateway-sim"], args].concat()).unwrap();
        match cli.command {
            Command::GatewaySim(a) => a.into_config().unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_self_signed_simulator_writes_the_ca_to_trust() {
        let dir = std::env::temp_dir().join(format!("payguard-cli-tls-{}", std::process::id()));
        let config = sim_args(&["--tls-self-signed", dir.to_str().unwrap()]);
        let identity = config.tls.expect("HTTPS");
        assert!(identity.cert_chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----") && ca != identity.cert_chain_pem);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(sim_args(&[]).tls.is_none(), "plain HTTP by default");
        assert!(Cli::try_parse_from(["payguard", "gateway-sim", "--tls-cert", "c.pem"]).is_err(), "a key is needed");
    }

    #[test]
    fn no_flags_means_the_reference_pg_on_8082() {
        let config = sim_args(&[]);
        assert_eq!(config.faults, Faults::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:8082");
        assert_eq!(config.callback_allow, CallbackAllowList::Loopback);
    }

    #[test]
    fn fault_flags_change_only_their_knob() {
        let config = sim_args(&[
            "--failure-rate",
            "0.1",
            "--latency-ms",
            "0-5",
            "--down",
            "refuse",
            "--store-then-timeout",
            "drop",
            "--seed",
            "9",
        ]);
        assert_eq!(config.faults.request_failure_rate, 0.1);
        assert_eq!(config.faults.request_latency_ms, MsRange::new(0, 5));
        assert_eq!(config.faults.processing_delay_ms, MsRange::new(1_000, 5_000));
        assert_eq!(config.faults.down, Some(DownMode::Refuse));
        assert_eq!(config.faults.store_then_timeout.unwrap().mode, StoreThenTimeoutMode::Drop);
        assert_eq!(config.seed, Some(9));
    }

    #[test]
    fn invalid_fault_flags_are_refused() {
        let cli = Cli::try_parse_from(["payguard", "gateway-sim", "--failure-rate", "1.5"]).unwrap();
        let Command::GatewaySim(args) = cli.command else { unreachable!() };
        assert!(args.into_config().unwrap_err().contains("requestFailureRate"));
        assert!(Cli::try_parse_from(["payguard", "gateway-sim", "--down", "sideways"]).is_err());
    }
}
