//! A process's output stream as its guest sees it: the WASI stdout/stderr
//! stream ([`GuestOutput`]) in front of its [`LineSink`].

use super::host_stream::WRITE_BUDGET;
use super::sink::LineSink;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A [`LineSink`] as a guest sees it: a WASI output stream whose `ready`
/// waits for room in the host stream's queue and, after a `flush`, for the
/// flushed bytes to be written out (so that a guest's writes reach the host
/// stream in order, stdout and stderr alike, before its next write returns).
pub(crate) struct GuestOutput {
    sink: Arc<LineSink>,
    /// The number of the bytes a `flush` waits for.
    flushing: u64,
}

impl GuestOutput {
    pub(crate) fn new(sink: Arc<LineSink>) -> GuestOutput {
        GuestOutput { sink, flushing: 0 }
    }
}

impl Clone for GuestOutput {
    fn clone(&self) -> GuestOutput {
        GuestOutput::new(self.sink.clone())
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.sink.write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.flushing = self.sink.last_queued();
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        if !self.sink.is_flushed(self.flushing) {
            return Ok(0);
        }
        Ok(self.sink.room().min(WRITE_BUDGET))
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {
        self.sink.writable(self.flushing).await;
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.sink.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
