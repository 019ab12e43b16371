//! The client against a real OpenSSH sshd (peers.md section 1): host key checks, key-file and
//! ssh-agent auth, exec with exit status and separate streams, sftp upload.
//! Needs `openssh-server` (`/usr/sbin/sshd`) and `ssh-keygen`/`ssh-agent`/`ssh-add`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use client::{Connection, HostCheck, Identity, Target};

struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(path: &Path, kind: &str) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-f"]).arg(path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    assert!(cmd.status().unwrap().success());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Sshd {
    fn start() -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "these tests need OpenSSH sshd: apt-get install openssh-server"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host"), "ed25519");
        keygen(&d.join("user_ed25519"), "ed25519");
        keygen(&d.join("user_rsa"), "rsa");
        let mut auth = std::fs::read_to_string(d.join("user_ed25519.pub")).unwrap();
        auth += &std::fs::read_to_string(d.join("user_rsa.pub")).unwrap();
        std::fs::write(d.join("authorized_keys"), auth).unwrap();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n\
             PubkeyAcceptedAlgorithms ssh-ed25519,rsa-sha2-256,rsa-sha2-512\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let sshd = Sshd { dir, port, child };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sshd;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("sshd did not start");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn host_pub(&self) -> String {
        std::fs::read_to_string(self.path("host.pub")).unwrap()
    }

    fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.path("host.pub"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_whitespace().nth(1).unwrap().to_string()
    }

    fn target(&self, host_check: HostCheck, identity: Identity) -> Target {
        Target {
            addr: format!("127.0.0.1:{}", self.port),
            user: whoami(),
            host_check,
            identity,
            connect_timeout: Duration::from_secs(20),
        }
    }

    fn key_target(&self) -> Target {
        self.target(
            HostCheck::Fingerprints(vec![self.fingerprint()]),
            Identity::KeyFile(self.path("user_ed25519")),
        )
    }
}

#[tokio::test]
async fn fingerprint_check_exec_and_streams() {
    let sshd = Sshd::start();
    let conn = Connection::connect(&sshd.key_target()).await.unwrap();
    assert_eq!(conn.server_fingerprint(), sshd.fingerprint());
    let out = conn
        .exec("printf out; printf err >&2; exit 3")
        .await
        .unwrap();
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout, b"out");
    assert_eq!(out.stderr, b"err");
    // several sessions on one connection
    let out = conn.exec("echo again").await.unwrap();
    assert_eq!((out.status, out.stdout.as_slice()), (0, &b"again\n"[..]));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn lowercase_fingerprint_prefix_is_accepted() {
    let sshd = Sshd::start();
    let fp = sshd.fingerprint().replacen("SHA256:", "sha256:", 1);
    let t = sshd.target(
        HostCheck::Fingerprints(vec![fp]),
        Identity::KeyFile(sshd.path("user_ed25519")),
    );
    Connection::connect(&t).await.unwrap();
}

#[tokio::test]
async fn fingerprint_mismatch_names_the_seen_key() {
    let sshd = Sshd::start();
    let t = sshd.target(
        HostCheck::Fingerprints(vec![
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        ]),
        Identity::KeyFile(sshd.path("user_ed25519")),
    );
    let err = Connection::connect(&t).await.err().unwrap().to_string();
    assert_eq!(
        err,
        format!(
            "ssh: handshake failed: host key fingerprint mismatch: {}",
            sshd.fingerprint()
        )
    );
}

