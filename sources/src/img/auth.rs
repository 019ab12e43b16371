//! Who we are to an OCI registry: Basic credentials (environment, then Docker's config file)
//! and the bearer-token exchange a `401` asks for (distribution's token auth).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::SourceError;
use crate::http::{self, HttpClient, Url};

/// A token answer or Docker config file larger than this is refused.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;
const MAX_DOCKER_CONFIG: u64 = 1 << 20;

/// Basic credentials for the registry API (and for the token realm).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// Dewy's order first — `DOCKER_USERNAME`/`DOCKER_PASSWORD`, then `GITHUB_TOKEN` as user
    /// `token` for hosts containing `ghcr.io` — and, where Dewy would go anonymous, the
    /// credentials Docker's config file (`$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`) gives for `host`, as the docker CLI reads it: the credential
    /// helper of `credHelpers[host]` or `credsStore` (`docker-credential-<name> get`, found in
    /// `PATH`), then the `auths` entry.
    pub fn lookup(
        host: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Credentials>, SourceError> {
        let var = |k: &str| env(k).filter(|v| !v.is_empty());
        if let (Some(username), Some(password)) = (var("DOCKER_USERNAME"), var("DOCKER_PASSWORD")) {
            return Ok(Some(Credentials { username, password }));
        }
        if host.contains("ghcr.io")
            && let Some(token) = var("GITHUB_TOKEN")
        {
            return Ok(Some(Credentials {
                username: "token".into(),
                password: token,
            }));
        }
        let Some(path) = docker_config_path(env) else {
            return Ok(None);
        };
        let text = match read_small(&path) {
            Ok(Some(text)) => text,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(SourceError::Permanent(format!(
                    "Docker config {}: {e}",
                    path.display()
                )));
            }
        };
        let config_err =
            |e: String| SourceError::Permanent(format!("Docker config {}: {e}", path.display()));
        if let Some(name) = helper_for(&text, host).map_err(config_err)? {
            let found = run_helper(&name, host, env).map_err(|e| {
                SourceError::Permanent(format!(
                    "Docker credential helper docker-credential-{name} for {host}: {e}"
                ))
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        from_docker_config(&text, host).map_err(config_err)
    }
}

/// How long a credential helper may take (it may talk to a keychain or a cloud API).
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The credential helper Docker would ask for `host`: `credHelpers[host]`, else `credsStore`.
fn helper_for(json: &[u8], host: &str) -> Result<Option<String>, String> {
    let config: DockerConfig = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let wanted = hub_alias(host);
    let mut keys: Vec<&String> = config.cred_helpers.keys().collect();
    keys.sort();
    let name = keys
        .into_iter()
        .find(|k| hub_alias(key_host(k)) == wanted)
        .map(|k| config.cred_helpers[k].clone())
        .or(config.creds_store)
        .filter(|n| !n.is_empty());
    if let Some(n) = &name
        && !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!("credential helper name {n:?} is not a plain name"));
    }
    Ok(name)
}

/// The helper's answer for `host` (the credential-helper protocol: the server URL on stdin,
/// `{"ServerURL","Username","Secret"}` on stdout); `None` when it has none.
fn run_helper(
    name: &str,
    host: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, String> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{name}");
    let path = env("PATH").unwrap_or_default();
    let Some(exe) = std::env::split_paths(&path)
        .map(|d| d.join(&program))
        .find(|p| p.is_file())
    else {
        return Err(format!("{program} is not in PATH"));
    };
    // Docker stores Docker Hub under its v1 index URL.
    let server = if hub_alias(host) == "docker.io" {
        "https://index.docker.io/v1/"
    } else {
        host
    };
    let mut child = Command::new(&exe)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout)
            .take(MAX_TOKEN_RESPONSE as u64)
            .read_to_end(&mut out);
        out
    });
    let deadline = std::time::Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {}s", HELPER_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let out = reader.join().unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    if !status.success() {
        // The protocol's "not found" is an error exit with this text on stdout.
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("exited with {status}: {}", text.trim()));
    }
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let a: Answer = serde_json::from_str(&text).map_err(|e| format!("bad answer: {e}"))?;
    if a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: a.username,
        password: a.secret,
    }))
}

