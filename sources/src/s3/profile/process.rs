//! `credential_process = <command>`: the command is split as the AWS CLI splits it (POSIX
//! shell words, no shell run), and prints
//! `{"Version":1,"AccessKeyId","SecretAccessKey","SessionToken","Expiration"}`.

use std::process::Stdio;
use std::time::Duration;

use object_store::aws::AwsCredential;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::refresh::{Expiring, check_key};

/// A credential helper that hangs must not hold the agent's tick forever.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The JSON is a few hundred bytes; more is a misbehaving helper.
const MAX_STDOUT: u64 = 64 * 1024;
/// What of stderr goes into the error message.
const MAX_STDERR: u64 = 2048;

#[derive(Debug, Clone)]
pub struct Process {
    pub profile: String,
    pub command: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Output {
    version: u32,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expiration: Option<String>,
}

impl Process {
    pub async fn run(&self) -> Result<Expiring, String> {
        let what = format!("AWS profile {:?}: credential_process", self.profile);
        let words = split(&self.command).map_err(|e| format!("{what}: {e}"))?;
        let Some((program, args)) = words.split_first() else {
            return Err(format!("{what}: empty command"));
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{what}: cannot run {program}: {e}"))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(format!("{what}: no pipes to {program}"));
        };
        let run = async {
            let (o, e) = tokio::join!(capped(stdout, MAX_STDOUT), capped(stderr, MAX_STDERR));
            let (out, err) = (o?, e?);
            let status = child.wait().await?;
            std::io::Result::Ok((status, out, err))
        };
        let (status, out, err) = tokio::time::timeout(TIMEOUT, run)
            .await
            .map_err(|_| format!("{what}: {program} did not finish in {}s", TIMEOUT.as_secs()))?
            .map_err(|e| format!("{what}: {program}: {e}"))?;
        let Some(out) = out else {
            return Err(format!(
                "{what}: {program} printed more than {MAX_STDOUT} bytes"
            ));
        };
        if !status.success() {
            let err = String::from_utf8_lossy(err.as_deref().unwrap_or(b"(long stderr)"));
            return Err(format!(
                "{what}: {program} failed ({status}): {}",
                err.trim()
            ));
        }
        // The output holds the secret: it never goes into a message.
        parse(&out).map_err(|e| format!("{what}: {program}: {e}"))
    }
}

/// Everything the pipe gives until it closes (so the helper never blocks on a full pipe),
/// kept only up to `cap` bytes: `None` beyond.
async fn capped(
    mut r: impl tokio::io::AsyncRead + Unpin,
    cap: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut over = false;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((!over).then_some(kept));
        }
        if kept.len() + n > cap as usize {
            over = true;
            kept.clear();
        } else if !over {
            kept.extend_from_slice(&buf[..n]);
        }
    }
}

fn parse(out: &[u8]) -> Result<Expiring, String> {
    let o: Output = serde_json::from_slice(out)
        .map_err(|e| format!("output is not the expected JSON ({e})"))?;
    if o.version != 1 {
        return Err(format!("output Version {} (only 1 is known)", o.version));
    }
    check_key("AccessKeyId", &o.access_key_id)?;
    check_key("SecretAccessKey", &o.secret_access_key)?;
    let token = o.session_token.filter(|t| !t.is_empty());
    if let Some(t) = &token {
        check_key("SessionToken", t)?;
    }
    let expires = match o.expiration.filter(|e| !e.is_empty()) {
        None => None,
        Some(e) => Some(
            common::timefmt::parse_rfc3339(&e)
                .ok_or_else(|| format!("Expiration {e:?} is not an RFC 3339 time"))?,
        ),
    };
    Ok(Expiring {
        credential: AwsCredential {
            key_id: o.access_key_id,
            secret_key: o.secret_access_key,
            token,
        },
        expires,
    })
}

/// POSIX shell words (Python's `shlex.split`, which the AWS CLI uses): quotes and
/// backslashes, no expansion, no comments.
fn split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => cur.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_like_shlex() {
        assert_eq!(
            split(r#"/usr/bin/helper --profile "my prof" 'a b'\ c x\"y "q\"\\\n""#).unwrap(),
            [
                "/usr/bin/helper",
                "--profile",
                "my prof",
                "a b c",
                "x\"y",
                "q\"\\\\n"
            ]
        );
        assert_eq!(split("  a   ''  b ").unwrap(), ["a", "", "b"]);
        assert!(split("a 'b").is_err());
        assert!(split("a \"b").is_err());
        assert!(split("a \\").is_err());
    }

    #[test]
    fn output_json() {
        let e = parse(br#"{"Version":1,"AccessKeyId":"AK","SecretAccessKey":"SK","SessionToken":"T","Expiration":"2030-01-02T03:04:05Z"}"#).unwrap();
        assert_eq!(
            (e.credential.key_id.as_str(), e.credential.token.as_deref()),
            ("AK", Some("T"))
        );
        assert_eq!(e.expires.unwrap().year(), 2030);
        let e = parse(br#"{"Version":1,"AccessKeyId":"AK","SecretAccessKey":"SK"}"#).unwrap();
        assert!(e.expires.is_none() && e.credential.token.is_none());
        assert!(
            parse(br#"{"Version":2,"AccessKeyId":"AK","SecretAccessKey":"SK"}"#)
                .unwrap_err()
                .contains("Version 2")
        );
        assert!(parse(br#"{"Version":1,"AccessKeyId":"A\nK","SecretAccessKey":"SK"}"#).is_err());
        assert!(
            parse(
                br#"{"Version":1,"AccessKeyId":"AK","SecretAccessKey":"SK","Expiration":"soon"}"#
            )
            .is_err()
        );
        let e = parse(b"not json {SECRET}").unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
    }
}
