//! `payguard dev`: the whole thing on one machine, the service and the bundled PG
//! simulator (or several, one per gateway), with the addresses and a first request printed.

use gateway_sim::{RunningSim, SimConfig};
use service::configuration::GatewaySettings;
use service::{Application, Settings};

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// How many bundled PG simulators, each a gateway in priority order: `pg` on 8082,
    /// `pg2` on 8083, ... Payments go to the first whose breaker admits them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4))]
    gateways: u16,
}

/// The dev gateways: simulators on 8082, 8083, ..., named pg, pg2, ...
async fn start_gateways(count: u16) -> Result<Vec<(GatewaySettings, RunningSim)>, Box<dyn std::error::Error>> {
    let mut gateways = Vec::new();
    for i in 0..count {
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 8082 + i));
        let sim = gateway_sim::spawn(SimConfig { listen, ..SimConfig::default() })
            .await
            .map_err(|e| format!("cannot start the PG simulator on {listen}: {e}"))?;
        let name = if i == 0 { "pg".to_string() } else { format!("pg{}", i + 1) };
        gateways.push((GatewaySettings { name, base_url: sim.base_url(), ..GatewaySettings::default() }, sim));
    }
    Ok(gateways)
}

pub async fn run(args: DevArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut gateways = start_gateways(args.gateways).await?;
    // A fresh admin token each run, so the ops page's controls can be tried at once.
    let token: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..24).map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[rng.random_range(0..32)])).collect()
    };
    let settings = Settings {
        gateway: gateways[0].0.clone(),
        failover_gateways: gateways[1..].iter().map(|(g, _)| g.clone()).collect(),
        admin: service::configuration::AdminSettings { token: Some(token.clone().into()) },
        ..Settings::default()
    };
    let app = Application::build(settings).await?;
    let shop = format!("http://{}", app.addr());
    println!();
    println!("payguard dev is running");
    println!("  shop API      {shop}/api/v1/products");
    for (i, (gateway, sim)) in gateways.iter().enumerate() {
        let role = if i == 0 { "primary".to_string() } else { format!("failover {i}") };
        println!(
            "  PG simulator  {}  gateway {} ({role}; faults: {}/sim/faults, ledger: {}/sim/ledger)",
            sim.base_url(),
            gateway.name,
            sim.control_url(),
            sim.control_url()
        );
    }
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
    if gateways.len() > 1 {
        println!("Take the primary down; checkouts go on through {}:", gateways[1].0.name);
        println!(
            "  curl -s -X PUT {}/sim/faults -H 'Content-Type: application/json' -d '{{\"down\":\"unavailable\"}}'",
            gateways[0].1.control_url()
        );
    }
    println!("Ctrl-C stops.");
    println!();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));
    crate::shutdown::signal().await;
    let _ = stop_tx.send(());
    service.await?;
    for (_, sim) in gateways.drain(..) {
        sim.shutdown().await;
    }
    Ok(())
}
