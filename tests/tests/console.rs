//! The operator console over real OpenSSH, against the built `deploy-registry`: every command
//! and error text of spec 1.7/1.8 byte for byte, exit statuses, the shellwords quirks, and the
//! interactive shell through a pty.

use std::fs;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use e2e::{Registry, add_version, eqnice, fingerprint_of, sha256_hex, tar_gz, upload};

/// Runs `cmd` and checks exit status 1, `expected` on stdout, nothing on stderr (the console
/// writes errors to stdout, spec 1.7).
#[track_caller]
fn fails(reg: &Registry, cmd: &str, expected: &str) {
    let out = reg.ssh(cmd);
    out.assert_code(1);
    eqnice!(expected, out.stdout_str(), "stdout of {cmd:?}");
    assert!(out.stderr.is_empty(), "stderr not empty:\n{out}");
}

/// Runs `cmd` and checks exit status 0 and exactly `expected` on stdout.
#[track_caller]
fn succeeds(reg: &Registry, cmd: &str, expected: &str) {
    let out = reg.ssh(cmd);
    out.assert_code(0);
    eqnice!(expected, out.stdout_str(), "stdout of {cmd:?}");
    assert!(out.stderr.is_empty(), "stderr not empty:\n{out}");
}

/// Go tabwriter (padding 3) for rows whose every cell ends in TAB: each column is padded to
/// its widest cell plus 3, the last column too (so lines end in spaces).
fn tabwrite(rows: &[Vec<String>]) -> String {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                + 3
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, cell) in r.iter().enumerate() {
            out.push_str(cell);
            out.push_str(&" ".repeat(widths[c] - cell.chars().count()));
        }
        out.push('\n');
    }
    out
}

fn is_rfc3339_secs(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The (ctime, version) rows `showcomp` prints, parsed back.
fn showcomp_rows(reg: &Registry, comp: &str) -> Vec<(String, String)> {
    let out = reg.ssh(&format!("showcomp -name {comp}"));
    out.assert_ok();
    out.stdout_str()
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            let t = w.next().unwrap_or_default().to_string();
            let v = w.next().unwrap_or_default().to_string();
            assert!(is_rfc3339_secs(&t), "bad time in showcomp line {l:?}");
            (t, v)
        })
        .collect()
}

fn ctime(reg: &Registry, comp: &str, version: &str) -> String {
    showcomp_rows(reg, comp)
        .into_iter()
        .find(|(_, v)| v == version)
        .unwrap_or_else(|| panic!("{comp} {version} not in showcomp"))
        .0
}

/// Two components (`code`, `config`), one version each, and configuration `project1` of both.
struct Fixture {
    reg: Registry,
    code: String,
    config: String,
}

fn fixture() -> Fixture {
    let reg = Registry::start();
    let code = add_version(&reg, "code", "v01", &tar_gz(&[("bin/app", b"code v01")]));
    let config = add_version(
        &reg,
        "config",
        "v01",
        &tar_gz(&[("etc/app.conf", b"config v01")]),
    );
    reg.ssh("addconf -name project1 -layer code:v01 -layer config:v01")
        .assert_ok();
    Fixture { reg, code, config }
}

const HELP: &str = "\
addver          add new component version from previously uploaded file
addconf         add new configuration from existing component versions
bumpconf        update single layer of configuration to most recent uploaded version
changeconf      update single layer of configuration to specific version
showconf        show configuration
showcomp        show component versions
components      list all known components
configurations  list all known configurations
delver          delete component version
delcomp         delete all component versions
delconf         delete configuration
";

/// The original's listing (spec 1.8) with our six commands appended in the same layout.
const HELP_OURS: &str = "\
history         show saved states of configuration
rollback        restore configuration to one of its saved states
audit           show most recent console commands
fsck            verify stored files and references
status          show which configuration each agent runs
forget          forget hosts shown by status

use -h flag to get more help on a specific command
";

/// Unlike the original, the list includes bumpconf (spec 8.B10) and our commands.
const UNKNOWN: &str = "Unknown command, supported commands are:\nhelp, addver, addconf, changeconf, bumpconf, showconf, components, configurations, showcomp, delver, delcomp, delconf, history, rollback, audit, fsck, status, forget\n";

#[test]
fn help_lists_every_command() {
    let reg = Registry::start();
    succeeds(&reg, "help", &format!("{HELP}{HELP_OURS}"));
    // Extra arguments are ignored.
    succeeds(&reg, "help me please", &format!("{HELP}{HELP_OURS}"));
}

#[test]
fn unknown_command_lists_the_commands() {
    let reg = Registry::start();
    // Unlike the original, the list includes bumpconf (spec 8.B10) and our commands.
    let text = UNKNOWN;
    fails(&reg, "frobnicate -name x", text);
    // Case matters: commands are exact words.
    fails(&reg, "HELP", text);
    fails(&reg, "scp -t /tmp", text);
}

#[test]
fn blank_line_is_nothing_to_do() {
    let reg = Registry::start();
    fails(&reg, "  \t ", "nothing to do\n");
}

