//! `role_arn`: STS `AssumeRole` over the Query API, signed (SigV4) with the source
//! profile's credentials by object_store's public [`AwsAuthorizer`] (the same signer every
//! S3 request goes through), sent with our reqwest client.

use std::time::Duration;

use object_store::aws::{AwsAuthorizer, AwsCredential, AwsCredentialProvider};
use object_store::client::HttpRequestBody;

use super::refresh::{Expiring, check_key};

/// STS answers are a few KiB; more is not STS.
const MAX_ANSWER: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

/// One profile's role, as the AWS CLI reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleConfig {
    pub profile: String,
    pub role_arn: String,
    pub session_name: String,
    pub external_id: Option<String>,
    pub duration_seconds: u32,
    /// The signing region.
    pub region: String,
    /// Where the request goes (`https://sts.<region>.amazonaws.com` by default).
    pub endpoint: String,
}

impl RoleConfig {
    /// `get` reads the profile's keys. The region is the profile's `region`, else
    /// `$AWS_REGION`/`$AWS_DEFAULT_REGION`, else the bucket's; the endpoint
    /// `$AWS_ENDPOINT_URL_STS`, else `$AWS_ENDPOINT_URL`, else the regional STS endpoint
    /// (the global one with `sts_regional_endpoints = legacy`).
    pub fn from_profile(
        profile: &str,
        role_arn: &str,
        get: &dyn Fn(&str) -> Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
        bucket_region: &str,
    ) -> Result<RoleConfig, String> {
        let envv = |k: &str| env(k).filter(|v| !v.is_empty());
        if !role_arn.starts_with("arn:") {
            return Err(format!("role_arn {role_arn:?} is not an ARN"));
        }
        let session_name = match get("role_session_name") {
            Some(n) => {
                let ok = (2..=64).contains(&n.len())
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
                if !ok {
                    return Err(format!(
                        "role_session_name {n:?}: 2 to 64 of letters, digits and _+=,.@-"
                    ));
                }
                n
            }
            // Unique per agent start, as the CLI's botocore-session-<time>.
            None => format!("deploy-agent-{}", common::timefmt::now().unix_timestamp()),
        };
        let duration_seconds = match get("duration_seconds") {
            None => 3600,
            Some(d) => d
                .parse::<u32>()
                .ok()
                .filter(|d| (900..=43200).contains(d))
                .ok_or_else(|| format!("duration_seconds {d:?}: 900 to 43200"))?,
        };
        let region = get("region")
            .or_else(|| envv("AWS_REGION"))
            .or_else(|| envv("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| bucket_region.to_string());
        let legacy = get("sts_regional_endpoints")
            .or_else(|| envv("AWS_STS_REGIONAL_ENDPOINTS"))
            .is_some_and(|v| v == "legacy");
        let (endpoint, region) =
            match envv("AWS_ENDPOINT_URL_STS").or_else(|| envv("AWS_ENDPOINT_URL")) {
                Some(e) => (e, region),
                None if legacy => (
                    "https://sts.amazonaws.com".to_string(),
                    "us-east-1".to_string(),
                ),
                None => {
                    let suffix = if region.starts_with("cn-") {
                        "amazonaws.com.cn"
                    } else {
                        "amazonaws.com"
                    };
                    (format!("https://sts.{region}.{suffix}"), region)
                }
            };
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(format!("STS endpoint {endpoint:?} is not an http(s) URL"));
        }
        Ok(RoleConfig {
            profile: profile.to_string(),
            role_arn: role_arn.to_string(),
            session_name,
            external_id: get("external_id"),
            duration_seconds,
            region,
            endpoint,
        })
    }
}

#[derive(Debug)]
pub struct AssumeRole {
    pub role: RoleConfig,
    pub source: AwsCredentialProvider,
    pub http: reqwest::Client,
}

impl AssumeRole {
    pub async fn assume(&self) -> Result<Expiring, String> {
        let r = &self.role;
        let what = format!("AWS profile {:?}: AssumeRole {}", r.profile, r.role_arn);
        let source = self
            .source
            .get_credential()
            .await
            .map_err(|e| format!("{what}: source credentials: {e}"))?;
        tokio::time::timeout(TIMEOUT, self.call(&source))
            .await
            .map_err(|_| {
                format!(
                    "{what}: no answer from {} in {}s",
                    r.endpoint,
                    TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("{what}: {e}"))
    }

    async fn call(&self, source: &AwsCredential) -> Result<Expiring, String> {
        let r = &self.role;
        let mut form = vec![
            ("Action", "AssumeRole"),
            ("Version", "2011-06-15"),
            ("RoleArn", r.role_arn.as_str()),
            ("RoleSessionName", r.session_name.as_str()),
        ];
        let duration = r.duration_seconds.to_string();
        form.push(("DurationSeconds", &duration));
        if let Some(x) = &r.external_id {
            form.push(("ExternalId", x));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let url = format!("{}/", r.endpoint.trim_end_matches('/'));
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(&url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| format!("{url}: {e}"))?;
        AwsAuthorizer::new(source, "sts", &r.region)
            .try_authorize(&mut req, None)
            .map_err(|e| format!("signing: {e}"))?;
        let mut resp = self
            .http
            .post(&url)
            .headers(req.headers().clone())
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let mut text = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if text.len() + chunk.len() > MAX_ANSWER {
                return Err(format!("{url}: answer larger than {MAX_ANSWER} bytes"));
            }
            text.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&text);
        if !status.is_success() {
            let code = tag(&text, "Code").unwrap_or_default();
            let msg = tag(&text, "Message").unwrap_or_default();
            return Err(format!("{url}: {status} {code}: {msg}"));
        }
        parse(&text)
    }
}

/// The `<Credentials>` of an `AssumeRoleResponse`.
fn parse(xml: &str) -> Result<Expiring, String> {
    let creds = tag(xml, "Credentials").ok_or("no <Credentials> in the STS answer")?;
    let get = |name: &str| {
        tag(&creds, name).ok_or_else(|| format!("no <{name}> in the STS answer's credentials"))
    };
    let (id, secret, token, exp) = (
        get("AccessKeyId")?,
        get("SecretAccessKey")?,
        get("SessionToken")?,
        get("Expiration")?,
    );
    check_key("AccessKeyId", &id)?;
    check_key("SecretAccessKey", &secret)?;
    check_key("SessionToken", &token)?;
    let expires = common::timefmt::parse_rfc3339(&exp)
        .ok_or_else(|| format!("Expiration {exp:?} is not an RFC 3339 time"))?;
    Ok(Expiring {
        credential: AwsCredential {
            key_id: id,
            secret_key: secret,
            token: Some(token),
        },
        expires: Some(expires),
    })
}

/// The text of the first `<name>` element, entities decoded. STS answers are flat and
/// regular enough that this is all the XML we need.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(
        xml[start..start + len]
            .trim()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// `application/x-www-form-urlencoded` as AWS canonicalizes it (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_overrides() {
        let none = |_: &str| None;
        let c = RoleConfig::from_profile("p", "arn:aws:iam::1:role/r", &none, &none, "eu-west-3")
            .unwrap();
        assert_eq!(
            (c.region.as_str(), c.endpoint.as_str(), c.duration_seconds),
            ("eu-west-3", "https://sts.eu-west-3.amazonaws.com", 3600)
        );
        assert!(c.session_name.starts_with("deploy-agent-"));
        let legacy = |k: &str| (k == "sts_regional_endpoints").then(|| "legacy".to_string());
        let c = RoleConfig::from_profile("p", "arn:x", &legacy, &none, "eu-west-3").unwrap();
        assert_eq!(
            (c.region.as_str(), c.endpoint.as_str()),
            ("us-east-1", "https://sts.amazonaws.com")
        );
        let env = |k: &str| (k == "AWS_ENDPOINT_URL_STS").then(|| "http://127.0.0.1:9".to_string());
        let c = RoleConfig::from_profile("p", "arn:x", &none, &env, "r").unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        let bad = |k: &str| (k == "duration_seconds").then(|| "60".to_string());
        assert!(
            RoleConfig::from_profile("p", "arn:x", &bad, &none, "r")
                .unwrap_err()
                .contains("duration_seconds")
        );
        let bad = |k: &str| (k == "role_session_name").then(|| "a b".to_string());
        assert!(RoleConfig::from_profile("p", "arn:x", &bad, &none, "r").is_err());
        assert!(RoleConfig::from_profile("p", "role/x", &none, &none, "r").is_err());
    }

    #[test]
    fn answer_and_encoding() {
        let xml = "<AssumeRoleResponse><AssumeRoleResult><Credentials>\
                   <AccessKeyId>ASIAX</AccessKeyId><SecretAccessKey>s/k+1</SecretAccessKey>\
                   <SessionToken>t&amp;t</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration>\
                   </Credentials></AssumeRoleResult></AssumeRoleResponse>";
        let e = parse(xml).unwrap();
        assert_eq!(
            (e.credential.key_id.as_str(), e.credential.token.as_deref()),
            ("ASIAX", Some("t&t"))
        );
        assert!(parse("<Error><Code>AccessDenied</Code></Error>").is_err());
        assert_eq!(
            encode("arn:aws:iam::1:role/a b~"),
            "arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b~"
        );
    }
}
