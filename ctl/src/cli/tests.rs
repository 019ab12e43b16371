use super::*;
use common::console::{DelConf, ShowConf};

fn no_env(_: &str) -> Option<String> {
    None
}

fn args(s: &[&str]) -> Vec<String> {
    s.iter().map(|a| a.to_string()).collect()
}

fn plan_of(a: &[&str]) -> Plan {
    plan(&args(a), &no_env)
}

fn exit_of(p: Plan) -> (i32, String) {
    match p {
        Plan::Exit { code, stderr } => (code, stderr),
        other => panic!("expected an exit, got {other:?}"),
    }
}

fn exec_line(p: Plan) -> (Global, String) {
    match p {
        Plan::Exec { global, line } => (global, line),
        other => panic!("expected an exec, got {other:?}"),
    }
}

const FLAGS: &str = "  -addr string
    \t$DEPLOYCTL_ADDR, registry host address (host:port)
  -fp string
    \t$DEPLOYCTL_FINGERPRINT, sha256 host key fingerprint (SHA256:...)
  -key string
    \tssh private key to use; if not set, ssh-agent is used
";

fn expected_usage() -> String {
    format!(
        "Usage: deployctl [flags] subcommand [subcommand flags]\n{FLAGS}\nSubcommands:\n\n{}\n",
        console::HELP_LISTING
    )
}

#[test]
fn usage_is_byte_identical_apart_from_the_fp_fix() {
    assert_eq!(usage(&global_flags(&no_env)), expected_usage());
    assert!(console::HELP_LISTING.starts_with("addver "));
}

#[test]
fn env_defaults_show_in_usage_and_apply() {
    let env = |k: &str| match k {
        "DEPLOYCTL_ADDR" => Some("reg:2022".to_string()),
        "DEPLOYCTL_FINGERPRINT" => Some("SHA256:abc".to_string()),
        _ => None,
    };
    let u = usage(&global_flags(&env));
    assert!(u.contains("(host:port) (default \"reg:2022\")\n"), "{u}");
    let (g, _) = exec_line(plan(&args(&["components"]), &env));
    assert_eq!(g.addr, "reg:2022");
    assert_eq!(g.fingerprints, vec!["SHA256:abc".to_string()]);
    assert_eq!(g.key, None);
    // flags override the environment
    let (g, _) = exec_line(plan(
        &args(&["-addr", "other:1", "-fp", "", "components"]),
        &env,
    ));
    assert_eq!(g.addr, "other:1");
    assert!(g.fingerprints.is_empty());
}

#[test]
fn env_set_to_empty_overrides_any_default() {
    let env = |k: &str| (k == "DEPLOYCTL_ADDR").then(String::new);
    let (code, err) = exit_of(plan(&args(&["components"]), &env));
    assert_eq!(code, 2);
    assert!(err.starts_with("addr should be set\n\nUsage: deployctl"));
}

#[test]
fn empty_addr_no_subcommand_help_bad_flag() {
    assert_eq!(
        exit_of(plan_of(&["components"])),
        (2, format!("addr should be set\n\n{}", expected_usage()))
    );
    assert_eq!(exit_of(plan_of(&["-addr", "h:1"])), (2, expected_usage()));
    assert_eq!(exit_of(plan_of(&["-h"])), (0, expected_usage()));
    assert_eq!(
        exit_of(plan_of(&["-bogus", "components"])),
        (
            2,
            format!(
                "flag provided but not defined: -bogus\n{}",
                expected_usage()
            )
        )
    );
}

#[test]
fn unknown_and_help_subcommands() {
    assert_eq!(
        exit_of(plan_of(&["-addr", "h:1", "help"])),
        (1, "unknown command: \"help\"\n".to_string())
    );
    assert_eq!(
        exit_of(plan_of(&["-addr", "h:1", "rm -rf"])),
        (1, "unknown command: \"rm -rf\"\n".to_string())
    );
}

