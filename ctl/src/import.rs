//! `deployctl import`: an OCI/Docker image becomes a configuration (spec 5, deploy-from-docker,
//! done right). The image comes from a registry (`img://host/repo`), an OCI image layout
//! directory (`oci:DIR`) or a `docker save` tarball (`docker-archive:FILE`, legacy or OCI
//! layout inside). Each layer is uploaded unchanged as component `sha256-<first 16 hex>`,
//! version `<sha256 hex>` (layers shared between images are stored once; the agent unpacks
//! them with their whiteouts), then `addconf` creates or replaces the configuration.
//!
//! Idempotent: a layer the registry already has is registered without an upload (`addver
//! -hash`), a version that exists is left alone, and `addconf` replaces the configuration
//! with the same layers. From an image registry, layers are downloaded one at a time, and
//! only those the deploy registry lacks (the manifest names each by its sha256): importing a
//! new tag of an image fetches its new layers, not its base again.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use common::console::{AddConf, Command};
use common::digest::Digest;
use sources::img::ImgSource;
use sources::img::manifest::{self, Descriptor, Manifest, Platform};
use tokio::io::AsyncWriteExt;

use crate::archive::{self, Checked};
use crate::upload;

/// Manifests, index.json and manifest.json are read into memory up to this size.
const MAX_JSON: u64 = 4 << 20;

/// What to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportArgs {
    /// `img://…`, `oci:DIR` or `docker-archive:FILE`.
    pub source: String,
    /// Configuration name; derived from the image name when empty.
    pub name: String,
    /// Image tag; registry: the newest version tag when empty, layout/archive: the only image.
    pub tag: String,
    /// `os/arch[/variant]` for image indexes; this machine's when empty.
    pub platform: String,
    /// Extra `component:version` layers on top of the image's.
    pub extra: Vec<(String, String)>,
}

/// One layer, checked, in a local file.
struct LocalLayer {
    path: PathBuf,
    checked: Checked,
}

/// Where a layer's bytes are.
enum Layer {
    /// Read and checked (an OCI layout, a `docker save` tarball).
    Local(LocalLayer),
    /// In the image registry, known by its digest: downloaded (and checked) only when the
    /// deploy registry does not store it yet.
    Remote {
        layer: sources::Layer,
        digest: Digest,
    },
}

impl Layer {
    fn digest(&self) -> &Digest {
        match self {
            Layer::Local(l) => &l.checked.digest,
            Layer::Remote { digest, .. } => digest,
        }
    }
}

/// The image: its layers in local files or in the image registry.
struct Image {
    /// `repo:tag` as the source names it, for the default configuration name.
    name: String,
    layers: Vec<Layer>,
    /// Where the `Remote` layers come from.
    source: Option<ImgSource>,
    /// Holds extracted and downloaded layer files until their upload is done.
    scratch: tempfile::TempDir,
}

/// Imports the image; `connect` is awaited only once the image is found (and its local layers
/// checked), so a bad source never costs a connection.
pub async fn import(
    connect: impl std::future::Future<Output = anyhow::Result<client::Connection>>,
    args: &ImportArgs,
) -> anyhow::Result<i32> {
    let platform = parse_platform(&args.platform)?;
    let image = if let Some(rest) = args.source.strip_prefix("oci:") {
        from_layout(Path::new(rest), &args.tag, &platform)?
    } else if let Some(rest) = args.source.strip_prefix("docker-archive:") {
        from_archive(Path::new(rest), &args.tag)?
    } else if args.source.starts_with("img://") {
        from_registry(&args.source, &args.tag, platform).await?
    } else {
        bail!(
            "unknown image source {:?}: use img://host/repo, oci:DIR or docker-archive:FILE",
            args.source
        );
    };
    let name = if args.name.is_empty() {
        image.name.replace([':', '/'], ".")
    } else {
        args.name.clone()
    };
    if name.is_empty() {
        bail!("empty name");
    }
    if name.contains('/') {
        bail!("name cannot contain / symbol");
    }
    if image.layers.is_empty() {
        bail!("no layers found");
    }
    let mut layers: Vec<(String, String)> = image
        .layers
        .iter()
        .map(|l| {
            let hex = l.digest().to_hex();
            (format!("sha256-{}", &hex[..16]), hex)
        })
        .collect();
    // The same layer twice in one image (it happens: empty layers) is one component; addconf
    // refuses a component given twice, and applying it once more changes nothing.
    let mut seen = std::collections::HashSet::new();
    let keep: Vec<bool> = layers.iter().map(|l| seen.insert(l.0.clone())).collect();
    for (c, _) in &args.extra {
        if seen.contains(c) {
            bail!("-layer {c}: the image already has this component");
        }
    }

    let conn = connect.await?;
    let n = image.layers.len();
    for (i, (layer, (component, version))) in image.layers.iter().zip(&layers).enumerate() {
        let label = format!("layer {}/{n} {}", i + 1, common::gostr::quote(component));
        if keep[i] {
            add_layer(&conn, &image, layer, &label, component, version).await?;
        } else {
            eprintln!("{label}: repeats an earlier layer");
        }
    }
    let mut i = 0;
    layers.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    layers.extend(args.extra.iter().cloned());
    eprintln!("updating configuration {}", common::gostr::quote(&name));
    let line = Command::AddConf(AddConf { name, layers }).to_line();
    let out = conn.exec(&line).await?;
    if out.status != 0 {
        crate::echo(&out);
        bail!("failed to update configuration");
    }
    Ok(0)
}

