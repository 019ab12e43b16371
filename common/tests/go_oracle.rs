//! Golden vectors from the Go standard library (Go 1.19, the original's toolchain), generated
//! by `go-oracle/main.go` into `fixtures/`: our ports must give the same bytes as Go for
//! text/tabwriter, flag (messages and usage blocks of every console command), strconv.Quote,
//! encoding/json string escaping, ParseInt, ParseDuration and Duration.String.

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn tabwriter_matches_go() {
    let data = fixture("tabwriter.json");
    let cases: Vec<(String, String)> = serde_json::from_str(&data).unwrap();
    let mut bad = 0;
    for (input, want) in &cases {
        let got = common::tabwriter::format(input);
        if &got != want {
            bad += 1;
            if bad < 5 {
                eprintln!("input {input:?}\n got {got:?}\nwant {want:?}");
            }
        }
    }
    assert_eq!(bad, 0, "of {}", cases.len());
}

#[derive(serde::Deserialize)]
struct Num {
    #[serde(rename = "Dur")]
    dur: Vec<(String, String, String)>,
    #[serde(rename = "Int")]
    int: Vec<(String, String)>,
    #[serde(rename = "Str")]
    str: Vec<(String, String)>,
}

#[test]
fn numbers_match_go() {
    use common::goflag::*;
    let n: Num = serde_json::from_str(&fixture("numbers.json")).unwrap();
    let mut bad = 0;
    for (s, nanos, ok) in &n.dur {
        let got = parse_duration(s);
        let want = if ok == "err" {
            None
        } else {
            let v: i64 = nanos.parse().unwrap();
            Some(if v <= 0 {
                GoDuration::NonPositive
            } else {
                GoDuration::Positive(std::time::Duration::from_nanos(v as u64))
            })
        };
        if got != want {
            bad += 1;
            eprintln!("dur {s:?} got {got:?} want {want:?}");
        }
    }
    let set = FlagSet::new(
        "t",
        vec![Flag {
            name: "n",
            kind: Kind::Int { default: 0 },
            usage: "",
        }],
    );
    for (s, want) in &n.int {
        let got = match set.parse(&["-n".to_string(), s.clone()]) {
            Ok(p) => p.int(&set, "n").to_string(),
            Err(FlagError::Message(m)) if m.ends_with("parse error") => "syntax".into(),
            Err(FlagError::Message(m)) if m.ends_with("value out of range") => "range".into(),
            Err(e) => format!("{e:?}"),
        };
        if &got != want {
            bad += 1;
            eprintln!("int {s:?} got {got:?} want {want:?}");
        }
    }
    for (nanos, want) in &n.str {
        let got = format_duration(std::time::Duration::from_nanos(nanos.parse().unwrap()));
        if &got != want {
            bad += 1;
            eprintln!("str {nanos} got {got:?} want {want:?}");
        }
    }
    assert_eq!(bad, 0);
}

#[derive(serde::Deserialize)]
#[allow(non_snake_case)]
struct FlCase {
    Cmd: String,
    Args: Vec<String>,
    Err: String,
    Output: String,
    Name: String,
}

#[test]
fn console_flags_match_go() {
    use common::console::*;
    let cases: Vec<FlCase> = serde_json::from_str(&fixture("flags.json")).unwrap();
    let mut bad = 0;
    for c in &cases {
        let mut words = vec![c.Cmd.clone()];
        words.extend(c.Args.iter().cloned());
        let got = Command::parse(&words);
        let ok = match (&got, c.Err.as_str()) {
            (Err(ParseError::Usage { output }), "help" | "flag") => output == &c.Output,
            (Err(ParseError::Usage { .. }), _) => false,
            (_, "help" | "flag") => false,
            (Ok(cmd), _) => {
                let name = match cmd {
                    Command::AddVer(x) => x.name.clone(),
                    Command::AddConf(x) => x.name.clone(),
                    Command::ChangeConf(x) => x.name.clone(),
                    Command::BumpConf(x) => x.name.clone(),
                    Command::ShowConf(x) => x.name.clone(),
                    Command::ShowComp(x) => x.name.clone(),
                    Command::DelVer(x) => x.name.clone(),
                    Command::DelComp(x) => x.name.clone(),
                    Command::DelConf(x) => x.name.clone(),
                    Command::Rollback(x) => x.name.clone(),
                    _ => c.Name.clone(),
                };
                name == c.Name
            }
            (Err(_), _) => true,
        };
        if !ok {
            bad += 1;
            if bad < 6 {
                eprintln!(
                    "{} {:?}\n got {got:?}\nwant {} {:?}",
                    c.Cmd, c.Args, c.Err, c.Output
                );
            }
        }
    }
    assert_eq!(bad, 0, "of {}", cases.len());
}

#[test]
fn quote_and_json_strings_match_go() {
    let cases: Vec<(String, String, String)> =
        serde_json::from_str(&fixture("quote.json")).unwrap();
    let mut bad = 0;
    for (s, q, j) in &cases {
        let gq = common::gostr::quote(s);
        let gj = common::gojson::to_compact(s);
        if &gq != q || &gj != j {
            bad += 1;
            if bad < 6 {
                eprintln!("{s:?}\n q {gq:?} want {q:?}\n j {gj:?} want {j:?}");
            }
        }
    }
    assert_eq!(bad, 0, "of {}", cases.len());
}
