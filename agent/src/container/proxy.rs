//! Dewy's built-in TCP proxy (spec 9.5): one listener per proxy port on all interfaces,
//! round-robin over the replicas' published ports, a 5 s dial timeout, an idle timeout reset
//! by traffic either way, and no backend → the connection is closed. Unlike Dewy, the number
//! of connections at once is bounded, and each backend counts its open connections so an old
//! replica can be drained before it is stopped.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections through one proxy port at once; past it new ones are closed at once (each costs
/// two sockets and two buffers).
pub const MAX_CONNECTIONS: usize = 4096;
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
const DURATION_BUCKETS: &[f64] = &[0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 3600.0];

struct Backend {
    addr: SocketAddr,
    active: Arc<AtomicUsize>,
}

/// One listener and its backends.
pub struct Proxy {
    pub port: u16,
    label: String,
    backends: Mutex<Vec<Backend>>,
    next: AtomicUsize,
    idle: Option<Duration>,
    metrics: Arc<Metrics>,
    active: AtomicUsize,
}

impl Proxy {
    /// Binds `[::]:port` (IPv4 too), or `0.0.0.0:port` on a host without IPv6, and serves
    /// until `cancel`.
    pub async fn start(
        port: u16,
        idle: Option<Duration>,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> std::io::Result<Arc<Proxy>> {
        let listener = match TcpListener::bind(("::", port)).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(e),
            Err(_) => TcpListener::bind(("0.0.0.0", port)).await?,
        };
        let proxy = Arc::new(Proxy {
            port,
            label: port.to_string(),
            backends: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            idle,
            metrics,
            active: AtomicUsize::new(0),
        });
        proxy.set_backends_metric(0);
        let p = proxy.clone();
        tokio::spawn(async move { p.serve(listener, cancel).await });
        tracing::info!(proxy_port = port, "TCP proxy started");
        Ok(proxy)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Backend>> {
        self.backends.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a backend (once).
    pub fn add(&self, addr: SocketAddr) {
        let n = {
            let mut b = self.lock();
            if b.iter().any(|x| x.addr == addr) {
                return;
            }
            b.push(Backend {
                addr,
                active: Arc::new(AtomicUsize::new(0)),
            });
            b.len()
        };
        self.set_backends_metric(n);
        tracing::info!(proxy_port = self.port, backend = %addr, "Backend added to TCP proxy");
    }

    /// Removes a backend; returns its count of open connections (they go on until they end).
    pub fn remove(&self, addr: SocketAddr) -> Option<Arc<AtomicUsize>> {
        let (open, n) = {
            let mut b = self.lock();
            let i = b.iter().position(|x| x.addr == addr)?;
            let gone = b.remove(i);
            (gone.active, b.len())
        };
        self.set_backends_metric(n);
        tracing::info!(proxy_port = self.port, backend = %addr, "Backend removed from TCP proxy");
        Some(open)
    }

    pub fn backends(&self) -> Vec<SocketAddr> {
        self.lock().iter().map(|b| b.addr).collect()
    }

    /// Open connections to `addr` through this proxy (0 once removed and drained).
    pub fn open_to(&self, addr: SocketAddr) -> usize {
        self.lock()
            .iter()
            .filter(|b| b.addr == addr)
            .map(|b| b.active.load(Ordering::Relaxed))
            .sum()
    }

    fn set_backends_metric(&self, n: usize) {
        self.metrics.set(
            "dewy_proxy_backends",
            "Number of backends of the TCP proxy",
            &[("proxy_port", &self.label)],
            n as f64,
        );
    }

    fn pick(&self) -> Option<(SocketAddr, Arc<AtomicUsize>)> {
        let b = self.lock();
        if b.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % b.len();
        Some((b[i].addr, b[i].active.clone()))
    }

    fn error(&self) {
        self.metrics.inc(
            "dewy_proxy_errors_total",
            "TCP proxy errors",
            &[("proxy_port", &self.label)],
            1,
        );
    }

    async fn serve(self: Arc<Self>, listener: TcpListener, cancel: CancellationToken) {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                a = listener.accept() => a,
            };
            let client = match accepted {
                Ok((c, _)) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(proxy_port = self.port, error = %e, "TCP proxy accept failed");
                    self.error();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                self.error();
                continue;
            };
            let p = self.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = p.clone().handle(client) => {}
                }
                drop(permit);
            });
        }
        tracing::info!(proxy_port = self.port, "TCP proxy stopped");
    }

    async fn handle(self: Arc<Self>, client: TcpStream) {
        let labels: &[(&str, &str)] = &[("proxy_port", &self.label)];
        self.metrics.inc(
            "dewy_proxy_connections_total",
            "Connections accepted by the TCP proxy",
            labels,
            1,
        );
        // Unlike Dewy, a backend that cannot be reached (a replica that died since) does not
        // cost the client its connection while another one is there: each is tried once.
        let tries = self.lock().len();
        let mut dialled = None;
        let started = Instant::now();
        for _ in 0..tries {
            let Some((addr, active)) = self.pick() else {
                break;
            };
            let started = Instant::now();
            match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(b)) => {
                    dialled = Some((b, addr, active, started.elapsed()));
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!(proxy_port = self.port, backend = %addr, error = %e, "TCP proxy cannot reach backend");
                    self.error();
                }
                Err(_) => {
                    tracing::warn!(proxy_port = self.port, backend = %addr, "TCP proxy backend dial timed out");
                    self.error();
                }
            }
        }
        let Some((backend, addr, backend_active, latency)) = dialled else {
            return;
        };
        self.metrics.observe_duration(
            "dewy_proxy_connect_latency_seconds",
            "Time to connect to a backend",
            LATENCY_BUCKETS,
            labels,
            latency,
        );
        let _ = client.set_nodelay(true);
        let _ = backend.set_nodelay(true);
        let _open = Open::new(&self, &backend_active);
        let last = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let mut client = Activity {
            inner: client,
            last: last.clone(),
            epoch,
        };
        let mut backend = backend;
        let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
        let result = match self.idle {
            None => Some(copy.await),
            Some(idle) => {
                tokio::pin!(copy);
                loop {
                    let since = Duration::from_millis(last.load(Ordering::Relaxed));
                    let quiet_until = epoch + since + idle;
                    tokio::select! {
                        r = &mut copy => break Some(r),
                        _ = tokio::time::sleep_until(quiet_until.into()) => {
                            let now = epoch.elapsed();
                            let last_seen = Duration::from_millis(last.load(Ordering::Relaxed));
                            if now.saturating_sub(last_seen) >= idle {
                                break None;
                            }
                        }
                    }
                }
            }
        };
        match result {
            Some(Ok((up, down))) => {
                self.metrics.inc(
                    "dewy_proxy_bytes_transferred_bytes_total",
                    "Bytes relayed by the TCP proxy",
                    labels,
                    up + down,
                );
            }
            Some(Err(_)) => self.error(),
            None => {
                tracing::debug!(proxy_port = self.port, backend = %addr, "TCP proxy idle timeout")
            }
        }
        self.metrics.observe_duration(
            "dewy_proxy_connection_duration_seconds",
            "Duration of proxied connections",
            DURATION_BUCKETS,
            labels,
            started.elapsed(),
        );
    }
}

