//! The notifiers against real peers: a chat.postMessage stand-in (hyper, answering as Slack
//! documents it) and aiosmtpd with AUTH required, written to a maildir and read back with
//! Python's own `email` parser.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::notify::Notifier;
use common::dewy::notify::slack::{FOOTER_ICON, ICON_URL, host_color};
use common::dewy::notify::{HookKind, HookResult, msg};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

mod logs;
use logs::Logs;

const TOKEN: &str = "xoxb-test-token-1234";
const WARNING: &str = "⚠️ No more error notifications will be sent until errors are resolved.";

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<&str, String> = pairs.into_iter().collect();
    move |k| m.get(k).cloned()
}

// ---------------------------------------------------------------- Slack stand-in

#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: String,
    content_type: String,
    body: Value,
}

type Scripted = (StatusCode, Vec<(&'static str, String)>, Value);

#[derive(Default)]
struct SlackState {
    received: Mutex<Vec<Received>>,
    /// Answers given before the documented behaviour (429s).
    script: Mutex<VecDeque<Scripted>>,
}

/// chat.postMessage as documented: bearer token, a JSON body naming a channel; `nowhere` is a
/// channel that does not exist.
struct SlackPeer {
    addr: SocketAddr,
    state: Arc<SlackState>,
}

impl SlackPeer {
    async fn start() -> SlackPeer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(SlackState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(req, state.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        SlackPeer { addr, state }
    }

    fn api_url(&self) -> String {
        format!("http://{}/api/", self.addr)
    }

    fn notifier(&self, url: &str) -> Notifier {
        let env = env_of(vec![
            ("SLACK_TOKEN", TOKEN.into()),
            ("SLACK_API_URL", self.api_url()),
        ]);
        Notifier::from_url(url, &env).unwrap()
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.state.received.lock().unwrap())
    }

    /// The attachment texts posted since the last call.
    fn texts(&self) -> Vec<String> {
        self.take()
            .iter()
            .map(|r| {
                r.body["attachments"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    fn script(&self, status: StatusCode, headers: Vec<(&'static str, String)>, body: Value) {
        self.state
            .script
            .lock()
            .unwrap()
            .push_back((status, headers, body));
    }
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<SlackState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (authorization, content_type) = (header("authorization"), header("content-type"));
    let path = req.uri().path().to_string();
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let n = {
        let mut received = state.received.lock().unwrap();
        received.push(Received {
            path: path.clone(),
            authorization: authorization.clone(),
            content_type,
            body: body.clone(),
        });
        received.len()
    };
    let reply = |status: StatusCode, headers: Vec<(&str, String)>, v: Value| {
        let mut r = Response::builder()
            .status(status)
            .header("content-type", "application/json; charset=utf-8");
        for (k, val) in headers {
            r = r.header(k, val);
        }
        Ok(r.body(Full::new(Bytes::from(v.to_string()))).unwrap())
    };
    if let Some((status, headers, v)) = state.script.lock().unwrap().pop_front() {
        return reply(status, headers, v);
    }
    let fail = |e: &str| json!({"ok": false, "error": e});
    let ok = StatusCode::OK;
    if path != "/api/chat.postMessage" {
        return reply(StatusCode::NOT_FOUND, vec![], fail("unknown_method"));
    }
    if authorization != format!("Bearer {TOKEN}") {
        return reply(ok, vec![], fail("invalid_auth"));
    }
    match body["channel"].as_str() {
        None | Some("") | Some("nowhere") => return reply(ok, vec![], fail("channel_not_found")),
        Some(_) => {}
    }
    if !body["attachments"].is_array() && body["text"].as_str().is_none_or(str::is_empty) {
        return reply(ok, vec![], fail("no_text"));
    }
    reply(
        ok,
        vec![],
        json!({"ok": true, "channel": "C0123ABCD", "ts": format!("1700000000.{n:06}")}),
    )
}

fn hook(kind: HookKind, success: bool) -> HookResult {
    HookResult {
        kind,
        command: "./migrate.sh".into(),
        stdout: "migrating\ndone".into(),
        stderr: if success {
            String::new()
        } else {
            "table locked".into()
        },
        exit_code: if success { 0 } else { 3 },
        duration: Duration::from_millis(2500),
        success,
    }
}

// ---------------------------------------------------------------- Slack tests

#[tokio::test]
async fn slack_posts_one_attachment_as_documented() {
    let (logs, _guard) = Logs::start();
    let peer = SlackPeer::start().await;
    let n = peer.notifier("slack://deploys?title=shop&url=https://ci.test/run/1");
    n.send(&msg::downloaded("v1.2.0")).await;
    let got = peer.take();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.path, "/api/chat.postMessage");
    assert_eq!(r.authorization, format!("Bearer {TOKEN}"));
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    let b = &r.body;
    assert_eq!(b["channel"], "deploys");
    assert_eq!(b["username"], "Dewy");
    assert_eq!(b["icon_url"], ICON_URL);
    assert!(b.get("thread_ts").is_none() && b.get("reply_broadcast").is_none());
    let atts = b["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 1);
    let a = &atts[0];
    let host = hostname();
    assert_eq!(a["text"], "Downloaded artifact for `v1.2.0`");
    assert_eq!(a["color"], host_color(&host));
    assert_eq!(a["footer"], format!("<https://ci.test/run/1|shop>/{host}"));
    assert_eq!(a["footer_icon"], FOOTER_ICON);
    assert!(a["ts"].as_i64().unwrap() > 1_600_000_000);

    n.send_important(&msg::server_started("v1.2.0", false))
        .await;
    assert_eq!(peer.texts(), ["Server started for `v1.2.0` without port"]);
    assert!(
        !logs.text().contains("notification failed"),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn slack_hook_result_attachment() {
    let peer = SlackPeer::start().await;
    let n = peer.notifier("slack://deploys");
    n.send_hook_result(&hook(HookKind::BeforeDeploy, false))
        .await;
    let got = peer.take();
    let a = &got[0].body["attachments"][0];
    assert_eq!(a["title"], "Before Deploy Hook");
    assert_eq!(a["text"], "```\n./migrate.sh\n```");
    assert_eq!(a["color"], "#dd0000");
    assert_eq!(a["footer"], hostname());
    let fields: Vec<(String, String, bool)> = a["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().into(),
                f["value"].as_str().unwrap().into(),
                f["short"].as_bool().unwrap(),
            )
        })
        .collect();
    let f = |t: &str, v: &str, s| (t.to_string(), v.to_string(), s);
    assert_eq!(
        fields,
        [
            f("Stdout", "```\nmigrating\ndone\n```", false),
            f("Stderr", "```\ntable locked\n```", false),
            f("Exit Code", "`3`", true),
            f("Duration", "2.5s", true),
        ]
    );
    n.send_hook_result(&hook(HookKind::AfterDeploy, true)).await;
    let got = peer.take();
    assert_eq!(got[0].body["attachments"][0]["color"], "#36a64f");
    assert_eq!(got[0].body["attachments"][0]["title"], "After Deploy Hook");
}

#[tokio::test]
async fn slack_error_limiting_across_a_sequence() {
    let (logs, _guard) = Logs::start();
    let peer = SlackPeer::start().await;
    let n = peer.notifier("slack://deploys");
    n.send("before").await;
    assert_eq!(peer.texts(), ["before"]);

    n.send_error("registry unreachable").await;
    n.send_error("registry unreachable").await;
    n.send_error("still unreachable").await;
    n.send_error("fourth").await;
    assert_eq!(
        peer.texts(),
        [
            "Error occurred (count: 1): registry unreachable".to_string(),
            "Error occurred (count: 2): registry unreachable".to_string(),
            format!("{WARNING}\n\nError occurred (count: 3): still unreachable"),
        ]
    );
    // While errors are counted nothing else goes out, important or not.
    n.send("ordinary").await;
    n.send_important("important").await;
    n.send_hook_result(&hook(HookKind::AfterDeploy, false))
        .await;
    assert!(peer.take().is_empty());

    n.reset_errors();
    assert!(logs.text().contains("Error count reset"), "{}", logs.text());
    n.send("back to normal").await;
    n.send_important("important again").await;
    n.send_error("new failure").await;
    assert_eq!(
        peer.texts(),
        [
            "back to normal",
            "important again",
            "Error occurred (count: 1): new failure"
        ]
    );
    // A reset with nothing counted says nothing.
    n.reset_errors();
    n.reset_errors();
    assert_eq!(logs.text().matches("Error count reset").count(), 2);
    assert!(
        logs.text().contains("fourth"),
        "the 4th error is still logged"
    );
}

#[tokio::test]
async fn slack_quiet_mode() {
    let peer = SlackPeer::start().await;
    let n = peer.notifier("slack://deploys?quiet=true");
    n.send(&msg::downloaded("v2")).await;
    n.send_hook_result(&hook(HookKind::AfterDeploy, true)).await;
    assert!(peer.take().is_empty());
    n.send_important(&msg::server_restarted("v2", true)).await;
    n.send_hook_result(&hook(HookKind::AfterDeploy, false))
        .await;
    n.send_error("boom").await;
    let got = peer.take();
    let texts: Vec<&str> = got
        .iter()
        .map(|r| r.body["attachments"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "Server restarted for `v2`",
            "```\n./migrate.sh\n```",
            "Error occurred (count: 1): boom"
        ]
    );
}

#[tokio::test]
async fn slack_threads_follow_the_release() {
    let peer = SlackPeer::start().await;
    let n = peer.notifier("slack://deploys?thread=true");
    let with = tempfile::tempdir().unwrap();
    std::fs::write(with.path().join(".slack-thread-ts"), "1700000000.123456\n").unwrap();
    let without = tempfile::tempdir().unwrap();

    n.on_deploy(with.path());
    n.send("in the thread").await;
    n.send_error("failed").await;
    n.reset_errors();
    n.on_deploy(without.path());
    n.send("top level").await;
    let got = peer.take();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].body["thread_ts"], "1700000000.123456");
    assert!(got[0].body.get("reply_broadcast").is_none());
    assert_eq!(got[1].body["thread_ts"], "1700000000.123456");
    assert_eq!(got[1].body["reply_broadcast"], true);
    assert!(got[2].body.get("thread_ts").is_none());

    // Without thread=true the file is not read.
    let n = peer.notifier("slack://deploys");
    n.on_deploy(with.path());
    n.send("no thread").await;
    assert!(peer.take()[0].body.get("thread_ts").is_none());
}

#[tokio::test]
async fn slack_thread_of_the_running_release_at_start() {
    let peer = SlackPeer::start().await;
    let workdir = tempfile::tempdir().unwrap();
    let release = workdir.path().join("releases/20250101T000000Z");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join(".slack-thread-ts"), " 1699999999.000042 \n").unwrap();
    std::os::unix::fs::symlink(&release, workdir.path().join("current")).unwrap();
    let env = env_of(vec![
        ("SLACK_TOKEN", TOKEN.into()),
        ("SLACK_API_URL", peer.api_url()),
    ]);
    let n = Notifier::from_url_in("slack://deploys?thread=1", &env, workdir.path()).unwrap();
    n.send(&msg::started("2.19.0", "server")).await;
    let got = peer.take();
    assert_eq!(got[0].body["thread_ts"], "1699999999.000042");
    assert_eq!(
        got[0].body["attachments"][0]["text"],
        "Automatic shipping started by *Dewy* (v2.19.0: server)"
    );
}

#[tokio::test]
async fn slack_api_errors_are_logged_not_returned() {
    let (logs, _guard) = Logs::start();
    let peer = SlackPeer::start().await;
    let n = peer.notifier("slack://nowhere");
    n.send("lost").await;
    assert_eq!(peer.take().len(), 1);
    let text = logs.text();
    assert!(
        text.contains("notification failed: slack: channel_not_found"),
        "{text}"
    );

    // A wrong token: Slack's invalid_auth, and the token never in the logs.
    let env = env_of(vec![
        ("SLACK_TOKEN", "xoxb-wrong-secret".into()),
        ("SLACK_API_URL", peer.api_url()),
    ]);
    let n = Notifier::from_url("slack://deploys", &env).unwrap();
    n.send("x").await;
    let text = logs.text();
    assert!(
        text.contains("notification failed: slack: invalid_auth"),
        "{text}"
    );
    assert!(!text.contains("xoxb-"), "{text}");

    // Nobody listening: a transport error, logged.
    let port = e2e::free_port();
    let env = env_of(vec![
        ("SLACK_TOKEN", TOKEN.into()),
        ("SLACK_API_URL", format!("http://127.0.0.1:{port}/api")),
    ]);
    let n = Notifier::from_url("slack://deploys", &env).unwrap();
    n.send("x").await;
    assert!(logs.text().matches("notification failed").count() >= 3);
    assert!(!logs.text().contains(TOKEN));
}

#[tokio::test]
async fn slack_rate_limit_is_waited_out_once_within_bounds() {
    let (logs, _guard) = Logs::start();
    let peer = SlackPeer::start().await;
    let n = peer.notifier("slack://deploys");
    let limited = || json!({"ok": false, "error": "ratelimited"});
    peer.script(
        StatusCode::TOO_MANY_REQUESTS,
        vec![("retry-after", "1".into())],
        limited(),
    );
    n.send("after a pause").await;
    let got = peer.take();
    assert_eq!(got.len(), 2, "one retry after Retry-After");
    assert_eq!(got[0].body, got[1].body);
    assert!(!logs.text().contains("notification failed"));

    // A wait longer than a deploy should be held up: dropped at once, and said so.
    peer.script(
        StatusCode::TOO_MANY_REQUESTS,
        vec![("retry-after", "3600".into())],
        limited(),
    );
    n.send("dropped").await;
    assert_eq!(peer.take().len(), 1);
    assert!(
        logs.text()
            .contains("rate limited (HTTP 429, Retry-After 3600s)"),
        "{}",
        logs.text()
    );
}

// ---------------------------------------------------------------- dispatch

#[test]
fn from_url_dispatch_and_errors() {
    let none = |_: &str| None;
    assert!(Notifier::from_url("", &none).is_ok());
    let err = |url: &str, env: &dyn Fn(&str) -> Option<String>| match Notifier::from_url(url, env) {
        Ok(_) => panic!("{url} accepted"),
        Err(e) => e,
    };
    assert_eq!(
        err("discord://x", &none),
        "unsupported notifier scheme \"discord\": use slack:// or mail://"
    );
    assert_eq!(
        err("deploys", &none),
        "unsupported notifier scheme \"deploys\": use slack:// or mail://"
    );
    assert!(err("slack://deploys", &none).contains("SLACK_TOKEN is required"));
    let token = env_of(vec![("SLACK_TOKEN", TOKEN.into())]);
    assert_eq!(
        err("slack://deploys?colour=red", &token),
        "slack notifier: schema: invalid path \"colour\""
    );
    assert!(Notifier::from_url("slack://deploys", &token).is_ok());
    let spaced = env_of(vec![("SLACK_TOKEN", "xoxb-1 2".into())]);
    assert_eq!(
        err("slack://deploys", &spaced),
        "slack notifier: SLACK_TOKEN holds spaces or control characters"
    );
    assert!(
        err("mail://mx.example.com/ops@example.com", &none)
            .starts_with("mail notifier: mail username is required")
    );
    let e = err(
        "smtp://mx.example.com/not-an-address?username=u&password=p&from=a@example.com",
        &none,
    );
    assert!(
        e.starts_with("mail notifier: to address \"not-an-address\""),
        "{e}"
    );
    assert!(!e.contains("password=p"));
}

// ---------------------------------------------------------------- SMTP peer

use e2e::smtp::Smtpd;

fn footer_tail() -> &'static str {
    "\n\n--\nDewy: https://github.com/linyows/dewy"
}

// ---------------------------------------------------------------- mail tests

#[tokio::test]
async fn mail_is_delivered_with_auth() {
    let (logs, _guard) = Logs::start();
    let smtpd = Smtpd::start("bot", "s3cret pass");
    let url = format!(
        "mail://127.0.0.1:{}/ops@example.com?username=bot&password=s3cret+pass&from=dewy@example.com&subject=Deploys",
        smtpd.port
    );
    let workdir = tempfile::tempdir().unwrap();
    let n = Notifier::from_url_in(&url, &|_| None, workdir.path()).unwrap();
    n.send(&msg::server_started("v3", true)).await;
    n.send_hook_result(&hook(HookKind::BeforeDeploy, false))
        .await;
    assert!(
        !logs.text().contains("notification failed"),
        "{}",
        logs.text()
    );

    let m = smtpd.find("Deploys");
    assert_eq!(m.len(), 1, "{:?}", smtpd.messages());
    let m = &m[0];
    assert_eq!(m["From"], "dewy@example.com");
    assert_eq!(m["To"], "ops@example.com");
    assert_eq!(m["X-MailFrom"], "dewy@example.com");
    assert_eq!(m["X-RcptTo"], "ops@example.com");
    let body = m["body"].as_str().unwrap().to_string();
    // The user's full name as getent sees it (GECOS up to the first comma).
    let gecos = Command::new("sh")
        .args(["-c", "getent passwd $(id -u) | cut -d: -f5 | cut -d, -f1"])
        .output()
        .unwrap();
    let user = String::from_utf8(gecos.stdout).unwrap();
    assert_eq!(
        body,
        format!(
            "Server started for `v3`\n\nHost: {}\nUser: {}\nWorking dir: {}{}",
            hostname(),
            user.trim_end_matches('\n'),
            workdir.path().display(),
            footer_tail()
        )
    );

    let m = smtpd.find("Dewy Before Deploy Hook FAILED");
    assert_eq!(m.len(), 1, "{:?}", smtpd.messages());
    let body = m[0]["body"].as_str().unwrap().to_string();
    assert!(
        body.starts_with(
            "Before Deploy Hook FAILED\n\nCommand: ./migrate.sh\nExit Code: 3\nDuration: 2.5s\n\nSTDOUT:\nmigrating\ndone\n\nSTDERR:\ntable locked\n\nHost: "
        ),
        "{body}"
    );
    assert!(body.ends_with(footer_tail()), "{body}");
}

#[tokio::test]
async fn mail_env_fallbacks_limits_and_quiet() {
    let smtpd = Smtpd::start("bot@example.com", "pw");
    let env = env_of(vec![
        ("MAIL_USERNAME", "bot@example.com".into()),
        ("MAIL_PASSWORD", "pw".into()),
    ]);
    // smtp:// is the same; `from` defaults to the username; the default subject.
    let url = format!("smtp://127.0.0.1:{}/ops@example.com?quiet=true", smtpd.port);
    let n = Notifier::from_url(&url, &env).unwrap();
    n.send("quiet drops this").await;
    n.send_hook_result(&hook(HookKind::AfterDeploy, true)).await;
    n.send_important("kept in quiet mode").await;
    n.send_hook_result(&hook(HookKind::AfterDeploy, false))
        .await;
    for _ in 0..4 {
        n.send_error("disk full").await;
    }
    n.send_important("suppressed while failing").await;

    let all = smtpd.messages();
    let bodies: Vec<String> = all
        .iter()
        .filter(|m| m["Subject"] == "Dewy Notification")
        .map(|m| {
            let b = m["body"].as_str().unwrap().to_string();
            b.split("\n\nHost: ").next().unwrap().to_string()
        })
        .collect();
    let mut bodies = bodies;
    bodies.sort();
    let mut expected = vec![
        "kept in quiet mode".to_string(),
        "Error occurred (count: 1): disk full".to_string(),
        "Error occurred (count: 2): disk full".to_string(),
        format!("{WARNING}\n\nError occurred (count: 3): disk full"),
    ];
    expected.sort();
    assert_eq!(bodies, expected, "{all:?}");
    assert!(all.iter().all(|m| m["From"] == "bot@example.com"));
    assert_eq!(
        smtpd.find("Dewy After Deploy Hook FAILED").len(),
        1,
        "{all:?}"
    );
    assert!(smtpd.find("Dewy After Deploy Hook SUCCESS").is_empty());
    assert_eq!(all.len(), 5, "{all:?}");
}

#[tokio::test]
async fn mail_with_a_wrong_password_is_logged_not_sent() {
    let (logs, _guard) = Logs::start();
    let smtpd = Smtpd::start("bot", "right");
    let url = format!(
        "mail://127.0.0.1:{}/ops@example.com?username=bot&password=wrong-secret&from=dewy@example.com",
        smtpd.port
    );
    let n = Notifier::from_url(&url, &|_| None).unwrap();
    n.send("never arrives").await;
    assert!(smtpd.messages().is_empty());
    let text = logs.text();
    assert!(
        text.contains("notification failed: mail: permanent error (535)"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret"), "{text}");
}
