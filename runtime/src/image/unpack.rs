//! Safe unpacking of one layer tar into its own directory, in overlayfs form.
//!
//! Every write goes through a directory fd of the layer root: parents are opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and the last component is created with
//! `*at` calls that never follow it. So an entry can neither climb out (`..`, absolute
//! paths) nor write through a symlink (one from this layer or an absolute one); both are
//! refused with the entry's name, and nothing is ever written outside the layer dir.
//!
//! Whiteouts become overlayfs whiteouts: `.wh.<name>` → a 0/0 character device `<name>`,
//! `.wh..wh..opq` → `trusted.overlay.opaque=y` on the directory. Ownership, modes
//! (setuid included), xattrs (PAX `SCHILY.xattr.*`), mtimes, hardlinks and symlinks are kept.
//! The uncompressed stream is hashed on the way, giving the layer's diff id.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timestamps, Uid};
use sha2::{Digest, Sha256};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Why a layer could not be unpacked; `entry` names the tar entry when one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bound of [`Bounds`] was crossed.
    #[error("{0}")]
    Bound(Crossed),
    #[error("entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: &'static str },
    #[error("entry {entry:?}: {source}")]
    Entry { entry: String, source: io::Error },
    #[error("read the layer: {0}")]
    Read(io::Error),
    #[error("unsupported entry {entry:?} of type {kind}")]
    Unsupported { entry: String, kind: String },
}

impl Error {
    /// True when the layer's content is at fault (not the node's disk).
    pub fn is_hostile(&self) -> bool {
        matches!(self, Error::Unsafe { .. } | Error::Unsupported { .. })
    }

    /// True when a bound was crossed or the disk is full: the node's resources ran out.
    pub fn is_exhausted(&self) -> bool {
        match self {
            Error::Bound(_) => true,
            Error::Entry { source, .. } | Error::Read(source) => crate::error::is_no_space(source),
            _ => false,
        }
    }
}

/// What one layer may make, so an image cannot fill the disk (a few MB of gzip can be
/// gigabytes of zeros). The config keys name them in errors.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Bytes of uncompressed tar (`image.max_layer_bytes`).
    pub max_layer_bytes: u64,
    /// Entries in the tar (`image.max_layer_entries`).
    pub max_entries: u64,
    /// Bytes the whole pull may still unpack, shared by its layers (`image.max_image_bytes`).
    pub image_budget: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub max_image_bytes: u64,
    /// Free space the store's file system keeps (`image.min_free_bytes`).
    pub min_free_bytes: u64,
}

/// Which bound was crossed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Crossed {
    #[error("the uncompressed layer is larger than image.max_layer_bytes = {0} bytes")]
    LayerBytes(u64),
    #[error("the layer has more than image.max_layer_entries = {0} entries")]
    Entries(u64),
    #[error("the image's layers are larger than image.max_image_bytes = {0} bytes")]
    ImageBytes(u64),
    #[error(
        "the image store's file system has {free} bytes free, less than image.min_free_bytes = {reserve}"
    )]
    FreeSpace { free: u64, reserve: u64 },
}

/// What an unpacked layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:` of the uncompressed tar (the layer's diff id).
    pub diff_id: String,
    /// Bytes of regular-file content written.
    pub size: u64,
}

/// Which compression a blob uses, from its first bytes (media types lie more often).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn sniff(head: &[u8]) -> Self {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

/// Unpacks the (possibly compressed) layer tar at `blob` into `dest`, an empty directory,
/// within `bounds`.
pub fn unpack_layer(blob: &Path, dest: &Path, bounds: &Bounds) -> Result<Unpacked, Error> {
    let file = File::open(blob).map_err(Error::Read)?;
    let mut input = BufReader::with_capacity(256 * 1024, file);
    let head = input.fill_buf().map_err(Error::Read)?;
    let reader: Box<dyn Read> = match Compression::sniff(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(input).map_err(Error::Read)?),
        Compression::None => Box::new(input),
    };
    let root = open_root(dest).map_err(Error::Read)?;
    let statfs = root.try_clone().map_err(Error::Read)?;
    let mut bounded = BoundedReader::new(reader, bounds, statfs);
    let written = Writer::new(root, bounds.max_entries).write_all(&mut bounded);
    // A crossed bound shows through tar as whatever error it wraps the read's in.
    let size = match (written, bounded.crossed.take()) {
        (Err(_), Some(crossed)) => return Err(Error::Bound(crossed)),
        (written, _) => written?,
    };
    // The tar's end-of-archive blocks (and any padding) are part of the diff id.
    let rest = io::copy(&mut bounded, &mut io::sink());
    if let Some(crossed) = bounded.crossed.take() {
        return Err(Error::Bound(crossed));
    }
    rest.map_err(Error::Read)?;
    Ok(Unpacked { diff_id: super::digest_string(bounded.hasher), size })
}

