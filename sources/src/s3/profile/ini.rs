//! The two profile files as sections of keys. The config file names sections
//! `[profile NAME]` (and `[default]`); the credentials file uses `[NAME]`. A key in the
//! credentials file wins over the same key in the config file, as in the AWS CLI.

use std::collections::HashMap;

/// The largest profile file we read: these are hand-written INI files.
const MAX_FILE: u64 = 1024 * 1024;

type Sections = HashMap<String, HashMap<String, String>>;

#[derive(Debug, Default)]
pub struct Files {
    credentials: Sections,
    config: Sections,
}

impl Files {
    /// `$AWS_SHARED_CREDENTIALS_FILE` (`~/.aws/credentials`) and `$AWS_CONFIG_FILE`
    /// (`~/.aws/config`); a missing or unreadable file is empty.
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Files {
        let home = env("HOME").filter(|h| !h.is_empty());
        let file = |var: &str, default: &str| {
            env(var)
                .filter(|v| !v.is_empty())
                .or_else(|| home.as_ref().map(|h| format!("{h}/.aws/{default}")))
        };
        let load = |path: Option<String>, config: bool| {
            path.and_then(|p| read(&p))
                .map(|t| parse(&t, config))
                .unwrap_or_default()
        };
        Files {
            credentials: load(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"), false),
            config: load(file("AWS_CONFIG_FILE", "config"), true),
        }
    }

    pub fn has(&self, profile: &str) -> bool {
        self.credentials.contains_key(profile) || self.config.contains_key(profile)
    }

    /// A non-empty value of `key` (lower case) in `profile`.
    pub fn get(&self, profile: &str, key: &str) -> Option<String> {
        [&self.credentials, &self.config]
            .iter()
            .find_map(|s| s.get(profile)?.get(key))
            .filter(|v| !v.is_empty())
            .cloned()
    }
}

fn read(path: &str) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_FILE {
        tracing::warn!(path, "AWS profile file too large, ignored");
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// Sections by profile name. Other config sections (`[sso-session x]`, `[services x]`) are
/// not profiles and are skipped. Nested values (`s3 =\n  key = v`) are skipped too.
fn parse(text: &str, config_file: bool) -> Sections {
    let mut out = Sections::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            current = if !config_file || section == "default" {
                Some(section.to_string())
            } else {
                section
                    .strip_prefix("profile ")
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
            };
            if let Some(c) = &current {
                out.entry(c.clone()).or_default();
            }
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            continue;
        }
        let (Some(name), Some((k, v))) = (&current, line.split_once('=')) else {
            continue;
        };
        out.entry(name.clone())
            .or_default()
            .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_of_both_kinds() {
        let creds = parse(
            "[default]\naws_access_key_id = A\n[ci]\nAWS_Secret_Access_Key=T\n",
            false,
        );
        assert_eq!(creds["default"]["aws_access_key_id"], "A");
        assert_eq!(creds["ci"]["aws_secret_access_key"], "T");
        let config = parse(
            "[profile ci]\nregion=x\ns3 =\n  max_concurrent_requests = 2\n[ci]\nregion=y\n[sso-session s]\nsso_region=z\n",
            true,
        );
        assert_eq!(config["ci"]["region"], "x");
        assert!(!config["ci"].contains_key("max_concurrent_requests"));
        assert_eq!(config.len(), 1);
    }
}