/// Counts a connection as open (proxy-wide and per backend) while alive.
struct Open<'a> {
    proxy: &'a Proxy,
    backend: Arc<AtomicUsize>,
}

impl<'a> Open<'a> {
    fn new(proxy: &'a Proxy, backend: &Arc<AtomicUsize>) -> Open<'a> {
        backend.fetch_add(1, Ordering::Relaxed);
        let n = proxy.active.fetch_add(1, Ordering::Relaxed) + 1;
        proxy.set_active(n);
        Open {
            proxy,
            backend: backend.clone(),
        }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.backend.fetch_sub(1, Ordering::Relaxed);
        let n = self.proxy.active.fetch_sub(1, Ordering::Relaxed) - 1;
        self.proxy.set_active(n);
    }
}

impl Proxy {
    fn set_active(&self, n: usize) {
        self.metrics.set(
            "dewy_proxy_connections_active",
            "Open connections through the TCP proxy",
            &[("proxy_port", &self.label)],
            n as f64,
        );
    }
}

/// The client side of a proxied connection, noting when bytes last moved either way (every
/// byte relayed passes through the client socket, in or out).
struct Activity {
    inner: TcpStream,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Activity {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Activity {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The proxies of a run, one per `-p` mapping.
pub struct Proxies {
    /// (proxy, container port it forwards to).
    pub list: Vec<(Arc<Proxy>, u16)>,
    cancel: CancellationToken,
}

impl Proxies {
    /// Starts one listener per `(proxy port, container port)`; fails if any port is taken.
    pub async fn start(
        mappings: &[(u16, u16)],
        idle: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Proxies> {
        let cancel = CancellationToken::new();
        let mut list = Vec::with_capacity(mappings.len());
        for &(port, cport) in mappings {
            match Proxy::start(port, idle, metrics.clone(), cancel.clone()).await {
                Ok(p) => list.push((p, cport)),
                Err(e) => {
                    cancel.cancel();
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("TCP proxy on port {port}: {e}"),
                    ));
                }
            }
        }
        tracing::info!(count = list.len(), "All TCP proxies started successfully");
        Ok(Proxies { list, cancel })
    }

    /// Backends over all proxies (admin status).
    pub fn backend_count(&self) -> usize {
        self.list.iter().map(|(p, _)| p.backends().len()).sum()
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend answering each connection with `name` and closing.
    async fn named_backend(name: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let _ = c.write_all(name.as_bytes()).await;
            }
        });
        addr
    }