/// Registers one layer, once: a version that exists already is left as it is. Content the
/// registry stores is neither downloaded nor uploaded again.
async fn add_layer(
    conn: &client::Connection,
    image: &Image,
    layer: &Layer,
    label: &str,
    component: &str,
    version: &str,
) -> anyhow::Result<()> {
    let line = upload::addver_line(component, version, layer.digest());
    let out = match upload::add_stored(conn, &line).await? {
        Some(out) => {
            if added(&out) {
                eprintln!("{label}: in the registry already");
            }
            out
        }
        None => {
            let downloaded;
            let local = match layer {
                Layer::Local(local) => local,
                Layer::Remote { layer, digest } => {
                    eprintln!("{label}: downloading");
                    let source = image
                        .source
                        .as_ref()
                        .context("internal: a remote layer without its source")?;
                    downloaded = download(source, layer, digest, image.scratch.path()).await?;
                    &downloaded
                }
            };
            eprintln!("{label}: uploading");
            upload::upload(conn, &local.path, &local.checked).await?;
            if matches!(layer, Layer::Remote { .. }) {
                let _ = std::fs::remove_file(&local.path);
            }
            conn.exec(&line).await?
        }
    };
    if added(&out) {
        return Ok(());
    }
    crate::echo(&out);
    bail!("failed to add version")
}

/// The layer's version is in the registry now, added or there before.
fn added(out: &client::ExecOutput) -> bool {
    out.status == 0 || String::from_utf8_lossy(&out.stdout).contains("already exists")
}

/// Downloads a layer into `dir` and checks it: an archive the agent can unpack, with the
/// manifest's digest.
async fn download(
    source: &ImgSource,
    layer: &sources::Layer,
    digest: &Digest,
    dir: &Path,
) -> anyhow::Result<LocalLayer> {
    let path = dir.join(digest.to_hex());
    let mut file = tokio::fs::File::create(&path).await?;
    let mut stream = source.fetch(layer, 0).await?;
    tokio::io::copy(&mut stream, &mut file)
        .await
        .with_context(|| format!("downloading {}", layer.name))?;
    file.flush().await?;
    drop(file);
    let want = *digest;
    tokio::task::spawn_blocking(move || check_layer(&path, Some(&want))).await?
}

fn parse_platform(s: &str) -> anyhow::Result<Platform> {
    if s.is_empty() {
        return Ok(Platform::host());
    }
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: parts
                .get(2)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string()),
        }),
        _ => bail!("-platform {s:?}: want os/arch[/variant], e.g. linux/arm64"),
    }
}

/// Checks a layer file (a gzip/zstd/plain tar, read to the end) and that its sha256 is the
/// digest the manifest gives.
fn check_layer(path: &Path, want: Option<&Digest>) -> anyhow::Result<LocalLayer> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let checked = archive::check(file).map_err(|e| {
        anyhow::anyhow!(
            "layer {}: not an archive the agent can unpack: {e}",
            path.display()
        )
    })?;
    if let Some(want) = want
        && checked.digest != *want
    {
        bail!(
            "layer {}: content has sha256 {}, the manifest says {}",
            path.display(),
            checked.digest,
            want
        );
    }
    Ok(LocalLayer {
        path: path.to_path_buf(),
        checked,
    })
}

