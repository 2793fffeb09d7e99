//! `payguard dev`: the whole thing on one machine, the service and the bundled PG
//! simulator, with the addresses and a first request printed.

use gateway_sim::SimConfig;
use service::{Application, Settings};

pub async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let sim = gateway_sim::spawn(SimConfig::default()).await?;
    // A fresh admin token each run, so the ops page's controls can be tried at once.
    let token: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..24).map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[rng.random_range(0..32)])).collect()
    };
    let settings = Settings {
        gateway: service::configuration::GatewaySettings { base_url: sim.base_url(), ..Default::default() },
        admin: service::configuration::AdminSettings { token: Some(token.clone()) },
        ..Settings::default()
    };
    let app = Application::build(settings).await?;
    let shop = format!("http://{}", app.addr());
    println!();
    println!("payguard dev is running");
    println!("  shop API      {shop}/api/v1/products");
    println!(
        "  PG simulator  {}  (faults: {}/sim/faults, ledger: {}/sim/ledger)",
        sim.base_url(),
        sim.control_url(),
        sim.control_url()
    );
    println!("  ops page      {shop}/ops   (admin token for its controls: {token})");
    println!("  metrics       {shop}/metrics");
    println!("  database      ./payguard-dev.db (SQLite)");
    println!();
    println!("Order two keyboards and pay by card:");
    println!("  curl -s -X POST {shop}/api/v1/orders -H 'X-USER-ID: buyer-1' -H 'Content-Type: application/json' \\");
    println!(
        "       -d '{{\"items\":[{{\"productId\":1,\"quantity\":2}}],\"cardType\":\"SAMSUNG\",\"cardNo\":\"1234-5678-9814-1451\"}}'"
    );
    println!("Then read it (the PG decides within 1-5 s):");
    println!("  curl -s {shop}/api/v1/orders/1 -H 'X-USER-ID: buyer-1'");
    println!("Ctrl-C stops.");
    println!();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));
    crate::shutdown::signal().await;
    let _ = stop_tx.send(());
    service.await??;
    sim.shutdown().await;
    Ok(())
}
