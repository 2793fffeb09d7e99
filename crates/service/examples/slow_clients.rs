//! Slow clients against a running `payguard serve`, measured from outside: opens N
//! connections that trickle (a header line, or a body byte, every 10 s, or nothing),
//! then reports the service's RSS, the latency of normal requests made meanwhile, and
//! when the slow connections were closed.
//!
//! `cargo run --release -p service --example slow_clients -- <shop host:port> <service pid> [head|body|silent] [connections] [seconds]`
//! (raise `ulimit -n` above the connection count first)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_mb(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the service's pid");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

async fn slow_connection(shop: String, kind: String, open: Arc<AtomicUsize>) -> Option<Duration> {
    let mut stream = tokio::net::TcpStream::connect(&shop).await.ok()?;
    let started = Instant::now();
    open.fetch_add(1, Ordering::Relaxed);
    let (first, more): (&[u8], &[u8]) = match kind.as_str() {
        "head" => (b"POST /api/v1/orders HTTP/1.1\r\nHost: shop\r\n", b"X-Slow: 1\r\n"),
        "body" => (
            b"POST /api/v1/orders HTTP/1.1\r\nHost: shop\r\nX-USER-ID: slow\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
            b" ",
        ),
        _ => (b"", b""),
    };
    let _ = stream.write_all(first).await;
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(10), Duration::from_secs(10));
    let mut buf = [0u8; 4096];
    let closed = loop {
        tokio::select! {
            read = stream.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { break started.elapsed() },
            _ = tick.tick() => if stream.write_all(more).await.is_err() { break started.elapsed() },
        }
    };
    open.fetch_sub(1, Ordering::Relaxed);
    Some(closed)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shop = args.get(1).cloned().expect("shop host:port");
    let pid = args.get(2).cloned().expect("service pid");
    let kind = args.get(3).cloned().unwrap_or_else(|| "head".into());
    let connections: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(4_000);
    let seconds: u64 = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(40);

    let client = reqwest::Client::new();
    let url = format!("http://{shop}/api/v1/products");
    let normal = |n: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut latencies = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                let ok = client.get(&url).send().await.is_ok_and(|r| r.status().is_success());
                latencies.push(if ok { t.elapsed() } else { Duration::MAX });
            }
            latencies.sort_unstable();
            let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
            let ms = |d: Duration| {
                if d == Duration::MAX { "failed".to_string() } else { format!("{:.2} ms", d.as_secs_f64() * 1e3) }
            };
            format!("p50 {}, p99 {}", ms(q(0.5)), ms(q(0.99)))
        }
    };
    println!("before: RSS {:.1} MB, normal requests {}", rss_mb(&pid), normal(200).await);

    let open = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    // 200 every 50 ms: a slow client opens its connections over a second or two, not in
    // one burst beyond the accept queue.
    let mut held = Vec::new();
    for batch in (0..connections).collect::<Vec<_>>().chunks(200) {
        held.extend(batch.iter().map(|_| tokio::spawn(slow_connection(shop.clone(), kind.clone(), open.clone()))));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "{connections} slow '{kind}' connections, {:.1} s in: {} open, RSS {:.1} MB, normal requests {}",
        started.elapsed().as_secs_f64(),
        open.load(Ordering::Relaxed),
        rss_mb(&pid),
        normal(200).await
    );
    while started.elapsed() < Duration::from_secs(seconds) && open.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "{:.0} s in: {} still open, RSS {:.1} MB, normal requests {}",
        started.elapsed().as_secs_f64(),
        open.load(Ordering::Relaxed),
        rss_mb(&pid),
        normal(200).await
    );
    let mut closed: Vec<Duration> = Vec::new();
    for h in held {
        if h.is_finished()
            && let Ok(Some(after)) = h.await
        {
            closed.push(after);
        }
    }
    closed.sort_unstable();
    if !closed.is_empty() {
        let q = |p: f64| closed[((closed.len() - 1) as f64 * p) as usize].as_secs_f64();
        println!(
            "closed by the service: {} of {connections}, after p50 {:.1} s, max {:.1} s",
            closed.len(),
            q(0.5),
            q(1.0)
        );
    }
}
