//! A read-only reader of boltDB files (boltdb/bolt v1.3.1, the format bbolt kept), enough to
//! import a deploy-tools `state.db` once.
//!
//! Format: the file is a sequence of pages. Pages 0 and 1 are meta pages; the valid one with
//! the higher transaction id is current (a crash during a commit leaves the other one intact).
//! A bucket is a B+tree: branch pages list `(key, child page)`, leaf pages list
//! `(flags, key, value)`. A leaf value flagged as a bucket holds a bucket header
//! `{root page, sequence}`; root 0 means an inline bucket whose leaf page follows the header
//! inside the value itself. A page with `overflow = n` spans `n + 1` consecutive pages.
//!
//! Every offset read from the file is bounds-checked: a damaged file gives an error, never a
//! panic.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail, ensure};

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
/// `{root page u64, sequence u64}` at the start of a bucket's value.
const BUCKET_HEADER: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const BUCKET_LEAF: u32 = 0x01;
/// Offset of the checksum inside the meta struct: magic, version, pageSize, flags (4 each),
/// root bucket (16), freelist, pgid, txid (8 each).
const META_CHECKSUM_AT: usize = 56;
/// Deeper trees than this are a cycle in a damaged file, not data.
const MAX_DEPTH: usize = 64;

/// An opened bolt file, read whole into memory.
pub(super) struct Db {
    data: Vec<u8>,
    page_size: usize,
    root: u64,
}

/// One key of a bucket.
pub(super) struct Entry<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub is_bucket: bool,
}

/// A bucket: its tree root is a page, or an inline page inside its parent's value.
#[derive(Clone, Copy)]
pub(super) struct Bucket<'a> {
    db: &'a Db,
    root: Root<'a>,
}

