//! `deployctl import` end to end: images built by `umoci` (from `busybox-static`), served by a
//! real `docker-registry` (pushed with `skopeo`), as an OCI layout and as a `docker save`
//! tarball written by `skopeo`, imported into the built `deploy-registry`.

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::peers::OciRegistry;
use e2e::{Out, Registry, run_with_timeout, sha256_hex, tar_gz};

fn ctl(reg: &Registry, args: &[&str]) -> Out {
    reg.deployctl(args)
}

fn sh(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An OCI layout holding one amd64 image tagged `v1`: busybox plus `/hello.txt`, two layers
/// (the second removes a file of the first with a whiteout).
fn build_image(dir: &Path) -> PathBuf {
    let layout = dir.join("oci");
    let bundle = dir.join("bundle");
    let image = format!("{}:v1", layout.display());
    sh(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    sh(Command::new("umoci").args(["new", "--image", &image]));
    for (i, step) in ["first", "second"].iter().enumerate() {
        sh(Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &image])
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        if i == 0 {
            std::fs::create_dir_all(rootfs.join("bin")).unwrap();
            std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
            std::fs::write(rootfs.join("gone.txt"), "removed by layer 2").unwrap();
        } else {
            std::fs::remove_file(rootfs.join("gone.txt")).unwrap();
        }
        std::fs::write(
            rootfs.join("hello.txt"),
            format!("hello from the {step} layer\n"),
        )
        .unwrap();
        sh(Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle));
        std::fs::remove_dir_all(&bundle).unwrap();
    }
    sh(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        "amd64",
    ]));
    layout
}

/// (component, version) rows of `showconf`.
fn layers_of(reg: &Registry, name: &str) -> Vec<(String, String)> {
    let out = reg.ssh(&format!("showconf -name {name}"));
    out.assert_ok();
    out.stdout_str()
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().to_string(), w.next().unwrap().to_string())
        })
        .collect()
}

