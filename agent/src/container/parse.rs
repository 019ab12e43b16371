//! What the docker and podman CLIs print, read without I/O: `port`, `inspect`, `image inspect`,
//! `images --format`, and the `run` arguments and login credentials Dewy uses (spec 9.2, 9.3).
//! Both runtimes' spellings are accepted (docker's `/name`, podman's `name`; podman's extra
//! fields are ignored).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::admin::ContainerInfo;

/// The labels Dewy puts on its containers.
pub const LABEL_MANAGED: &str = "dewy.managed";
pub const LABEL_APP: &str = "dewy.app";
pub const LABEL_DEPLOYED_AT: &str = "dewy.deployed_at";
pub const LABEL_REPLICA: &str = "dewy.replica";
pub const LABEL_VERSION: &str = "dewy.version";

/// The app name (label `dewy.app`): `--name`, else the last path segment of the registry URL
/// without `?…` and `:…`, else `app`.
pub fn app_name(name: &str, registry: &str) -> String {
    if !name.is_empty() {
        return name.to_string();
    }
    let no_query = registry.split('?').next().unwrap_or_default();
    let no_scheme = no_query.split_once("://").map_or(no_query, |(_, r)| r);
    let last = no_scheme
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let last = last.split(':').next().unwrap_or_default();
    if last.is_empty() || !no_scheme.contains('/') {
        "app".to_string()
    } else {
        last.to_string()
    }
}

/// `--name X` / `--name=X` taken out of the extra arguments: Dewy names the replicas
/// `<X>-<unix>-<i>` (a second `--name` would make the runtime refuse the run).
pub fn split_name(extra: &[String]) -> (Option<String>, Vec<String>) {
    let mut name = None;
    let mut rest = Vec::with_capacity(extra.len());
    let mut it = extra.iter();
    while let Some(a) = it.next() {
        if a == "--name" {
            if let Some(v) = it.next() {
                name = Some(v.clone());
            }
        } else if let Some(v) = a.strip_prefix("--name=") {
            name = Some(v.to_string());
        } else {
            rest.push(a.clone());
        }
    }
    (name, rest)
}

/// Whether the extra arguments choose the user (`-u`, `-uX`, `--user`, `--user=X`).
pub fn has_user(extra: &[String]) -> bool {
    extra
        .iter()
        .any(|a| a == "--user" || a.starts_with("--user=") || a.starts_with("-u"))
}

/// What one replica is started with.
pub struct RunSpec<'a> {
    pub name: &'a str,
    pub app: &'a str,
    pub deployed_at: &'a str,
    pub replica: usize,
    pub version: &'a str,
    /// Unique container ports, each published on `127.0.0.1::<port>`.
    pub ports: &'a [u16],
    /// Extra arguments without `--name`.
    pub extra: &'a [String],
    /// `uid:gid` unless the extra arguments set the user.
    pub user: Option<String>,
    pub image: &'a str,
    pub cmd: &'a [String],
}

/// The `run` argument vector of spec 9.3 step 5.
pub fn run_args(s: &RunSpec<'_>) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), s.name.into()];
    for (k, v) in [
        (LABEL_MANAGED, "true".to_string()),
        (LABEL_APP, s.app.to_string()),
        (LABEL_DEPLOYED_AT, s.deployed_at.to_string()),
        (LABEL_REPLICA, s.replica.to_string()),
        (LABEL_VERSION, s.version.to_string()),
    ] {
        a.push("--label".into());
        a.push(format!("{k}={v}"));
    }
    for p in s.ports {
        a.push("-p".into());
        a.push(format!("127.0.0.1::{p}"));
    }
    a.extend(s.extra.iter().cloned());
    if let Some(u) = &s.user {
        a.push("--user".into());
        a.push(u.clone());
    }
    a.push(s.image.into());
    a.extend(s.cmd.iter().cloned());
    a
}

