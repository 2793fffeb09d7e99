//! A lingering close, as nginx and Apache do it: when a connection ends, send our FIN,
//! then read and throw away what the client still sends, up to a bound in bytes and in
//! time, and only then close. A client that writes its whole request before it reads
//! (Python's urllib, many Java clients) would otherwise still be sending when we close:
//! the unread bytes make the kernel answer with a reset, and the client never reads the
//! 413 or 408 it was given, so a buyer cannot tell whether the order was placed.
//!
//! Written here because hyper closes a connection with an unread body at once and
//! neither it nor hyper-util has a lingering close; this is the socket, wrapped, whose
//! drop starts the drain. The connection's place under `max_connections` is held until
//! the drain ends, so lingering sockets count against the open-file budget too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// How long and how much a closing connection is drained.
#[derive(Debug, Clone, Copy)]
pub struct Linger {
    /// Bytes read and thrown away at most; past them the connection is closed (reset).
    pub max_bytes: usize,
    /// The drain's whole time at most. Zero: close at once, without draining.
    pub max_time: Duration,
}

/// A client's socket that lingers when it is dropped.
pub struct Lingering {
    stream: Option<TcpStream>,
    linger: Linger,
    place: Option<OwnedSemaphorePermit>,
}

impl Lingering {
    pub fn new(stream: TcpStream, linger: Linger, place: OwnedSemaphorePermit) -> Lingering {
        Lingering { stream: Some(stream), linger, place: Some(place) }
    }

    fn stream(self: Pin<&mut Self>) -> Pin<&mut TcpStream> {
        Pin::new(self.get_mut().stream.as_mut().expect("the socket is there until the wrapper is dropped"))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(stream), place) = (self.stream.take(), self.place.take()) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let linger = self.linger;
        runtime.spawn(async move {
            drain(stream, linger).await;
            drop(place);
        });
    }
}

async fn drain(mut stream: TcpStream, linger: Linger) {
    if linger.max_time.is_zero() {
        return;
    }
    // Our FIN first: the client reads the answer to its end, then closes its side.
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut left = linger.max_bytes;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(linger.max_time, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) if n >= left => return,
                Ok(n) => left -= n,
            }
        }
    })
    .await;
}

impl AsyncRead for Lingering {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}
