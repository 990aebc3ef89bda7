//! podbay's fuzz targets: each takes the bytes an attacker or a broken peer controls and
//! drives the code that first reads them. A target panics only when podbay's code does
//! (or when one of its own checks finds a broken promise, e.g. a file written outside a
//! layer's directory); an error answer is the expected outcome for bad input.
//!
//! `scripts/fuzz SECONDS` runs every target under afl++ (the `podbay-fuzz` binary, built
//! with coverage instrumentation). The tests here replay each target's seeds and every
//! input under `fuzz/regressions/<target>/` (a crash afl found, kept once it is fixed), so
//! the suite fails if a fixed crash comes back.

use std::path::Path;

mod cri;
mod frames;
mod layer;
mod seeds;
mod text;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// What the bytes are, for `scripts/fuzz`'s report.
    pub input: &'static str,
    /// Runs one input. `scratch` is an empty directory the target may use (the layer
    /// target unpacks there and checks nothing appears beside it).
    pub run: fn(scratch: &Path, data: &[u8]),
    /// Inputs afl starts from: well-formed examples of what the target reads.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "cri-pod",
        input: "RunPodSandboxRequest (protobuf, as gRPC delivers it)",
        run: cri::pod,
        seeds: seeds::cri_pod,
    },
    Target {
        name: "cri-container",
        input: "CreateContainerRequest (protobuf) + the image's config JSON, /etc/passwd, /etc/group",
        run: cri::container,
        seeds: seeds::cri_container,
    },
    Target {
        name: "layer",
        input: "an image layer blob (tar, gzip or zstd)",
        run: layer::unpack,
        seeds: seeds::layer,
    },
    Target { name: "config", input: "config.toml", run: text::config, seeds: seeds::config },
    Target {
        name: "supervisor-frames",
        input: "a byte stream on a supervisor socket or fork pipe (length-prefixed protobuf)",
        run: frames::stream,
        seeds: seeds::frames,
    },
    Target {
        name: "lease",
        input: "flannel's etcd records: a subnet key and lease JSON, or the network config JSON",
        run: text::lease,
        seeds: seeds::lease,
    },
];

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Splits an input into a length-prefixed head (2 bytes, little-endian) and the rest.
fn split_head(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    Some(rest.split_at(len))
}

/// The inverse of [`split_head`], for seeds.
fn join_head(head: &[u8], rest: &[u8]) -> Vec<u8> {
    let len = u16::try_from(head.len()).expect("seed heads are small");
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(head);
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions").join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut out: Vec<_> = entries
            .map(|e| e.expect("regression dir entry").path())
            .filter(|p| p.is_file())
            .map(|p| {
                let data = std::fs::read(&p).expect("regression input");
                (p, data)
            })
            .collect();
        out.sort();
        out
    }

    /// Every seed and every kept crash runs without a panic.
    #[test]
    fn seeds_and_regressions_replay() {
        for t in TARGETS {
            let seeds = (t.seeds)();
            assert!(!seeds.is_empty(), "{}: no seeds", t.name);
            let inputs = seeds
                .into_iter()
                .enumerate()
                .map(|(i, d)| (PathBuf::from(format!("seed {i}")), d))
                .chain(regressions(t.name));
            for (name, data) in inputs {
                let scratch = tempfile::tempdir().expect("scratch dir");
                (t.run)(scratch.path(), &data);
                eprintln!("{}: {} ok", t.name, name.display());
            }
        }
    }

    /// The seeds are what they claim: the CRI seeds are accepted, so afl starts from
    /// inputs that reach past the first check.
    #[test]
    fn cri_seeds_are_accepted() {
        for data in seeds::cri_pod() {
            cri::accepted_pod(&data).expect("pod seed accepted");
        }
        for data in seeds::cri_container() {
            let (request, _image) = split_head(&data).expect("container seed has a head");
            cri::accepted_container(request).expect("container seed accepted");
        }
    }

    #[test]
    fn heads_split_back() {
        let joined = join_head(b"abc", b"rest");
        assert_eq!(split_head(&joined), Some((&b"abc"[..], &b"rest"[..])));
        assert_eq!(split_head(&[9]), None);
        assert_eq!(split_head(&[9, 0, 1]), Some((&[1u8][..], &[][..])));
    }
}