fn docker_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(Path::new(&dir).join("config.json"));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(".docker").join("config.json"))
}

/// The file's text, `None` when it does not exist.
fn read_small(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = Vec::new();
    file.take(MAX_DOCKER_CONFIG + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_DOCKER_CONFIG {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_DOCKER_CONFIG} bytes"
        )));
    }
    Ok(Some(text))
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials for `host` in a Docker `config.json`. Keys are matched as Docker does:
/// scheme and path ignored (`https://index.docker.io/v1/` is Docker Hub), Docker Hub's
/// aliases equal.
pub fn from_docker_config(json: &[u8], host: &str) -> Result<Option<Credentials>, String> {
    let config: DockerConfig = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let wanted = hub_alias(host);
    // Exact key first, so `reg:5000` and `https://reg:5000` pick the same entry whatever the
    // map's order.
    let mut keys: Vec<&String> = config.auths.keys().collect();
    keys.sort();
    let Some(key) = keys.into_iter().find(|k| hub_alias(key_host(k)) == wanted) else {
        return Ok(None);
    };
    let entry = &config.auths[key];
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = data_encoding::BASE64
            .decode(auth.trim().as_bytes())
            .map_err(|_| format!("auths[{key:?}].auth is not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| format!("auths[{key:?}].auth is not UTF-8 text"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| format!("auths[{key:?}].auth is not base64 of user:password"))?;
        return Ok(Some(Credentials {
            username: username.into(),
            password: password.into(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

fn key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

fn hub_alias(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased: `bearer`, `basic`.
    pub scheme: String,
    /// Parameter names lowercased.
    pub params: HashMap<String, String>,
}

/// The challenges of one `WWW-Authenticate` value (RFC 9110 11.6.1): `Bearer
/// realm="https://auth",service="reg",scope="repository:a/b:pull,push"`. Commas inside quoted
/// strings belong to the value.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            break;
        }
        let token_end = rest.find([' ', ',', '=']).unwrap_or(rest.len());
        let word = &rest[..token_end];
        let after = rest[token_end..].trim_start_matches([' ', '\t']);
        if let Some(value_part) = after.strip_prefix('=')
            && let Some(current) = out.last_mut()
        {
            // name=value of the current challenge
            let (value, remaining) = parse_value(value_part.trim_start());
            current.params.insert(word.to_ascii_lowercase(), value);
            rest = remaining;
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: HashMap::new(),
            });
            rest = after;
        }
    }
    out
}

fn parse_value(s: &str) -> (String, &str) {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &quoted[i + 1..]),
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s.find([',', ' ']).unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    }
}

/// Dewy's SSRF guard: a token realm on another host than the registry must not resolve to a
/// private, loopback or link-local address (a hostile registry could otherwise make the agent
/// send its credentials to, or probe, the internal network).
pub async fn check_realm(realm: &Url, registry: &Url) -> Result<(), SourceError> {
    let refuse =
        |why: String| SourceError::Permanent(format!("token realm {}: {why}", http::redact(realm)));
    match realm.scheme() {
        "https" => {}
        // Plain http only when the registry itself is plain http (loopback or ?insecure):
        // a TLS registry must not send us, with our credentials, to a clear-text realm.
        "http" if registry.scheme() == "http" => {}
        other => return Err(refuse(format!("scheme {other} not allowed"))),
    }
    let Some(host) = realm.host_str() else {
        return Err(refuse("no host".into()));
    };
    if Some(host) == registry.host_str() {
        return Ok(());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = if let Ok(ip) = bare.parse::<IpAddr>() {
        vec![ip]
    } else {
        let port = realm.port_or_known_default().unwrap_or(443);
        tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| SourceError::Transient {
                message: format!("token realm {}: resolving {bare}: {e}", http::redact(realm)),
                retry_after: None,
            })?
            .map(|a| a.ip())
            .collect()
    };
    if let Some(ip) = addrs.iter().find(|ip| is_internal(ip)) {
        return Err(refuse(format!(
            "host {host} differs from the registry's and resolves to the internal address {ip}"
        )));
    }
    Ok(())
}

