//! The AWS shared profile files (`~/.aws/credentials`, `~/.aws/config`), which the AWS SDK
//! reads and object_store does not: static keys, `credential_process` ([`process`]), and
//! `role_arn` with `source_profile` / `credential_source = Environment` (STS AssumeRole,
//! [`sts`]). A profile that names something we cannot use (SSO, MFA, a web identity token
//! file, an instance `credential_source`) is an error naming the profile and the key: going
//! on to instance credentials would quietly run with another identity than the one asked for.

mod ini;
mod process;
mod refresh;
mod sts;

use std::collections::HashSet;
use std::sync::Arc;

use object_store::aws::{AwsCredential, AwsCredentialProvider};
use object_store::client::StaticCredentialProvider;

use ini::Files;

/// Keys of one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl StaticKeys {
    fn credential(&self) -> AwsCredential {
        AwsCredential {
            key_id: self.access_key_id.clone(),
            secret_key: self.secret_access_key.clone(),
            token: self.session_token.clone(),
        }
    }
}

/// What the selected profile gives the S3 client.
pub enum Credentials {
    Static(StaticKeys),
    /// Refreshed credentials (a process, an assumed role).
    Provider(AwsCredentialProvider),
}

/// How one profile gets its credentials, before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Static(StaticKeys),
    /// `credential_source = Environment`: the keys of `$AWS_ACCESS_KEY_ID`.
    EnvKeys(StaticKeys),
    Process {
        profile: String,
        command: String,
    },
    AssumeRole {
        role: sts::RoleConfig,
        source: Box<Plan>,
    },
}

/// The credentials of `$AWS_PROFILE` (or `default`): `Ok(None)` when the profile files give
/// none (the chain goes on), an error when the profile asks for something we cannot do.
/// `region` is the bucket's, the STS region when neither the profile nor the environment
/// names one.
///
/// `env_keys`: the environment has keys, which win over the profile (the SDK's order),
/// except for a role assumed *from* them (`credential_source = Environment`), which would
/// otherwise never be used.
pub fn credentials(
    env: &dyn Fn(&str) -> Option<String>,
    http: &reqwest::Client,
    region: &str,
    env_keys: bool,
) -> Result<Option<Credentials>, String> {
    if env_keys && env("AWS_PROFILE").is_none_or(|p| p.is_empty()) {
        return Ok(None);
    }
    let Some(plan) = plan(env, region)? else {
        return Ok(None);
    };
    if env_keys && !plan.rooted_in_env() {
        return Ok(None);
    }
    Ok(Some(match plan {
        Plan::Static(keys) => Credentials::Static(keys),
        other => Credentials::Provider(provider(other, http)),
    }))
}

impl Plan {
    fn rooted_in_env(&self) -> bool {
        match self {
            Plan::EnvKeys(_) => true,
            Plan::AssumeRole { source, .. } => source.rooted_in_env(),
            Plan::Static(_) | Plan::Process { .. } => false,
        }
    }
}

/// The static keys of `$AWS_PROFILE`, if that is what it holds (tests, diagnostics).
#[cfg(test)]
pub fn static_keys(env: &dyn Fn(&str) -> Option<String>) -> Option<StaticKeys> {
    match plan(env, "us-east-1") {
        Ok(Some(Plan::Static(k))) => Some(k),
        _ => None,
    }
}

fn provider(plan: Plan, http: &reqwest::Client) -> AwsCredentialProvider {
    match plan {
        Plan::Static(keys) | Plan::EnvKeys(keys) => {
            Arc::new(StaticCredentialProvider::new(keys.credential()))
        }
        Plan::Process { profile, command } => Arc::new(refresh::Refreshing::new(
            refresh::Kind::Process(process::Process { profile, command }),
        )),
        Plan::AssumeRole { role, source } => {
            let source = provider(*source, http);
            Arc::new(refresh::Refreshing::new(refresh::Kind::AssumeRole(
                sts::AssumeRole {
                    role,
                    source,
                    http: http.clone(),
                },
            )))
        }
    }
}

fn plan(env: &dyn Fn(&str) -> Option<String>, region: &str) -> Result<Option<Plan>, String> {
    let explicit = env("AWS_PROFILE").filter(|p| !p.is_empty());
    let profile = explicit.clone().unwrap_or_else(|| "default".to_string());
    let files = Files::load(env);
    let res = resolve(&files, &profile, &mut HashSet::new(), true, env, region);
    match &res {
        Err(e) => tracing::warn!(profile = %profile, "AWS profile unusable: {e}"),
        Ok(None) if explicit.is_some() => tracing::warn!(
            profile = %profile,
            "AWS profile has no credentials in the profile files; trying instance credentials"
        ),
        Ok(_) => {}
    }
    res
}

