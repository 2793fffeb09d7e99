//! Settings, layered: defaults, then an optional TOML file, then `PAYGUARD_*` environment
//! variables for every knob (nested keys with `__`, e.g.
//! `PAYGUARD_RECONCILER__GRACE_MS=5000`, `PAYGUARD_GATEWAY__BASE_URL=...`).

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use gateway::ResilienceConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Our base URL as the PG reaches it; the callback URL is built from it.
    pub public_url: String,
    /// `sqlite://file.db` (embedded default, one instance) or `postgres://...` (several
    /// instances on one database).
    pub database_url: String,
    /// PostgreSQL pool size per instance.
    pub database_max_connections: u32,
    /// How long a statement waits for a pooled connection (and, on SQLite, for another
    /// writer's lock) before the database counts as unavailable: the request is answered
    /// 503 `STORE_UNAVAILABLE` instead of waiting on a database that is down.
    pub database_acquire_timeout_ms: u64,
    /// The primary PG: every payment goes here while its payment breaker admits calls.
    pub gateway: GatewaySettings,
    /// Further PGs, in priority order. A payment moves to the next one only when the
    /// previous one surely did not receive it (see docs/resilience.md, "Failover").
    pub failover_gateways: Vec<GatewaySettings>,
    pub reconciler: ReconcilerSettings,
    pub checkout: CheckoutSettings,
    pub admin: AdminSettings,
    pub http: HttpSettings,
}

/// What bounds a client's connection and request (docs/security.md, slow clients).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// A request's line and headers must arrive whole within this, however trickled;
    /// a kept-alive connection that sends no next request is closed after it too.
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive whole within this.
    pub body_read_timeout_ms: u64,
    /// A handler's answer, at most; longer than every PG deadline a checkout can spend
    /// (validated), so it never cuts off a payment that may have reached the PG.
    pub request_timeout_ms: u64,
    /// Open connections at most; a new one beyond it is closed at once. Keep it under
    /// the process's open-file limit, with room for the database and PG connections.
    pub max_connections: usize,
    /// A closing connection is drained (what the client still sends read and thrown
    /// away) for this long at most, so a client that writes its whole request before
    /// reading still reads our 413 or 408; 0 closes at once.
    pub linger_ms: u64,
    /// ... and for this many bytes at most; past them it is closed at once.
    pub linger_max_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections: 10_000,
            linger_ms: 2_000,
            linger_max_bytes: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckoutSettings {
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl_secs: u64,
    /// A key still in flight after this long belongs to a request whose process died:
    /// it then answers with the order that request created (or starts afresh when
    /// none stands). Longer than any checkout can run (its PG deadlines).
    pub idempotency_in_flight_secs: u64,
    /// Checkouts per second per buyer, sustained.
    pub rate_limit_per_second: u32,
    /// Checkouts a buyer may make at once before the rate applies.
    pub rate_limit_burst: u32,
    /// Checkouts past their validation at once in this instance; one more is refused
    /// with 503 `CHECKOUT_OVERLOADED` before anything is written. As many as the primary
    /// PG's payment bulkhead takes by default; above it only with the bulkhead's
    /// `max_wait` (`gateways_refusing_admitted_checkouts`).
    pub max_in_flight: usize,
    /// Refuse card numbers that fail the Luhn checksum. Off by default: the reference
    /// PG does not check it, and its sample card numbers fail it.
    pub require_luhn: bool,
}

impl Default for CheckoutSettings {
    fn default() -> Self {
        CheckoutSettings {
            idempotency_ttl_secs: 24 * 3600,
            idempotency_in_flight_secs: 60,
            rate_limit_per_second: 10,
            rate_limit_burst: 20,
            max_in_flight: 128,
            require_luhn: false,
        }
    }
}

