//! Static keys from the AWS shared profile files (`~/.aws/credentials`, `~/.aws/config`),
//! which the AWS SDK reads and object_store does not. Only static keys are read: a profile
//! that assumes a role or uses SSO is not supported (logged), and the chain goes on to
//! instance credentials.

/// Keys of one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// The largest profile file we read: these are hand-written INI files.
const MAX_FILE: u64 = 1024 * 1024;

/// The keys of `$AWS_PROFILE` (or `default`), from `$AWS_SHARED_CREDENTIALS_FILE`
/// (`~/.aws/credentials`) first, then `$AWS_CONFIG_FILE` (`~/.aws/config`).
pub fn static_keys(env: &dyn Fn(&str) -> Option<String>) -> Option<StaticKeys> {
    let profile = env("AWS_PROFILE")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let home = env("HOME").filter(|h| !h.is_empty());
    let file = |var: &str, default: &str| {
        env(var)
            .filter(|v| !v.is_empty())
            .or_else(|| home.as_ref().map(|h| format!("{h}/.aws/{default}")))
    };
    let credentials = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config = file("AWS_CONFIG_FILE", "config");
    if let Some(keys) = credentials
        .and_then(|p| read(&p))
        .and_then(|t| keys_in(&t, &profile, false))
    {
        return Some(keys);
    }
    let keys = config
        .and_then(|p| read(&p))
        .and_then(|t| keys_in(&t, &profile, true));
    if keys.is_none() && profile != "default" {
        tracing::warn!(
            profile = %profile,
            "AWS profile has no static keys (role/SSO profiles are not supported); trying instance credentials"
        );
    }
    keys
}

fn read(path: &str) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_FILE {
        tracing::warn!(path, "AWS profile file too large, ignored");
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// The keys in section `profile` of an INI text. The config file names sections
/// `[profile NAME]` except `[default]`; the credentials file uses `[NAME]`.
fn keys_in(text: &str, profile: &str, config_file: bool) -> Option<StaticKeys> {
    let wanted = if config_file && profile != "default" {
        format!("profile {profile}")
    } else {
        profile.to_string()
    };
    let mut inside = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == wanted;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some(StaticKeys {
        access_key_id: id.filter(|s| !s.is_empty())?,
        secret_access_key: secret.filter(|s| !s.is_empty())?,
        session_token: token.filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_of_both_files() {
        let creds = "[default]\naws_access_key_id = A\naws_secret_access_key=S\n\n[ci]\n\
                     aws_access_key_id=B\naws_secret_access_key=T\naws_session_token = X\n";
        assert_eq!(keys_in(creds, "default", false).unwrap().access_key_id, "A");
        let ci = keys_in(creds, "ci", false).unwrap();
        assert_eq!(
            (ci.secret_access_key.as_str(), ci.session_token.as_deref()),
            ("T", Some("X"))
        );
        assert_eq!(keys_in(creds, "nope", false), None);
        let config = "[profile ci]\naws_access_key_id=C\naws_secret_access_key=U\n[ci]\nregion=x\n";
        assert_eq!(keys_in(config, "ci", true).unwrap().access_key_id, "C");
        let role_only = "[profile r]\nrole_arn=arn:aws:iam::1:role/x\nsource_profile=default\n";
        assert_eq!(keys_in(role_only, "r", true), None);
    }

    #[test]
    fn files_found_through_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(&path, "[p]\naws_access_key_id=K\naws_secret_access_key=S\n").unwrap();
        let p = path.to_str().unwrap().to_string();
        let env = move |k: &str| match k {
            "AWS_PROFILE" => Some("p".to_string()),
            "AWS_SHARED_CREDENTIALS_FILE" => Some(p.clone()),
            _ => None,
        };
        assert_eq!(static_keys(&env).unwrap().access_key_id, "K");
    }
}