/// Keys that need something we do not do, and why.
const UNSUPPORTED: [(&str, &str); 6] = [
    ("sso_session", "SSO profiles are not supported"),
    ("sso_start_url", "SSO profiles are not supported"),
    ("sso_account_id", "SSO profiles are not supported"),
    ("sso_role_name", "SSO profiles are not supported"),
    (
        "mfa_serial",
        "MFA needs an interactive token code, which an agent cannot type",
    ),
    (
        "web_identity_token_file",
        "web identity in a profile is not supported (set AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN instead)",
    ),
];

/// The AWS CLI's order within a profile: a role first, then static keys, then
/// `credential_process`. A profile reached as a `source_profile` uses its static keys
/// before its own role (the SDKs do the same), which is also what lets a profile name
/// itself as its source.
fn resolve(
    files: &Files,
    name: &str,
    seen: &mut HashSet<String>,
    top: bool,
    env: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Result<Option<Plan>, String> {
    let err = |key: &str, why: &str| format!("AWS profile {name:?}: {key}: {why}");
    if !files.has(name) {
        return if top {
            Ok(None)
        } else {
            Err(format!(
                "AWS profile {name:?} (a source_profile) does not exist"
            ))
        };
    }
    let get = |key: &str| files.get(name, key);
    let keys = static_keys_of(files, name);
    if let Some(k) = &keys {
        // They go into HTTP headers, where object_store cannot take a control character.
        let checks = [
            ("aws_access_key_id", Some(&k.access_key_id)),
            ("aws_secret_access_key", Some(&k.secret_access_key)),
            ("aws_session_token", k.session_token.as_ref()),
        ];
        for (key, v) in checks {
            if let Some(v) = v {
                refresh::check_key(key, v).map_err(|e| err(key, &e))?;
            }
        }
    }
    if !top && let Some(k) = keys.clone() {
        return Ok(Some(Plan::Static(k)));
    }
    if !seen.insert(name.to_string()) {
        return Err(err(
            "source_profile",
            "profiles name each other in a loop (a profile may name itself only when it has static keys)",
        ));
    }
    if let Some(role_arn) = get("role_arn") {
        for (key, why) in UNSUPPORTED.iter().skip(4) {
            if get(key).is_some() {
                return Err(err(key, why));
            }
        }
        let source = match (get("source_profile"), get("credential_source")) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "credential_source",
                    "a profile has either source_profile or credential_source, not both",
                ));
            }
            (None, None) => {
                return Err(err("role_arn", "needs source_profile or credential_source"));
            }
            (Some(src), None) => resolve(files, &src, seen, false, env, region)?
                .ok_or_else(|| err("source_profile", "the source profile has no credentials"))?,
            (None, Some(cs)) if cs == "Environment" => {
                Plan::EnvKeys(env_keys(env).ok_or_else(|| {
                    err(
                        "credential_source",
                        "Environment, but AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set",
                    )
                })?)
            }
            (None, Some(cs)) => {
                return Err(err(
                    "credential_source",
                    &format!("{cs} is not supported (only Environment)"),
                ));
            }
        };
        let role = sts::RoleConfig::from_profile(name, &role_arn, &get, env, region)
            .map_err(|e| format!("AWS profile {name:?}: {e}"))?;
        return Ok(Some(Plan::AssumeRole {
            role,
            source: Box::new(source),
        }));
    }
    for (key, why) in UNSUPPORTED {
        if get(key).is_some() {
            return Err(err(key, why));
        }
    }
    if let Some(k) = keys {
        return Ok(Some(Plan::Static(k)));
    }
    if let Some(command) = get("credential_process") {
        return Ok(Some(Plan::Process {
            profile: name.to_string(),
            command,
        }));
    }
    if top {
        Ok(None)
    } else {
        Err(format!(
            "AWS profile {name:?} (a source_profile) has no credentials"
        ))
    }
}

fn static_keys_of(files: &Files, name: &str) -> Option<StaticKeys> {
    Some(StaticKeys {
        access_key_id: files.get(name, "aws_access_key_id")?,
        secret_access_key: files.get(name, "aws_secret_access_key")?,
        session_token: files.get(name, "aws_session_token"),
    })
}

