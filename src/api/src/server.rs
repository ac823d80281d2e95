//! The HTTP/1 server: hyper on a current-thread tokio runtime, on its own
//! thread, over the Unix socket.
//!
//! Defences against clients (all untrusted): a cap on connections, a
//! header-read timeout that also closes idle keep-alive connections, a body
//! size cap and a body-read timeout, a write timeout for clients that never
//! read their responses, and a bounded header buffer. Handlers run on a
//! small blocking pool so a slow VMM call never stalls the accept loop.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, Semaphore};

use crate::controller::VmmController;
use crate::error::ApiError;
use crate::router::{status, Api, ApiResponse};
use crate::socket::{bind_api_socket, remove_own_socket, SocketId};
use vmm_config::VmConfig;

/// Largest request body (413 beyond it); real bodies are a few hundred bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Bytes of an over-size body still read (and discarded) so that a client
/// that sends without waiting for "100 Continue" gets its 413.
const DRAIN_LIMIT_BYTES: usize = 1024 * 1024;
/// Most connections served at once; more are answered 429 and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request head, and that a connection may idle.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to send the body once its head arrived.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a response write may stay blocked on a client that does not read.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer, which bounds the request head (hyper's minimum is 8 KiB).
const MAX_HEAD_BUF_BYTES: usize = 16 * 1024;
/// Threads that run handlers (and so the VMM's controller calls).
const MAX_WORKER_THREADS: usize = 4;
/// How long shutdown waits for a handler stuck in the controller.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Back-off after accept() fails (e.g. out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Sent, unread request or not, to a connection over the limit.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n\
Connection: close\r\nContent-Length: 63\r\n\r\n{\"fault_message\":\"too many API connections; retry in a moment\"}";

/// Limits and starting state; `Default` is what `serve` uses.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub write_timeout: Duration,
    /// Configuration to start from (e.g. a `--config-file` the VMM booted).
    pub initial_config: VmConfig,
    /// The VMM already booted `initial_config`: pre-boot changes are refused.
    pub already_started: bool,
    /// Runs first on the API thread, before it serves anything (the VMM
    /// installs the API thread's seccomp filter here; the handler pool's
    /// threads, spawned later from this thread, inherit it). An error stops
    /// the server before it accepts a connection.
    pub thread_init: Option<ThreadInit>,
    /// The metadata store the VM's interfaces serve (shared with the VMM);
    /// `None`: the API keeps one of its own with the default size limit.
    pub mmds: Option<Arc<std::sync::Mutex<mmds::Mmds>>>,
}

/// A hook run on the API thread before it serves (see [`ServeOptions::thread_init`]).
#[derive(Clone)]
pub struct ThreadInit(pub Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

impl std::fmt::Debug for ThreadInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadInit(..)")
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            initial_config: VmConfig::default(),
            already_started: false,
            thread_init: None,
            mmds: None,
        }
    }
}

/// The running server. Dropping it (or `shutdown`) stops the thread and
/// removes the socket file.
#[derive(Debug)]
pub struct ApiServerHandle {
    socket_path: PathBuf,
    socket_id: SocketId,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServerHandle {
    /// Where clients connect.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Stop serving, wait for the thread, remove the socket file.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the API thread panicked");
            }
        }
        remove_own_socket(&self.socket_path, self.socket_id);
    }
}

impl Drop for ApiServerHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Serve the API on `socket_path` with the default limits.
///
/// Returns once the socket is listening: clients may connect right away.
pub fn serve(socket_path: &Path, controller: Arc<dyn VmmController>, id: String) -> Result<ApiServerHandle, ApiError> {
    serve_with(socket_path, controller, id, ServeOptions::default())
}

/// [`serve`] with explicit limits and starting state.
pub fn serve_with(
    socket_path: &Path,
    controller: Arc<dyn VmmController>,
    id: String,
    options: ServeOptions,
) -> Result<ApiServerHandle, ApiError> {
    let (std_listener, socket_id) = bind_api_socket(socket_path)?;
    let cleanup = |e: io::Error| {
        remove_own_socket(socket_path, socket_id);
        ApiError::Thread(e)
    };
    std_listener.set_nonblocking(true).map_err(cleanup)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(MAX_WORKER_THREADS)
        .thread_name("fc_api")
        .build()
        .map_err(cleanup)?;
    let mut api = Api::new(id, controller, options.initial_config.clone(), options.already_started);
    if let Some(store) = &options.mmds {
        api = api.with_mmds(store.clone());
    }
    let thread_init = options.thread_init.clone();
    let shared = Arc::new(Shared { api: Arc::new(api), options });
    let (stop_tx, stop_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("fc_api".into())
        .spawn(move || {
            let init = thread_init.map(|f| (f.0)()).unwrap_or(Ok(()));
            let failed = init.is_err();
            let _ = ready_tx.send(init);
            if failed {
                return;
            }
            runtime.block_on(async move {
                match UnixListener::from_std(std_listener) {
                    Ok(listener) => accept_loop(listener, shared, stop_rx).await,
                    Err(e) => log::error!("API socket unusable: {e}"),
                }
            });
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
        })
        .map_err(cleanup)?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(cleanup(io::Error::other(e)));
        }
        Err(_) => {
            let _ = thread.join();
            return Err(cleanup(io::Error::other("the API thread stopped before serving")));
        }
    }
    Ok(ApiServerHandle { socket_path: socket_path.to_owned(), socket_id, stop: Some(stop_tx), thread: Some(thread) })
}

struct Shared {
    api: Arc<Api>,
    options: ServeOptions,
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(shared.options.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("API accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Best effort and never blocking: the client may not be reading.
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            log::warn!("API connection refused: {} connections already open", shared.options.max_connections);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(stream, shared).await;
            drop(slot);
        });
    }
}

