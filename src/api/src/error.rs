//! Errors from starting the API server.

use std::path::PathBuf;

use crate::socket::MAX_SOCKET_PATH_LEN;

/// Why the API could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API socket path {} is {len} bytes long; Unix sockets allow at most {MAX_SOCKET_PATH_LEN}: choose a shorter path", path.display())]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("API socket path must not be empty")]
    EmptySocketPath,
    #[error("another process is already serving on API socket {}: stop it or choose another path", path.display())]
    SocketInUse { path: PathBuf },
    #[error("{} exists and is not a socket: refusing to replace it with the API socket", path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot tell whether API socket {} is stale: {source}", path.display())]
    Probe { path: PathBuf, source: std::io::Error },
    #[error("cannot remove stale API socket {}: {source}", path.display())]
    RemoveStale { path: PathBuf, source: std::io::Error },
    #[error("cannot create API socket {}: {source}", path.display())]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("cannot start the API thread: {0}")]
    Thread(std::io::Error),
}
