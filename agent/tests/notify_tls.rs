//! The mail notifier over STARTTLS against aiosmtpd that refuses anything before STARTTLS:
//! the certificate is checked against the system roots, which `SSL_CERT_FILE` points at a
//! CA made here. A test binary of its own because it sets that variable (process-wide).

use std::path::Path;
use std::process::Command;

use agent::notify::Notifier;
use e2e::smtp::Smtpd;

mod logs;
use logs::Logs;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two CAs, and a certificate for 127.0.0.1 signed by the first.
fn make_certs(dir: &Path) {
    for name in ["test", "other"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name} CA"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
                "-keyout",
                &format!("{name}-ca.key"),
                "-out",
                &format!("{name}-ca.pem"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "test-ca.pem",
            "-CAkey",
            "test-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

#[test]
#[allow(unsafe_code)] // set_var, while this test is the only thread of the binary
fn mail_over_starttls_with_a_verified_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let smtpd = Smtpd::start_starttls(
        "bot",
        "pw",
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
    );
    let port = smtpd.port;

    let (logs, _guard) = Logs::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!(
        "mail://127.0.0.1:{port}/ops@example.com?username=bot&password=pw&from=dewy@example.com"
    );
    let none = |_: &str| None;

    // Trusting the CA that signed the server's certificate: STARTTLS, AUTH, delivered.
    // SAFETY: no other thread runs in this test binary yet (one test, no runtime threads).
    unsafe { std::env::set_var("SSL_CERT_FILE", dir.path().join("test-ca.pem")) };
    let trusted = Notifier::from_url(&url, &none).unwrap();
    rt.block_on(trusted.send("over TLS"));
    assert_eq!(smtpd.messages().len(), 1, "{}", logs.text());

    // Trusting another CA only: the handshake fails, nothing is sent, the failure is logged.
    // SAFETY: as above; the runtime is current-thread and idle.
    unsafe { std::env::set_var("SSL_CERT_FILE", dir.path().join("other-ca.pem")) };
    let untrusted = Notifier::from_url(&url, &none).unwrap();
    rt.block_on(untrusted.send("must not arrive"));
    assert_eq!(smtpd.messages().len(), 1);
    let text = logs.text();
    assert!(text.contains("notification failed: mail: "), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(!text.contains("password=pw"), "{text}");
}