fn stored_files(reg: &Registry) -> usize {
    std::fs::read_dir(reg.data_dir().join("files"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The layer digests of `repo:tag` in the OCI registry, asked with curl.
fn registry_layers(oci: &OciRegistry, repo: &str, tag: &str) -> Vec<String> {
    let body = sh(Command::new("curl")
        .args([
            "-fsS",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!("http://{}/v2/{repo}/manifests/{tag}", oci.host())));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string()
        })
        .collect()
}

#[test]
fn import_from_registry_layout_and_docker_save() {
    let reg = Registry::start();
    let oci = OciRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = build_image(work.path());
    for tag in ["v1.0.0", "v1.1.0", "latest"] {
        sh(Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{}/demo/app:{tag}", oci.host())));
    }
    let want = registry_layers(&oci, "demo/app", "v1.1.0");
    assert_eq!(want.len(), 2);

    // From the registry: the newest version tag; components named by digest.
    let src = format!("img://{}/demo/app", oci.host());
    let out = ctl(&reg, &["import", &src]);
    out.assert_ok();
    let err = out.stderr_str();
    let label = |i: usize| format!("layer {}/2 \"sha256-{}\"", i + 1, &want[i][..16]);
    for i in 0..2 {
        assert!(
            err.contains(&format!("{}: downloading\n", label(i))),
            "{err}"
        );
        assert!(err.contains(&format!("{}: uploading\n", label(i))), "{err}");
    }
    assert!(
        err.contains("updating configuration \"demo.app.v1.1.0\""),
        "{err}"
    );
    let expected: Vec<(String, String)> = want
        .iter()
        .map(|h| (format!("sha256-{}", &h[..16]), h.clone()))
        .collect();
    assert_eq!(layers_of(&reg, "demo.app.v1.1.0"), expected);
    // The registry stored the blobs under their OCI digests, byte for byte.
    for h in &want {
        let stored = std::fs::read(reg.data_dir().join("files").join(h)).unwrap();
        assert_eq!(&sha256_hex(&stored), h);
    }
    let files = stored_files(&reg);

    // Again: nothing uploaded, same configuration, and nothing downloaded either: the
    // layers' bytes in the image registry are damaged now, and never read.
    for h in &want {
        std::fs::write(oci.blob_path(h), b"damaged").unwrap();
    }
    let out = ctl(&reg, &["import", &src]);
    out.assert_ok();
    let err = out.stderr_str();
    for i in 0..2 {
        assert!(
            err.contains(&format!("{}: in the registry already\n", label(i))),
            "{err}"
        );
    }
    assert!(!err.contains("downloading"), "{err}");
    assert_eq!(layers_of(&reg, "demo.app.v1.1.0"), expected);
    assert_eq!(stored_files(&reg), files);
    // Into a registry that lacks them, the damaged layers are downloaded, and refused before
    // anything is uploaded or configured.
    let empty = Registry::start();
    let out = ctl(&empty, &["import", &src]);
    out.assert_code(1);
    assert!(
        out.stderr_str()
            .contains("not an archive the agent can unpack"),
        "{out}"
    );
    assert_eq!(stored_files(&empty), 0);
    assert!(empty.ssh("configurations").assert_ok().stdout.is_empty());

    // From the OCI layout, with a name and an extra layer on top.
    let extra = work.path().join("config.tar.gz");
    std::fs::write(&extra, tar_gz(&[("app.conf", b"port=8080\n")])).unwrap();
    ctl(
        &reg,
        &[
            "addver",
            "-name",
            "config",
            "-version",
            "c1",
            "-file",
            extra.to_str().unwrap(),
        ],
    )
    .assert_ok();
    let from_layout = format!("oci:{}", layout.display());
    ctl(
        &reg,
        &[
            "import",
            "-name",
            "web",
            "-tag",
            "v1",
            "-layer",
            "config:c1",
            &from_layout,
        ],
    )
    .assert_ok();
    let mut with_extra = expected.clone();
    with_extra.push(("config".into(), "c1".into()));
    assert_eq!(layers_of(&reg, "web"), with_extra);
    assert_eq!(
        stored_files(&reg),
        files + 1,
        "the image layers were shared"
    );

    // From a `docker save` tarball (skopeo writes one): uncompressed layers, so new content.
    let tarball = work.path().join("saved.tar");
    sh(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!(
            "docker-archive:{}:demo/saved:v7",
            tarball.display()
        )));
    let out = ctl(
        &reg,
        &["import", &format!("docker-archive:{}", tarball.display())],
    );
    out.assert_ok();
    let saved = layers_of(&reg, "demo.saved.v7");
    assert_eq!(saved.len(), 2);
    for (c, v) in &saved {
        assert_eq!(c, &format!("sha256-{}", &v[..16]));
        let stored = std::fs::read(reg.data_dir().join("files").join(v)).unwrap();
        assert_eq!(&sha256_hex(&stored), v);
    }

    // What deploy-agent makes of it: both layers applied in order, the whiteout honoured.
    let host = tempfile::tempdir().unwrap();
    let script = host.path().join("deploy.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = run_with_timeout(
        reg.agent_command(host.path(), "web", &reg.keys.service)
            .arg("-once"),
        None,
        120,
    );
    out.assert_ok();
    let current = host.path().join("current");
    assert_eq!(
        std::fs::read_to_string(current.join("hello.txt")).unwrap(),
        "hello from the second layer\n"
    );
    assert!(!current.join("gone.txt").exists(), "whiteout not applied");
    assert!(current.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_to_string(current.join("app.conf")).unwrap(),
        "port=8080\n"
    );

    // Bad sources fail before connecting, with a message.
    let out = ctl(&reg, &["import", "oci:/nonexistent/layout"]);
    out.assert_code(1);
    assert!(
        out.stderr_str().contains("/nonexistent/layout/index.json"),
        "{out}"
    );
    let out = ctl(&reg, &["import", "ftp://x/y"]);
    out.assert_code(1);
    assert!(out.stderr_str().contains("unknown image source"), "{out}");
    let out = ctl(&reg, &["import"]);
    out.assert_code(2);
    assert!(out.stderr_str().contains("exactly one SOURCE"), "{out}");
    let out = ctl(&reg, &["import", "-tag", "nope", &from_layout]);
    out.assert_code(1);
    assert!(
        out.stderr_str().contains("no image tagged \"nope\""),
        "{out}"
    );
}
