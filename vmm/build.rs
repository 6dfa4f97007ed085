//! Links the `kiln-vmm` binary as a static PIE against glibc's static
//! libraries, so starting a VMM maps no shared objects and runs no dynamic
//! loader. On this platform every page fault is costly (~7 µs): the dynamic
//! loader's work (libc, libgcc_s, symbol binding) was ~40 faults and
//! ~400 µs of CPU per spawn, a tenth of the time to a booted guest.
//!
//! Why link arguments rather than `-C target-feature=+crt-static`: Cargo has
//! no stable per-package rustflags, and crt-static for the whole workspace
//! breaks its proc-macro crates. rustc links the gnu target's system
//! libraries with `-Bdynamic -lgcc_s -lc -lm …`; a directory of linker
//! scripts named like those shared objects (searched first: `-L` applies to
//! every `-l`) points each one at its static archive, and `-static-pie`
//! makes gcc pick the static start files.
//!
//! Without glibc's static archives (or with `KILN_VMM_DYNAMIC=1`) the binary
//! is linked dynamically as before, with a build warning.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `-l` names rustc passes for the gnu target → the static archives (in
/// `cc -print-file-name` terms) that provide them.
const SHIMS: &[(&str, &[&str])] = &[
    ("gcc_s", &["libgcc_eh.a", "libgcc.a"]),
    ("c", &["libc.a", "libgcc_eh.a", "libgcc.a"]),
    ("m", &["libm.a"]),
    ("dl", &["libdl.a"]),
    ("pthread", &["libpthread.a"]),
    ("rt", &["librt.a"]),
    ("util", &["libutil.a"]),
];

/// Where the C compiler finds `file`, if it really has it.
fn archive(cc: &str, file: &str) -> Option<PathBuf> {
    let out = Command::new(cc)
        .arg(format!("-print-file-name={file}"))
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // Without the file, cc prints the bare name back.
    (path.is_absolute() && path.is_file()).then(|| path.canonicalize().unwrap_or(path))
}

/// Write one linker script per shim into `dir`; None if an archive is missing.
fn write_shims(cc: &str, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (lib, files) in SHIMS {
        let mut paths = Vec::new();
        for f in *files {
            let p = archive(cc, f).ok_or_else(|| format!("{cc} has no {f}"))?;
            paths.push(p.display().to_string());
        }
        let script = format!("GROUP ( {} )\n", paths.join(" "));
        let file = dir.join(format!("lib{lib}.so"));
        std::fs::write(&file, script).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KILN_VMM_DYNAMIC");
    println!("cargo:rerun-if-env-changed=CC");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "linux" || env != "gnu" || std::env::var_os("KILN_VMM_DYNAMIC").is_some() {
        return;
    }
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let dir = Path::new(&out).join("static-libs");
    match write_shims(&cc, &dir) {
        Ok(()) => {
            println!("cargo:rustc-link-arg-bin=kiln-vmm=-static-pie");
            println!("cargo:rustc-link-arg-bin=kiln-vmm=-L{}", dir.display());
        }
        Err(why) => {
            println!("cargo:warning=kiln-vmm is linked dynamically (slower start): {why}");
        }
    }
}