#[test]
fn addver_validation_texts() {
    let reg = Registry::start();
    let set = "name, version and hash should all be set\n";
    fails(&reg, "addver", set);
    fails(&reg, "addver -name c -version v", set);
    fails(&reg, "addver -name c -hash 00", set);
    fails(&reg, "addver -version v -hash 00", set);
    fails(
        &reg,
        &format!("addver -name a:b -version v -hash {}", "0".repeat(64)),
        "name cannot contain : symbol\n",
    );
    let bad_len = "hash should be a hex representation of content sha256 sum, 64 chars long\n";
    fails(&reg, "addver -name c -version v -hash abc", bad_len);
    fails(
        &reg,
        &format!("addver -name c -version v -hash {}", "0".repeat(65)),
        bad_len,
    );
    // Checks run in order: `:` before the hash length.
    fails(
        &reg,
        "addver -name a:b -version v -hash abc",
        "name cannot contain : symbol\n",
    );
    fails(
        &reg,
        &format!("addver -name c -version v -hash {}", "0".repeat(64)),
        "no uploaded file with given hash found\n",
    );
    // The match is exact: an uppercase spelling of an uploaded hash is not that upload.
    let hash = upload(&reg, b"some content");
    let upper = hash.to_uppercase();
    let out = reg.ssh(&format!("addver -name c -version v -hash {upper}"));
    out.assert_code(1);
    reg.ssh(&format!("addver -name c -version v -hash {hash}"))
        .assert_ok();
    fails(
        &reg,
        &format!("addver -name c -version v -hash {hash}"),
        "version \"v\" already exists\n",
    );
    succeeds(&reg, "components", "c\n");
}

#[test]
fn addver_of_already_stored_content_needs_no_upload() {
    let reg = Registry::start();
    let blob = tar_gz(&[("f", b"shared")]);
    let hash = add_version(&reg, "code", "v01", &blob);
    // Spec 8.B4 / design.md promise: a second version of stored content, no re-upload.
    succeeds(
        &reg,
        &format!("addver -name code -version v02 -hash {hash}"),
        "",
    );
    succeeds(
        &reg,
        &format!("addver -name other -version x -hash {hash}"),
        "",
    );
    let rows = showcomp_rows(&reg, "code");
    let versions: Vec<&str> = rows.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(versions, ["v01", "v02"]);
    succeeds(&reg, "components", "code\nother\n");
    assert_eq!(sha256_hex(&blob), hash);
}

#[test]
fn addconf_validation_and_flag_errors() {
    let f = fixture();
    let reg = &f.reg;
    let usage = "Usage of addconf:\n  -layer value\n    \tlayer in component:version format; can be set multiple times\n  -name string\n    \tconfiguration name\n";
    fails(reg, "addconf", "name should be set\n");
    fails(reg, "addconf -layer code:v01", "name should be set\n");
    fails(
        reg,
        "addconf -name p",
        "configuration should have at least one layer\n",
    );
    fails(
        reg,
        "addconf -name a/b -layer code:v01",
        "name cannot contain / symbol\n",
    );
    fails(
        reg,
        "addconf -name p -layer code:nope",
        "no version \"nope\" for component \"code\" found\n",
    );
    fails(
        reg,
        "addconf -name p -layer nope:v01",
        "no version \"v01\" for component \"nope\" found\n",
    );
    fails(
        reg,
        "addconf -name p -layer code",
        &format!("invalid value \"code\" for flag -layer: invalid value\n{usage}"),
    );
    fails(
        reg,
        "addconf -name p -layer code:v01 -layer code:v02",
        &format!(
            "invalid value \"code:v02\" for flag -layer: duplicate component \"code\"\n{usage}"
        ),
    );
    fails(reg, "addconf -h", usage);
    fails(reg, "addconf -help", usage);
    fails(
        reg,
        "addconf -name",
        &format!("flag needs an argument: -name\n{usage}"),
    );
    fails(
        reg,
        "addconf -x",
        &format!("flag provided but not defined: -x\n{usage}"),
    );
    // Nothing was created by the failures.
    succeeds(reg, "configurations", "project1\n");
    // An existing configuration is silently replaced (deploy-from-docker relies on it).
    succeeds(reg, "addconf -name project1 -layer config:v01", "");
    let t = ctime(reg, "config", "v01");
    succeeds(
        reg,
        "showconf -name project1",
        &tabwrite(&[vec!["config".into(), "v01".into(), t]]),
    );
}

#[test]
fn changeconf_validation_and_effect() {
    let f = fixture();
    let reg = &f.reg;
    add_version(reg, "code", "v02", &tar_gz(&[("bin/app", b"code v02")]));
    let all = "name, component and version should all be set\n";
    fails(reg, "changeconf", all);
    fails(reg, "changeconf -name project1 -component code", all);
    fails(
        reg,
        "changeconf -name a/b -component code -version v02",
        "name cannot contain / symbol\n",
    );
    fails(
        reg,
        "changeconf -name project1 -component code -version v9",
        "no version \"v9\" for component \"code\" found\n",
    );
    fails(
        reg,
        "changeconf -name nope -component code -version v02",
        "configuration \"nope\" not found\n",
    );
    add_version(reg, "other", "o1", &tar_gz(&[("o", b"o")]));
    fails(
        reg,
        "changeconf -name project1 -component other -version o1",
        "configuration has no layer for component \"other\"\n",
    );
    fails(
        reg,
        "changeconf -name project1 -component code -version",
        "flag needs an argument: -version\nUsage of changeconf:\n  -component string\n    \tcomponent name to update\n  -name string\n    \tconfiguration name\n  -version string\n    \tnew version of selected component\n",
    );
    succeeds(
        reg,
        "changeconf -name project1 -component code -version v02",
        "",
    );
    // The layer keeps its position.
    let expected = tabwrite(&[
        vec!["code".into(), "v02".into(), ctime(reg, "code", "v02")],
        vec!["config".into(), "v01".into(), ctime(reg, "config", "v01")],
    ]);
    succeeds(reg, "showconf -name project1", &expected);
    // Changing to the current version is fine.
    succeeds(
        reg,
        "changeconf -name project1 -component code -version v02",
        "",
    );
}

