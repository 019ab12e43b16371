//! Building the S3 client: endpoint and addressing rules (spec 1.3), credentials, retries,
//! and the shared HTTP client.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{ClientOptions, HttpClient as StoreHttpClient, HttpConnector};
use object_store::{BackoffConfig, RetryConfig};

use super::profile;
use crate::SourceError;
use crate::http::HttpClient;

/// Where requests go, which decides the addressing style (spec 1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `?endpoint=`: path-style, and it is part of the artifact URL.
    Query(String),
    /// `$AWS_ENDPOINT_URL_S3` / `$AWS_ENDPOINT_URL`: path-style, never in the artifact URL.
    Env(String),
    /// AWS itself, virtual-host style.
    Aws,
}

impl Endpoint {
    /// The `?endpoint=` value an artifact URL carries.
    pub fn url_option(&self) -> Option<&str> {
        match self {
            Endpoint::Query(u) => Some(u),
            Endpoint::Env(_) | Endpoint::Aws => None,
        }
    }

    fn resolve(query: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Endpoint {
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            return Endpoint::Query(q.to_string());
        }
        // The AWS SDK's service-specific variable wins over the global one.
        ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .find_map(|k| env(k).filter(|v| !v.is_empty()))
            .map_or(Endpoint::Aws, Endpoint::Env)
    }
}

/// Environment variables of the AWS credential chain that object_store understands under
/// the same (lower-cased) name.
const CHAIN_VARS: [&str; 10] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

/// One bucket of one endpoint.
pub struct S3Store {
    pub(crate) inner: Arc<AmazonS3>,
    pub region: String,
    pub bucket: String,
    pub endpoint: Endpoint,
}

impl S3Store {
    pub fn new(
        region: &str,
        bucket: &str,
        endpoint: Option<&str>,
        http: &HttpClient,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<S3Store, SourceError> {
        let endpoint = Endpoint::resolve(endpoint, env);
        let mut b = AmazonS3Builder::new()
            .with_region(region)
            .with_bucket_name(bucket)
            .with_http_connector(Shared::new(http))
            .with_retry(RetryConfig {
                // The agent backs off between ticks; one quick retry rides out a blip
                // without holding a tick for minutes.
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 1,
                retry_timeout: Duration::from_secs(30),
            });
        b = match &endpoint {
            Endpoint::Query(u) | Endpoint::Env(u) => b
                .with_endpoint(u)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(true),
            Endpoint::Aws => b.with_virtual_hosted_style_request(true),
        };
        let mut have_keys = false;
        for var in CHAIN_VARS {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                let key: AmazonS3ConfigKey = var
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|e| SourceError::Permanent(format!("{var}: {e}")))?;
                have_keys |= var == "AWS_ACCESS_KEY_ID";
                b = b.with_config(key, v);
            }
        }
        if let Some(v) = env("AWS_EC2_METADATA_SERVICE_ENDPOINT").filter(|v| !v.is_empty()) {
            b = b.with_config(AmazonS3ConfigKey::MetadataEndpoint, v);
        }
        let web_or_container = [
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ]
        .iter()
        .any(|k| env(k).is_some_and(|v| !v.is_empty()));
        // The SDK's order: env keys, then the shared profile files, then web identity /
        // container / instance credentials. A profile's role assumed from the env keys
        // (`credential_source = Environment`) is the exception `profile` makes.
        if !web_or_container {
            match profile::credentials(env, http.client(), region, have_keys) {
                Ok(Some(profile::Credentials::Static(keys))) => {
                    b = b
                        .with_access_key_id(keys.access_key_id)
                        .with_secret_access_key(keys.secret_access_key);
                    if let Some(t) = keys.session_token {
                        b = b.with_token(t);
                    }
                }
                Ok(Some(profile::Credentials::Provider(p))) => b = b.with_credentials(p),
                Ok(None) => {}
                Err(e) => {
                    return Err(SourceError::Permanent(format!(
                        "s3://{region}/{bucket}: {e}"
                    )));
                }
            }
        }
        let inner = b.build().map_err(|e| {
            SourceError::Permanent(format!("s3://{region}/{bucket}: client setup: {e}"))
        })?;
        Ok(S3Store {
            inner: Arc::new(inner),
            region: region.to_string(),
            bucket: bucket.to_string(),
            endpoint,
        })
    }

    /// Whether an artifact URL's coordinates are this store's.
    pub fn serves(&self, region: &str, bucket: &str, endpoint: Option<&str>) -> bool {
        region == self.region
            && bucket == self.bucket
            && match endpoint {
                Some(e) => self.endpoint == Endpoint::Query(e.to_string()),
                None => !matches!(self.endpoint, Endpoint::Query(_)),
            }
    }

    /// `s3://<region>/<bucket>`, for messages.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.region, self.bucket)
    }
}

/// object_store's connector handing out our client, so one reqwest (one TLS setup, one pool)
/// serves every source (gs uses it for Google's token endpoints).
#[derive(Debug)]
pub struct Shared(reqwest::Client);

impl Shared {
    pub fn new(http: &HttpClient) -> Shared {
        Shared(http.client().clone())
    }
}

impl HttpConnector for Shared {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<StoreHttpClient> {
        Ok(StoreHttpClient::new(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_rules() {
        let none = |_: &str| None;
        let env = |k: &str| (k == "AWS_ENDPOINT_URL").then(|| "http://env:9000".to_string());
        assert_eq!(Endpoint::resolve(None, &none), Endpoint::Aws);
        assert_eq!(
            Endpoint::resolve(None, &env),
            Endpoint::Env("http://env:9000".into())
        );
        assert_eq!(
            Endpoint::resolve(Some("http://q:1"), &env),
            Endpoint::Query("http://q:1".into())
        );
        assert_eq!(
            Endpoint::resolve(Some("http://q:1"), &env).url_option(),
            Some("http://q:1")
        );
        assert_eq!(Endpoint::resolve(None, &env).url_option(), None);
    }

    #[test]
    fn chain_vars_are_object_store_keys() {
        for var in CHAIN_VARS {
            assert!(
                var.to_ascii_lowercase()
                    .parse::<AmazonS3ConfigKey>()
                    .is_ok(),
                "{var}"
            );
        }
    }
}
