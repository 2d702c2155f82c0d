//! The native backend's broker: the root host serves the registry to its
//! workers over a unix socket.
//!
//! The root host listens on `broker.sock` in a private (0700) temporary
//! directory and passes its path to every worker (and workers to theirs) in
//! `HOST_SYNC_BROKER`. A worker connects the first time its guest uses a
//! shared object and keeps the connection for its life: one request at a
//! time, each answered in turn ([`wire`](super::wire) frames). The root
//! learns the peer's pid from the kernel (`SO_PEERCRED`), so a worker acts
//! only as the process it is, and refuses peers of another user. A blocking
//! request waits in the root without busy-waiting; if the connection closes
//! meanwhile (the worker ended: terminate, kill, crash), the wait is
//! dropped, so it takes nothing, and the worker's holds and locks are
//! released.

use super::wire;
use super::{Answer, Error, MAX_MESSAGE, Registry, Reply, Request};
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

/// Listens for workers on a new socket and serves `registry` to them.
pub(crate) fn listen(
    runtime: &tokio::runtime::Handle,
    registry: Arc<Registry>,
) -> anyhow::Result<Endpoint> {
    let dir = tempfile::Builder::new().prefix("mp-broker-").tempdir()?;
    let path = dir.path().join("broker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    listener.set_nonblocking(true)?;
    let _entered = runtime.enter();
    let listener = tokio::net::UnixListener::from_std(listener)?;
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
                    tokio::spawn(serve(stream, registry.clone(), pid as u32));
                }
                _ => {}
            }
        }
    });
    Ok(Endpoint { path, _dir: dir })
}

/// Answers one worker's requests until it goes away, then releases its holds.
async fn serve(stream: UnixStream, registry: Arc<Registry>, pid: u32) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    while let Ok(Some(request)) = wire::read::<Request>(&mut reader).await {
        let taken_from = match request {
            Request::Get { id, .. } | Request::Recv { id } => Some(id),
            _ => None,
        };
        let answer = tokio::select! {
            biased;
            // A worker sends nothing while it waits for an answer: anything
            // here is its end (or a breach of the protocol).
            _ = reader.read_u8() => break,
            answer = registry.call(pid, request) => answer,
        };
        let frame = wire::encode(answer.clone());
        if frame.is_err()
            || writer
                .write_all(frame.as_ref().expect("encoded"))
                .await
                .is_err()
        {
            // Not handed over: a message taken for a worker that is gone
            // goes back where it was.
            if let (Some(id), Ok(Reply::Bytes(message))) = (taken_from, answer) {
                registry.give_back(id, message.0);
            }
            break;
        }
    }
    registry.release(pid);
}

type Connection = (BufReader<OwnedReadHalf>, OwnedWriteHalf);

/// A worker's side: the connection to the root host's broker.
pub(crate) struct Client {
    pub(crate) path: PathBuf,
    connection: tokio::sync::Mutex<Option<Connection>>,
}

impl Client {
    /// The broker this worker was given by its parent.
    pub(crate) fn from_env() -> anyhow::Result<Client> {
        let path = std::env::var_os(BROKER_VAR).ok_or_else(|| {
            anyhow::anyhow!("worker mode is for the host's own use: {BROKER_VAR} is missing")
        })?;
        Ok(Client {
            path: path.into(),
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether this worker has reached the broker.
    pub(crate) fn connected(&self) -> bool {
        self.connection.try_lock().map_or(true, |connection| connection.is_some())
    }

    /// Forgets the connection without closing it (a forked child's copy:
    /// closing a socket half would shut it down for the parent too).
    pub(crate) fn leave_connection(&self) {
        if let Ok(mut connection) = self.connection.try_lock() {
            std::mem::forget(connection.take());
        }
    }

    pub(crate) async fn call(&self, mut request: Request) -> Answer {
        if let Some(size) = request
            .payload_mut()
            .map(|p| p.len())
            .filter(|&size| size > MAX_MESSAGE)
        {
            return Err(Error::TooLarge {
                size: size as u64,
                limit: MAX_MESSAGE as u64,
            });
        }
        let broken = |e: String| Error::Broker(e);
        let frame = wire::encode(request).map_err(broken)?;
        let mut connection = self.connection.lock().await;
        if connection.is_none() {
            let stream = UnixStream::connect(&self.path)
                .await
                .map_err(|e| broken(e.to_string()))?;
            let (reader, writer) = stream.into_split();
            *connection = Some((BufReader::new(reader), writer));
        }
        let (reader, writer) = connection.as_mut().expect("connected");
        writer
            .write_all(&frame)
            .await
            .map_err(|e| broken(e.to_string()))?;
        match wire::read::<Answer>(reader).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Err(broken("the root host closed the connection".into())),
            Err(why) => Err(broken(why)),
        }
    }
}