#[test]
fn bumpconf_prints_the_rollback_hint_only_when_changed() {
    let reg = Registry::start();
    fails(&reg, "bumpconf", "both name and component should be set\n");
    fails(
        &reg,
        "bumpconf -name p",
        "both name and component should be set\n",
    );
    fails(
        &reg,
        "bumpconf -name a/b -component code",
        "name cannot contain / symbol\n",
    );
    fails(
        &reg,
        "bumpconf -name p -component code",
        "no components found\n",
    );
    add_version(&reg, "code", "v01", &tar_gz(&[("a", b"1")]));
    fails(
        &reg,
        "bumpconf -name p -component nope",
        "no component \"nope\" found\n",
    );
    fails(
        &reg,
        "bumpconf -name p -component code",
        "configuration \"p\" not found\n",
    );
    reg.ssh("addconf -name p -layer code:v01").assert_ok();
    add_version(&reg, "other", "o1", &tar_gz(&[("o", b"o")]));
    fails(
        &reg,
        "bumpconf -name p -component other",
        "configuration has no layer for component \"other\"\n",
    );
    // Unchanged: no output.
    succeeds(&reg, "bumpconf -name p -component code", "");
    // A second later, so "latest" is unambiguous even at 1 s granularity.
    thread::sleep(Duration::from_millis(1100));
    add_version(&reg, "code", "v02", &tar_gz(&[("a", b"2")]));
    succeeds(
        &reg,
        "bumpconf -name p -component code",
        "to roll back run:\n\tchangeconf -name=\"p\" -component=\"code\" -version=\"v01\"\n",
    );
    succeeds(&reg, "bumpconf -name p -component code", "");
    succeeds(
        &reg,
        "showconf -name p",
        &tabwrite(&[vec![
            "code".into(),
            "v02".into(),
            ctime(&reg, "code", "v02"),
        ]]),
    );
    // A component whose versions were all deleted.
    reg.ssh("delver -name other -version o1").assert_ok();
    reg.ssh("addconf -name q -layer code:v01").assert_ok();
    let out = reg.ssh("bumpconf -name q -component other");
    out.assert_code(1);
    let text = out.stdout_str();
    assert!(
        text == "no versions for component \"other\" found\n"
            || text == "no component \"other\" found\n",
        "{out}"
    );
}

#[test]
fn bumpconf_quotes_names_go_style_in_the_hint() {
    let reg = Registry::start();
    let h1 = upload(&reg, &tar_gz(&[("a", b"1")]));
    succeeds(
        &reg,
        &format!("addver -name 'co\"de' -version 'v 1' -hash {h1}"),
        "",
    );
    reg.ssh(r#"addconf -name "my conf" -layer 'co"de:v 1'"#)
        .assert_ok();
    thread::sleep(Duration::from_millis(1100));
    let hash = upload(&reg, &tar_gz(&[("a", b"2")]));
    reg.ssh(&format!("addver -name 'co\"de' -version v2 -hash {hash}"))
        .assert_ok();
    succeeds(
        &reg,
        r#"bumpconf -name "my conf" -component 'co"de'"#,
        "to roll back run:\n\tchangeconf -name=\"my conf\" -component=\"co\\\"de\" -version=\"v 1\"\n",
    );
}

#[test]
fn showconf_layouts_and_errors() {
    let f = fixture();
    let reg = &f.reg;
    let usage =
        "Usage of showconf:\n  -name string\n    \tconfiguration name\n  -v\tshow extra details\n";
    fails(reg, "showconf", "name should be set\n");
    fails(reg, "showconf -name a/b", "name cannot contain / symbol\n");
    fails(
        reg,
        "showconf -name nope",
        "configuration \"nope\" not found\n",
    );
    fails(
        reg,
        "showconf -x",
        &format!("flag provided but not defined: -x\n{usage}"),
    );
    fails(
        reg,
        "showconf -name",
        &format!("flag needs an argument: -name\n{usage}"),
    );
    fails(
        reg,
        "showconf -name project1 -v=maybe",
        &format!("invalid boolean value \"maybe\" for -v: parse error\n{usage}"),
    );
    fails(reg, "showconf -h", usage);

    let rows = tabwrite(&[
        vec!["code".into(), "v01".into(), ctime(reg, "code", "v01")],
        vec!["config".into(), "v01".into(), ctime(reg, "config", "v01")],
    ]);
    assert!(rows.lines().all(|l| l.ends_with("   ")), "{rows:?}");
    succeeds(reg, "showconf -name project1", &rows);
    succeeds(reg, "showconf -name=project1 -v=false", &rows);

    let out = reg.ssh("showconf -v -name project1");
    out.assert_code(0);
    let text = out.stdout_str();
    let (header, body) = text
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("no blank line after header:\n{out}"));
    let lines: Vec<&str> = header.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "Name:\tproject1");
    let mtime = lines[1]
        .strip_prefix("Mtime:\t")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(is_rfc3339_secs(mtime), "Mtime {mtime:?}");
    let hash = sha256_hex(format!("{}\n{}\n", f.code, f.config).as_bytes());
    assert_eq!(lines[2], format!("Hash:\t{hash}"));
    eqnice!(rows, body);
    // Flags are parsed in any order, last wins, and `-v=true` is `-v`.
    let again = reg.ssh("showconf -name nope -v=true -name project1");
    again.assert_code(0);
    eqnice!(text, again.stdout_str());
}

#[test]
fn flags_stop_at_the_first_positional_argument() {
    let f = fixture();
    let reg = &f.reg;
    let rows = reg.ssh("showconf -name project1").stdout_str();
    // Arguments after the first non-flag are ignored...
    succeeds(reg, "showconf -name project1 extra positional", &rows);
    succeeds(reg, "showconf -name project1 -- -v", &rows);
    // ...so flags after a positional are never seen.
    fails(reg, "showconf extra -name project1", "name should be set\n");
    // Go's flag package accepts --flag and -flag=value.
    succeeds(reg, "showconf --name=project1", &rows);
    succeeds(reg, "showconf --name project1", &rows);
}

