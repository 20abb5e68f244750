//! Link the `offpath` binary with packed relative relocations (`-z pack-relative-relocs`, DT_RELR) when
//! the toolchain supports them.
//!
//! A position-independent Rust binary carries tens of thousands of relative relocations (vtables,
//! panic locations, string tables): as classic RELA entries they are ~0.9 MB that the dynamic loader
//! reads at every start and that stay resident afterwards; packed, a few KiB. It needs GNU ld ≥ 2.38
//! (or lld) and glibc ≥ 2.36 where the binary runs (the linker then records a GLIBC_ABI_DT_RELR
//! dependency, so an older glibc refuses to load it instead of crashing). The flag is only used when a
//! test program linked with it (without a warning) runs, for a native, dynamically linked glibc build;
//! `OFFPATH_NO_RELR=1` turns it off.

use std::env;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=OFFPATH_NO_RELR");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if supported() {
        println!("cargo:rustc-link-arg-bins={FLAG}");
    }
}

fn supported() -> bool {
    let var = |k: &str| env::var(k).unwrap_or_default();
    if var("OFFPATH_NO_RELR") == "1"
        || var("TARGET") != var("HOST")
        || var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || var("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|f| f == "crt-static")
    {
        return false;
    }
    let linker = env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".to_owned());
    let dir = PathBuf::from(var("OUT_DIR"));
    let src = dir.join("relr_probe.c");
    if std::fs::write(&src, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let probe = dir.join("relr_probe");
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // --fatal-warnings: an ld that does not know the option only warns that it ignores it. Running the
    // probe (a native build) shows that this glibc loads DT_RELR binaries.
    quiet(
        Command::new(linker)
            .arg(FLAG)
            .arg("-Wl,--fatal-warnings")
            .arg("-o")
            .arg(&probe)
            .arg(&src),
    ) && quiet(&mut Command::new(&probe))
}