/// The host port of `<rt> port <id> <port>/tcp`: the first line, `host:port` (`[::]:port`,
/// `0.0.0.0:port` and podman's `127.0.0.1:port` alike).
pub fn port_line(out: &str) -> Option<u16> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let (_, port) = line.rsplit_once(':')?;
    port.trim().parse().ok().filter(|p| *p != 0)
}

/// The single `/tcp` port of `image inspect`'s `Config.ExposedPorts` (auto-detection of a
/// `-p proxy` or `-p proxy:0` mapping).
pub fn exposed_tcp_port(inspect_json: &str) -> Result<u16, String> {
    let v: Value =
        serde_json::from_str(inspect_json).map_err(|e| format!("image inspect output: {e}"))?;
    let first = match &v {
        Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    let exposed = first
        .pointer("/Config/ExposedPorts")
        .and_then(Value::as_object);
    let ports: Vec<u16> = exposed
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_suffix("/tcp"))
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    match ports.as_slice() {
        [p] => Ok(*p),
        [] => Err("the image exposes no TCP port: give -p proxy:container".into()),
        many => Err(format!(
            "the image exposes {} TCP ports ({many:?}): give -p proxy:container",
            many.len()
        )),
    }
}

/// Whether pull output means the registry wants (other) credentials: re-login and retry once.
pub fn is_auth_error(out: &str) -> bool {
    let l = out.to_ascii_lowercase();
    [
        "unauthorized",
        "authentication required",
        "denied",
        "access forbidden",
        "not authorized",
        "login required",
    ]
    .iter()
    .any(|w| l.contains(w))
}

/// Who `<rt> login` is run as for `registry` (spec 9.3 step 3); `None` when the environment
/// has no credentials for it.
pub fn login_credentials(
    registry: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(String, String)> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let host = registry.split(':').next().unwrap_or_default();
    if host.contains("ghcr.io") {
        return get("GITHUB_TOKEN").map(|t| ("token".into(), t));
    }
    if host.contains(".ecr.") && host.ends_with(".amazonaws.com") {
        return get("AWS_ECR_PASSWORD").map(|t| ("AWS".into(), t));
    }
    if host == "gcr.io" || host.ends_with(".gcr.io") || host.ends_with("-docker.pkg.dev") {
        return get("GCR_TOKEN").map(|t| ("_json_key".into(), t));
    }
    Some((get("DOCKER_USERNAME")?, get("DOCKER_PASSWORD")?))
}

/// One line of `images --format "{{.ID}}|{{.Repository}}|{{.Tag}}|{{.CreatedAt}}|{{.Size}}"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLine {
    pub id: String,
    pub created: String,
}

pub fn image_lines(out: &str) -> Vec<ImageLine> {
    let mut seen = std::collections::HashSet::new();
    out.lines()
        .filter_map(|l| {
            let mut f = l.trim().split('|');
            let id = f.next()?.trim();
            let (_repo, _tag) = (f.next()?, f.next()?);
            let created = f.next()?.trim();
            (!id.is_empty()).then(|| ImageLine {
                id: id.to_string(),
                created: created.to_string(),
            })
        })
        .filter(|i| seen.insert(i.id.clone()))
        .collect()
}

/// The images to remove so that the `keep` newest remain. Both runtimes print `CreatedAt` as
/// `YYYY-MM-DD HH:MM:SS[.fff] ±zzzz TZ` in one zone, so the text orders by time; `in_use`
/// (images of running replicas) is never removed, whatever its age.
pub fn images_to_remove(images: &[ImageLine], keep: usize, in_use: &[String]) -> Vec<String> {
    let mut sorted: Vec<&ImageLine> = images.iter().collect();
    sorted.sort_by(|a, b| b.created.cmp(&a.created));
    sorted
        .into_iter()
        .skip(keep)
        .filter(|i| !in_use.iter().any(|u| same_image(u, &i.id)))
        .map(|i| i.id.clone())
        .collect()
}