/// 127/8, 10/8, 172.16/12, 192.168/16, 169.254/16, ::1, fc00::/7, fe80::/10 (and the
/// IPv4-mapped forms of the IPv4 ones).
pub fn is_internal(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(&IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Runs the bearer exchange for `challenge` (already known to be `Bearer`): `GET
/// realm?service=&scope=` with our Basic credentials if any; the answer's `token` (or
/// `access_token`).
pub async fn fetch_token(
    http_client: &HttpClient,
    registry: &Url,
    challenge: &Challenge,
    default_scope: &str,
    creds: Option<&Credentials>,
) -> Result<String, SourceError> {
    let realm = challenge
        .params
        .get("realm")
        .ok_or_else(|| SourceError::Permanent("Bearer challenge without a realm".into()))?;
    let mut url = Url::parse(realm)
        .map_err(|e| SourceError::Permanent(format!("Bearer realm {realm:?}: {e}")))?;
    check_realm(&url, registry).await?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(service) = challenge.params.get("service") {
            q.append_pair("service", service);
        }
        let scope = challenge
            .params
            .get("scope")
            .map(String::as_str)
            .unwrap_or(default_scope);
        q.append_pair("scope", scope);
    }
    let mut request = http_client.client().get(url);
    if let Some(c) = creds {
        request = request.basic_auth(&c.username, Some(&c.password));
    }
    let response = http_client.send_raw(request).await?;
    if !response.status().is_success() {
        let status = response.status();
        let message = format!(
            "token request to {}: HTTP {status}{}",
            http::redact(response.url()),
            if creds.is_none() && (status == 401 || status == 403) {
                " (no credentials: set DOCKER_USERNAME/DOCKER_PASSWORD or log in with docker)"
            } else {
                ""
            }
        );
        return Err(http::classify_status(status, response.headers(), message));
    }
    let body = http::read_bounded(response, MAX_TOKEN_RESPONSE).await?;
    let answer: TokenAnswer = serde_json::from_slice(&body)
        .map_err(|e| SourceError::Permanent(format!("token answer: {e}")))?;
    answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| SourceError::Permanent("token answer has no token".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_with_quoted_commas() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example/token");
        assert_eq!(c[0].params["service"], "registry.example");
        assert_eq!(c[0].params["scope"], "repository:a/b:pull,push");

        let c = parse_challenges(r#"Basic realm="Registry Realm", Bearer realm="x\"y""#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "Registry Realm");
        assert_eq!(c[1].params["realm"], "x\"y");
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "::ffff:1.1.1.1"] {
            assert!(!is_internal(&ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn realm_guard() {
        let reg = Url::parse("https://registry.example/").unwrap();
        let u = |s: &str| Url::parse(s).unwrap();
        // Same host: allowed even though it is the registry's own (maybe internal) address.
        check_realm(&u("https://registry.example/token"), &reg)
            .await
            .unwrap();
        // Another host on an internal address: refused.
        for realm in [
            "https://127.0.0.1/token",
            "https://[::1]/token",
            "https://169.254.169.254/latest",
            "https://localhost/token",
        ] {
            let e = check_realm(&u(realm), &reg).await.unwrap_err();
            assert!(e.to_string().contains("internal address"), "{realm}: {e}");
        }
        // A TLS registry does not send us to a clear-text realm.
        let e = check_realm(&u("http://auth.example/token"), &reg)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("scheme http"), "{e}");
        check_realm(&u("https://8.8.8.8/token"), &reg)
            .await
            .unwrap();
        // A loopback registry may use a loopback realm (same host, another port).
        let local = Url::parse("http://127.0.0.1:5000/").unwrap();
        check_realm(&u("http://127.0.0.1:5001/token"), &local)
            .await
            .unwrap();
    }

    #[test]
    fn docker_config_auths() {
        let json = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"aHViOnMzY3JldA=="},
            "reg.example:5000":{"auth":"dTpwOndpdGg6Y29sb25z"},
            "https://other.example":{"username":"x","password":"y"},
            "broken.example":{"auth":"***"}
        },"credsStore":"desktop"}"#;
        let get = |h: &str| from_docker_config(json, h);
        assert_eq!(
            get("registry-1.docker.io").unwrap(),
            Some(Credentials {
                username: "hub".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(
            get("reg.example:5000").unwrap(),
            Some(Credentials {
                username: "u".into(),
                password: "p:with:colons".into()
            })
        );
        assert_eq!(
            get("other.example").unwrap(),
            Some(Credentials {
                username: "x".into(),
                password: "y".into()
            })
        );
        assert_eq!(get("reg.example").unwrap(), None, "port is part of the key");
        assert_eq!(get("nowhere.example").unwrap(), None);
        assert!(get("broken.example").unwrap_err().contains("not base64"));
        assert!(from_docker_config(b"{", "x").is_err());
        assert_eq!(from_docker_config(b"{}", "x").unwrap(), None);
    }

    #[test]
    fn lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            br#"{"auths":{"ghcr.io":{"auth":"ZmlsZTpmaWxl"}}}"#,
        )
        .unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let env = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let user = |c: Option<Credentials>| c.map(|c| c.username);
        let all = env(vec![
            ("DOCKER_USERNAME", "envuser".into()),
            ("DOCKER_PASSWORD", "pw".into()),
            ("GITHUB_TOKEN", "gh".into()),
            ("DOCKER_CONFIG", d.clone()),
        ]);
        assert_eq!(
            user(Credentials::lookup("ghcr.io", &all).unwrap()),
            Some("envuser".into())
        );
        let gh = env(vec![
            ("GITHUB_TOKEN", "gh".into()),
            ("DOCKER_CONFIG", d.clone()),
        ]);
        assert_eq!(
            user(Credentials::lookup("ghcr.io", &gh).unwrap()),
            Some("token".into())
        );
        let file = env(vec![("DOCKER_CONFIG", d.clone())]);
        assert_eq!(
            user(Credentials::lookup("ghcr.io", &file).unwrap()),
            Some("file".into())
        );
        assert_eq!(user(Credentials::lookup("quay.io", &file).unwrap()), None);
        let home = env(vec![("HOME", "/nonexistent-home".into())]);
        assert_eq!(user(Credentials::lookup("ghcr.io", &home).unwrap()), None);
        std::fs::write(dir.path().join("config.json"), b"not json").unwrap();
        let e = Credentials::lookup("ghcr.io", &file).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
    }

    /// A credential helper is any `docker-credential-<name>` program speaking the protocol;
    /// this one answers from a table, and "not found" as the real ones do.
    #[test]
    fn credential_helpers_are_asked_before_auths() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let helper = |name: &str, script: &str| {
            let p = bin.join(format!("docker-credential-{name}"));
            std::fs::write(&p, script).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        helper(
            "table",
            "#!/bin/sh
[ \"$1\" = get ] || exit 2
read -r url
case \"$url\" in
  reg.example:5000) echo '{\"ServerURL\":\"reg.example:5000\",\"Username\":\"helper\",\"Secret\":\"s\"}' ;;
  https://index.docker.io/v1/) echo '{\"Username\":\"hubuser\",\"Secret\":\"h\"}' ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac
",
        );
        helper(
            "broken",
            "#!/bin/sh
echo 'keychain locked' >&2
exit 3
",
        );
        std::fs::write(
            dir.path().join("config.json"),
            br#"{"auths":{"ghcr.io":{"auth":"ZmlsZTpmaWxl"},"other.example":{"auth":"ZmlsZTpmaWxl"}},
                "credsStore":"table","credHelpers":{"bad.example":"broken","gone.example":"absent"}}"#,
        )
        .unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let path = bin.to_str().unwrap().to_string();
        let env = move |k: &str| match k {
            "DOCKER_CONFIG" => Some(d.clone()),
            "PATH" => Some(path.clone()),
            _ => None,
        };
        let got = |h: &str| Credentials::lookup(h, &env);
        let c = got("reg.example:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("helper", "s"));
        let c = got("registry-1.docker.io").unwrap().unwrap();
        assert_eq!(c.username, "hubuser");
        // The store has nothing for it: the auths entry, as docker's native store falls back.
        assert_eq!(got("ghcr.io").unwrap().unwrap().username, "file");
        assert_eq!(got("quay.io").unwrap(), None);
        let e = got("bad.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-broken") && e.contains("exited"),
            "{e}"
        );
        let e = got("gone.example").unwrap_err().to_string();
        assert!(e.contains("not in PATH"), "{e}");
    }
}