#[derive(Clone, Copy)]
enum Root<'a> {
    Page(u64),
    Inline(&'a [u8]),
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let s = b
        .get(at..at + 2)
        .ok_or_else(|| anyhow!("truncated at offset {at}"))?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b
        .get(at..at + 4)
        .ok_or_else(|| anyhow!("truncated at offset {at}"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    let s = b
        .get(at..at + 8)
        .ok_or_else(|| anyhow!("truncated at offset {at}"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

fn fnv64a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A valid meta page at `offset`: `(page size, root bucket page, txid)`.
fn meta_at(data: &[u8], offset: usize) -> Result<(usize, u64, u64)> {
    let flags = u16_at(data, offset + 8)?;
    ensure!(
        flags & META != 0,
        "page at offset {offset} is not a meta page"
    );
    let m = offset + PAGE_HEADER;
    let meta = data
        .get(m..m + META_CHECKSUM_AT + 8)
        .ok_or_else(|| anyhow!("truncated meta page"))?;
    ensure!(u32_at(meta, 0)? == MAGIC, "not a bolt file (bad magic)");
    ensure!(
        u32_at(meta, 4)? == VERSION,
        "unsupported bolt version {}",
        u32_at(meta, 4)?
    );
    ensure!(
        fnv64a(&meta[..META_CHECKSUM_AT]) == u64_at(meta, META_CHECKSUM_AT)?,
        "meta checksum mismatch"
    );
    let page_size = u32_at(meta, 8)? as usize;
    ensure!(
        page_size >= 512 && page_size.is_power_of_two(),
        "bad page size {page_size}"
    );
    Ok((page_size, u64_at(meta, 16)?, u64_at(meta, 48)?))
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Db::from_bytes(data)
    }

    pub fn from_bytes(data: Vec<u8>) -> Result<Db> {
        // Meta 0 says the page size; if it is damaged, meta 1 sits at one of the usual sizes.
        let meta0 = meta_at(&data, 0);
        let sizes: Vec<usize> = match &meta0 {
            Ok((ps, _, _)) => vec![*ps],
            Err(_) => vec![4096, 8192, 16384, 32768, 65536],
        };
        let meta1 = sizes
            .iter()
            .find_map(|&ps| meta_at(&data, ps).ok().filter(|m| m.0 == ps));
        let (page_size, root, _) = match (meta0, meta1) {
            (Ok(a), Some(b)) => {
                if b.2 > a.2 {
                    b
                } else {
                    a
                }
            }
            (Ok(a), None) => a,
            (Err(_), Some(b)) => b,
            (Err(e), None) => return Err(e.context("no valid meta page")),
        };
        Ok(Db {
            data,
            page_size,
            root,
        })
    }

    /// The root bucket (its keys are the top-level buckets).
    pub fn root(&self) -> Bucket<'_> {
        Bucket {
            db: self,
            root: Root::Page(self.root),
        }
    }

    /// The bytes of page `id`, overflow pages included.
    fn page(&self, id: u64) -> Result<&[u8]> {
        let start = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .filter(|&s| s + PAGE_HEADER <= self.data.len())
            .ok_or_else(|| anyhow!("page {id} beyond the end of the file"))?;
        ensure!(
            u64_at(&self.data, start)? == id,
            "page {id} has a different id in its header"
        );
        let overflow = u32_at(&self.data, start + 12)? as usize;
        let len = (overflow + 1)
            .checked_mul(self.page_size)
            .ok_or_else(|| anyhow!("page {id}: bad overflow"))?;
        self.data
            .get(start..start + len)
            .ok_or_else(|| anyhow!("page {id} overflows the end of the file"))
    }
}

impl<'a> Bucket<'a> {
    /// Every key, in key order.
    pub fn entries(&self) -> Result<Vec<Entry<'a>>> {
        let mut out = Vec::new();
        match self.root {
            Root::Page(id) => self.walk(id, 0, &mut out)?,
            Root::Inline(page) => read_leaf(page, &mut out)?,
        }
        Ok(out)
    }

    fn walk(&self, id: u64, depth: usize, out: &mut Vec<Entry<'a>>) -> Result<()> {
        ensure!(
            depth < MAX_DEPTH,
            "bucket tree deeper than {MAX_DEPTH}: damaged file"
        );
        let page: &'a [u8] = self.db.page(id)?;
        let flags = u16_at(page, 8)?;
        if flags & LEAF != 0 {
            return read_leaf(page, out);
        }
        ensure!(
            flags & BRANCH != 0,
            "page {id} is neither branch nor leaf (flags {flags:#x})"
        );
        let count = usize::from(u16_at(page, 10)?);
        for i in 0..count {
            let child = u64_at(page, PAGE_HEADER + i * ELEMENT + 8)?;
            self.walk(child, depth + 1, out)?;
        }
        Ok(())
    }

    /// True for a bucket stored inside its parent's value.
    #[cfg(test)]
    pub fn is_inline(&self) -> bool {
        matches!(self.root, Root::Inline(_))
    }

    /// True if any page of this bucket's tree spans overflow pages or is a branch page:
    /// `(branch pages seen, overflow pages seen)`.
    #[cfg(test)]
    pub fn shape(&self) -> Result<(usize, usize)> {
        fn visit(db: &Db, id: u64, depth: usize, acc: &mut (usize, usize)) -> Result<()> {
            ensure!(depth < MAX_DEPTH, "too deep");
            let page = db.page(id)?;
            if u32_at(page, 12)? > 0 {
                acc.1 += 1;
            }
            if u16_at(page, 8)? & BRANCH != 0 {
                acc.0 += 1;
                for i in 0..usize::from(u16_at(page, 10)?) {
                    visit(
                        db,
                        u64_at(page, PAGE_HEADER + i * ELEMENT + 8)?,
                        depth + 1,
                        acc,
                    )?;
                }
            }
            Ok(())
        }
        let mut acc = (0, 0);
        if let Root::Page(id) = self.root {
            visit(self.db, id, 0, &mut acc)?;
        }
        Ok(acc)
    }

    /// The nested bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>> {
        let Some(e) = self.entries()?.into_iter().find(|e| e.key == name) else {
            return Ok(None);
        };
        if !e.is_bucket {
            bail!(
                "{:?} is a value, not a bucket",
                String::from_utf8_lossy(name)
            );
        }
        Ok(Some(self.open_child(e.value)?))
    }

    /// Opens the bucket whose header is `value` (an entry with `is_bucket`).
    pub fn open_child(&self, value: &'a [u8]) -> Result<Bucket<'a>> {
        let root = u64_at(value, 0).context("bucket header")?;
        let root = if root == 0 {
            Root::Inline(
                value
                    .get(BUCKET_HEADER..)
                    .ok_or_else(|| anyhow!("truncated inline bucket"))?,
            )
        } else {
            Root::Page(root)
        };
        Ok(Bucket { db: self.db, root })
    }
}

/// Appends the elements of the leaf page `page` (which may be an inline page).
fn read_leaf<'a>(page: &'a [u8], out: &mut Vec<Entry<'a>>) -> Result<()> {
    let flags = u16_at(page, 8)?;
    ensure!(flags & LEAF != 0, "expected a leaf page (flags {flags:#x})");
    let count = usize::from(u16_at(page, 10)?);
    for i in 0..count {
        let elem = PAGE_HEADER + i * ELEMENT;
        let eflags = u32_at(page, elem)?;
        let pos = u32_at(page, elem + 4)? as usize;
        let ksize = u32_at(page, elem + 8)? as usize;
        let vsize = u32_at(page, elem + 12)? as usize;
        // Positions are relative to the element itself.
        let kstart = elem
            .checked_add(pos)
            .ok_or_else(|| anyhow!("bad element offset"))?;
        let vstart = kstart
            .checked_add(ksize)
            .ok_or_else(|| anyhow!("bad key size"))?;
        let vend = vstart
            .checked_add(vsize)
            .ok_or_else(|| anyhow!("bad value size"))?;
        let key = page
            .get(kstart..vstart)
            .ok_or_else(|| anyhow!("key beyond its page"))?;
        let value = page
            .get(vstart..vend)
            .ok_or_else(|| anyhow!("value beyond its page"))?;
        out.push(Entry {
            key,
            value,
            is_bucket: eflags & BUCKET_LEAF != 0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_values() {
        assert_eq!(fnv64a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Db::from_bytes(Vec::new()).is_err());
        assert!(Db::from_bytes(vec![0xff; 8192]).is_err());
        let mut data = vec![0u8; 4096 * 4];
        // A meta-flagged page with the magic but a wrong checksum.
        data[8] = META as u8;
        data[16..20].copy_from_slice(&MAGIC.to_le_bytes());
        data[20..24].copy_from_slice(&VERSION.to_le_bytes());
        data[24..28].copy_from_slice(&4096u32.to_le_bytes());
        assert!(Db::from_bytes(data.clone()).is_err());
        // Fix the checksum; the root points at page 3, which is garbage (not a leaf/branch).
        data[32..40].copy_from_slice(&3u64.to_le_bytes());
        let sum = fnv64a(&data[16..16 + META_CHECKSUM_AT]);
        data[16 + META_CHECKSUM_AT..16 + META_CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
        let db = Db::from_bytes(data.clone()).expect("meta is valid");
        assert!(
            db.root().entries().is_err(),
            "page 3 has the wrong id in its header"
        );
        data[3 * 4096..3 * 4096 + 8].copy_from_slice(&3u64.to_le_bytes());
        data[3 * 4096 + 8] = BRANCH as u8;
        data[3 * 4096 + 10] = 1; // one child: page 3 itself, a cycle
        data[3 * 4096 + 16 + 8..3 * 4096 + 16 + 16].copy_from_slice(&3u64.to_le_bytes());
        let db = Db::from_bytes(data).unwrap();
        assert!(
            db.root().entries().is_err(),
            "cycles end at the depth limit"
        );
    }
}