/// Operator controls (breakers, reconcile now, the catalog). Without a token they are off.
/// Secrets are `SecretString`s: redacted in every `Debug` (the settings are logged at
/// start) and never serialised.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    #[serde(skip_serializing)]
    pub token: Option<SecretString>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Our name for this PG: breaker names, metric labels, and recorded on each attempt.
    pub name: String,
    pub base_url: String,
    /// Sent to the PG as `X-USER-ID`: the merchant's id, never a buyer's.
    pub merchant_id: String,
    /// When set, callbacks must carry a valid HMAC signature; otherwise each callback is
    /// confirmed by fetching the transaction back from the PG.
    #[serde(skip_serializing)]
    pub callback_secret: Option<SecretString>,
    /// Accepted age of a signed callback.
    pub callback_replay_window_secs: u64,
    /// Without a secret, each callback costs a status query at the PG: at most this
    /// many per second (more are answered 503 and left to the reconciler), so forged
    /// callbacks cannot spend the status API.
    pub callback_fetch_backs_per_second: u32,
    /// For an `https://` base URL: extra CA, client certificate (docs/configuration.md).
    pub tls: gateway::TlsSettings,
    pub resilience: ResilienceConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            database_url: "sqlite://payguard-dev.db".into(),
            database_max_connections: 10,
            database_acquire_timeout_ms: 1_000,
            gateway: GatewaySettings::default(),
            failover_gateways: Vec::new(),
            reconciler: ReconcilerSettings::default(),
            checkout: CheckoutSettings::default(),
            admin: AdminSettings::default(),
            http: HttpSettings::default(),
        }
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            name: "pg".into(),
            base_url: "http://127.0.0.1:8082".into(),
            merchant_id: "payguard".into(),
            callback_secret: None,
            callback_replay_window_secs: 300,
            callback_fetch_backs_per_second: 100,
            tls: gateway::TlsSettings::default(),
            resilience: ResilienceConfig::default(),
        }
    }
}

/// The shortest callback secret accepted: 256 bits, the HMAC-SHA256 key size.
pub const MIN_CALLBACK_SECRET_BYTES: usize = 32;

/// Top-level keys; other `PAYGUARD_*` variables (the CLI's own, the simulator's) are
/// not settings of the service and are left alone.
const KEYS: [&str; 11] = [
    "listen",
    "public_url",
    "database_url",
    "database_max_connections",
    "database_acquire_timeout_ms",
    "gateway",
    "failover_gateways",
    "reconciler",
    "checkout",
    "admin",
    "http",
];

