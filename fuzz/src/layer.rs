//! Layer unpack: a blob an image (so an attacker) controls, unpacked as root. Beyond "no
//! panic" the target checks the promise unpack makes: nothing is created or linked outside
//! the layer's directory, and the bounds hold.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use podbay_runtime::image::unpack::{Bounds, unpack_layer};

const MAX_BYTES: u64 = 8 << 20;
const MAX_ENTRIES: u64 = 2048;

/// `scratch` holds only the blob and the layer's directory; under afl it is the root of
/// a private mount namespace (see the driver), so an absolute path that escaped would land
/// beside them too and be seen.
pub fn unpack(scratch: &Path, data: &[u8]) {
    let blob = scratch.join("blob");
    let dest = scratch.join("dest");
    fs::write(&blob, data).expect("write the blob");
    fs::create_dir(&dest).expect("make the layer dir");
    let bounds = Bounds {
        max_layer_bytes: MAX_BYTES,
        max_entries: MAX_ENTRIES,
        image_budget: Arc::new(AtomicU64::new(MAX_BYTES)),
        max_image_bytes: MAX_BYTES,
        min_free_bytes: 0,
    };
    let result = unpack_layer(&blob, &dest, &bounds);

    let mut beside: Vec<String> = fs::read_dir(scratch)
        .expect("list scratch")
        .map(|e| e.expect("scratch entry").file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, ["blob", "dest"], "unpack made something outside the layer: {result:?}");
    let blob_ino = fs::metadata(&blob).expect("blob").ino();
    let mut files = HashSet::new();
    let (entries, bytes) = walk(&dest, blob_ino, &mut files);
    if let Ok(unpacked) = &result {
        assert!(entries <= MAX_ENTRIES + 1, "{entries} entries unpacked");
        assert!(unpacked.size <= MAX_BYTES, "{unpacked:?}");
    }
    assert!(bytes <= MAX_BYTES, "{bytes} bytes on disk after {result:?}");
    fs::remove_dir_all(&dest).expect("remove the layer dir");
    fs::remove_file(&blob).expect("remove the blob");
}

/// Counts what is under `dir` (without following symlinks; a file's bytes once however
/// many links it has) and checks no entry is a hard link to the blob outside.
fn walk(dir: &Path, blob_ino: u64, files: &mut HashSet<u64>) -> (u64, u64) {
    let (mut entries, mut bytes) = (0, 0);
    for e in fs::read_dir(dir).expect("list the layer") {
        let e = e.expect("layer entry");
        let meta = e.metadata().expect("entry metadata");
        assert_ne!(meta.ino(), blob_ino, "{:?} is a hard link to a file outside", e.path());
        entries += 1;
        if meta.is_dir() {
            let (n, b) = walk(&e.path(), blob_ino, files);
            entries += n;
            bytes += b;
        } else if meta.is_file() && files.insert(meta.ino()) {
            bytes += meta.len();
        }
    }
    (entries, bytes)
}