#[tokio::test]
async fn known_hosts_plain_hashed_unknown() {
    let sshd = Sshd::start();
    let hostkey = sshd.host_pub();
    let line = format!("[127.0.0.1]:{} {}", sshd.port, hostkey);
    let kh = sshd.path("known_hosts");
    std::fs::write(&kh, &line).unwrap();
    let t = sshd.target(
        HostCheck::KnownHosts(kh.clone()),
        Identity::KeyFile(sshd.path("user_ed25519")),
    );
    Connection::connect(&t).await.unwrap();

    // hashed by ssh-keygen -H
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-H", "-f"])
            .arg(&kh)
            .status()
            .unwrap()
            .success()
    );
    assert!(std::fs::read_to_string(&kh).unwrap().starts_with("|1|"));
    Connection::connect(&t).await.unwrap();

    // an entry for port 22 does not vouch for our port
    std::fs::write(&kh, format!("127.0.0.1 {hostkey}")).unwrap();
    let err = Connection::connect(&t).await.err().unwrap().to_string();
    assert_eq!(
        err,
        format!(
            "ssh: handshake failed: host key for [127.0.0.1]:{} is not in {}; pass -fp {} or add it",
            sshd.port,
            kh.display(),
            sshd.fingerprint()
        )
    );

    // another key of the same type: mismatch
    std::fs::write(
        &kh,
        format!(
            "[127.0.0.1]:{} {}",
            sshd.port,
            std::fs::read_to_string(sshd.path("user_ed25519.pub")).unwrap()
        ),
    )
    .unwrap();
    let err = Connection::connect(&t).await.err().unwrap().to_string();
    assert!(err.contains("host key mismatch"), "{err}");
    assert!(err.contains(&sshd.fingerprint()), "{err}");
}

#[tokio::test]
async fn rsa_key_uses_sha2_signatures() {
    // sshd accepts only rsa-sha2-* (PubkeyAcceptedAlgorithms), so this fails with ssh-rsa.
    let sshd = Sshd::start();
    let t = sshd.target(
        HostCheck::Fingerprints(vec![sshd.fingerprint()]),
        Identity::KeyFile(sshd.path("user_rsa")),
    );
    let conn = Connection::connect(&t).await.unwrap();
    assert_eq!(conn.exec("true").await.unwrap().status, 0);
}

#[tokio::test]
async fn key_file_errors() {
    let sshd = Sshd::start();
    let missing = sshd.path("nope");
    let t = sshd.target(
        HostCheck::Fingerprints(vec![sshd.fingerprint()]),
        Identity::KeyFile(missing.clone()),
    );
    let err = Connection::connect(&t).await.err().unwrap().to_string();
    assert_eq!(
        err,
        format!(
            "failed to read/parse key file \"{}\": no such file or directory",
            missing.display()
        )
    );
    // a key that the server does not know
    keygen(&sshd.path("stranger"), "ed25519");
    let t = sshd.target(
        HostCheck::Fingerprints(vec![sshd.fingerprint()]),
        Identity::KeyFile(sshd.path("stranger")),
    );
    let err = Connection::connect(&t).await.err().unwrap().to_string();
    assert!(err.contains("unable to authenticate"), "{err}");
}