impl Settings {
    pub fn load(file: Option<&Path>) -> Result<Settings, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed("PAYGUARD_")
            .split("__")
            // The filter sees keys before figment lowercases them.
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                KEYS.iter().any(|k| key == *k || key.starts_with(&format!("{k}.")))
            });
        let settings: Settings = figment.merge(env).extract().map_err(Box::new)?;
        settings.validate().map_err(|e| Box::new(figment::Error::from(e)))?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), String> {
        let http = |url: &str| url.starts_with("http://") || url.starts_with("https://");
        if !http(&self.public_url) {
            return Err(format!("public_url must be an http(s) URL, got '{}'", self.public_url));
        }
        let mut names = std::collections::HashSet::new();
        for g in self.gateways() {
            // The name is a URL path segment (its callback URL) and a metric label value.
            let well_formed = !g.name.is_empty()
                && g.name.len() <= 32
                && g.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !well_formed {
                return Err(format!("gateway name '{}' must be 1-32 of a-z, 0-9, '-', '_'", g.name));
            }
            if !names.insert(g.name.as_str()) {
                return Err(format!("gateway name '{}' is used twice: each gateway needs its own", g.name));
            }
            if !http(&g.base_url) {
                return Err(format!("gateway '{}': base_url must be an http(s) URL, got '{}'", g.name, g.base_url));
            }
            if g.callback_secret.as_ref().is_some_and(|s| s.expose_secret().len() < MIN_CALLBACK_SECRET_BYTES) {
                // An empty or short key makes every callback forgeable: HMAC under a
                // guessable key proves nothing.
                return Err(format!(
                    "gateway '{}': callback_secret must be at least {MIN_CALLBACK_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`); leave it unset to verify callbacks by asking the PG",
                    g.name
                ));
            }
            if g.callback_fetch_backs_per_second == 0 {
                return Err(format!("gateway '{}': callback_fetch_backs_per_second must be positive", g.name));
            }
            g.resilience.validate().map_err(|e| format!("gateway '{}' resilience: {e}", g.name))?;
        }
        let http = &self.http;
        if http.header_read_timeout_ms == 0 || http.body_read_timeout_ms == 0 || http.max_connections == 0 {
            return Err("http.header_read_timeout_ms, body_read_timeout_ms and max_connections must be positive".into());
        }
        // A checkout may spend each gateway's whole deadline (failover) plus a pooled
        // connection wait before and after the PG calls.
        let checkout_ms = self.gateways().map(|g| g.resilience.deadline.as_millis() as u64).sum::<u64>()
            + 2 * self.database_acquire_timeout_ms;
        if http.request_timeout_ms <= checkout_ms {
            return Err(format!(
                "http.request_timeout_ms ({}) must be longer than a checkout can take ({checkout_ms} ms: the gateways' deadlines and two database waits)",
                http.request_timeout_ms
            ));
        }
        if self.checkout.idempotency_in_flight_secs == 0 {
            return Err("checkout.idempotency_in_flight_secs must be positive".into());
        }
        if self.checkout.rate_limit_per_second == 0 || self.checkout.rate_limit_burst == 0 {
            return Err("checkout.rate_limit_per_second and rate_limit_burst must be positive".into());
        }
        if self.checkout.max_in_flight == 0 {
            return Err("checkout.max_in_flight must be at least 1".into());
        }
        if self.admin.token.as_ref().is_some_and(|t| t.expose_secret().len() < 16) {
            return Err("admin.token must be at least 16 characters".into());
        }
        let r = &self.reconciler;
        if r.interval_ms == 0 || r.batch_size <= 0 || r.concurrency == 0 || r.max_lookups_per_second == 0 {
            return Err(
                "reconciler.interval_ms, batch_size, concurrency and max_lookups_per_second must be positive".into()
            );
        }
        if r.lease_ms < 3 {
            return Err("reconciler.lease_ms must be at least 3 (it is renewed every third of it)".into());
        }
        Ok(())
    }

    /// Every gateway in priority order: the primary, then the failover ones.
    pub fn gateways(&self) -> impl Iterator<Item = &GatewaySettings> {
        std::iter::once(&self.gateway).chain(&self.failover_gateways)
    }

    /// Gateways whose payment bulkhead refuses at once while admission lets more
    /// checkouts in than it holds: the extra ones would be refused only after their
    /// orders are written. Valid (a failover gateway may take them), but worth a warning.
    pub fn gateways_refusing_admitted_checkouts(&self) -> impl Iterator<Item = &str> {
        self.gateways()
            .filter(|g| {
                let bulkhead = &g.resilience.bulkhead;
                bulkhead.max_wait.is_zero() && bulkhead.max_concurrent_calls < self.checkout.max_in_flight
            })
            .map(|g| g.name.as_str())
    }

    /// Where the named gateway posts its results. The primary keeps the original path,
    /// so a one-gateway setup is unchanged; each failover gateway has its own path,
    /// which tells whose callback it is.
    pub fn callback_url(&self, gateway: &str) -> String {
        let base = format!("{}/api/v1/payments/callback", self.public_url.trim_end_matches('/'));
        if gateway == self.gateway.name { base } else { format!("{base}/{gateway}") }
    }
}

/// The reconciler: how often and how fast it asks the PG about unsettled payments
/// (docs/resilience.md, "The reconciler").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcilerSettings {
    pub interval_ms: u64,
    /// Leave an attempt to its callback this long before asking the PG.
    pub grace_ms: u64,
    pub batch_size: i64,
    /// After this long, an attempt the PG has no transaction for was never received:
    /// longer than any request of ours can still be on its way (the client deadline).
    pub acceptance_window_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// After this many inconclusive checks an attempt is flagged stuck (it is still
    /// checked, at the longest backoff).
    pub stuck_after_checks: i64,
    /// How long a claimed attempt is this instance's. Renewed every third of it while
    /// the pass works, so it only has to outlast a stalled renewal; after a crash the
    /// others take the payments over this long after the last renewal.
    pub lease_ms: u64,
    /// Lookups in flight at once (the status stack's bulkhead caps it too).
    pub concurrency: usize,
    /// Lookups per second at most, over all gateways: what a backlog may cost the PG.
    pub max_lookups_per_second: u32,
    /// When the first pass runs after start.
    pub first_pass_delay_ms: u64,
}

impl Default for ReconcilerSettings {
    fn default() -> Self {
        ReconcilerSettings {
            interval_ms: 2_000,
            // The reference PG decides within 5 s and calls back at once.
            grace_ms: 10_000,
            batch_size: 2_000,
            acceptance_window_ms: 60_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            stuck_after_checks: 20,
            lease_ms: 3_000,
            concurrency: 120,
            max_lookups_per_second: 2_000,
            first_pass_delay_ms: 0,
        }
    }
}

