//! Running the real `payguard` binary from tests.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A scratch directory and the two addresses of a run: the PG simulator's and the shop's.
pub struct Scene {
    pub dir: std::path::PathBuf,
    pub pg_port: u16,
    pub shop_port: u16,
    pub pg: String,
    pub shop: String,
}

pub async fn scene(name: &str) -> Scene {
    let dir = std::env::temp_dir().join(format!("payguard-{name}-{}-{}", std::process::id(), free_port().await));
    std::fs::create_dir_all(&dir).unwrap();
    let (pg_port, shop_port) = (free_port().await, free_port().await);
    let (pg, shop) = (format!("http://127.0.0.1:{pg_port}"), format!("http://127.0.0.1:{shop_port}"));
    Scene { dir, pg_port, shop_port, pg, shop }
}

pub async fn free_port() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

/// Starts `payguard <args>` with stderr (its logs) in `log`; `RUST_LOG=info` unless `envs` says otherwise.
pub fn start(args: &[&str], envs: &[(&str, String)], log: &Path) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_payguard"));
    command.args(args).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap());
    for (k, v) in envs {
        command.env(k, v);
    }
    command.kill_on_drop(true).spawn().expect("payguard starts")
}

pub async fn wait_ready(url: &str) {
    for _ in 0..400 {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} never became ready");
}

/// Sends a signal (`-TERM`, `-KILL`) to a running child.
pub async fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    assert!(Command::new("kill").args([sig, &pid]).status().await.unwrap().success());
}

/// SIGTERM, then the exit status (bounded).
pub async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    signal(child, "-TERM").await;
    tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("exits after SIGTERM").unwrap()
}
