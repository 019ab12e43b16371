//! The local admin API (spec dewy.md 9.6): `localhost:<admin-port>` (trying the next 9 when
//! taken), `GET /api/status`, `GET /api/containers`, `GET /metrics`; anything but GET on
//! `/api/*` is 405. And `container list`, its client.
//!
//! The server is hyper's HTTP/1.1 on 127.0.0.1 only, one request per connection, at most
//! [`MAX_CONNECTIONS`] at a time, headers bounded in size and read within 5 s (Dewy's
//! `ReadHeaderTimeout`), request bodies never read: nothing a local peer sends makes us
//! allocate much or hold a slot long.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::dewy::report::Command;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::metrics::Metrics;

/// One container as `/api/containers` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub status: String,
    pub ip_port: String,
    pub started_at: String,
    pub deployed_at: String,
    pub labels: BTreeMap<String, String>,
}

/// What `/api/status` shows; updated by the mode as it goes.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub current_version: String,
    pub proxy_backends: usize,
    pub is_running: bool,
}

pub type ListContainers =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<ContainerInfo>> + Send>> + Send + Sync>;

/// Shared between the mode and the admin server.
pub struct AdminState {
    pub name: String,
    pub command: Command,
    pub status: Mutex<Status>,
    /// Container mode: lists the managed containers.
    pub containers: Option<ListContainers>,
    /// With telemetry: served on `/metrics` (else 404).
    pub metrics: Option<Arc<Metrics>>,
}

/// Dewy tries the admin port and the 9 after it (server and client alike).
const PORT_ATTEMPTS: u16 = 10;
/// Concurrent connections served; the rest wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Dewy's `ReadHeaderTimeout`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// hyper's read buffer, hence the largest request head accepted (its minimum is 8 KiB).
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// `docker ps` and `inspect` behind `/api/containers` can hang on a sick daemon.
const LIST_TIMEOUT: Duration = Duration::from_secs(15);
/// In-flight requests get this long to finish once `cancel` fires.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// `container list`'s per-port timeout, as Dewy's client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest `/api/containers` answer `container list` reads.
const MAX_RESPONSE: usize = 4 << 20;
/// Dewy's `deployTimeFormat` (Go's 2006-01-02 15:04:05) is 19 characters.
const DEPLOY_TIME_WIDTH: usize = 19;

/// Serves the admin API on `localhost:<port>` (or the next free of the 9 after it) until
/// `cancel`. Returns the port bound once it is listening; the server runs in a task of its
/// own. Port 0 binds any free port (tests).
pub async fn serve(
    port: u16,
    state: Arc<AdminState>,
    cancel: CancellationToken,
) -> std::io::Result<u16> {
    let (listener, bound) = bind(port).await?;
    tokio::spawn(accept_loop(listener, state, cancel));
    Ok(bound)
}

async fn bind(port: u16) -> std::io::Result<(TcpListener, u16)> {
    let last_port = port.saturating_add(PORT_ATTEMPTS - 1);
    let mut last_err = None;
    for p in port..=last_port {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, p)).await {
            Ok(l) => {
                let bound = l.local_addr()?.port();
                return Ok((l, bound));
            }
            Err(e) => {
                tracing::debug!(port = p, error = %e, "Admin API port in use, trying next");
                last_err = Some(e);
            }
        }
    }
    let e = last_err.unwrap_or_else(|| std::io::Error::other("no port to try"));
    Err(std::io::Error::new(
        e.kind(),
        format!("failed to bind the admin API on 127.0.0.1 ports {port}-{last_port}: {e}"),
    ))
}

async fn accept_loop(listener: TcpListener, state: Arc<AdminState>, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!(error = %e, "Admin API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_REQUEST_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let done = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = cancel.cancelled() => None,
            };
            let result = match done {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(SHUTDOWN_GRACE, conn)
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "Admin API connection ended with an error");
            }
        });
    }
    tracing::info!("Admin API server stopped");
}

/// Dewy serialises its command enum as an integer: 0 server, 1 assets, 2 container.
fn command_number(c: Command) -> u8 {
    match c {
        Command::Server => 0,
        Command::Assets => 1,
        Command::Container => 2,
    }
}