#[cfg(test)]
// figment's `Jail` closures must return its (large) error type; not ours to shrink.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cret";

    #[test]
    fn defaults_are_the_local_dev_setup() {
        let s = Settings::default();
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.callback_url("pg"), "http://127.0.0.1:8080/api/v1/payments/callback");
        assert_eq!(s.gateways().count(), 1, "one gateway unless more are configured");
        assert!(!format!("{s:?}").contains("secret\":"));
    }

    #[test]
    fn admission_above_a_bulkhead_that_cannot_wait_is_named() {
        let mut s = Settings::default();
        assert_eq!(s.gateways_refusing_admitted_checkouts().count(), 0, "the defaults match the two");
        s.checkout.max_in_flight = 2_000;
        assert_eq!(s.gateways_refusing_admitted_checkouts().collect::<Vec<_>>(), vec!["pg"]);
        s.gateway.resilience.bulkhead.max_wait = std::time::Duration::from_secs(1);
        assert_eq!(s.gateways_refusing_admitted_checkouts().count(), 0, "a bulkhead that waits holds the rest");
        s.gateway.resilience.bulkhead.max_wait = std::time::Duration::ZERO;
        s.gateway.resilience.bulkhead.max_concurrent_calls = 2_000;
        assert_eq!(s.gateways_refusing_admitted_checkouts().count(), 0);
    }

    #[test]
    fn file_then_env_override_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("payguard.toml", "public_url = \"https://shop.example\"\n[reconciler]\ngrace_ms = 1234\n[gateway.resilience.retry]\nmax_attempts = 3\n")?;
            jail.set_env("PAYGUARD_RECONCILER__GRACE_MS", "777");
            jail.set_env("PAYGUARD_GATEWAY__CALLBACK_SECRET", SECRET);
            jail.set_env("PAYGUARD_SIM_SEED", "1"); // the simulator's, ignored here
            let s = Settings::load(Some(Path::new("payguard.toml"))).expect("loads");
            assert_eq!(s.public_url, "https://shop.example");
            assert_eq!(s.reconciler.grace_ms, 777);
            assert_eq!(s.gateway.resilience.retry.max_attempts, 3);
            assert_eq!(s.gateway.callback_secret.as_ref().map(|s| s.expose_secret()), Some(SECRET));
            assert!(!format!("{:?}", s.gateway).contains(SECRET), "secrets never printed");
            Ok(())
        });
    }

    #[test]
    fn the_example_in_docs_configuration_loads() {
        let doc = include_str!("../../../docs/configuration.md");
        let toml = doc.split("```toml").nth(1).and_then(|rest| rest.split("```").next()).expect("a toml block");
        figment::Jail::expect_with(|jail| {
            jail.create_file("example.toml", toml)?;
            let s = Settings::load(Some(Path::new("example.toml"))).expect("the documented example loads");
            assert_eq!(s.public_url, "https://shop.example");
            assert_eq!(
                s.gateway.resilience.payment_breaker.sliding_window,
                gateway::breaker::SlidingWindow::Count(100)
            );
            assert_eq!(s.failover_gateways[0].name, "pg2");
            assert_eq!(s.failover_gateways[0].resilience.retry.max_attempts, 4);
            Ok(())
        });
    }

    #[test]
    fn failover_gateways_come_in_priority_order_with_their_own_callback_paths() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "two.toml",
                "[gateway]\nname = \"toss\"\n[[failover_gateways]]\nname = \"nice\"\nbase_url = \"http://127.0.0.1:8083\"\ncallback_secret = \"n1ce-n1ce-n1ce-n1ce-n1ce-n1ce-n1ce\"\n[failover_gateways.resilience.retry]\nmax_attempts = 2\n",
            )?;
            let s = Settings::load(Some(Path::new("two.toml"))).expect("loads");
            let order: Vec<&str> = s.gateways().map(|g| g.name.as_str()).collect();
            assert_eq!(order, ["toss", "nice"]);
            assert_eq!(s.failover_gateways[0].resilience.retry.max_attempts, 2, "settings of its own");
            assert_eq!(s.gateway.resilience.retry.max_attempts, 6, "the primary keeps the defaults");
            assert_eq!(s.callback_url("toss"), "http://127.0.0.1:8080/api/v1/payments/callback");
            assert_eq!(s.callback_url("nice"), "http://127.0.0.1:8080/api/v1/payments/callback/nice");
            // Also as one environment variable (a list cannot be spelled key by key).
            jail.set_env("PAYGUARD_FAILOVER_GATEWAYS", "[{name=\"env2\",base_url=\"http://10.0.0.2:8082\"}]");
            let s = Settings::load(None).expect("loads from env");
            assert_eq!(s.failover_gateways[0].base_url, "http://10.0.0.2:8082");
            Ok(())
        });
    }

    #[test]
    fn the_failover_gateway_of_deploy_docker_compose_loads() {
        let compose = include_str!("../../../deploy/docker-compose.yml");
        let value = compose
            .lines()
            .find_map(|l| l.trim().strip_prefix("PAYGUARD_FAILOVER_GATEWAYS: '")?.strip_suffix('\''))
            .expect("docker-compose sets the failover gateway");
        figment::Jail::expect_with(|jail| {
            jail.set_env("PAYGUARD_FAILOVER_GATEWAYS", value);
            let s = Settings::load(None).expect("loads");
            assert_eq!(
                (s.failover_gateways[0].name.as_str(), s.failover_gateways[0].base_url.as_str()),
                ("pg2", "http://pg-sim-2:8082")
            );
            Ok(())
        });
    }

    #[test]
    fn gateway_names_are_unique_and_path_safe() {
        let mut s = Settings::default();
        s.failover_gateways.push(GatewaySettings::default());
        assert!(s.validate().unwrap_err().contains("used twice"));
        s.failover_gateways[0].name = "Second PG/2".into();
        assert!(s.validate().unwrap_err().contains("must be 1-32"));
        s.failover_gateways[0].name = "pg2".into();
        s.failover_gateways[0].base_url = "tcp://x".into();
        assert!(s.validate().unwrap_err().contains("base_url"));
    }

    #[test]
    fn secrets_never_show_in_the_logged_settings() {
        let mut s = Settings::default();
        s.admin.token = Some("admin-token-that-must-not-leak".into());
        s.gateway.callback_secret = Some("callback-secret-that-must-not-leak-0123456789".into());
        let logged = format!("{s:?}");
        assert!(!logged.contains("must-not-leak"), "{logged}");
        assert!(logged.contains("REDACTED"), "{logged}");
    }

    #[test]
    fn empty_and_short_callback_secrets_are_refused_for_every_gateway() {
        let mut s = Settings::default();
        for short in ["", "x", &"k".repeat(MIN_CALLBACK_SECRET_BYTES - 1)] {
            s.gateway.callback_secret = Some(short.into());
            assert!(s.validate().unwrap_err().contains("at least 32 bytes"), "{short:?} refused");
        }
        s.gateway.callback_secret = Some("k".repeat(MIN_CALLBACK_SECRET_BYTES).into());
        assert_eq!(s.validate(), Ok(()));
        s.failover_gateways.push(GatewaySettings { name: "pg2".into(), ..GatewaySettings::default() });
        s.failover_gateways[0].callback_secret = Some(String::new().into());
        assert!(s.validate().unwrap_err().contains("gateway 'pg2'"));
        // Set empty through the environment, as in the probe: refused at load.
        figment::Jail::expect_with(|jail| {
            jail.set_env("PAYGUARD_GATEWAY__CALLBACK_SECRET", "");
            let error = Settings::load(None).expect_err("an empty secret is refused");
            assert!(error.to_string().contains("callback_secret"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn the_request_timeout_outlasts_every_checkout() {
        let mut s = Settings::default();
        // 4 s deadline + 2 x 1 s database waits = 6 s with one gateway.
        s.http.request_timeout_ms = 6_000;
        assert!(s.validate().unwrap_err().contains("longer than a checkout can take (6000 ms"));
        s.http.request_timeout_ms = 6_001;
        assert_eq!(s.validate(), Ok(()));
        // Each failover gateway can spend its own deadline too.
        s.failover_gateways.push(GatewaySettings { name: "pg2".into(), ..GatewaySettings::default() });
        assert!(s.validate().unwrap_err().contains("(10000 ms"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "no_such_knob = 1\n")?;
            assert!(Settings::load(Some(Path::new("bad.toml"))).is_err());
            jail.create_file("worse.toml", "public_url = \"ftp://x\"\n")?;
            assert!(Settings::load(Some(Path::new("worse.toml"))).is_err());
            Ok(())
        });
    }
}
