//! The state file: the configuration last deployed successfully, in the registry's exact JSON
//! (spec 2.1), written atomically and durably (temp + fsync + rename + dir fsync; B13). A
//! corrupt file is reported once and treated as empty, but left in place until a successful
//! deploy replaces it (B16).

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use common::config::Configuration;

/// What the state file holds.
#[derive(Debug)]
pub enum Loaded {
    /// No state file: nothing deployed yet.
    Missing,
    Ok(Box<Configuration>),
    /// Unreadable or not a configuration; the message says why.
    Corrupt(String),
}

impl Loaded {
    /// The deployed configuration, if any.
    pub fn config(&self) -> Option<&Configuration> {
        match self {
            Loaded::Ok(c) => Some(c),
            _ => None,
        }
    }
    /// The deployed hash, `""` when none (the original's empty state).
    pub fn hash(&self) -> &str {
        self.config().map_or("", |c| c.hash.as_str())
    }
}

pub fn load(path: &Path) -> Loaded {
    match std::fs::read(path) {
        Ok(bytes) => match Configuration::from_json(&bytes) {
            Ok(c) => Loaded::Ok(Box::new(c)),
            Err(e) => Loaded::Corrupt(e.to_string()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Loaded::Missing,
        Err(e) => Loaded::Corrupt(e.to_string()),
    }
}

/// [`load`], logging a corrupt state file once per distinct reason (`reported` remembers the
/// last one across polls) rather than on every poll (B16: the agent goes on as if empty).
pub fn load_reporting(path: &Path, reported: &mut Option<String>) -> Loaded {
    let local = load(path);
    if let Loaded::Corrupt(why) = &local {
        if reported.as_deref() != Some(why) {
            tracing::error!(
                "state file {path:?} is unreadable ({why}); treating it as empty until a successful deploy replaces it"
            );
        }
        *reported = Some(why.clone());
    }
    local
}

/// Writes `contents` to `path` atomically and durably, with `mode`.
pub fn write_durably(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Saves the configuration as the new state.
pub fn save(path: &Path, config: &Configuration) -> io::Result<()> {
    write_durably(path, config.to_json().as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = "{\n\t\"Name\": \"p\",\n\t\"Mtime\": \"2026-11-22T07:26:29.184481867Z\",\n\t\"Hash\": \"59bf8f4d1b0b2c35e4d76e4ea0c6ae1a3e1b0e0b6e1f8b2b7a8b5d3b7d1c8e2f\",\n\t\"Layers\": [\n\t\t{\n\t\t\t\"Name\": \"code\",\n\t\t\t\"Version\": \"v1\",\n\t\t\t\"File\": \"files/8028082258c337e8a30de750bf72c37e41aef18bfe5011c1c54489e8f8edbbf1\",\n\t\t\t\"Hash\": \"8028082258c337e8a30de750bf72c37e41aef18bfe5011c1c54489e8f8edbbf1\",\n\t\t\t\"Ctime\": \"2026-11-22T07:26:19.817675717Z\"\n\t\t}\n\t]\n}\n";

    #[test]
    fn round_trips_exact_bytes_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("sub/state.json");
        let c = Configuration::from_json(JSON.as_bytes()).unwrap();
        save(&p, &c).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), JSON);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(load(&p).hash(), c.hash);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("sub")).unwrap().count(),
            1,
            "temp file left"
        );
    }

    #[test]
    fn missing_and_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("state.json");
        assert!(matches!(load(&p), Loaded::Missing));
        std::fs::write(&p, b"{not json").unwrap();
        assert!(matches!(load(&p), Loaded::Corrupt(_)));
        assert_eq!(load(&p).hash(), "");
        // Loading never touches the file.
        assert_eq!(std::fs::read(&p).unwrap(), b"{not json");
    }
}
