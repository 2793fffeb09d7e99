//! Fault injection for the shop's own dependencies: a TCP hop between the service and,
//! say, its database that can be cut and mended. Cut, it closes every open connection
//! and drops new ones at once: what a stopped or unreachable server looks like to the
//! service, without stopping a server that other tests or instances share.
//!
//! Written here rather than taken from a crate: it is a dozen lines over tokio's
//! `copy_bidirectional`, and the fault proxies on crates.io are whole programs.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Link {
    local: SocketAddr,
    up: watch::Sender<bool>,
}

impl Link {
    /// Listens on a free loopback port and forwards to `upstream`, up.
    pub async fn to(upstream: SocketAddr) -> std::io::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let (up, watch) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                if !*watch.borrow() {
                    continue; // dropped: the client sees its connection closed at once
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Link { local, up })
    }

    /// The address to give the service instead of the upstream's.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn mend(&self) {
        self.up.send_replace(true);
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn forwards_while_up_and_closes_everything_when_cut() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = socket.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        let link = Link::to(upstream).await.unwrap();
        let mut open = TcpStream::connect(link.local_addr()).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        link.cut();
        assert_eq!(open.read(&mut buf).await.unwrap_or(0), 0, "an open connection is closed");
        let mut new = TcpStream::connect(link.local_addr()).await.unwrap();
        assert_eq!(new.read(&mut buf).await.unwrap_or(0), 0, "a new one is dropped at once");

        link.mend();
        let mut again = TcpStream::connect(link.local_addr()).await.unwrap();
        again.write_all(b"pong").await.unwrap();
        again.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