#[test]
fn injected_flag_stays_inside_the_name() {
    // spec A10: the original re-joined words with spaces and deleted "x" without -force.
    let (_, line) = exec_line(plan_of(&["-addr", "h:1", "delconf", "-name", "x -force"]));
    assert_eq!(
        Command::parse_line(&line).unwrap(),
        Command::DelConf(DelConf {
            name: "x -force".into(),
            force: false
        })
    );
    let (_, line) = exec_line(plan_of(&[
        "-addr", "h:1", "showconf", "-name", "a;b |c", "-v",
    ]));
    assert_eq!(
        Command::parse_line(&line).unwrap(),
        Command::ShowConf(ShowConf {
            name: "a;b |c".into(),
            verbose: true
        })
    );
}

#[test]
fn validation_exits_1_flag_errors_exit_2() {
    assert_eq!(
        exit_of(plan_of(&["-addr", "h:1", "showconf"])),
        (1, "name should be set\n".to_string())
    );
    let (code, err) = exit_of(plan_of(&["-addr", "h:1", "showconf", "-bogus"]));
    assert_eq!(code, 2);
    assert!(
        err.starts_with("flag provided but not defined: -bogus\nUsage of showconf:\n"),
        "{err}"
    );
    let (code, err) = exit_of(plan_of(&["-addr", "h:1", "delver", "-h"]));
    assert_eq!(code, 2);
    assert!(err.starts_with("Usage of delver:\n"), "{err}");
}

#[test]
fn global_flags_only_before_the_subcommand() {
    // after the subcommand, -addr is the subcommand's (unknown) flag
    let (code, err) = exit_of(plan_of(&["-addr", "h:1", "showcomp", "-addr", "x"]));
    assert_eq!(code, 2);
    assert!(
        err.starts_with("flag provided but not defined: -addr\n"),
        "{err}"
    );
}

#[test]
fn fingerprint_list_and_key() {
    let (g, _) = exec_line(plan_of(&[
        "-addr",
        "h:1",
        "-fp",
        "SHA256:a, sha256:b",
        "-key",
        "/k",
        "configurations",
    ]));
    assert_eq!(
        g.fingerprints,
        vec!["SHA256:a".to_string(), "sha256:b".to_string()]
    );
    assert_eq!(g.key, Some(PathBuf::from("/k")));
}

#[test]
fn addver_file_validation_and_plan() {
    let base = ["-addr", "h:1", "addver"];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        plan_of(&a)
    };
    assert_eq!(
        exit_of(with(&["-name", "c", "-version", "v"])),
        (1, "name, version and file should all be set\n".to_string())
    );
    assert_eq!(
        exit_of(with(&["-name", "c:x", "-version", "v", "-file", "f"])),
        (1, "name cannot contain : symbol\n".to_string())
    );
    let (code, err) = exit_of(with(&["-x"]));
    assert_eq!(code, 2);
    assert!(err.starts_with("flag provided but not defined: -x\nUsage of addver:\n  -file string\n    \ttar.gz file to upload\n"), "{err}");
    match with(&["-name", "c", "-version", "v 1", "-file", "a.tgz"]) {
        Plan::Upload {
            name,
            version,
            file,
            ..
        } => {
            assert_eq!((name.as_str(), version.as_str()), ("c", "v 1"));
            assert_eq!(file, PathBuf::from("a.tgz"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn addver_by_hash_without_upload() {
    let h = "a".repeat(64);
    let (_, line) = exec_line(plan_of(&[
        "-addr", "h:1", "addver", "-name", "c", "-version", "v", "-hash", &h,
    ]));
    assert_eq!(
        Command::parse_line(&line).unwrap(),
        Command::AddVer(common::console::AddVer {
            name: "c".into(),
            version: "v".into(),
            hash: h.clone()
        })
    );
    let (code, err) = exit_of(plan_of(&[
        "-addr", "h:1", "addver", "-name", "c", "-version", "v", "-hash", &h, "-file", "f",
    ]));
    assert_eq!(code, 2);
    assert!(
        err.starts_with("-file and -hash are mutually exclusive"),
        "{err}"
    );
    let (code, err) = exit_of(plan_of(&[
        "-addr", "h:1", "addver", "-name", "c", "-version", "v", "-hash", "short",
    ]));
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "hash should be a hex representation of content sha256 sum, 64 chars long\n"
        )
    );
}