    async fn read_all(port: u16) -> String {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut s = String::new();
        let _ = c.read_to_string(&mut s).await;
        s
    }

    async fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn round_robin_no_backend_closes_and_removal() {
        let port = free_port().await;
        let metrics = Arc::new(Metrics::new());
        let proxies = Proxies::start(&[(port, 80)], None, metrics).await.unwrap();
        let p = proxies.list[0].0.clone();
        // No backend: closed at once, nothing relayed.
        assert_eq!(read_all(port).await, "");
        let a = named_backend("a").await;
        let b = named_backend("b").await;
        p.add(a);
        p.add(b);
        p.add(a);
        assert_eq!(p.backends(), vec![a, b]);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(read_all(port).await);
        }
        got.sort();
        assert_eq!(got, vec!["a", "a", "b", "b"]);
        p.remove(a);
        for _ in 0..3 {
            assert_eq!(read_all(port).await, "b");
        }
        // A backend nobody listens on any more is passed over.
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        p.add(dead);
        for _ in 0..4 {
            assert_eq!(read_all(port).await, "b");
        }
        p.remove(dead);
        assert_eq!(proxies.backend_count(), 1);
        proxies.stop();
    }

    #[tokio::test]
    async fn relays_both_ways_counts_open_and_idle_timeout_closes() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let port = free_port().await;
        let proxies = Proxies::start(
            &[(port, 80)],
            Some(Duration::from_millis(300)),
            Arc::new(Metrics::new()),
        )
        .await
        .unwrap();
        let p = proxies.list[0].0.clone();
        p.add(addr);
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        assert_eq!(p.open_to(addr), 1);
        // Silent past the idle timeout: the proxy closes (read returns EOF, not a hang).
        let n = tokio::time::timeout(Duration::from_secs(30), c.read(&mut buf))
            .await
            .expect("idle connection closed by the proxy")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // The count drops once the relay task has finished.
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.open_to(addr) != 0 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error() {
        let l = TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let e = Proxies::start(&[(port, 80)], None, Arc::new(Metrics::new()))
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains(&format!("port {port}")), "{e}");
    }
}