fn env_keys(env: &dyn Fn(&str) -> Option<String>) -> Option<StaticKeys> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    Some(StaticKeys {
        access_key_id: get("AWS_ACCESS_KEY_ID")?,
        secret_access_key: get("AWS_SECRET_ACCESS_KEY")?,
        session_token: get("AWS_SESSION_TOKEN"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestEnv = Box<dyn Fn(&str) -> Option<String>>;

    fn env_of(files: &[(&str, &str)], vars: &[(&str, &str)]) -> (tempfile::TempDir, TestEnv) {
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (var, text) in files {
            let p = dir.path().join(var);
            std::fs::write(&p, text).unwrap();
            all.push((var.to_string(), p.to_str().unwrap().to_string()));
        }
        let env = move |k: &str| all.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        (dir, Box::new(env))
    }

    #[test]
    fn static_keys_from_either_file() {
        let (_d, env) = env_of(
            &[
                (
                    "AWS_SHARED_CREDENTIALS_FILE",
                    "[default]\naws_access_key_id = A\naws_secret_access_key=S\n",
                ),
                (
                    "AWS_CONFIG_FILE",
                    "[profile ci]\naws_access_key_id=C\naws_secret_access_key=U\naws_session_token = X\n",
                ),
            ],
            &[],
        );
        assert_eq!(static_keys(&env).unwrap().access_key_id, "A");
        let (_d2, env2) = env_of(
            &[(
                "AWS_CONFIG_FILE",
                "[profile ci]\naws_access_key_id=C\naws_secret_access_key=U\naws_session_token = X\n",
            )],
            &[("AWS_PROFILE", "ci")],
        );
        let ci = static_keys(&env2).unwrap();
        assert_eq!(
            (ci.access_key_id.as_str(), ci.session_token.as_deref()),
            ("C", Some("X"))
        );
    }

    #[test]
    fn role_chains_and_their_errors() {
        let config = "[profile base]\naws_access_key_id=B\naws_secret_access_key=S\n\
                      [profile mid]\nrole_arn=arn:aws:iam::1:role/mid\nsource_profile=base\n\
                      [profile top]\nrole_arn=arn:aws:iam::1:role/top\nsource_profile=mid\nexternal_id=E\nduration_seconds=900\nregion=eu-west-1\n\
                      [profile self]\nrole_arn=arn:aws:iam::1:role/s\nsource_profile=self\naws_access_key_id=K\naws_secret_access_key=S\n\
                      [profile a]\nrole_arn=arn:aws:iam::1:role/a\nsource_profile=b\n\
                      [profile b]\nrole_arn=arn:aws:iam::1:role/b\nsource_profile=a\n\
                      [profile sso]\nsso_session=corp\nsso_account_id=1\n\
                      [profile mfa]\nrole_arn=arn:aws:iam::1:role/m\nsource_profile=base\nmfa_serial=arn:x\n\
                      [profile imds]\nrole_arn=arn:aws:iam::1:role/i\ncredential_source=Ec2InstanceMetadata\n\
                      [profile envsrc]\nrole_arn=arn:aws:iam::1:role/e\ncredential_source=Environment\n\
                      [profile proc]\ncredential_process = /bin/creds --x\n";
        let run = |profile: &str, extra: &[(&'static str, &str)]| {
            let mut vars = vec![("AWS_PROFILE", profile)];
            vars.extend_from_slice(extra);
            let (_d, env) = env_of(&[("AWS_CONFIG_FILE", config)], &vars);
            plan(&env, "us-east-1")
        };
        let Ok(Some(Plan::AssumeRole { role, source })) = run("top", &[]) else {
            panic!()
        };
        assert_eq!(role.role_arn, "arn:aws:iam::1:role/top");
        assert_eq!(
            (
                role.external_id.as_deref(),
                role.duration_seconds,
                role.region.as_str()
            ),
            (Some("E"), 900, "eu-west-1")
        );
        let Plan::AssumeRole {
            role: mid,
            source: base,
        } = *source
        else {
            panic!()
        };
        assert_eq!(mid.role_arn, "arn:aws:iam::1:role/mid");
        assert!(matches!(*base, Plan::Static(ref k) if k.access_key_id == "B"));
        let Ok(Some(Plan::AssumeRole { source, .. })) = run("self", &[]) else {
            panic!()
        };
        assert!(matches!(*source, Plan::Static(ref k) if k.access_key_id == "K"));
        let e = run("a", &[]).unwrap_err();
        assert!(e.contains("loop"), "{e}");
        let e = run("sso", &[]).unwrap_err();
        assert!(
            e.contains("\"sso\"") && e.contains("sso_session") && e.contains("SSO"),
            "{e}"
        );
        let e = run("mfa", &[]).unwrap_err();
        assert!(e.contains("mfa_serial"), "{e}");
        let e = run("imds", &[]).unwrap_err();
        assert!(e.contains("Ec2InstanceMetadata"), "{e}");
        let e = run("envsrc", &[]).unwrap_err();
        assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
        let Ok(Some(Plan::AssumeRole { source, .. })) = run(
            "envsrc",
            &[("AWS_ACCESS_KEY_ID", "EK"), ("AWS_SECRET_ACCESS_KEY", "ES")],
        ) else {
            panic!()
        };
        assert!(matches!(*source, Plan::EnvKeys(ref k) if k.access_key_id == "EK"));
        assert_eq!(
            run("proc", &[]).unwrap(),
            Some(Plan::Process {
                profile: "proc".into(),
                command: "/bin/creds --x".into()
            })
        );
        assert_eq!(run("missing", &[]).unwrap(), None);
        let (_d, env) = env_of(
            &[(
                "AWS_CONFIG_FILE",
                "[default]\naws_access_key_id=A\u{7}\naws_secret_access_key=S\n",
            )],
            &[],
        );
        let e = plan(&env, "r").unwrap_err();
        assert!(
            e.contains("aws_access_key_id") && !e.contains("A\u{7}"),
            "{e}"
        );
    }
}
