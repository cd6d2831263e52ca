//! Rust before 1.68 (Debian 12 has 1.63) has no default alloc error handler
//! for #![no_std] programs on stable: with it, the library asks for the
//! then-unstable default (`feature(default_alloc_error_handler)`, which the
//! Makefile allows through RUSTC_BOOTSTRAP for those versions only).
use std::env;
use std::process::Command;

fn main() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().expect("rustc --version");
    let text = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.63.0 (...)"
    let minor = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(u32::MAX);
    if minor < 68 {
        println!("cargo:rustc-cfg=old_alloc_error_handler");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