async fn respond(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let get = req.method() == Method::GET;
    if path.starts_with("/api/") && !get {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET"));
        return r;
    }
    match path {
        "/api/status" => {
            let status = state
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            json(&serde_json::json!({
                "name": state.name,
                "command": command_number(state.command),
                "current_version": status.current_version,
                "proxy_backends": status.proxy_backends,
                "is_running": status.is_running,
            }))
        }
        "/api/containers" => {
            let containers = match &state.containers {
                Some(list) => match tokio::time::timeout(LIST_TIMEOUT, list()).await {
                    Ok(c) => c,
                    Err(_) => {
                        tracing::error!("Failed to list containers: timed out");
                        return text(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error\n");
                    }
                },
                None => Vec::new(),
            };
            json(&serde_json::json!({ "containers": containers }))
        }
        "/metrics" if get => match &state.metrics {
            Some(m) => {
                let mut r = Response::new(Full::new(Bytes::from(m.render())));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "text/plain; version=0.0.4; charset=utf-8",
                    ),
                );
                r
            }
            None => not_found(),
        },
        _ => not_found(),
    }
}

/// Go's `http.NotFound`, as Dewy's mux answers.
fn not_found() -> Response<Full<Bytes>> {
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    r
}

/// JSON with the trailing newline of Go's `json.Encoder`.
fn json(v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = v.to_string().into_bytes();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// One GET to `localhost:<port><path>`: status and body (at most [`MAX_RESPONSE`] bytes).
async fn http_get(port: u16, path: &str) -> Result<(StatusCode, Bytes), String> {
    let addrs = tokio::net::lookup_host(("localhost", port))
        .await
        .map_err(|e| format!("cannot resolve localhost: {e}"))?;
    let mut stream = None;
    let mut last = String::from("no address for localhost");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    let stream = stream.ok_or(last)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let _conn = AbortOnDropHandle::new(tokio::spawn(conn));
    let req = Request::get(path)
        .header(HOST, format!("localhost:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// The fields of `/api/containers` the table shows; lenient, as the answer may come from a
/// Go Dewy (`null` for no containers, fields it may add).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Row {
    name: String,
    ip_port: String,
    deployed_at: String,
}

#[derive(Deserialize)]
struct ContainersAnswer {
    containers: Option<Vec<Row>>,
}

/// `2026-01-02T15:04:05+09:00` → `2026-01-02 15:04:05`: Go formats the parsed time in the
/// offset it carries, which is the wall-clock part of the RFC 3339 text itself.
fn deploy_time(rfc3339: &str) -> String {
    let b = rfc3339.as_bytes();
    let shaped = b.len() >= DEPLOY_TIME_WIDTH
        && b[..DEPLOY_TIME_WIDTH]
            .iter()
            .enumerate()
            .all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T' || *c == b't' || *c == b' ',
                13 | 16 => *c == b':',
                _ => c.is_ascii_digit(),
            });
    if shaped {
        format!("{} {}", &rfc3339[..10], &rfc3339[11..DEPLOY_TIME_WIDTH])
    } else if rfc3339.is_empty() {
        "-".into()
    } else {
        rfc3339.to_string()
    }
}

/// Dewy's `displayContainerList`: sorted by name, columns padded to the widest cell plus 4.
fn containers_table(mut rows: Vec<Row>) -> String {
    if rows.is_empty() {
        return "No containers found.\n".into();
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let times: Vec<String> = rows.iter().map(|r| deploy_time(&r.deployed_at)).collect();
    let upstream = rows
        .iter()
        .map(|r| r.ip_port.chars().count())
        .max()
        .unwrap_or(0)
        .max("UPSTREAM".len())
        + 4;
    let deployed = times
        .iter()
        .map(|t| t.chars().count())
        .max()
        .unwrap_or(0)
        .max(DEPLOY_TIME_WIDTH)
        + 4;
    let mut out = format!(
        "{:<upstream$}{:<deployed$}NAME\n",
        "UPSTREAM", "DEPLOY TIME"
    );
    for (r, t) in rows.iter().zip(&times) {
        out.push_str(&format!(
            "{:<upstream$}{:<deployed$}{}\n",
            r.ip_port, t, r.name
        ));
    }
    out
}

/// Finds the admin API among `port..port+9` and returns the port that answered and the
/// table. A port answering something other than a containers list (another service took
/// it, which is why the agent moved on) is skipped rather than fatal.
async fn fetch_table(admin_port: u16) -> Result<(u16, String), String> {
    let last_port = admin_port.saturating_add(PORT_ATTEMPTS - 1);
    let mut answered = None;
    for port in admin_port..=last_port {
        let (status, body) =
            match tokio::time::timeout(CLIENT_TIMEOUT, http_get(port, "/api/containers")).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::debug!(port, error = %e, "no admin API");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(port, "admin API timed out");
                    continue;
                }
            };
        if status != StatusCode::OK {
            answered = Some(format!("port {port} returned status {}", status.as_u16()));
            continue;
        }
        match serde_json::from_slice::<ContainersAnswer>(&body) {
            Ok(a) => return Ok((port, containers_table(a.containers.unwrap_or_default()))),
            Err(e) => answered = Some(format!("port {port} did not answer a containers list: {e}")),
        }
    }
    let mut msg =
        format!("no running deploy-agent admin API found (tried ports {admin_port}-{last_port})");
    if let Some(a) = answered {
        msg.push_str(&format!("; {a}"));
    }
    Err(msg)
}

