use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use common::digest::Digest;
use tokio::io::ReadBuf;

use super::*;

/// Serves blobs from memory. `cut_after` makes the next transfer fail after that many bytes
/// (the registry going away mid-transfer); `stall` makes reads hang forever.
#[derive(Default)]
struct MemSource {
    blobs: HashMap<String, Vec<u8>>,
    opens: AtomicU64,
    served: AtomicU64,
    cut_after: Mutex<Option<usize>>,
    stall: bool,
}

impl MemSource {
    fn with(blobs: &[&[u8]]) -> (MemSource, Vec<String>) {
        let mut s = MemSource::default();
        let mut names = vec![];
        for b in blobs {
            let h = Digest::of(b).to_hex();
            s.blobs.insert(h.clone(), b.to_vec());
            names.push(h);
        }
        (s, names)
    }
}

struct Cut {
    data: Vec<u8>,
    pos: usize,
    fail_at: Option<usize>,
    stall: bool,
}

impl AsyncRead for Cut {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stall {
            return Poll::Pending;
        }
        let end = self.fail_at.unwrap_or(self.data.len()).min(self.data.len());
        if self.pos >= end && self.fail_at.is_some_and(|f| f < self.data.len()) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset",
            )));
        }
        let n = (end - self.pos).min(buf.remaining()).min(1000);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl LayerSource for MemSource {
    async fn open_blob(&self, hash: &str, offset: u64) -> anyhow::Result<BlobReader> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let data = self
            .blobs
            .get(hash)
            .ok_or_else(|| anyhow::anyhow!("file does not exist"))?;
        let rest = data[offset as usize..].to_vec();
        let fail_at = self.cut_after.lock().unwrap().take();
        self.served.fetch_add(
            fail_at.unwrap_or(rest.len()).min(rest.len()) as u64,
            Ordering::SeqCst,
        );
        Ok(Box::pin(Cut {
            data: rest,
            pos: 0,
            fail_at,
            stall: self.stall,
        }))
    }
}

fn cache() -> (tempfile::TempDir, Cache) {
    let tmp = tempfile::tempdir().unwrap();
    let c = Cache::new(tmp.path().join("cache"), Duration::from_millis(300));
    (tmp, c)
}

#[tokio::test]
async fn downloads_verifies_and_never_fetches_again() {
    let (_t, c) = cache();
    let (src, names) = MemSource::with(&[b"layer one", b"layer two"]);
    let got = c.fetch(&src, &names[0]).await.unwrap().unwrap();
    assert_eq!(
        got,
        Fetched {
            downloaded: 9,
            resumed_from: 0
        }
    );
    assert_eq!(std::fs::read(c.path(&names[0])).unwrap(), b"layer one");
    assert!(!c.dir().join(format!("{}.partial", names[0])).exists());
    assert_eq!(c.fetch(&src, &names[0]).await.unwrap(), None);
    assert_eq!(src.opens.load(Ordering::SeqCst), 1);
    assert!(c.verify(&names[0]).unwrap());
}

#[tokio::test]
async fn wrong_content_is_refused_and_removed() {
    let (_t, c) = cache();
    let (mut src, _) = MemSource::with(&[]);
    let claimed = Digest::of(b"what the config promised").to_hex();
    src.blobs
        .insert(claimed.clone(), b"something else".to_vec());
    match c.fetch(&src, &claimed).await {
        Err(CacheError::HashMismatch { hash, actual }) => {
            assert_eq!(hash, claimed);
            assert_eq!(actual, Digest::of(b"something else").to_hex());
        }
        other => panic!("{other:?}"),
    }
    assert!(!c.contains(&claimed));
    assert_eq!(
        std::fs::read_dir(c.dir()).unwrap().count(),
        0,
        "partial left behind"
    );
}