fn open_root(dest: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(dest, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// The uncompressed stream: hashed (the diff id), counted against the layer's and the
/// image's byte bounds, and every [`FREE_SPACE_EVERY`] bytes the store's free space is
/// checked. A crossed bound ends the stream with an error and is kept in `crossed`.
struct BoundedReader<'a, R> {
    inner: R,
    hasher: Sha256,
    bounds: &'a Bounds,
    read: u64,
    next_free_check: u64,
    statfs: OwnedFd,
    crossed: Option<Crossed>,
}

const FREE_SPACE_EVERY: u64 = 64 << 20;

impl<'a, R: Read> BoundedReader<'a, R> {
    fn new(inner: R, bounds: &'a Bounds, statfs: OwnedFd) -> Self {
        let (read, next_free_check, crossed) = (0, 0, None);
        Self { inner, hasher: Sha256::new(), bounds, read, next_free_check, statfs, crossed }
    }

    fn check(&mut self, n: u64) -> Result<(), Crossed> {
        use std::sync::atomic::Ordering;
        self.read += n;
        if self.read > self.bounds.max_layer_bytes {
            return Err(Crossed::LayerBytes(self.bounds.max_layer_bytes));
        }
        let budget = &self.bounds.image_budget;
        if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(n)).is_err()
        {
            return Err(Crossed::ImageBytes(self.bounds.max_image_bytes));
        }
        if self.read >= self.next_free_check {
            self.next_free_check = self.read + FREE_SPACE_EVERY;
            if let Ok(st) = rustix::fs::fstatvfs(&self.statfs) {
                let free = st.f_bavail.saturating_mul(st.f_frsize);
                if free < self.bounds.min_free_bytes {
                    return Err(Crossed::FreeSpace { free, reserve: self.bounds.min_free_bytes });
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for BoundedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.crossed.is_some() {
            return Err(io::Error::other("a bound was crossed"));
        }
        let n = self.inner.read(buf)?;
        if let Err(crossed) = self.check(n as u64) {
            let text = crossed.to_string();
            self.crossed = Some(crossed);
            return Err(io::Error::other(text));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A tar entry's path inside the layer: relative, no `..`, `.` dropped. Absolute paths
/// and `..` are refused rather than rewritten.
pub fn clean_path(raw: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` would leave the layer"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path would leave the layer");
            }
        }
    }
    Ok(out)
}

/// Splits a cleaned path into its parent and last component.
fn split(path: &Path) -> (&Path, &std::ffi::OsStr) {
    (path.parent().unwrap_or(Path::new("")), path.file_name().unwrap_or_default())
}

fn unsafe_entry(name: &str, reason: &'static str) -> Error {
    Error::Unsafe { entry: name.to_owned(), reason }
}

/// A system call on an entry failed.
fn errno(name: &str) -> impl Fn(rustix::io::Errno) -> Error {
    let name = name.to_owned();
    move |e| Error::Entry { entry: name.clone(), source: e.into() }
}

fn open_dir(dir: &OwnedFd, name: impl rustix::path::Arg) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// A whiteout: `.wh.<name>` becomes overlayfs's 0/0 character device `<name>`, and the
/// opaque marker the directory's `trusted.overlay.opaque=y`. Other `.wh..wh.*` names are
/// aufs bookkeeping, meaningless here.
fn whiteout(parent: &OwnedFd, target: &str, name: &str) -> Result<(), Error> {
    let at = |source: io::Error| Error::Entry { entry: name.to_owned(), source };
    if format!("{WHITEOUT_PREFIX}{target}") == OPAQUE_MARKER {
        let dir = open_dir(parent, ".").map_err(at)?;
        rustix::fs::fsetxattr(&dir, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
            .map_err(errno(name))?;
    } else if !target.starts_with(WHITEOUT_PREFIX) {
        if target.is_empty() || target == "." || target == ".." {
            return Err(unsafe_entry(name, "whiteout of an invalid name"));
        }
        replace(parent, target).map_err(at)?;
        let dev = rustix::fs::makedev(0, 0);
        rustix::fs::mknodat(parent, target, FileType::CharacterDevice, Mode::empty(), dev)
            .map_err(errno(name))?;
    }
    Ok(())
}

/// A directory: kept if there is one (a later entry may restate it), else made; then its
/// metadata through a descriptor opened without following links.
fn directory(parent: &OwnedFd, file: &OsStr, meta: &Meta) -> io::Result<()> {
    match rustix::fs::statat(parent, file, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
        Ok(_) => {
            rustix::fs::unlinkat(parent, file, AtFlags::empty())?;
            rustix::fs::mkdirat(parent, file, Mode::from_raw_mode(0o700))?;
        }
        Err(_) => rustix::fs::mkdirat(parent, file, Mode::from_raw_mode(0o700))?,
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat2(parent, file, flags, Mode::empty(), RESOLVE)?;
    apply_fd(&fd, meta)
}

/// A device node or FIFO, with its owner, mode and time.
fn special(
    parent: &OwnedFd,
    file: &OsStr,
    ft: FileType,
    dev: rustix::fs::Dev,
    meta: &Meta,
) -> io::Result<()> {
    replace(parent, file)?;
    rustix::fs::mknodat(parent, file, ft, Mode::from_raw_mode(0o600), dev)?;
    chown_at(parent, file, meta)?;
    rustix::fs::chmodat(parent, file, Mode::from_raw_mode(meta.mode), AtFlags::empty())?;
    set_time_at(parent, file, meta.mtime)
}

/// Metadata applied to what an entry created.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Writer {
    root: OwnedFd,
    /// Entries allowed, and seen so far.
    max_entries: u64,
    entries: u64,
    /// The last parent opened, as most entries share their parent with the one before.
    cached: Option<(PathBuf, OwnedFd)>,
    /// Directory mtimes, set last (creating children changes them).
    dir_times: HashMap<PathBuf, i64>,
    buf: Vec<u8>,
}

const RESOLVE: ResolveFlags =
    ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

impl Writer {
    fn new(root: OwnedFd, max_entries: u64) -> Self {
        let buf = vec![0; 256 * 1024];
        Self { root, max_entries, entries: 0, cached: None, dir_times: HashMap::new(), buf }
    }

    fn write_all(mut self, input: &mut dyn Read) -> Result<u64, Error> {
        let mut archive = tar::Archive::new(input);
        let mut size = 0;
        for entry in archive.entries().map_err(Error::Read)? {
            let mut entry = entry.map_err(Error::Read)?;
            self.entries += 1;
            if self.entries > self.max_entries {
                return Err(Error::Bound(Crossed::Entries(self.max_entries)));
            }
            let raw = entry.path().map_err(Error::Read)?.into_owned();
            let name = raw.to_string_lossy().into_owned();
            let path =
                clean_path(&raw).map_err(|reason| Error::Unsafe { entry: name.clone(), reason })?;
            size += self.entry(&mut entry, &path, &name)?;
        }
        self.finish_dirs()?;
        Ok(size)
    }

    /// Writes one entry; returns the bytes of file content it wrote.
    fn entry(
        &mut self,
        entry: &mut tar::Entry<'_, &mut dyn Read>,
        path: &Path,
        name: &str,
    ) -> Result<u64, Error> {
        let at = |source: io::Error| Error::Entry { entry: name.to_owned(), source };
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(0);
        }
        let meta = meta(entry).map_err(at)?;
        if path.as_os_str().is_empty() {
            // The layer root itself ("./"): only its metadata.
            if kind.is_dir() {
                let fd = open_dir(&self.root, ".").map_err(at)?;
                apply_fd(&fd, &meta).map_err(at)?;
                self.dir_times.insert(PathBuf::new(), meta.mtime);
            }
            return Ok(0);
        }
        let (parent_path, file) = split(path);
        let parent = self.parent(parent_path, name)?;
        if let Some(target) = file.to_string_lossy().strip_prefix(WHITEOUT_PREFIX) {
            return whiteout(&parent, target, name).map(|()| 0);
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.regular(entry, &parent, file, &meta, name)
            }
            tar::EntryType::Directory => {
                directory(&parent, file, &meta).map_err(at)?;
                self.dir_times.insert(path.to_path_buf(), meta.mtime);
                Ok(0)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(at)?
                    .ok_or_else(|| unsafe_entry(name, "symlink without a target"))?;
                replace(&parent, file).map_err(at)?;
                rustix::fs::symlinkat(target.as_os_str(), &parent, file).map_err(errno(name))?;
                chown_at(&parent, file, &meta).map_err(at)?;
                set_time_at(&parent, file, meta.mtime).map_err(at)?;
                Ok(0)
            }
            tar::EntryType::Link => {
                let raw = entry
                    .link_name()
                    .map_err(at)?
                    .ok_or_else(|| unsafe_entry(name, "hardlink without a target"))?;
                self.hardlink(&raw, &parent, file, name).map(|()| 0)
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (ft, dev) = match kind {
                    tar::EntryType::Char => (FileType::CharacterDevice, device(entry)),
                    tar::EntryType::Block => (FileType::BlockDevice, device(entry)),
                    _ => (FileType::Fifo, 0),
                };
                special(&parent, file, ft, dev, &meta).map_err(at)?;
                Ok(0)
            }
            other => Err(Error::Unsupported { entry: name.to_owned(), kind: format!("{other:?}") }),
        }
    }

    /// A regular file: created new (never through an existing name), content, metadata.
    fn regular(
        &mut self,
        entry: &mut tar::Entry<'_, &mut dyn Read>,
        parent: &OwnedFd,
        file: &OsStr,
        meta: &Meta,
        name: &str,
    ) -> Result<u64, Error> {
        let at = |source: io::Error| Error::Entry { entry: name.to_owned(), source };
        replace(parent, file).map_err(at)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd =
            rustix::fs::openat(parent, file, flags | OFlags::CLOEXEC, Mode::from_raw_mode(0o600))
                .map_err(errno(name))?;
        let mut out = File::from(fd);
        let mut written = 0u64;
        loop {
            let n = entry.read(&mut self.buf).map_err(Error::Read)?;
            if n == 0 {
                break;
            }
            out.write_all(&self.buf[..n]).map_err(at)?;
            written += n as u64;
        }
        apply_fd(&out, meta).map_err(at)?;
        Ok(written)
    }

    /// A hardlink to an entry of this layer (one of a lower layer cannot be reached).
    fn hardlink(
        &self,
        raw: &Path,
        parent: &OwnedFd,
        file: &OsStr,
        name: &str,
    ) -> Result<(), Error> {
        let outside = || unsafe_entry(name, "hardlink target is not in this layer");
        if raw.is_absolute() {
            return Err(unsafe_entry(name, "hardlink to an absolute path would leave the layer"));
        }
        let target = clean_path(raw).map_err(|reason| unsafe_entry(name, reason))?;
        let (tparent_path, tfile) = split(&target);
        let tparent = self.open_existing(tparent_path).map_err(|_| outside())?;
        replace(parent, file).map_err(|source| Error::Entry { entry: name.to_owned(), source })?;
        rustix::fs::linkat(&tparent, tfile, parent, file, AtFlags::empty()).map_err(|e| match e {
            rustix::io::Errno::NOENT => outside(),
            e => errno(name)(e),
        })
    }

    /// The directory an entry goes into, created (0755, root) when the tar did not list it.
    fn parent(&mut self, rel: &Path, name: &str) -> Result<OwnedFd, Error> {
        if let Some((p, fd)) = &self.cached
            && p == rel
        {
            return fd.try_clone().map_err(Error::Read);
        }
        let fd = match self.open_existing(rel) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => self.create_parents(rel, name)?,
            Err(e) => return Err(resolve_error(e, name)),
        };
        self.cached = Some((rel.to_path_buf(), fd.try_clone().map_err(Error::Read)?));
        Ok(fd)
    }

    fn open_existing(&self, rel: &Path) -> Result<OwnedFd, rustix::io::Errno> {
        let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        rustix::fs::openat2(
            &self.root,
            rel,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
    }

    fn create_parents(&self, rel: &Path, name: &str) -> Result<OwnedFd, Error> {
        let mut dir = self.root.try_clone().map_err(Error::Read)?;
        for part in rel.iter() {
            match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(resolve_error(e, name)),
            }
            dir = rustix::fs::openat2(
                &dir,
                part,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
            .map_err(|e| resolve_error(e, name))?;
        }
        Ok(dir)
    }

    fn finish_dirs(&self) -> Result<(), Error> {
        for (path, mtime) in &self.dir_times {
            let rel = if path.as_os_str().is_empty() { Path::new(".") } else { path.as_path() };
            let name = path.to_string_lossy().into_owned();
            let at = |source: io::Error| Error::Entry { entry: name.clone(), source };
            let fd = rustix::fs::openat2(
                &self.root,
                rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
            .map_err(io::Error::from)
            .map_err(at)?;
            rustix::fs::futimens(&fd, &times(*mtime)).map_err(io::Error::from).map_err(at)?;
        }
        Ok(())
    }
}

fn resolve_error(e: rustix::io::Errno, name: &str) -> Error {
    let reason = match e {
        rustix::io::Errno::LOOP => "writes through a symlink",
        rustix::io::Errno::XDEV => "would leave the layer",
        rustix::io::Errno::NOTDIR => "a parent is not a directory",
        e => return Error::Entry { entry: name.to_owned(), source: e.into() },
    };
    Error::Unsafe { entry: name.to_owned(), reason }
}

/// Makes room for a new entry: a later entry of the same path replaces the earlier one
/// (a directory only by a directory).
fn replace(parent: &OwnedFd, file: impl rustix::path::Arg + Copy) -> io::Result<()> {
    match rustix::fs::unlinkat(parent, file, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::ISDIR) => {
            Err(io::Error::new(io::ErrorKind::AlreadyExists, "would replace a directory"))
        }
        Err(e) => Err(e.into()),
    }
}

fn meta(entry: &mut tar::Entry<'_, &mut dyn Read>) -> io::Result<Meta> {
    let h = entry.header();
    let mut m = Meta {
        uid: h.uid()? as u32,
        gid: h.gid()? as u32,
        mode: h.mode()? & 0o7777,
        mtime: h.mtime()? as i64,
        xattrs: Vec::new(),
    };
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(xattr) = key.strip_prefix("SCHILY.xattr.") {
                // An image must not steer overlayfs (opaque, redirect, metacopy).
                if !xattr.starts_with("trusted.overlay.") && !xattr.starts_with("user.overlay.") {
                    m.xattrs.push((xattr.to_owned(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(m)
}

fn device(entry: &tar::Entry<'_, &mut dyn Read>) -> rustix::fs::Dev {
    let h = entry.header();
    let major = h.device_major().ok().flatten().unwrap_or(0);
    let minor = h.device_minor().ok().flatten().unwrap_or(0);
    rustix::fs::makedev(major, minor)
}

fn uid(n: u32) -> Uid {
    Uid::from_raw(n)
}

fn gid(n: u32) -> Gid {
    Gid::from_raw(n)
}

fn times(mtime: i64) -> Timestamps {
    let t = rustix::fs::Timespec { tv_sec: mtime, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

/// Owner of what `file` is, never following it (a symlink keeps its own owner).
fn chown_at(parent: &OwnedFd, file: impl rustix::path::Arg, m: &Meta) -> io::Result<()> {
    let (u, g) = (Some(uid(m.uid)), Some(gid(m.gid)));
    Ok(rustix::fs::chownat(parent, file, u, g, AtFlags::SYMLINK_NOFOLLOW)?)
}

fn set_time_at(parent: &OwnedFd, file: impl rustix::path::Arg, mtime: i64) -> io::Result<()> {
    Ok(rustix::fs::utimensat(parent, file, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Owner first (chown clears setuid/setgid), then mode, xattrs and mtime.
fn apply_fd(fd: &impl AsFd, m: &Meta) -> io::Result<()> {
    rustix::fs::fchown(fd, Some(uid(m.uid)), Some(gid(m.gid)))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode))?;
    for (name, value) in &m.xattrs {
        rustix::fs::fsetxattr(fd, name.as_str(), value, rustix::fs::XattrFlags::empty())?;
    }
    rustix::fs::futimens(fd, &times(m.mtime))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unbounded() -> Bounds {
        Bounds {
            max_layer_bytes: u64::MAX,
            max_entries: u64::MAX,
            image_budget: std::sync::Arc::new(u64::MAX.into()),
            max_image_bytes: u64::MAX,
            min_free_bytes: 0,
        }
    }

    #[test]
    fn paths_are_cleaned_or_refused() {
        assert_eq!(clean_path(Path::new("./usr/bin/")).unwrap(), Path::new("usr/bin"));
        assert_eq!(clean_path(Path::new("a/./b")).unwrap(), Path::new("a/b"));
        assert_eq!(clean_path(Path::new("./")).unwrap(), Path::new(""));
        assert!(clean_path(Path::new("../etc/passwd")).is_err());
        assert!(clean_path(Path::new("a/../../b")).is_err());
        assert!(clean_path(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn compression_is_sniffed() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(Compression::sniff(b"usr/"), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
    }

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> tempfile::NamedTempFile {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let data = b.into_inner().unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        f
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o755);
        h.set_mtime(1_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = header(tar::EntryType::Symlink, 0);
        b.append_link(&mut h, path, target).unwrap();
    }

    fn hardlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = header(tar::EntryType::Link, 0);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn files_links_and_times_are_kept() {
        let l = layer(|b| {
            file(b, "usr/bin/tool", b"#!/bin/sh\n");
            symlink(b, "bin", "usr/bin");
            hardlink(b, "usr/bin/tool2", "usr/bin/tool");
        });
        let dir = tempfile::tempdir().unwrap();
        let out = unpack_layer(l.path(), dir.path(), &unbounded()).unwrap();
        assert_eq!(out.size, 10);
        assert!(out.diff_id.starts_with("sha256:"));
        let tool = dir.path().join("usr/bin/tool");
        assert_eq!(std::fs::read(&tool).unwrap(), b"#!/bin/sh\n");
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&tool).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o755);
        assert_eq!(md.mtime(), 1_000_000);
        assert_eq!(md.nlink(), 2);
        assert_eq!(std::fs::read_link(dir.path().join("bin")).unwrap(), Path::new("usr/bin"));
        // The diff id is the sha256 of the tar as given.
        let again =
            unpack_layer(l.path(), tempfile::tempdir().unwrap().path(), &unbounded()).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn hostile_entries_are_refused() {
        // tar::Builder refuses `..` and absolute names, so hostile names go in raw headers.
        fn raw(
            b: &mut tar::Builder<Vec<u8>>,
            kind: tar::EntryType,
            path: &str,
            link: Option<&str>,
        ) {
            let mut h = header(kind, 0);
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, io::empty()).unwrap();
        }
        type Build = Box<dyn Fn(&mut tar::Builder<Vec<u8>>)>;
        let cases: Vec<(&str, Build)> = vec![
            ("../evil", Box::new(|b| raw(b, tar::EntryType::Regular, "../evil", None))),
            ("/evil", Box::new(|b| raw(b, tar::EntryType::Regular, "/evil", None))),
            (
                "through-link",
                Box::new(|b| {
                    symlink(b, "etc", "/etc");
                    raw(b, tar::EntryType::Regular, "etc/evil", None);
                }),
            ),
            (
                "relative-link",
                Box::new(|b| {
                    symlink(b, "up", "../../..");
                    raw(b, tar::EntryType::Regular, "up/evil", None);
                }),
            ),
            (
                "abs-hardlink",
                Box::new(|b| raw(b, tar::EntryType::Link, "passwd", Some("/etc/passwd"))),
            ),
            (
                "up-hardlink",
                Box::new(|b| raw(b, tar::EntryType::Link, "passwd", Some("../../etc/passwd"))),
            ),
        ];
        for (what, build) in cases {
            let l = layer(|b| build(b));
            let outer = tempfile::tempdir().unwrap();
            let dest = outer.path().join("layer");
            std::fs::create_dir(&dest).unwrap();
            let err = unpack_layer(l.path(), &dest, &unbounded()).unwrap_err();
            assert!(err.is_hostile(), "{what}: {err}");
            assert!(!outer.path().join("evil").exists(), "{what}");
            let names: Vec<_> = std::fs::read_dir(outer.path()).unwrap().collect();
            assert_eq!(names.len(), 1, "{what}: something was written beside the layer");
        }
    }
}