#[test]
fn shellwords_quirks() {
    let f = fixture();
    let reg = &f.reg;
    let rows = reg.ssh("showconf -name project1").stdout_str();
    // `;&|<>` outside quotes silently end the line: `a;rm -rf /` is just `a`.
    fails(reg, "a;rm -rf /", UNKNOWN);
    succeeds(reg, "showconf -name project1;rm -rf /", &rows);
    succeeds(reg, "components|wc -l", "code\nconfig\n");
    succeeds(reg, "components&&reboot", "code\nconfig\n");
    succeeds(reg, "components>out", "code\nconfig\n");
    // ...but not inside quotes.
    fails(
        reg,
        "showconf -name 'project1;x'",
        "configuration \"project1;x\" not found\n",
    );
    // Parse errors.
    for bad in [
        "showconf -name \"project1",
        "showconf -name 'project1",
        "showconf -name project1\\",
        "showconf (x)",
        "showconf x)",
    ] {
        fails(reg, bad, "invalid command line string\n");
    }
    // Quotes and escapes join into words.
    succeeds(reg, "showconf -name pro\"ject\"'1'", &rows);
    succeeds(reg, "showconf -name pro\\ject1", &rows);
    // Backticks and $(...) are literal, never run.
    fails(
        reg,
        "showconf -name `id`",
        "configuration \"`id`\" not found\n",
    );
    fails(
        reg,
        "showconf -name $(id)",
        "configuration \"$(id)\" not found\n",
    );
    // Names with spaces, quoted.
    succeeds(reg, "addconf -name 'my conf' -layer code:v01", "");
    succeeds(reg, "configurations", "my conf\nproject1\n");
    // Versions may hold ':' (split at the first one).
    let h = upload(reg, &tar_gz(&[("x", b"v:1")]));
    succeeds(
        reg,
        &format!("addver -name code -version v:1 -hash {h}"),
        "",
    );
    succeeds(reg, "addconf -name colon -layer code:v:1", "");
    let t = ctime(reg, "code", "v:1");
    succeeds(
        reg,
        "showconf -name colon",
        &tabwrite(&[vec!["code".into(), "v:1".into(), t]]),
    );
}

#[test]
fn showcomp_lists_versions_oldest_first() {
    let reg = Registry::start();
    let usage = "Usage of showcomp:\n  -name string\n    \tcomponent name\n";
    fails(&reg, "showcomp", "name should be set\n");
    fails(&reg, "showcomp -name a:b", "name cannot contain : symbol\n");
    fails(
        &reg,
        "showcomp -x",
        &format!("flag provided but not defined: -x\n{usage}"),
    );
    // An unknown component prints nothing.
    succeeds(&reg, "showcomp -name nope", "");
    // Added in the order b, then (a second later) a-long: time order, not name order.
    add_version(&reg, "code", "b", &tar_gz(&[("f", b"b")]));
    thread::sleep(Duration::from_millis(1100));
    add_version(&reg, "code", "a-long", &tar_gz(&[("f", b"a")]));
    let rows = showcomp_rows(&reg, "code");
    assert_eq!(
        rows.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
        ["b", "a-long"]
    );
    assert!(rows[0].0 < rows[1].0, "{rows:?}");
    let expected = tabwrite(
        &rows
            .iter()
            .map(|(t, v)| vec![t.clone(), v.clone()])
            .collect::<Vec<_>>(),
    );
    succeeds(&reg, "showcomp -name code", &expected);
    assert!(expected.contains("   b        \n"), "{expected:?}");
}

#[test]
fn components_and_configurations_list_names_sorted() {
    let reg = Registry::start();
    succeeds(&reg, "components", "");
    succeeds(&reg, "configurations", "");
    for name in ["zeta", "Alpha", "beta"] {
        add_version(&reg, name, "v", &tar_gz(&[("f", name.as_bytes())]));
        reg.ssh(&format!("addconf -name {name}-conf -layer {name}:v"))
            .assert_ok();
    }
    // Byte order: uppercase first.
    succeeds(&reg, "components", "Alpha\nbeta\nzeta\n");
    succeeds(&reg, "configurations", "Alpha-conf\nbeta-conf\nzeta-conf\n");
    // Arguments, even -h, are ignored.
    succeeds(&reg, "components -h", "Alpha\nbeta\nzeta\n");
    succeeds(
        &reg,
        "configurations whatever",
        "Alpha-conf\nbeta-conf\nzeta-conf\n",
    );
}

