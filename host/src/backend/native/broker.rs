//! The native backend's broker: the root host serves the run's shared
//! objects to its workers over a unix socket.
//!
//! The root host listens on `broker.sock` in a private (0700) temporary
//! directory and passes its path to every worker (and workers to theirs) in
//! `HOST_SYNC_BROKER`. A worker connects the first time its guest uses a
//! shared object and keeps the connection for its life: one request at a
//! time, each answered in turn, every one a frame of the backend's one
//! codec ([`protocol`](super::protocol)) around the objects' own encoding,
//! which this module never looks into ([`Objects`]). The root learns the
//! peer's pid from the kernel (`SO_PEERCRED`), so a worker acts only as the
//! process it is, and refuses peers of another user. A blocking request
//! waits in the root without busy-waiting; if the connection closes
//! meanwhile (the worker ended: terminate, kill, crash), the wait is
//! dropped, so it takes nothing, and the worker's holds and locks are
//! released.

use super::protocol;
use crate::backend::{BoxFuture, Objects, RemoteObjects};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The environment variable naming the broker's socket.
pub(crate) const BROKER_VAR: &str = "HOST_SYNC_BROKER";

/// The root host's listening socket.
pub(crate) struct Endpoint {
    pub(crate) path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Listens for workers on a new socket and serves `objects` to them.
pub(crate) fn listen(
    runtime: &tokio::runtime::Handle,
    objects: Arc<dyn Objects>,
) -> anyhow::Result<Endpoint> {
    let dir = tempfile::Builder::new().prefix("mp-broker-").tempdir()?;
    let path = dir.path().join("broker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    listener.set_nonblocking(true)?;
    let _entered = runtime.enter();
    let listener = tokio::net::UnixListener::from_std(listener)?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    runtime.spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of descriptors in a spawn storm, a peer gone before it
                // was accepted: the broker serves on, after a breath, for as
                // long as the host lives.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(peer) = stream.peer_cred() else {
                continue;
            };
            match peer.pid() {
                Some(pid) if peer.uid() == uid && pid > 0 => {
                    tokio::spawn(serve(stream, objects.clone(), pid as u32));
                }
                _ => {}
            }
        }
    });
    Ok(Endpoint { path, _dir: dir })
}

/// Answers one worker's requests until it goes away, then releases its holds.
async fn serve(stream: UnixStream, objects: Arc<dyn Objects>, pid: u32) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    while let Ok(Some(request)) = protocol::read_bytes_frame_async(&mut reader).await {
        let answered = tokio::select! {
            biased;
            // A worker sends nothing while it waits for an answer: anything
            // here is its end (or a breach of the protocol).
            _ = reader.read_u8() => break,
            answered = objects.call(pid, request) => answered,
        };
        // A request that breaks the protocol ends the connection.
        let Ok(answered) = answered else { break };
        let frame = protocol::encode_bytes_frame(&answered.answer);
        let sent = match &frame {
            Ok(frame) => writer.write_all(frame).await.is_ok(),
            Err(_) => false,
        };
        if !sent {
            // Not handed over: what it took goes back.
            if let Some(undo) = answered.undo {
                undo();
            }
            break;
        }
    }
    objects.release(pid);
}

type Connection = (BufReader<OwnedReadHalf>, OwnedWriteHalf);

/// A worker's side: the connection to the root host's broker.
pub(crate) struct Client {
    pub(crate) path: PathBuf,
    connection: tokio::sync::Mutex<Option<Connection>>,
}

impl Client {
    /// The broker this worker was given by its parent, if any.
    pub(crate) fn from_env() -> Option<Client> {
        let path = std::env::var_os(BROKER_VAR)?;
        Some(Client {
            path: path.into(),
            connection: tokio::sync::Mutex::new(None),
        })
    }

    async fn call_bytes(&self, request: Vec<u8>) -> Result<Vec<u8>, String> {
        let frame = protocol::encode_bytes_frame(&request).map_err(|e| e.to_string())?;
        let mut connection = self.connection.lock().await;
        if connection.is_none() {
            let stream = UnixStream::connect(&self.path)
                .await
                .map_err(|e| e.to_string())?;
            let (reader, writer) = stream.into_split();
            *connection = Some((BufReader::new(reader), writer));
        }
        let (reader, writer) = connection.as_mut().expect("connected");
        writer.write_all(&frame).await.map_err(|e| e.to_string())?;
        match protocol::read_bytes_frame_async(reader).await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err("the root host closed the connection".into()),
            Err(why) => Err(why),
        }
    }
}

impl RemoteObjects for Client {
    fn call(&self, request: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(self.call_bytes(request))
    }

    fn connected(&self) -> bool {
        self.connection.try_lock().map_or(true, |connection| connection.is_some())
    }

    fn leave_connection(&self) {
        // Not closed: closing a socket half would shut it down for the
        // parent too.
        if let Ok(mut connection) = self.connection.try_lock() {
            std::mem::forget(connection.take());
        }
    }
}
