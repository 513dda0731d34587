//! zbus's socket over a byte stream's two halves.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// zbus's socket over a byte stream's two halves (fd passing refused).
pub(super) fn stream_split<R, W>(r: R, w: W) -> zbus::connection::socket::BoxedSplit
where
    R: tokio::io::AsyncRead + Unpin + Send + Sync + fmt::Debug + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + Sync + fmt::Debug + 'static,
{
    zbus::connection::socket::Split::new(
        Box::new(StreamRead(r)) as Box<dyn zbus::connection::socket::ReadHalf>,
        Box::new(StreamWrite(Some(w))) as Box<dyn zbus::connection::socket::WriteHalf>,
    )
}

/// A byte stream's read half as zbus's read half: the bridge's stdout or
/// a forwarded socket. Never carries fds.
#[derive(Debug)]
struct StreamRead<R>(R);

#[async_trait::async_trait]
impl<R> zbus::connection::socket::ReadHalf for StreamRead<R>
where
    R: tokio::io::AsyncRead + Unpin + Send + Sync + fmt::Debug + 'static,
{
    async fn recvmsg(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        let n = self.0.read(buf).await?;
        Ok((n, Vec::new()))
    }
}

/// A byte stream's write half as zbus's write half. `close` drops it: the
/// bridge's stdin pipe then sees EOF (shutdown alone does nothing on a
/// pipe), a socket half shuts down.
#[derive(Debug)]
struct StreamWrite<W>(Option<W>);

#[async_trait::async_trait]
impl<W> zbus::connection::socket::WriteHalf for StreamWrite<W>
where
    W: tokio::io::AsyncWrite + Unpin + Send + Sync + fmt::Debug + 'static,
{
    async fn sendmsg(
        &mut self,
        buf: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<usize> {
        if !fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file descriptors cannot cross an ssh channel",
            ));
        }
        match self.0.as_mut() {
            Some(w) => w.write(buf).await,
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "stream closed")),
        }
    }

    async fn close(&mut self) -> io::Result<()> {
        match self.0.take() {
            Some(mut w) => w.flush().await,
            None => Ok(()),
        }
    }
}
