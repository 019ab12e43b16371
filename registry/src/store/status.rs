//! What agents report (`common::report`), kept for `status`: one row per configuration and
//! host, replaced by each report. A service key is on every host of a fleet, so what it can
//! make us keep is bounded: at most [`MAX_ROWS`] rows, the oldest reports dropped first.

use common::console::Forget;
use common::console::render::StatusRow;
use common::report::{self, Report};
use common::timefmt::OffsetDateTime;
use rusqlite::params;

use super::{Actor, Ctx, Result, Store, StoreError, from_unix_nanos, unix_nanos};

/// Rows kept: a fleet of thousands of hosts, each tracking a configuration or two.
pub const MAX_ROWS: i64 = 20_000;

impl Store {
    /// Records `report`, sent by `actor`, replacing that host's previous one.
    pub fn record_status(&self, report: &Report, actor: &Actor) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(|| "begin".into())?;
        tx.execute(
            "INSERT OR REPLACE INTO agent_status
                 (config, host, hash, error, reported, addr, fingerprint)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                report.name,
                report.host,
                report.hash,
                report.error,
                unix_nanos(common::timefmt::now()),
                actor.remote_addr,
                actor.key_fingerprint,
            ],
        )
        .ctx(|| "recording an agent report".into())?;
        tx.execute(
            "DELETE FROM agent_status WHERE (config, host) IN
                 (SELECT config, host FROM agent_status ORDER BY reported
                  LIMIT max(0, (SELECT count(*) FROM agent_status) - ?1))",
            [MAX_ROWS],
        )
        .ctx(|| "trimming agent reports".into())?;
        tx.commit().ctx(|| "commit of an agent report".into())
    }

    /// Drops the rows `which` names, as of `now`, of the configurations `may_see` admits;
    /// returns their (configuration, host), sorted. Naming one host that has no row is an
    /// error; `-silent` may find none.
    pub fn forget_status(
        &self,
        which: &Forget,
        now: OffsetDateTime,
        may_see: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, String)>> {
        let (name, host, before) = match which {
            Forget::Host { name, host } => (Some(name), Some(host), None),
            Forget::Silent { name } => (
                name.as_ref(),
                None,
                Some(unix_nanos(report::silent_before(now))),
            ),
        };
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(|| "begin".into())?;
        let mut gone = tx
            .prepare(
                "SELECT config, host FROM agent_status WHERE (?1 IS NULL OR config = ?1)
                 AND (?2 IS NULL OR host = ?2) AND (?3 IS NULL OR reported < ?3)",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![name, host, before], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<(String, String)>>>()
            })
            .ctx(|| "listing agent reports to forget".into())?;
        gone.retain(|(config, _)| may_see(config));
        if let (Forget::Host { name, host }, true) = (which, gone.is_empty()) {
            return Err(StoreError::NoReport {
                config: name.clone(),
                host: host.clone(),
            });
        }
        for (config, host) in &gone {
            tx.execute(
                "DELETE FROM agent_status WHERE config = ?1 AND host = ?2",
                [config, host],
            )
            .ctx(|| "forgetting agent reports".into())?;
        }
        tx.commit()
            .ctx(|| "commit of forgotten agent reports".into())?;
        gone.sort();
        Ok(gone)
    }

    /// The last report of every host (of configuration `name` only, if given), with each
    /// configuration's current hash.
    pub fn status(&self, name: Option<&str>) -> Result<Vec<StatusRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT s.config, s.host, s.hash, s.error, s.reported, s.addr, c.hash
                 FROM agent_status s LEFT JOIN configurations c ON c.name = s.config
                 WHERE ?1 IS NULL OR s.config = ?1",
            )
            .ctx(|| "listing agent reports".into())?;
        let rows = stmt
            .query_map([name], |r| {
                Ok((
                    r.get::<_, i64>(4)?,
                    StatusRow {
                        config: r.get(0)?,
                        host: r.get(1)?,
                        hash: r.get(2)?,
                        error: r.get(3)?,
                        reported: common::timefmt::OffsetDateTime::UNIX_EPOCH,
                        remote_addr: r.get(5)?,
                        current: r.get(6)?,
                    },
                ))
            })
            .ctx(|| "listing agent reports".into())?;
        let mut out = Vec::new();
        for row in rows {
            let (nanos, mut row) = row.ctx(|| "listing agent reports".into())?;
            row.reported = from_unix_nanos(nanos)?;
            out.push(row);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(addr: &str) -> Actor {
        Actor {
            user: "deploy-agent".into(),
            key_fingerprint: "SHA256:k".into(),
            remote_addr: addr.into(),
        }
    }

    #[test]
    fn a_report_replaces_the_last_one_of_its_host_and_the_oldest_go_past_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), super::super::Options::default()).unwrap();
        let h = "a".repeat(64);
        store
            .record_status(
                &Report::new("web", "h1", "", Some("no layers yet")),
                &actor("1"),
            )
            .unwrap();
        store
            .record_status(&Report::new("web", "h1", &h, None), &actor("2"))
            .unwrap();
        store
            .record_status(&Report::new("db", "h1", &h, None), &actor("3"))
            .unwrap();
        let mut rows = store.status(None).unwrap();
        rows.sort_by(|a, b| a.config.cmp(&b.config));
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[1].hash.as_str(), rows[1].error.as_deref()),
            (h.as_str(), None)
        );
        assert_eq!(rows[1].remote_addr, "2");
        assert_eq!(rows[1].current, None, "no such configuration");
        assert_eq!(store.status(Some("db")).unwrap().len(), 1);

        // Past the cap the oldest reports go: h1's for db and web were first.
        let conn = store.conn();
        conn.execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO agent_status SELECT 'bulk', 'host' || i, '', NULL, 9e18, '', '' FROM n;",
            MAX_ROWS - 1
        ))
        .unwrap();
        drop(conn);
        store
            .record_status(&Report::new("web", "h2", &h, None), &actor("4"))
            .unwrap();
        let rows = store.status(None).unwrap();
        assert_eq!(rows.len() as i64, MAX_ROWS);
        assert!(rows.iter().any(|r| r.host == "h2"));
        assert!(!rows.iter().any(|r| r.host == "h1" && r.config == "db"));
    }

    #[test]
    fn forget_drops_one_named_host_or_the_silent_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), super::super::Options::default()).unwrap();
        let h = "a".repeat(64);
        for (config, host) in [("web", "h1"), ("web", "h2"), ("web", "h3"), ("db", "h1")] {
            store
                .record_status(&Report::new(config, host, &h, None), &actor("1"))
                .unwrap();
        }
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(c, h)| (c.to_string(), h.to_string()))
                .collect()
        };
        let host = |name: &str, host: &str| Forget::Host {
            name: name.into(),
            host: host.into(),
        };
        let now = common::timefmt::now();
        let forget = |which: &Forget, at| store.forget_status(which, at, |_| true);

        let err = forget(&host("db", "h2"), now).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"no report of host "h2" for configuration "db" found"#
        );
        assert_eq!(
            forget(&host("web", "h2"), now).unwrap(),
            pairs(&[("web", "h2")])
        );
        assert_eq!(store.status(None).unwrap().len(), 3);

        // Nothing is silent yet; 31 minutes on, everything is.
        let silent = |name: Option<&str>| Forget::Silent {
            name: name.map(str::to_string),
        };
        assert_eq!(forget(&silent(None), now).unwrap(), []);
        let later = now + report::SILENT_AFTER + std::time::Duration::from_secs(60);
        assert_eq!(
            forget(&silent(Some("web")), later).unwrap(),
            pairs(&[("web", "h1"), ("web", "h3")])
        );
        // A key limited to some configurations forgets only theirs.
        store
            .record_status(&Report::new("api", "h1", &h, None), &actor("1"))
            .unwrap();
        assert_eq!(
            store
                .forget_status(&silent(None), later, |c| c != "db")
                .unwrap(),
            pairs(&[("api", "h1")])
        );
        assert_eq!(
            store
                .forget_status(&host("db", "h1"), later, |c| c != "db")
                .unwrap_err()
                .to_string(),
            r#"no report of host "h1" for configuration "db" found"#
        );
        assert_eq!(
            forget(&silent(None), later).unwrap(),
            pairs(&[("db", "h1")])
        );
        assert!(store.status(None).unwrap().is_empty());
    }
}