async fn from_registry(url: &str, tag: &str, platform: Platform) -> anyhow::Result<Image> {
    let parsed = common::dewy::url::RegistryUrl::parse(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let common::dewy::url::RegistryUrl::Img { repo, .. } = &parsed else {
        bail!("not an img:// URL: {url}");
    };
    let http = sources::http::HttpClient::new(&Default::default())?;
    let src = sources::img::ImgSource::new(&parsed, http)?.with_platform(platform);
    let release = if tag.is_empty() {
        src.current().await?
    } else {
        src.resolve(tag).await?
    };
    let layers = release
        .layers
        .into_iter()
        .map(|layer| {
            let digest = layer
                .digest
                .with_context(|| format!("layer {} has no digest", layer.name))?;
            Ok(Layer::Remote { layer, digest })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Image {
        name: format!("{repo}:{}", release.tag),
        layers,
        source: Some(src),
        scratch: tempfile::tempdir()?,
    })
}

fn read_json(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = Vec::new();
    file.take(MAX_JSON + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_JSON {
        bail!("{}: larger than {MAX_JSON} bytes", path.display());
    }
    Ok(buf)
}

/// `blobs/sha256/<hex>` of a layout, checked to hold what its digest says when read whole.
fn blob_path(root: &Path, digest: &str) -> anyhow::Result<(PathBuf, Digest)> {
    let d = manifest::parse_digest(digest)?;
    Ok((root.join("blobs").join("sha256").join(d.to_hex()), d))
}

fn read_blob_json(root: &Path, digest: &str) -> anyhow::Result<Vec<u8>> {
    let (path, d) = blob_path(root, digest)?;
    let body = read_json(&path)?;
    if Digest::of(&body) != d {
        bail!("{}: content does not match its digest", path.display());
    }
    Ok(body)
}

/// An OCI image layout: `index.json` → (index →) image manifest → layer blobs.
fn from_layout(root: &Path, tag: &str, platform: &Platform) -> anyhow::Result<Image> {
    #[derive(serde::Deserialize)]
    struct Index {
        manifests: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        digest: String,
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    const REF: &str = "org.opencontainers.image.ref.name";
    let index: Index = serde_json::from_slice(&read_json(&root.join("index.json"))?)
        .with_context(|| format!("{}/index.json", root.display()))?;
    let refs: Vec<&str> = index
        .manifests
        .iter()
        .filter_map(|e| e.annotations.get(REF).map(String::as_str))
        .collect();
    let entry = if tag.is_empty() {
        match index.manifests.as_slice() {
            [one] => one,
            _ => bail!(
                "{} holds {} images; choose one with -tag (refs: {})",
                root.display(),
                index.manifests.len(),
                refs.join(", ")
            ),
        }
    } else {
        index
            .manifests
            .iter()
            .find(|e| e.annotations.get(REF).map(String::as_str) == Some(tag))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no image tagged {tag:?} (refs: {})",
                    root.display(),
                    refs.join(", ")
                )
            })?
    };
    let (_, descriptors) = image_layers(|d| read_blob_json(root, d), &entry.digest, platform)?;
    let mut layers = Vec::new();
    for d in &descriptors {
        let (path, digest) = blob_path(root, &d.digest)?;
        layers.push(Layer::Local(check_layer(&path, Some(&digest))?));
    }
    let base = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let reference = entry.annotations.get(REF).cloned().unwrap_or_default();
    Ok(Image {
        name: if reference.is_empty() {
            base
        } else {
            format!("{base}:{reference}")
        },
        layers,
        source: None,
        scratch: tempfile::tempdir()?,
    })
}

/// Follows `digest` (an index or an image manifest) to the image manifest for `platform` and
/// returns its layers, refusing the media types `sources` refuses.
fn image_layers(
    read: impl Fn(&str) -> anyhow::Result<Vec<u8>>,
    digest: &str,
    platform: &Platform,
) -> anyhow::Result<(String, Vec<Descriptor>)> {
    let mut digest = digest.to_string();
    for _ in 0..2 {
        match manifest::parse(&read(&digest)?, None)? {
            Manifest::Image { config, layers } => {
                manifest::layers(&config, &layers)?;
                return Ok((digest, layers));
            }
            Manifest::Index(entries) => {
                digest = manifest::pick_platform(&entries, platform)?.digest.clone();
            }
        }
    }
    bail!("image index nested too deep at {digest}")
}

/// A `docker save` tarball: the legacy layout (`manifest.json` + `<id>/layer.tar`) and
/// Docker 25's OCI layout inside the tar (`blobs/sha256/…`, also listed by `manifest.json`).
fn from_archive(file: &Path, tag: &str) -> anyhow::Result<Image> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let scratch = tempfile::tempdir()?;
    let f = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    let mut tar = tar::Archive::new(f);
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    let mut manifest_json: Option<Vec<u8>> = None;
    for (i, entry) in tar.entries()?.enumerate() {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if name == "manifest.json" {
            let mut buf = Vec::new();
            (&mut entry).take(MAX_JSON + 1).read_to_end(&mut buf)?;
            if buf.len() as u64 > MAX_JSON {
                bail!("manifest.json: larger than {MAX_JSON} bytes");
            }
            manifest_json = Some(buf);
        } else {
            // Layer file names vary: `<id>/layer.tar` (docker, legacy), `<hex>.tar` (skopeo),
            // `blobs/sha256/<hex>` (docker 25+); manifest.json says which are layers.
            // Stored under a number, never under the entry's own (untrusted) path.
            let path = scratch.path().join(format!("entry-{i}"));
            let mut out = std::fs::File::create(&path)?;
            std::io::copy(&mut entry, &mut out)?;
            files.insert(name, path);
        }
    }
    let manifest_json = manifest_json.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no manifest.json: not a docker save tarball",
            file.display()
        )
    })?;
    let entries: Vec<Entry> = serde_json::from_slice(&manifest_json).context("manifest.json")?;
    let entry = if tag.is_empty() {
        match entries.as_slice() {
            [one] => one,
            _ => bail!(
                "manifest.json describes {} objects, call docker save for a single image or choose one with -tag",
                entries.len()
            ),
        }
    } else {
        entries
            .iter()
            .find(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|t| t == tag || t.rsplit_once(':').is_some_and(|(_, t)| t == tag))
            })
            .ok_or_else(|| anyhow::anyhow!("manifest.json: no image tagged {tag:?}"))?
    };
    let mut layers = Vec::new();
    for name in &entry.layers {
        let path = files
            .get(name.trim_start_matches("./"))
            .ok_or_else(|| anyhow::anyhow!("manifest references unknown layer {name:?}"))?;
        // OCI-in-tar names its blobs by digest: check it; legacy layer.tar has no digest.
        let want = name
            .strip_prefix("blobs/sha256/")
            .map(Digest::parse_hex)
            .transpose()
            .map_err(|e| anyhow::anyhow!("layer {name:?}: {e}"))?;
        layers.push(Layer::Local(check_layer(path, want.as_ref())?));
    }
    // Docker's familiar form: skopeo writes `docker.io/demo/app:v1` where docker writes
    // `demo/app:v1`; both name the configuration `demo.app.v1`.
    let image_name = entry
        .repo_tags
        .as_ref()
        .and_then(|t| t.first())
        .map(|t| {
            let t = t.strip_prefix("docker.io/").unwrap_or(t);
            t.strip_prefix("library/").unwrap_or(t).to_string()
        })
        .unwrap_or_default();
    Ok(Image {
        name: image_name,
        layers,
        source: None,
        scratch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Plan, plan};

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn import_command_line() {
        let env = |_: &str| None;
        let p = plan(
            &args(&[
                "-addr",
                "h:1",
                "import",
                "-name",
                "web",
                "-tag",
                "v2",
                "-platform",
                "linux/arm64/v8",
                "-layer",
                "config:c1",
                "-layer",
                "x:v:1",
                "img://r/a",
            ]),
            &env,
        );
        let Plan::Import { args: a, .. } = p else {
            panic!("{p:?}")
        };
        assert_eq!(
            a,
            ImportArgs {
                source: "img://r/a".into(),
                name: "web".into(),
                tag: "v2".into(),
                platform: "linux/arm64/v8".into(),
                extra: vec![("config".into(), "c1".into()), ("x".into(), "v:1".into())],
            }
        );
        let code = |w: &[&str]| match plan(&args(w), &env) {
            Plan::Exit { code, stderr } => (code, stderr),
            other => panic!("{other:?}"),
        };
        let (c, e) = code(&["-addr", "h:1", "import"]);
        assert_eq!(c, 2);
        assert!(e.starts_with("exactly one SOURCE is needed\n"), "{e}");
        let (c, e) = code(&[
            "-addr", "h:1", "import", "-layer", "a:1", "-layer", "a:2", "oci:x",
        ]);
        assert_eq!(c, 2);
        assert!(e.contains("duplicate component \"a\""), "{e}");
        let (c, e) = code(&["-addr", "h:1", "import", "-layer", "nocolon", "oci:x"]);
        assert_eq!(c, 2);
        assert!(
            e.contains("invalid value \"nocolon\" for flag -layer"),
            "{e}"
        );
        let (c, e) = code(&["-addr", "h:1", "import", "-name", "a/b", "oci:x"]);
        assert_eq!((c, e.as_str()), (1, "name cannot contain / symbol\n"));
    }

    #[test]
    fn platforms() {
        assert_eq!(parse_platform("").unwrap(), Platform::host());
        let p = parse_platform("linux/arm/v7").unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
            ("linux", "arm", Some("v7"))
        );
        assert_eq!(parse_platform("linux/amd64").unwrap().variant, None);
        for bad in ["linux", "/amd64", "linux/", "a/b/c/d"] {
            assert!(parse_platform(bad).is_err(), "{bad}");
        }
    }
}