/// `container list [--admin-port N]`: prints the table to stdout; false on failure (exit 1).
pub async fn container_list(admin_port: u16) -> bool {
    match fetch_table(admin_port).await {
        Ok((port, table)) => {
            print!("{table}");
            if port != admin_port {
                println!("\n(Connected to admin API on port {port})");
            }
            true
        }
        Err(e) => {
            eprintln!("Error: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A running admin API, stopped when dropped (even when the test fails).
    struct Server {
        port: u16,
        cancel: CancellationToken,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.cancel.cancel();
        }
    }

    async fn start(port: u16, state: AdminState) -> (Server, Arc<AdminState>) {
        let state = Arc::new(state);
        let cancel = CancellationToken::new();
        let port = serve(port, state.clone(), cancel.clone()).await.unwrap();
        (Server { port, cancel }, state)
    }

    fn state(command: Command) -> AdminState {
        AdminState {
            name: "web".into(),
            command,
            status: Mutex::new(Status::default()),
            containers: None,
            metrics: None,
        }
    }

    /// What curl saw: status code, content type, body.
    struct Answer {
        code: u16,
        content_type: String,
        body: String,
    }

    /// An independent client: curl, so the server is judged by someone else's HTTP.
    async fn curl(port: u16, method: &str, path: &str, extra: &[&str]) -> Answer {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "60"])
            // curl waits for a body after `-X HEAD`; `--head` is its HEAD.
            .args(if method == "HEAD" {
                vec!["--head", "-o", "/dev/null"]
            } else {
                vec!["-X", method]
            })
            .args(["-w", "\n%{http_code}\n%{content_type}"])
            .args(extra)
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .await
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut parts = text.rsplitn(3, '\n');
        let content_type = parts.next().unwrap().to_string();
        let code = parts.next().unwrap().parse().unwrap();
        let body = parts.next().unwrap().to_string();
        Answer {
            code,
            content_type,
            body,
        }
    }

    fn info(name: &str, ip_port: &str, deployed_at: &str) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{name}"),
            name: name.into(),
            image: "ghcr.io/o/app:v1.2.3".into(),
            status: "running".into(),
            ip_port: ip_port.into(),
            started_at: "2026-11-22T10:00:00Z".into(),
            deployed_at: deployed_at.into(),
            labels: BTreeMap::from([
                ("dewy.app".to_string(), "web".to_string()),
                ("dewy.managed".to_string(), "true".to_string()),
            ]),
        }
    }

    fn lister(list: Vec<ContainerInfo>) -> ListContainers {
        Arc::new(move || {
            let list = list.clone();
            Box::pin(async move { list })
        })
    }

    /// `n` consecutive free ports on 127.0.0.1, held by listeners nobody accepts on.
    async fn consecutive(n: u16) -> (u16, Vec<TcpListener>) {
        for _ in 0..50 {
            let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            let base = probe.local_addr().unwrap().port();
            drop(probe);
            if base > u16::MAX - n {
                continue;
            }
            let mut held = Vec::new();
            for p in base..base + n {
                match TcpListener::bind((Ipv4Addr::LOCALHOST, p)).await {
                    Ok(l) => held.push(l),
                    Err(_) => break,
                }
            }
            if held.len() == usize::from(n) {
                return (base, held);
            }
        }
        panic!("no {n} consecutive free ports");
    }

    #[tokio::test]
    async fn admin_status_json() {
        for (command, number) in [
            (Command::Server, 0),
            (Command::Assets, 1),
            (Command::Container, 2),
        ] {
            let (srv, state) = start(0, state(command)).await;
            let a = curl(srv.port, "GET", "/api/status", &[]).await;
            assert_eq!(a.code, 200);
            assert_eq!(a.content_type, "application/json");
            let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"name": "web", "command": number, "current_version": "",
                    "proxy_backends": 0, "is_running": false})
            );
            *state.status.lock().unwrap() = Status {
                current_version: "v1.2.3".into(),
                proxy_backends: 2,
                is_running: true,
            };
            let v: serde_json::Value =
                serde_json::from_str(&curl(srv.port, "GET", "/api/status", &[]).await.body)
                    .unwrap();
            assert_eq!(
                v,
                serde_json::json!({"name": "web", "command": number, "current_version": "v1.2.3",
                    "proxy_backends": 2, "is_running": true})
            );
        }
    }

    #[tokio::test]
    async fn admin_containers_json() {
        let (srv, _) = start(0, state(Command::Server)).await;
        let a = curl(srv.port, "GET", "/api/containers", &[]).await;
        assert_eq!((a.code, a.body.as_str()), (200, "{\"containers\":[]}\n"));

        let list = vec![
            info("web-2", "127.0.0.1:49154", "2026-11-22T10:00:00+09:00"),
            info("web-1", "127.0.0.1:49153", "2026-11-22T09:00:00+09:00"),
        ];
        let mut st = state(Command::Container);
        st.containers = Some(lister(list.clone()));
        let (srv, _) = start(0, st).await;
        let a = curl(srv.port, "GET", "/api/containers", &[]).await;
        assert_eq!(a.code, 200);
        assert_eq!(a.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v, serde_json::json!({ "containers": list }));
        assert_eq!(v["containers"][0]["ip_port"], "127.0.0.1:49154");
        assert_eq!(v["containers"][1]["labels"]["dewy.app"], "web");
    }

    #[tokio::test]
    async fn admin_methods_and_unknown_paths() {
        let (srv, _) = start(0, state(Command::Container)).await;
        for (method, path) in [
            ("POST", "/api/status"),
            ("DELETE", "/api/containers"),
            ("PUT", "/api/anything"),
            ("HEAD", "/api/status"),
        ] {
            let a = curl(srv.port, method, path, &[]).await;
            assert_eq!(a.code, 405, "{method} {path}");
            if method != "HEAD" {
                assert_eq!(a.body, "Method not allowed\n");
            }
        }
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/api/other"),
            ("GET", "/api/status/x"),
            ("GET", "/metrics"),
            ("POST", "/metrics"),
        ] {
            let a = curl(srv.port, method, path, &[]).await;
            assert_eq!(
                (a.code, a.body.as_str()),
                (404, "404 page not found\n"),
                "{method} {path}"
            );
        }
    }

    #[tokio::test]
    async fn admin_metrics_on_and_off() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        metrics.inc(
            "dewy_deployments_total",
            "Deployments.",
            &[("command", "container")],
            2,
        );
        let mut st = state(Command::Container);
        st.metrics = Some(metrics.clone());
        let (srv, _) = start(0, st).await;
        let a = curl(srv.port, "GET", "/metrics", &[]).await;
        assert_eq!(a.code, 200);
        assert!(
            a.content_type.starts_with("text/plain; version=0.0.4"),
            "{}",
            a.content_type
        );
        assert_eq!(a.body, metrics.render());
        assert!(
            a.body
                .contains("dewy_deployments_total{command=\"container\"} 2\n")
        );
        // Served live, not a snapshot taken at start.
        metrics.inc(
            "dewy_deployments_total",
            "Deployments.",
            &[("command", "container")],
            1,
        );
        let a = curl(srv.port, "GET", "/metrics", &[]).await;
        assert!(
            a.body
                .contains("dewy_deployments_total{command=\"container\"} 3\n")
        );

        let (off, _) = start(0, state(Command::Server)).await;
        assert_eq!(curl(off.port, "GET", "/metrics", &[]).await.code, 404);
    }

    #[tokio::test]
    async fn admin_refuses_oversized_request_heads() {
        let (srv, _) = start(0, state(Command::Server)).await;
        let big = format!("X-Big: {}", "a".repeat(64 * 1024));
        let a = curl(srv.port, "GET", "/api/status", &["-H", &big]).await;
        assert_eq!(a.code, 431);
        // The server is still fine afterwards.
        assert_eq!(curl(srv.port, "GET", "/api/status", &[]).await.code, 200);
    }

    #[tokio::test]
    async fn admin_closes_silent_connections_and_keeps_serving() {
        let (srv, _) = start(0, state(Command::Server)).await;
        // Fill every slot with a connection that never sends its headers.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(
                TcpStream::connect((Ipv4Addr::LOCALHOST, srv.port))
                    .await
                    .unwrap(),
            );
        }
        // Served only once the header timeout has freed a slot...
        assert_eq!(curl(srv.port, "GET", "/api/status", &[]).await.code, 200);
        // ...so by now at least one silent connection has been hung up on (EOF or a 408),
        // and the others follow rather than waiting forever.
        let mut buf = [0u8; 512];
        let closed = idle
            .iter()
            .filter(|s| !matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
            .count();
        assert!(
            closed >= 1,
            "a 65th request was served while 64 slots were held"
        );
        for mut s in idle {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        }
    }

    #[tokio::test]
    async fn admin_stops_on_cancel() {
        let (srv, _) = start(0, state(Command::Server)).await;
        let port = srv.port;
        assert_eq!(curl(port, "GET", "/api/status", &[]).await.code, 200);
        drop(srv);
        // The listener goes away with the accept loop; wait for it without a deadline.
        loop {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    #[tokio::test]
    async fn admin_falls_back_to_the_next_port_and_container_list_finds_it() {
        let (base, mut held) = consecutive(10).await;
        // Keep the first port taken by something that accepts but never answers HTTP.
        let blocker = held.remove(0);
        drop(held);
        let mut st = state(Command::Container);
        st.containers = Some(lister(vec![
            info("web-b", "127.0.0.1:49154", "2026-11-22T10:11:12+09:00"),
            info("web-a", "127.0.0.1:9", "2026-11-21T01:02:03Z"),
        ]));
        let (srv, _) = start(base, st).await;
        assert_eq!(srv.port, base + 1);

        let (port, table) = fetch_table(base).await.unwrap();
        assert_eq!(port, base + 1);
        assert_eq!(
            table,
            "UPSTREAM           DEPLOY TIME            NAME\n\
             127.0.0.1:9        2026-11-21 01:02:03    web-a\n\
             127.0.0.1:49154    2026-11-22 10:11:12    web-b\n"
        );
        assert!(container_list(base).await);
        // Asked for the port it is on, no detour.
        assert_eq!(fetch_table(base + 1).await.unwrap().0, base + 1);
        drop(blocker);
    }

    #[tokio::test]
    async fn admin_all_ports_taken_is_an_error() {
        let (base, held) = consecutive(10).await;
        let e = serve(
            base,
            Arc::new(state(Command::Server)),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            e.to_string().starts_with(&format!(
                "failed to bind the admin API on 127.0.0.1 ports {base}-{}",
                base + 9
            )),
            "{e}"
        );
        drop(held);
    }

    #[tokio::test]
    async fn container_list_without_a_server_fails_clearly() {
        // Ten ports that refuse: listeners bound then closed... may be reused by others, so
        // hold them with a responder that hangs up at once.
        let (base, held) = consecutive(10).await;
        let tasks: Vec<_> = held
            .into_iter()
            .map(|l| {
                AbortOnDropHandle::new(tokio::spawn(async move {
                    while let Ok((s, _)) = l.accept().await {
                        drop(s);
                    }
                }))
            })
            .collect();
        let e = fetch_table(base).await.unwrap_err();
        assert_eq!(
            e,
            format!(
                "no running deploy-agent admin API found (tried ports {base}-{})",
                base + 9
            )
        );
        assert!(!container_list(base).await);
        drop(tasks);
    }

    #[tokio::test]
    async fn container_list_skips_a_port_answering_something_else() {
        let (base, mut held) = consecutive(2).await;
        let other = held.remove(0);
        // Another HTTP service on the first port.
        let _task = AbortOnDropHandle::new(tokio::spawn(async move {
            while let Ok((mut s, _)) = other.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            }
        }));
        drop(held);
        let (srv, _) = start(base + 1, state(Command::Container)).await;
        assert_eq!(srv.port, base + 1);
        assert_eq!(
            fetch_table(base).await.unwrap(),
            (base + 1, "No containers found.\n".to_string())
        );
    }

    #[test]
    fn container_table_layout() {
        let rows = vec![
            Row {
                name: "b".into(),
                ip_port: "127.0.0.1:1".into(),
                deployed_at: "2026-01-02T03:04:05.999+09:00".into(),
            },
            Row {
                name: "a".into(),
                ip_port: "[::1]:65535".into(),
                deployed_at: "".into(),
            },
        ];
        assert_eq!(
            containers_table(rows),
            "UPSTREAM       DEPLOY TIME            NAME\n\
             [::1]:65535    -                      a\n\
             127.0.0.1:1    2026-01-02 03:04:05    b\n"
        );
        assert_eq!(containers_table(vec![]), "No containers found.\n");
    }

    #[test]
    fn container_table_deploy_time() {
        assert_eq!(deploy_time("2026-11-22T10:11:12Z"), "2026-11-22 10:11:12");
        assert_eq!(
            deploy_time("2026-11-22T10:11:12.123456789-07:00"),
            "2026-11-22 10:11:12"
        );
        assert_eq!(deploy_time("yesterday"), "yesterday");
        assert_eq!(deploy_time(""), "-");
    }
}