#[test]
fn delver_and_delcomp_refuse_versions_in_use() {
    let f = fixture();
    let reg = &f.reg;
    fails(reg, "delver", "both name and version should be set\n");
    fails(
        reg,
        "delver -name code",
        "both name and version should be set\n",
    );
    fails(
        reg,
        "delver -name a:b -version v01",
        "name cannot contain : symbol\n",
    );
    fails(
        reg,
        "delver -name code -version v9",
        "no version \"v9\" for component \"code\" found\n",
    );
    fails(
        reg,
        "delver -name code -version v01",
        "version is used by configuration \"project1\"\n",
    );
    fails(
        reg,
        "delver -x",
        "flag provided but not defined: -x\nUsage of delver:\n  -name string\n    \tcomponent name\n  -version string\n    \tunique version id\n",
    );
    fails(reg, "delcomp", "name should be set\n");
    fails(reg, "delcomp -name nope", "\"nope\" component not found\n");
    fails(
        reg,
        "delcomp -name code",
        "component is used by configuration \"project1\"\n",
    );
    fails(
        reg,
        "delcomp -h",
        "Usage of delcomp:\n  -name string\n    \tcomponent name\n",
    );

    add_version(reg, "code", "v02", &tar_gz(&[("bin/app", b"code v02")]));
    succeeds(reg, "delver -name code -version v02", "");
    assert_eq!(showcomp_rows(reg, "code").len(), 1);
    fails(
        reg,
        "delver -name code -version v02",
        "no version \"v02\" for component \"code\" found\n",
    );

    add_version(reg, "tmp", "t1", &tar_gz(&[("t", b"1")]));
    add_version(reg, "tmp", "t2", &tar_gz(&[("t", b"2")]));
    succeeds(reg, "delcomp -name tmp", "");
    succeeds(reg, "showcomp -name tmp", "");
    succeeds(reg, "components", "code\nconfig\n");
    // Once the configuration is gone, its versions can go too.
    succeeds(reg, "delconf -name project1 -force", "");
    succeeds(reg, "delver -name code -version v01", "");
    succeeds(reg, "delcomp -name config", "");
}

#[test]
fn delconf_needs_force() {
    let f = fixture();
    let reg = &f.reg;
    fails(reg, "delconf", "name should be set\n");
    fails(
        reg,
        "delconf -name a/b -force",
        "name cannot contain / symbol\n",
    );
    fails(
        reg,
        "delconf -name project1",
        "Run command with -force flag to confirm removal\n",
    );
    fails(
        reg,
        "delconf -name project1 -force=false",
        "Run command with -force flag to confirm removal\n",
    );
    fails(
        reg,
        "delconf -name nope -force",
        "\"nope\" configuration not found\n",
    );
    fails(
        reg,
        "delconf -h",
        "Usage of delconf:\n  -force\n    \tremove configuration for real\n  -name string\n    \tconfiguration name\n",
    );
    succeeds(reg, "configurations", "project1\n");
    succeeds(reg, "delconf -name project1 -force", "");
    succeeds(reg, "configurations", "");
    fails(
        reg,
        "showconf -name project1",
        "configuration \"project1\" not found\n",
    );
}

#[test]
fn usage_blocks_of_every_command() {
    let reg = Registry::start();
    for (cmd, usage) in [
        (
            "addver",
            "Usage of addver:\n  -hash string\n    \tsha256 content hash in hex representation (64 chars)\n  -name string\n    \tcomponent name\n  -version string\n    \tunique version id\n",
        ),
        (
            "bumpconf",
            "Usage of bumpconf:\n  -component string\n    \tcomponent name to update\n  -name string\n    \tconfiguration name\n",
        ),
        (
            "changeconf",
            "Usage of changeconf:\n  -component string\n    \tcomponent name to update\n  -name string\n    \tconfiguration name\n  -version string\n    \tnew version of selected component\n",
        ),
        (
            "showcomp",
            "Usage of showcomp:\n  -name string\n    \tcomponent name\n",
        ),
        (
            "delver",
            "Usage of delver:\n  -name string\n    \tcomponent name\n  -version string\n    \tunique version id\n",
        ),
    ] {
        fails(&reg, &format!("{cmd} -h"), usage);
        fails(
            &reg,
            &format!("{cmd} -nope"),
            &format!("flag provided but not defined: -nope\n{usage}"),
        );
    }
}

/// A successful rollback says what it restored (the configuration hash).
#[track_caller]
fn rolls_back(reg: &Registry, cmd: &str) {
    rolls_back_named(reg, "project1", cmd);
}

#[test]
fn history_and_rollback() {
    let f = fixture();
    let reg = &f.reg;
    add_version(reg, "code", "v02", &tar_gz(&[("bin/app", b"code v02")]));
    add_version(reg, "code", "v03", &tar_gz(&[("bin/app", b"code v03")]));
    reg.ssh("changeconf -name project1 -component code -version v02")
        .assert_ok();
    reg.ssh("changeconf -name project1 -component code -version v03")
        .assert_ok();

    fails(
        reg,
        "history -name nope",
        "configuration \"nope\" not found\n",
    );
    let out = reg.ssh("history -name project1");
    out.assert_code(0);
    let text = out.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "one row per save:\n{out}");
    // Newest first; the current one is starred; user and command are recorded.
    assert!(lines[0].contains("code@v03 config@v01"), "{out}");
    assert!(lines[1].contains("code@v02 config@v01"), "{out}");
    assert!(lines[2].contains("code@v01 config@v01"), "{out}");
    assert!(lines[2].contains("addconf"), "{out}");
    assert!(
        lines[0].contains("changeconf") && lines[0].contains(" op "),
        "{out}"
    );
    let seq = |l: &str| -> (u64, bool) {
        let w = l.split_whitespace().next().unwrap_or_default();
        (
            w.trim_end_matches('*')
                .parse()
                .unwrap_or_else(|_| panic!("no seq in {l:?}")),
            w.ends_with('*'),
        )
    };
    assert!(
        seq(lines[0]).1 && !seq(lines[1]).1 && !seq(lines[2]).1,
        "{out}"
    );
    let (s_v01, s_v03) = (seq(lines[2]).0, seq(lines[0]).0);
    let h01 = sha256_hex(format!("{}\n{}\n", f.code, f.config).as_bytes());
    assert!(lines[2].contains(&h01[..12]), "hash prefix missing:\n{out}");
    // Table layout: columns aligned (tabwriter), so the user column starts at one offset.
    let col = |l: &str| l.find(" op ").unwrap_or_else(|| panic!("no user in {l:?}"));
    assert!(lines.iter().all(|l| col(l) == col(lines[0])), "{text:?}");

    // rollback: back to the state before the current one.
    rolls_back(reg, "rollback -name project1");
    let v = |reg: &Registry| reg.ssh("showconf -name project1").stdout_str();
    assert!(v(reg).starts_with("code     v02 "), "{}", v(reg));
    // rollback -to N: any saved state.
    rolls_back(reg, &format!("rollback -name project1 -to {s_v01}"));
    assert!(v(reg).starts_with("code     v01 "), "{}", v(reg));
    rolls_back(reg, &format!("rollback -name project1 -to {s_v03}"));
    assert!(v(reg).starts_with("code     v03 "), "{}", v(reg));
    let out = reg.ssh("rollback -name project1 -to 999999");
    out.assert_code(1);
    assert!(!out.stdout.is_empty(), "{out}");
    fails(
        reg,
        "rollback -name nope",
        "configuration \"nope\" not found\n",
    );
    // Rollbacks are saves too, newest first.
    let text = reg.ssh("history -name project1").stdout_str();
    assert!(text.lines().count() >= 5, "{text}");
    assert!(
        text.lines().next().unwrap_or_default().contains("code@v03"),
        "{text}"
    );
    assert!(
        text.lines().next().unwrap_or_default().contains("rollback"),
        "{text}"
    );
}

