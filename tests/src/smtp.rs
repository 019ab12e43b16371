//! A real SMTP server for the notifier tests: aiosmtpd (from the peers' venv) with AUTH
//! required, delivering into a maildir read back with Python's own `email` parser.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::peers::VENV;

/// aiosmtpd with AUTH (PLAIN/LOGIN) required, delivering into a maildir. Without a
/// certificate AUTH is allowed in clear; with one (`cert key` after the password) MAIL, RCPT
/// and AUTH are refused until the client has upgraded with STARTTLS. The CLI has no
/// authenticator option, hence this small controller script.
const SMTPD: &str = r#"
import sys, ssl, signal
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

port, maildir, user, password = sys.argv[1:5]
tls = {}
if len(sys.argv) > 5:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[5], sys.argv[6])
    tls = dict(tls_context=ctx, require_starttls=True)

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login == user.encode() and auth_data.password == password.encode())
    # handled=False: aiosmtpd then answers 535 itself (the default leaves the client waiting).
    return AuthResult(success=ok, handled=False)

controller = Controller(Mailbox(maildir), hostname="127.0.0.1", port=int(port),
                        authenticator=authenticate, auth_required=True,
                        auth_require_tls=bool(tls), **tls)
controller.start()
print("ready", flush=True)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
controller.stop()
"#;

/// Prints the maildir's messages as JSON (headers and decoded text body).
const READ_MAILDIR: &str = r#"
import sys, json, mailbox
out = []
for m in mailbox.Maildir(sys.argv[1], create=False):
    body = m.get_payload(decode=True).decode(m.get_content_charset() or "utf-8")
    # SMTP ends the data with a line break of its own; the text sent is what comes before it.
    body = body.replace("\r\n", "\n").removesuffix("\n")
    out.append({k: m[k] for k in ("From", "To", "Subject", "X-MailFrom", "X-RcptTo")} | {"body": body})
print(json.dumps(out))
"#;

pub struct Smtpd {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    let p = Path::new(VENV).join("bin/python");
    assert!(
        p.exists(),
        "{} missing: run scripts/install-deps",
        p.display()
    );
    p
}

impl Smtpd {
    /// Starts on a free port; only `user`/`password` may send.
    pub fn start(user: &str, password: &str) -> Smtpd {
        Smtpd::start_with(user, password, None)
    }

    /// Like [`Smtpd::start`], requiring STARTTLS with this certificate and key (PEM files).
    pub fn start_starttls(user: &str, password: &str, cert: &Path, key: &Path) -> Smtpd {
        Smtpd::start_with(user, password, Some((cert, key)))
    }

    fn start_with(user: &str, password: &str, tls: Option<(&Path, &Path)>) -> Smtpd {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("smtpd.py");
        std::fs::write(&script, SMTPD).unwrap();
        let maildir = dir.path().join("maildir");
        let port = crate::free_port();
        let mut child = Command::new(python())
            .arg(&script)
            .args([&port.to_string(), maildir.to_str().unwrap(), user, password])
            .args(tls.iter().flat_map(|(cert, key)| [cert, key]))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("smtpd.log")).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let smtpd = Smtpd { child, port, dir };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
        smtpd
    }

    /// Every message received: `From`, `To`, `Subject`, `X-MailFrom`, `X-RcptTo`, `body`.
    pub fn messages(&self) -> Vec<Value> {
        let script = self.dir.path().join("read.py");
        std::fs::write(&script, READ_MAILDIR).unwrap();
        let out = Command::new(python())
            .arg(&script)
            .arg(self.dir.path().join("maildir"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The messages with this subject.
    pub fn find(&self, subject: &str) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| m["Subject"] == subject)
            .collect()
    }
}