#[test]
#[allow(unsafe_code)] // set_var: see the SAFETY note below
fn agent_auth_uses_every_identity() {
    let sshd = Sshd::start();
    let sock = sshd.path("agent.sock");
    let _agent = KillOnDrop(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // a key the server does not know first: the client must go on to the next identity
    keygen(&sshd.path("stranger"), "ed25519");
    for k in ["stranger", "user_rsa"] {
        let ok = Command::new("ssh-add")
            .arg("-q")
            .arg(sshd.path(k))
            .env("SSH_AUTH_SOCK", &sock)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    // SAFETY: this test binary's other tests do not read SSH_AUTH_SOCK.
    unsafe { std::env::set_var("SSH_AUTH_SOCK", &sock) };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let res = rt.block_on(async {
        let t = sshd.target(
            HostCheck::Fingerprints(vec![sshd.fingerprint()]),
            Identity::Agent,
        );
        let conn = Connection::connect(&t).await?;
        conn.exec("echo agent").await
    });
    let out = res.unwrap();
    assert_eq!(out.stdout, b"agent\n");
}

#[tokio::test]
async fn sftp_upload_is_byte_identical() {
    use tokio::io::AsyncWriteExt;
    let sshd = Sshd::start();
    let conn = Connection::connect(&sshd.key_target()).await.unwrap();
    let sftp = conn.sftp().await.unwrap();
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let dest = sshd.path("uploaded");
    let mut f = sftp.create(dest.display().to_string()).await.unwrap();
    for chunk in data.chunks(100_000) {
        f.write_all(chunk).await.unwrap();
    }
    f.shutdown().await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

#[tokio::test]
async fn refused_port_is_a_dial_error() {
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("k"), "ed25519");
    let port = free_port();
    let t = Target {
        addr: format!("127.0.0.1:{port}"),
        user: "x".into(),
        host_check: HostCheck::Fingerprints(vec![]),
        identity: Identity::KeyFile(dir.path().join("k")),
        connect_timeout: Duration::from_secs(5),
    };
    let err = Connection::connect(&t).await.err().unwrap().to_string();
    assert_eq!(
        err,
        format!("dial tcp 127.0.0.1:{port}: connection refused")
    );
}

/// Records when each write arrived.
struct Stamped(Vec<(std::time::Instant, Vec<u8>)>);

impl tokio::io::AsyncWrite for Stamped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.push((std::time::Instant::now(), buf.to_vec()));
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn exec_output_is_streamed_as_it_arrives() {
    let sshd = Sshd::start();
    let conn = Connection::connect(&sshd.key_target()).await.unwrap();
    let mut out = Stamped(Vec::new());
    let mut err = Stamped(Vec::new());
    let status = conn
        .exec_to("echo first; sleep 1; echo second", &mut out, &mut err)
        .await
        .unwrap();
    assert_eq!(status, 0);
    let all: Vec<u8> = out.0.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_eq!(all, b"first\nsecond\n");
    let (first, last) = (out.0[0].0, out.0[out.0.len() - 1].0);
    assert!(
        last.duration_since(first) >= Duration::from_millis(700),
        "output was buffered until the end"
    );
}

/// A TCP proxy to sshd that can freeze: it stops forwarding but keeps both sockets open, the
/// way a crashed host or a cut cable looks to the client (no FIN, no RST).
async fn freezing_proxy(
    to: u16,
) -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = frozen.clone();
    let task = tokio::spawn(async move {
        let (inbound, _) = listener.accept().await.unwrap();
        let outbound = tokio::net::TcpStream::connect(("127.0.0.1", to))
            .await
            .unwrap();
        let (mut ri, mut wi) = inbound.into_split();
        let (mut ro, mut wo) = outbound.into_split();
        let pump = |f: std::sync::Arc<std::sync::atomic::AtomicBool>| {
            async move |r: &mut tokio::net::tcp::OwnedReadHalf,
                        w: &mut tokio::net::tcp::OwnedWriteHalf| {
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if f.load(Ordering::SeqCst) {
                        // swallow everything from now on
                        continue;
                    }
                    if w.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        };
        let a = pump(f.clone());
        let b = pump(f);
        tokio::join!(a(&mut ri, &mut wo), b(&mut ro, &mut wi));
    });
    (port, frozen, task)
}

#[tokio::test]
async fn dead_server_is_noticed_by_keepalive() {
    let sshd = Sshd::start();
    let (port, frozen, task) = freezing_proxy(sshd.port).await;
    let mut t = sshd.key_target();
    t.addr = format!("127.0.0.1:{port}");
    // the proxy's address is not what known_hosts would say, but the fingerprint is the same
    let tuning = client::Tuning {
        keepalive_interval: Duration::from_millis(300),
        keepalive_max: 2,
    };
    let conn = Connection::connect_tuned(&t, &tuning).await.unwrap();
    assert_eq!(conn.exec("echo alive").await.unwrap().stdout, b"alive\n");
    // idle but answering: keepalives are answered, the connection stays
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!conn.is_closed());
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    while !conn.is_closed() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a silent server was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
}