/// `-maxhist 2`: only the two newest saves are kept, an older one cannot be rolled back to,
/// and `-maxver` may then prune a version that only the dropped saves named.
#[test]
fn history_is_bounded_by_maxhist() {
    let reg = Registry::start_with(&["-maxhist", "2"]);
    for v in ["v01", "v02", "v03"] {
        add_version(&reg, "code", v, &tar_gz(&[("bin/app", v.as_bytes())]));
    }
    reg.ssh("addconf -name web -layer code:v01").assert_ok();
    reg.ssh("changeconf -name web -component code -version v02")
        .assert_ok();
    reg.ssh("changeconf -name web -component code -version v03")
        .assert_ok();
    let text = reg.ssh("history -name web").assert_ok().stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("3*") && lines[0].contains("code@v03"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("2 ") && lines[1].contains("code@v02"),
        "{text}"
    );
    fails(
        &reg,
        "rollback -name web -to 1",
        "no history entry 1 for configuration \"web\"\n",
    );
    rolls_back_named(&reg, "web", "rollback -name web");
    let shown = reg.ssh("showconf -name web").stdout_str();
    assert_eq!(
        shown.split_whitespace().take(2).collect::<Vec<_>>(),
        ["code", "v02"],
        "{shown}"
    );
}

#[track_caller]
fn rolls_back_named(reg: &Registry, name: &str, cmd: &str) {
    let out = reg.ssh(cmd);
    out.assert_code(0);
    assert!(
        out.stdout_str()
            .starts_with(&format!("rolled back configuration \"{name}\" to ")),
        "{out}"
    );
}

#[test]
fn rollback_of_a_deleted_version_fails_cleanly() {
    let f = fixture();
    let reg = &f.reg;
    add_version(reg, "code", "v02", &tar_gz(&[("bin/app", b"code v02")]));
    reg.ssh("changeconf -name project1 -component code -version v02")
        .assert_ok();
    // v01 is only referenced by history now, and history does not pin it.
    reg.ssh("delver -name code -version v01").assert_ok();
    let out = reg.ssh("rollback -name project1");
    out.assert_code(1);
    assert!(
        out.stdout_str().contains("v01"),
        "the error should name the missing version:\n{out}"
    );
    assert!(
        reg.ssh("showconf -name project1")
            .stdout_str()
            .starts_with("code     v02 ")
    );
}

#[test]
fn audit_records_who_did_what() {
    let reg = Registry::start();
    add_version(&reg, "code", "v01", &tar_gz(&[("f", b"1")]));
    reg.ssh("addconf -name p -layer code:v02").assert_code(1);
    reg.ssh_as(
        "alice",
        &reg.keys.operator,
        "addconf -name p -layer code:v01",
    )
    .assert_ok();
    let out = reg.ssh("audit");
    out.assert_code(0);
    let text = out.stdout_str();
    let fp = fingerprint_of(&reg.keys.operator);
    let ok_line = text
        .lines()
        .find(|l| l.contains("addconf") && l.contains("code:v01"))
        .unwrap_or_else(|| panic!("successful addconf not audited:\n{out}"));
    for needle in ["alice", fp.as_str(), "127.0.0.1", " ok "] {
        assert!(
            ok_line.contains(needle),
            "{needle:?} missing in {ok_line:?}"
        );
    }
    let fail_line = text
        .lines()
        .find(|l| l.contains("addconf") && l.contains("code:v02"))
        .unwrap_or_else(|| panic!("failed addconf not audited:\n{out}"));
    assert!(fail_line.contains("fail"), "{fail_line:?}");
    assert!(fail_line.contains(" op "), "{fail_line:?}");
    assert!(text.lines().any(|l| l.contains("addver")), "{out}");
    // Newest last: the addconf by alice comes after the failed one.
    let pos = |needle: &str| text.find(needle).unwrap_or(usize::MAX);
    assert!(pos("code:v02") < pos("code:v01"), "{out}");
    // The registry log has the original's `command ok/fail: [words]` lines, with identity.
    let log = reg.log();
    assert!(
        log.contains("command ok: [addconf -name p -layer code:v01] user=alice"),
        "{log}"
    );
    assert!(
        log.contains("command fail: [addconf -name p -layer code:v02] user=op"),
        "{log}"
    );
    // -n limits the count.
    let one = reg.ssh("audit -n 1");
    one.assert_code(0);
    assert_eq!(one.stdout_str().lines().count(), 1, "{one}");
}