#[tokio::test]
async fn interrupted_download_resumes_at_offset() {
    let (_t, c) = cache();
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (src, names) = MemSource::with(&[&blob]);
    *src.cut_after.lock().unwrap() = Some(30_000);
    match c.fetch(&src, &names[0]).await {
        Err(e @ CacheError::Network { .. }) => {
            assert!(e.to_string().contains("registry connection lost"), "{e}");
            assert!(e.to_string().contains("at byte 30000"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let got = c.fetch(&src, &names[0]).await.unwrap().unwrap();
    assert_eq!(
        got,
        Fetched {
            downloaded: 70_000,
            resumed_from: 30_000
        }
    );
    assert_eq!(std::fs::read(c.path(&names[0])).unwrap(), blob);
    assert_eq!(
        src.served.load(Ordering::SeqCst),
        100_000,
        "bytes crossed the network twice"
    );
}

#[tokio::test]
async fn corrupt_partial_prefix_is_detected_and_dropped() {
    let (_t, c) = cache();
    let (src, names) = MemSource::with(&[b"0123456789"]);
    std::fs::create_dir_all(c.dir()).unwrap();
    std::fs::write(c.dir().join(format!("{}.partial", names[0])), b"XXXX").unwrap();
    assert!(matches!(
        c.fetch(&src, &names[0]).await,
        Err(CacheError::HashMismatch { .. })
    ));
    // Partial removed, so the next try starts clean and succeeds.
    c.fetch(&src, &names[0]).await.unwrap();
    assert_eq!(std::fs::read(c.path(&names[0])).unwrap(), b"0123456789");
}

#[tokio::test]
async fn stalled_source_times_out() {
    let (_t, c) = cache();
    let (mut src, names) = MemSource::with(&[b"never arrives"]);
    src.stall = true;
    assert!(matches!(
        c.fetch(&src, &names[0]).await,
        Err(CacheError::Stalled { offset: 0, .. })
    ));
}

#[test]
fn verify_removes_damaged_blob() {
    let (_t, c) = cache();
    std::fs::create_dir_all(c.dir()).unwrap();
    let h = Digest::of(b"good").to_hex();
    std::fs::write(c.path(&h), b"bad!").unwrap();
    assert!(!c.verify(&h).unwrap());
    assert!(!c.contains(&h));
}

#[test]
fn clean_keeps_current_and_pending_layers() {
    let (_t, c) = cache();
    assert_eq!(
        c.clean(&HashSet::new()).unwrap(),
        0,
        "missing cache dir is fine"
    );
    std::fs::create_dir_all(c.dir()).unwrap();
    let old = SystemTime::now() - Duration::from_secs(7200);
    for name in [
        "current",
        "pending",
        "pending.partial",
        "stale",
        "fresh",
        "temp-1",
        "other.partial",
    ] {
        let p = c.dir().join(name);
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(if name == "fresh" {
            SystemTime::now()
        } else {
            old
        })
        .unwrap();
    }
    let keep: HashSet<String> = ["current", "pending"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(c.clean(&keep).unwrap(), 3);
    let mut left: Vec<_> = std::fs::read_dir(c.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, vec!["current", "fresh", "pending", "pending.partial"]);
}

/// A real full disk (a 256 KiB tmpfs; root only, skipped elsewhere outside CI): the download
/// fails as `DiskFull` and its partial file is gone, so the space is free again.
#[tokio::test]
async fn disk_full_removes_the_partial_download() {
    let Some(fs) = e2e::tmpfs::Tmpfs::mount(256) else {
        return;
    };
    let c = Cache::new(fs.join("cache"), Duration::from_secs(5));
    let blob: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let (src, names) = MemSource::with(&[&blob]);
    let free = fs.free_bytes();
    match c.fetch(&src, &names[0]).await {
        Err(e @ CacheError::DiskFull { .. }) => {
            assert!(e.to_string().starts_with("disk full while writing"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read_dir(c.dir()).unwrap().count(),
        0,
        "partial left behind"
    );
    assert!(fs.free_bytes() >= free, "{} < {free}", fs.free_bytes());
}