async fn serve_connection(stream: UnixStream, shared: Arc<Shared>) {
    let opts = &shared.options;
    let io = TokioIo::new(WriteDeadline::new(stream, opts.write_timeout));
    let handler = shared.clone();
    let service = service_fn(move |req| handle_request(req, handler.clone()));
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(MAX_HEAD_BUF_BYTES)
        .keep_alive(true)
        .serve_connection(io, service)
        .await;
    if let Err(e) = result {
        log::debug!("API connection closed: {e}");
    }
}

async fn handle_request(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let max = shared.options.max_body_bytes;

    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let expects_continue =
        req.headers().get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // A client waiting for "100 Continue" has sent nothing yet, and one that
    // announces a giant body is not worth reading: refuse those at once. Any
    // other client is already sending, so its body is read and thrown away
    // (up to DRAIN_LIMIT_BYTES) so that it sees the 413 and not a broken pipe.
    if declared.is_some_and(|len| len > max as u64)
        && (expects_continue || declared.is_some_and(|len| len > DRAIN_LIMIT_BYTES as u64))
    {
        return Ok(closing(too_large(max)));
    }
    let read = read_body(req.into_body(), max, DRAIN_LIMIT_BYTES.max(max));
    let body = match tokio::time::timeout(shared.options.body_read_timeout, read).await {
        Err(_) => {
            let msg = format!("the request body did not arrive within {:?}", shared.options.body_read_timeout);
            return Ok(closing(ApiResponse::fault(status::REQUEST_TIMEOUT, msg)));
        }
        Ok(BodyRead::TooLarge) => return Ok(closing(too_large(max))),
        Ok(BodyRead::Failed(e)) => {
            let msg = format!("cannot read the request body: {e}");
            return Ok(closing(ApiResponse::fault(status::BAD_REQUEST, msg)));
        }
        Ok(BodyRead::Complete(body)) => body,
    };

    let api = shared.api.clone();
    // As Firecracker logs its requests (at info level; bodies are not logged).
    log::info!("The API server received a {} request on {:?}.", method.escape_debug(), path.escape_debug().to_string());
    let response = tokio::task::spawn_blocking(move || api.handle(&method, &path, &body)).await.unwrap_or_else(|e| {
        log::error!("API handler failed: {e}");
        ApiResponse::fault(status::INTERNAL_SERVER_ERROR, "the VMM failed while handling this request; see its log")
    });
    match (response.status, &response.body) {
        (200..=299, _) => log::info!("The request was executed successfully. Status code: {}.", response.status),
        (code, body) => log::info!("Received Error. Status code: {code}. Message: {}", body.as_deref().unwrap_or("")),
    }
    Ok(to_http(response))
}

enum BodyRead {
    Complete(Bytes),
    /// Over the cap; the rest was read and discarded, up to the drain limit.
    TooLarge,
    Failed(hyper::Error),
}

/// Reads a body of at most `max` bytes. Beyond `max` it keeps reading and
/// discarding up to `drain` bytes in total (the lingering close nginx does),
/// so the client's send completes and it reads the 413 we answer with.
async fn read_body(mut body: Incoming, max: usize, drain: usize) -> BodyRead {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) if seen > max => {
                log::debug!("body over the cap ended early: {e}");
                return BodyRead::TooLarge;
            }
            Err(e) => return BodyRead::Failed(e),
        };
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= max {
                kept.extend_from_slice(&data);
            } else if seen > drain {
                return BodyRead::TooLarge;
            }
        }
    }
    if seen > max {
        BodyRead::TooLarge
    } else {
        BodyRead::Complete(Bytes::from(kept))
    }
}

fn too_large(max: usize) -> ApiResponse {
    ApiResponse::fault(status::PAYLOAD_TOO_LARGE, format!("the request body is larger than {max} bytes"))
}

fn to_http(resp: ApiResponse) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = match resp.body {
        Some(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        None => Response::new(Full::new(Bytes::new())),
    };
    *out.status_mut() = status;
    if let Some(allow) = resp.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
        out.headers_mut().insert(ALLOW, allow);
    }
    out
}

/// A response after which the connection closes (its body was not read).
fn closing(resp: ApiResponse) -> Response<Full<Bytes>> {
    let mut out = to_http(resp);
    out.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    out
}

/// A stream whose writes fail once they have been blocked for `timeout`,
/// so a client that never reads cannot hold a connection forever.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    blocked_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline { inner, timeout, blocked_since: None }
    }

    fn on_write<T>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.blocked_since = None;
            return result;
        }
        let timeout = self.timeout;
        let deadline = self.blocked_since.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn canned_429_is_well_formed() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
        assert_eq!(len, body.len());
        let fault: crate::types::Fault = serde_json::from_str(body).unwrap();
        assert!(fault.fault_message.contains("too many"));
    }

    #[test]
    fn blocked_writes_time_out() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (a, _b) = UnixStream::pair().unwrap();
            let mut guarded = WriteDeadline::new(a, Duration::from_millis(100));
            let chunk = vec![0u8; 64 * 1024];
            let started = std::time::Instant::now();
            let err = loop {
                // Nobody reads `_b`: the socket buffer fills, then the deadline hits.
                if let Err(e) = guarded.write_all(&chunk).await {
                    break e;
                }
                assert!(started.elapsed() < Duration::from_secs(5), "write never blocked");
            };
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        });
    }

    #[test]
    fn status_mapping_and_headers() {
        let r = to_http(ApiResponse::fault(405, "x"));
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let r = closing(too_large(10));
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()[CONNECTION], "close");
    }
}