#[test]
fn exec_errors_go_to_stdout_with_status_1() {
    let f = fixture();
    let out = f.reg.ssh("showconf -name nope");
    out.assert_code(1);
    assert_eq!(out.stdout_str(), "configuration \"nope\" not found\n");
    assert!(out.stderr.is_empty(), "{out}");
    f.reg.ssh("components").assert_code(0);
}

/// Collects a child's stdout in the background, so a test can wait for patterns.
struct Pty {
    child: std::process::Child,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn spawn(mut cmd: Command) -> Pty {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ssh");
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&out);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty { child, out }
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(bytes).expect("write");
        stdin.flush().expect("flush");
    }

    fn output(&self) -> Vec<u8> {
        self.out.lock().unwrap().clone()
    }

    /// Waits until `pred(output)` holds; panics with the output after 30 s.
    fn wait_for(&self, what: &str, pred: impl Fn(&[u8]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pred(&self.output()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; output: {:?}",
                String::from_utf8_lossy(&self.output())
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exit (stdin kept open), at most 30 s.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        match e2e::wait_exit(&mut self.child, Duration::from_secs(30)) {
            Some(st) => st,
            None => panic!(
                "shell did not exit; output: {:?}",
                String::from_utf8_lossy(&self.output())
            ),
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const PROMPT: &[u8] = b"\x1b[31m> \x1b[0m";

#[test]
fn interactive_shell_with_a_pty() {
    let f = fixture();
    let reg = &f.reg;
    let mut cmd = reg.ssh_cmd(&reg.keys.operator);
    cmd.arg("-tt").arg(reg.dest("op"));
    let mut sh = Pty::spawn(cmd);
    sh.wait_for("the red prompt", |o| has(o, PROMPT));
    assert!(
        sh.output().starts_with(PROMPT),
        "output starts with the prompt: {:?}",
        String::from_utf8_lossy(&sh.output())
    );
    // Ctrl-C does not end the session; CR ends a line; output lines end in CRLF.
    sh.send(b"\x03components\r");
    sh.wait_for("components output and a new prompt", |o| {
        has(o, b"components\r\ncode\r\nconfig\r\n") && o.ends_with(PROMPT)
    });
    // An error is printed and the session goes on.
    sh.send(b"showconf -name nope\r");
    sh.wait_for("error text", |o| {
        has(
            o,
            b"showconf -name nope\r\nconfiguration \"nope\" not found\r\n",
        ) && o.ends_with(PROMPT)
    });
    sh.send(b"showconf -name \"x\r");
    sh.wait_for("parse error", |o| {
        has(o, b"\r\ninvalid command line string\r\n") && o.ends_with(PROMPT)
    });
    // Blank lines are skipped.
    sh.send(b"   \r");
    sh.send(b"help\r");
    sh.wait_for("help", |o| has(o, b"delconf  "));
    // Ctrl-D on an empty line ends the shell with status 0, stdin still open.
    sh.send(b"\x04");
    let st = sh.wait_exit();
    assert_eq!(
        st.code(),
        Some(0),
        "output: {:?}",
        String::from_utf8_lossy(&sh.output())
    );
}

/// Whether the registry has `path` open.
fn holds_open(reg: &Registry, path: &std::path::Path) -> bool {
    fs::read_dir(format!("/proc/{}/fd", reg.pid()))
        .map(|fds| {
            fds.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == path))
        })
        .unwrap_or(false)
}

/// Ctrl-C on the console's pty stops a running `fsck`, and so does its client going away (the
/// original ran every command to its end). The blob is made slow to hash: a sparse 1 TiB file
/// in its place, minutes of SHA-256.
#[test]
fn a_running_fsck_stops_on_ctrl_c_and_when_its_client_leaves() {
    let reg = Registry::start();
    let hash = add_version(&reg, "code", "v1", &tar_gz(&[("a", b"1")]));
    let blob = reg.data_dir().join("files").join(&hash);
    fs::remove_file(&blob).unwrap();
    fs::File::create(&blob).unwrap().set_len(1 << 40).unwrap();
    let blob = blob.canonicalize().unwrap();

    let mut cmd = reg.ssh_cmd(&reg.keys.operator);
    cmd.arg("-tt").arg(reg.dest("op"));
    let mut sh = Pty::spawn(cmd);
    sh.wait_for("the prompt", |o| has(o, PROMPT));
    sh.send(b"fsck\r");
    sh.wait_for("fsck reading the blob", |_| holds_open(&reg, &blob));
    sh.send(b"\x03");
    sh.wait_for("fsck interrupted, then the prompt", |o| {
        has(o, b"fsck\r\nfsck interrupted\r\n") && o.ends_with(PROMPT)
    });
    sh.send(b"components\r");
    sh.wait_for("the console going on", |o| {
        has(o, b"components\r\ncode\r\n") && o.ends_with(PROMPT)
    });
    sh.send(b"\x04");
    assert_eq!(sh.wait_exit().code(), Some(0));

    let mut cmd = reg.ssh_cmd(&reg.keys.operator);
    cmd.arg(reg.dest("op")).arg("fsck");
    let exec = Pty::spawn(cmd);
    exec.wait_for("fsck reading the blob", |_| holds_open(&reg, &blob));
    drop(exec);
    // Both runs end in the audit log, interrupted (not after the minutes of hashing).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let audit = reg.ssh("audit").stdout_str();
        let fscks: Vec<&str> = audit.lines().filter(|l| l.ends_with(" fsck")).collect();
        if fscks.len() == 2 {
            assert!(
                fscks.iter().all(|l| l.contains(" fail: fsck interrupted ")),
                "{audit}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fsck went on without its client\n{audit}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(!holds_open(&reg, &blob));
}

/// The operator's console without a pty (`ssh -T`), `input` piped in.
fn piped_console(reg: &Registry, input: &[u8]) -> e2e::Out {
    reg.ssh_raw("op", &reg.keys.operator, &["-T"], None, Some(input))
}

#[test]
fn shell_without_a_pty_runs_lf_terminated_lines() {
    let f = fixture();
    let reg = &f.reg;
    // Unlike the original (spec 8.B12), piped input without a pty runs.
    let out = piped_console(reg, b"components\nconfigurations\n");
    out.assert_code(0);
    let text = out.stdout_str();
    assert!(text.contains("code\nconfig\n"), "{out}");
    assert!(text.contains("project1\n"), "{out}");
    assert!(text.find("config\n") < text.find("project1\n"), "{out}");
}

/// Piped input of several MB while commands run: more than the 100 SSH packets russh queues
/// for a channel (at most 64 KiB each here), yet less than the console's own limit. The
/// console used to hang for good after a few commands: the full queue blocked the session and
/// with it the commands' output. Padding makes each command 1 KiB, so the input is large and
/// the commands (each audited with an fsync) not too many.
#[test]
fn shell_keeps_up_with_megabytes_of_piped_input() {
    let f = fixture();
    let reg = &f.reg;
    let commands = 7000;
    let line = format!("components{}\n", " ".repeat(1013));
    let input = line.repeat(commands);
    assert!(input.len() > 100 * 65535 && input.len() < 8 << 20);
    let out = piped_console(reg, input.as_bytes());
    out.assert_code(0);
    assert_eq!(out.stdout_str(), "code\nconfig\n".repeat(commands), "{out}");
}

/// More input waiting than the console holds (8 MiB): one clear line, status 1, the session
/// closed instead of growing without bound. 64 MB of padded commands arrive far faster than
/// commands run (each is audited with an fsync), so the limit is reached.
#[test]
fn shell_refuses_a_flood_of_piped_input() {
    let f = fixture();
    let reg = &f.reg;
    let input = format!("components{}\n", " ".repeat(16_000)).repeat(4000);
    let out = piped_console(reg, input.as_bytes());
    out.assert_code(1);
    assert!(
        out.stdout_str()
            .ends_with("more than 8 MiB of input waiting: closing the console\n"),
        "{out}"
    );
    // The registry is fine afterwards.
    reg.ssh("components").assert_ok();
}

/// Kills a private tmux server on drop.
struct Tmux {
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn new() -> Tmux {
        let dir = tempfile::tempdir().expect("tempdir");
        Tmux {
            socket: dir.path().join("tmux.sock"),
            _dir: dir,
        }
    }
    fn run(&self, args: &[&str]) -> e2e::Out {
        let mut c = Command::new("tmux");
        c.arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null")
            .args(args);
        e2e::run_with_timeout(&mut c, None, 30)
    }
    fn pane(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"]).stdout_str()
    }
    fn wait_for(&self, what: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.pane().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; pane:\n{}",
                self.pane()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

#[test]
fn interactive_shell_in_tmux() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux missing: run scripts/install-deps");
    }
    let f = fixture();
    let reg = &f.reg;
    let ssh = reg.ssh_cmd(&reg.keys.operator);
    let mut line = String::from("ssh");
    for a in ssh.get_args() {
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    line.push_str(&format!(" -t {}; echo EXIT=$?; sleep 120", reg.dest("op")));
    let tmux = Tmux::new();
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "120",
        "-y",
        "40",
        &line,
    ])
    .assert_ok();
    tmux.wait_for("prompt", ">");
    tmux.run(&["send-keys", "-t", "t", "configurations", "Enter"])
        .assert_ok();
    tmux.wait_for("output", "project1");
    // History recall with the up arrow.
    tmux.run(&["send-keys", "-t", "t", "Up", "Enter"])
        .assert_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tmux.pane().matches("project1").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "history recall did not run; pane:\n{}",
            tmux.pane()
        );
        thread::sleep(Duration::from_millis(50));
    }
    tmux.run(&["send-keys", "-t", "t", "C-d"]).assert_ok();
    tmux.wait_for("exit status", "EXIT=0");
}

#[test]
fn our_commands_validate_their_flags() {
    let reg = Registry::start();
    let rollback_usage = "Usage of rollback:\n  -name string\n    \tconfiguration name\n  -to int\n    \thistory entry to restore (default: the previous state)\n";
    let audit_usage =
        "Usage of audit:\n  -n int\n    \tnumber of newest records to show (default 50)\n";
    fails(&reg, "history", "name should be set\n");
    fails(&reg, "history -name a/b", "name cannot contain / symbol\n");
    fails(
        &reg,
        "history -h",
        "Usage of history:\n  -name string\n    \tconfiguration name\n",
    );
    fails(&reg, "rollback", "name should be set\n");
    fails(&reg, "rollback -name a/b", "name cannot contain / symbol\n");
    fails(
        &reg,
        "rollback -name x -to y",
        &format!("invalid value \"y\" for flag -to: parse error\n{rollback_usage}"),
    );
    fails(
        &reg,
        "rollback -name x -to -1",
        "-to should be a positive history entry number\n",
    );
    fails(&reg, "rollback -h", rollback_usage);
    fails(
        &reg,
        "audit -n x",
        &format!("invalid value \"x\" for flag -n: parse error\n{audit_usage}"),
    );
    fails(&reg, "audit -n 0", "-n should be a positive number\n");
    fails(&reg, "audit -h", audit_usage);
    fails(
        &reg,
        "fsck -x",
        "flag provided but not defined: -x\nUsage of fsck:\n",
    );
    succeeds(&reg, "fsck", "checked 0 blobs (0 bytes): no problems\n");
}