/// Image IDs compare by prefix: `images` prints 12 hex digits, `inspect` the full
/// `sha256:`-prefixed ID.
fn same_image(a: &str, b: &str) -> bool {
    let a = a.trim_start_matches("sha256:");
    let b = b.trim_start_matches("sha256:");
    !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a))
}

/// One container as `<rt> inspect` describes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inspected {
    pub id: String,
    pub name: String,
    /// The image reference it was started from.
    pub image: String,
    /// The image ID.
    pub image_id: String,
    /// created, running, paused, restarting, exited, dead.
    pub state: String,
    pub started_at: String,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub restart_count: i64,
    pub labels: BTreeMap<String, String>,
    /// Container port (tcp) → published host address (`127.0.0.1:49153`).
    pub ports: BTreeMap<u16, (String, u16)>,
}

impl Inspected {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map_or("", String::as_str)
    }

    /// What `/api/containers` shows (`ip_port`: the first published port).
    pub fn info(&self) -> ContainerInfo {
        let ip_port = self
            .ports
            .values()
            .next()
            .map(|(ip, p)| format!("{}:{p}", if ip.is_empty() { "0.0.0.0" } else { ip }))
            .unwrap_or_default();
        ContainerInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
            status: self.state.clone(),
            ip_port,
            started_at: self.started_at.clone(),
            deployed_at: self.label(LABEL_DEPLOYED_AT).to_string(),
            labels: self.labels.clone(),
        }
    }
}

/// `<rt> inspect <id>...` output: a JSON array of containers.
pub fn inspect(out: &str) -> Result<Vec<Inspected>, String> {
    let v: Value = serde_json::from_str(out).map_err(|e| format!("inspect output: {e}"))?;
    let Value::Array(items) = v else {
        return Err("inspect output is not a JSON array".into());
    };
    Ok(items.iter().map(inspected).collect())
}

