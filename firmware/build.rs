//! Links the `kiln-firmware` binary as a freestanding static ELF at the
//! address given in `link.ld` (no C runtime, no dynamic linker, not PIE).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_string());
    for arg in [
        "-nostartfiles".to_string(),
        "-nostdlib".to_string(),
        "-static".to_string(),
        "-no-pie".to_string(),
        "-Wl,--no-dynamic-linker".to_string(),
        "-Wl,--build-id=none".to_string(),
        "-Wl,--strip-debug".to_string(),
        "-Wl,-z,norelro".to_string(),
        "-Wl,-z,noexecstack".to_string(),
        format!("-Wl,-T{dir}/link.ld"),
    ] {
        println!("cargo:rustc-link-arg-bin=kiln-firmware={arg}");
    }
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
