//! afl++'s driver for podbay's fuzz targets (built by `scripts/fuzz`).
//!
//! `podbay-fuzz TARGET` runs TARGET under afl (persistent mode, input in shared memory);
//! `podbay-fuzz seeds DIR` writes every target's seeds to `DIR/<target>/`;
//! `podbay-fuzz list` prints the targets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["list"] => {
            for t in podbay_fuzz::TARGETS {
                println!("{}\t{}", t.name, t.input);
            }
            ExitCode::SUCCESS
        }
        ["seeds", dir] => match write_seeds(Path::new(dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("podbay-fuzz: seeds: {e}");
                ExitCode::FAILURE
            }
        },
        [name] => {
            let Some(target) = podbay_fuzz::target(name) else {
                eprintln!("podbay-fuzz: no target {name:?} (see `podbay-fuzz list`)");
                return ExitCode::from(2);
            };
            let scratch = match scratch_root() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("podbay-fuzz: scratch root: {e}");
                    return ExitCode::FAILURE;
                }
            };
            afl::fuzz!(|data: &[u8]| (target.run)(&scratch, data));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: podbay-fuzz list | seeds DIR | TARGET");
            ExitCode::from(2)
        }
    }
}

fn write_seeds(dir: &Path) -> std::io::Result<()> {
    for t in podbay_fuzz::TARGETS {
        let d = dir.join(t.name);
        std::fs::create_dir_all(&d)?;
        for (i, seed) in (t.seeds)().iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), seed)?;
        }
    }
    Ok(())
}

/// A private mount namespace whose root is an empty tmpfs, so whatever a target writes
/// (also through a path that escaped where it should have stayed) stays in memory, is seen
/// by the target's checks, and goes away with the process.
fn scratch_root() -> nix::Result<PathBuf> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
    mount(Some("podbay-fuzz"), "/mnt", Some("tmpfs"), MsFlags::empty(), Some("size=64m"))?;
    nix::unistd::chroot("/mnt")?;
    nix::unistd::chdir("/")?;
    Ok(PathBuf::from("/"))
}