fn inspected(c: &Value) -> Inspected {
    let s = |p: &str| c.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let labels = c
        .pointer("/Config/Labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let mut ports = BTreeMap::new();
    if let Some(m) = c
        .pointer("/NetworkSettings/Ports")
        .and_then(Value::as_object)
    {
        for (k, bindings) in m {
            let Some(cport) = k.strip_suffix("/tcp").and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            let first = bindings.as_array().and_then(|b| {
                b.iter().find_map(|b| {
                    let port = b.get("HostPort")?.as_str()?.parse::<u16>().ok()?;
                    let ip = b.get("HostIp").and_then(Value::as_str).unwrap_or_default();
                    Some((ip.to_string(), port))
                })
            });
            if let Some(hp) = first {
                ports.insert(cport, hp);
            }
        }
    }
    let image = [s("/Config/Image"), s("/ImageName")]
        .into_iter()
        .find(|i| !i.is_empty())
        .unwrap_or_default();
    Inspected {
        id: s("/Id").to_string(),
        name: s("/Name").trim_start_matches('/').to_string(),
        image: image.to_string(),
        image_id: s("/Image").to_string(),
        state: s("/State/Status").to_string(),
        started_at: s("/State/StartedAt").to_string(),
        exit_code: c
            .pointer("/State/ExitCode")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        oom_killed: c
            .pointer("/State/OOMKilled")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        restart_count: c
            .pointer("/RestartCount")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        labels,
        ports,
    }
}

/// `ps -q` / `--format {{.ID}}` output: one ID a line.
pub fn ids(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Seconds since the epoch as Go's `time.Parse(RFC3339Nano)` would read `StartedAt`; docker
/// and podman both print RFC 3339 there.
pub fn rfc3339_seconds(t: &str) -> Option<f64> {
    let dt = common::timefmt::parse_rfc3339(t)?;
    (dt.unix_timestamp() > 0).then(|| dt.unix_timestamp_nanos() as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn app_name_rules() {
        assert_eq!(app_name("web", "img://h/x/y"), "web");
        assert_eq!(
            app_name("", "img://ghcr.io/o/myapp?pre-release=true"),
            "myapp"
        );
        assert_eq!(app_name("", "img://127.0.0.1:5000/demo/app:v1"), "app");
        assert_eq!(app_name("", "img://localhost:5000/svc"), "svc");
        assert_eq!(app_name("", "img://host"), "app");
        assert_eq!(app_name("", ""), "app");
    }

    #[test]
    fn name_is_taken_out_of_extra_args_and_user_detected() {
        let (n, rest) = split_name(&s(&["-e", "A=1", "--name", "web", "-v", "/a:/b"]));
        assert_eq!(n.as_deref(), Some("web"));
        assert_eq!(rest, s(&["-e", "A=1", "-v", "/a:/b"]));
        let (n, rest) = split_name(&s(&["--name=w2"]));
        assert_eq!((n.as_deref(), rest.len()), (Some("w2"), 0));
        assert!(has_user(&s(&["--user", "1:1"])));
        assert!(has_user(&s(&["--user=1"])));
        assert!(has_user(&s(&["-u1000"])));
        assert!(!has_user(&s(&["-e", "USER=x"])));
    }

    #[test]
    fn run_args_are_dewys() {
        let extra = s(&["-e", "A=1"]);
        let cmd = s(&["serve", "--fast"]);
        let a = run_args(&RunSpec {
            name: "app-1700000000-0",
            app: "app",
            deployed_at: "2026-01-01T00:00:00Z",
            replica: 0,
            version: "v1.0.0",
            ports: &[8080, 9090],
            extra: &extra,
            user: Some("1000:1000".into()),
            image: "h:5000/app:v1.0.0",
            cmd: &cmd,
        });
        assert_eq!(
            a,
            s(&[
                "run",
                "-d",
                "--name",
                "app-1700000000-0",
                "--label",
                "dewy.managed=true",
                "--label",
                "dewy.app=app",
                "--label",
                "dewy.deployed_at=2026-01-01T00:00:00Z",
                "--label",
                "dewy.replica=0",
                "--label",
                "dewy.version=v1.0.0",
                "-p",
                "127.0.0.1::8080",
                "-p",
                "127.0.0.1::9090",
                "-e",
                "A=1",
                "--user",
                "1000:1000",
                "h:5000/app:v1.0.0",
                "serve",
                "--fast",
            ])
        );
    }

    #[test]
    fn port_output_of_both_runtimes() {
        assert_eq!(port_line("127.0.0.1:40747\n"), Some(40747));
        assert_eq!(port_line("0.0.0.0:49153\n[::]:49153\n"), Some(49153));
        assert_eq!(port_line("\n"), None);
        assert_eq!(port_line("Error: no such container"), None);
    }

    #[test]
    fn exposed_ports() {
        let one = r#"[{"Config":{"ExposedPorts":{"8080/tcp":{},"53/udp":{}}}}]"#;
        assert_eq!(exposed_tcp_port(one), Ok(8080));
        assert!(exposed_tcp_port(r#"[{"Config":{}}]"#).is_err());
        let two = r#"[{"Config":{"ExposedPorts":{"80/tcp":{},"443/tcp":{}}}}]"#;
        assert!(exposed_tcp_port(two).unwrap_err().contains("2 TCP ports"));
        assert!(exposed_tcp_port("not json").is_err());
    }

    #[test]
    fn auth_errors() {
        assert!(is_auth_error("Error: ... 401 Unauthorized"));
        assert!(is_auth_error("requested access to the resource is denied"));
        assert!(!is_auth_error("manifest unknown"));
    }

    #[test]
    fn login_credentials_by_registry() {
        let env = |k: &str| match k {
            "GITHUB_TOKEN" => Some("gh".to_string()),
            "AWS_ECR_PASSWORD" => Some("aws".to_string()),
            "GCR_TOKEN" => Some("g".to_string()),
            "DOCKER_USERNAME" => Some("u".to_string()),
            "DOCKER_PASSWORD" => Some("p".to_string()),
            _ => None,
        };
        let c = |r: &str| login_credentials(r, &env);
        assert_eq!(c("ghcr.io"), Some(("token".into(), "gh".into())));
        assert_eq!(
            c("1234.dkr.ecr.us-east-1.amazonaws.com"),
            Some(("AWS".into(), "aws".into()))
        );
        assert_eq!(c("gcr.io"), Some(("_json_key".into(), "g".into())));
        assert_eq!(
            c("europe-docker.pkg.dev"),
            Some(("_json_key".into(), "g".into()))
        );
        assert_eq!(c("127.0.0.1:5000"), Some(("u".into(), "p".into())));
        assert_eq!(login_credentials("127.0.0.1:5000", &|_| None), None);
        assert_eq!(login_credentials("ghcr.io", &|_| None), None);
    }

    #[test]
    fn image_gc_keeps_the_newest_and_those_in_use() {
        let out = "aaa|r|v1|2026-01-01 10:00:00 +0000 UTC|1MB\n\
                   bbb|r|v2|2026-01-02 10:00:00 +0000 UTC|1MB\n\
                   bbb|r|latest|2026-01-02 10:00:00 +0000 UTC|1MB\n\
                   ccc|r|v3|2026-01-03 10:00:00 +0000 UTC|1MB\n\
                   garbage\n";
        let imgs = image_lines(out);
        assert_eq!(imgs.len(), 3);
        assert_eq!(images_to_remove(&imgs, 1, &[]), s(&["bbb", "aaa"]));
        assert_eq!(
            images_to_remove(&imgs, 1, &["sha256:aaa0123".into()]),
            s(&["bbb"])
        );
        assert!(images_to_remove(&imgs, 7, &[]).is_empty());
    }

    #[test]
    fn inspect_docker_and_podman() {
        let docker = r#"[{"Id":"abc","Name":"/app-1-0","Image":"sha256:img","RestartCount":2,
          "State":{"Status":"running","StartedAt":"2026-01-01T00:00:01.5Z","ExitCode":0,"OOMKilled":false},
          "Config":{"Image":"h/app:v1","Labels":{"dewy.app":"app","dewy.deployed_at":"2026-01-01T00:00:00Z"}},
          "NetworkSettings":{"Ports":{"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":"49153"}],"9/udp":null}}}]"#;
        let c = &inspect(docker).unwrap()[0];
        assert_eq!(c.name, "app-1-0");
        assert_eq!(c.image, "h/app:v1");
        assert_eq!(c.restart_count, 2);
        assert_eq!(c.ports.get(&8080), Some(&("127.0.0.1".to_string(), 49153)));
        let info = c.info();
        assert_eq!(info.ip_port, "127.0.0.1:49153");
        assert_eq!(info.deployed_at, "2026-01-01T00:00:00Z");
        assert_eq!(info.status, "running");
        assert_eq!(rfc3339_seconds(&c.started_at), Some(1767225601.5));

        let podman = r#"[{"Id":"def","Name":"app-1-1","ImageName":"h/app:v1","Image":"img",
          "State":{"Status":"exited","StartedAt":"2026-01-01T00:00:01.000000001Z","ExitCode":137,"OOMKilled":true},
          "Config":{"Labels":null},"NetworkSettings":{"Ports":{}}}]"#;
        let c = &inspect(podman).unwrap()[0];
        assert_eq!((c.name.as_str(), c.image.as_str()), ("app-1-1", "h/app:v1"));
        assert_eq!((c.exit_code, c.oom_killed), (137, true));
        assert!(c.labels.is_empty() && c.ports.is_empty());
        assert_eq!(rfc3339_seconds("0001-01-01T00:00:00Z"), None);
        assert!(inspect("{}").is_err());
    }

    #[test]
    fn ids_lines() {
        assert_eq!(ids("a\n\n b \n"), s(&["a", "b"]));
    }
}
