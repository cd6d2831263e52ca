//! Compiles kheap's freestanding C core (every `src/core/*.c` of the
//! repository) and, with the `std` feature, the hosted port
//! (`src/port/hosted.c`) into `libkheap_core.a`, with the C compiler for the
//! target and the Makefile's warning flags. No build-dependency crates: the
//! compiler and `ar` run through `std::process::Command`.
//!
//! The compiler is the first of: `$CC_<target>` (dashes as underscores),
//! `$CC`, the target's cross gcc when the target's architecture is not the
//! host's (`aarch64-linux-gnu-gcc`, `riscv64-linux-gnu-gcc`,
//! `i686-linux-gnu-gcc`, `arm-none-eabi-gcc`), else `cc`. The archiver is
//! `$AR` or `ar`. `$KHEAP_CFLAGS` adds flags (e.g. `-DKHEAP_DEBUG=2`, or a
//! kernel's `-mcmodel=kernel`).
//!
//! With the `extern-core` feature nothing is compiled: the program links
//! kheap's core and a port itself.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.join("..").join("..");
    for d in ["src/core", "src/port", "include"] {
        println!("cargo:rerun-if-changed={}", root.join(d).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("Makefile").display());
    println!("cargo:rerun-if-changed=build.rs");
    for v in ["CC", "AR", "KHEAP_CFLAGS"] {
        println!("cargo:rerun-if-env-changed={}", v);
    }
    let target = env::var("TARGET").expect("TARGET");
    println!("cargo:rerun-if-env-changed=CC_{}", target.replace('-', "_"));

    let std_port = env::var_os("CARGO_FEATURE_STD").is_some();
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let objdir = out.join("obj");
    fs::create_dir_all(&objdir).expect("create OUT_DIR/obj");

    let cc = compiler(&target);
    check_layouts(&cc, &root, &out);
    if env::var_os("CARGO_FEATURE_EXTERN_CORE").is_some() {
        return;
    }
    let mut flags: Vec<String> = vec!["-std=c11".into()];
    flags.extend(makefile_warnings(&root));
    flags.extend(["-O2", "-g", "-fno-common"].iter().map(|s| s.to_string()));
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os == "none" {
        flags.extend(["-ffreestanding", "-fno-pie", "-fno-stack-protector"].iter().map(|s| s.to_string()));
        if arch == "x86_64" {
            flags.extend(["-mno-red-zone", "-mgeneral-regs-only"].iter().map(|s| s.to_string()));
        }
    } else {
        flags.push("-fPIC".into());
    }
    for d in ["include", "src", "src/core"] {
        flags.push(format!("-I{}", root.join(d).display()));
    }
    // The crate has its own API: no kmalloc names in the kernel's namespace.
    flags.push("-DKHEAP_KMALLOC_API=0".into());
    if std_port {
        // As the Makefile's HOSTED_DEFS.
        flags.push("-DKHEAP_PORT_PAGES=1".into());
        flags.push("-DKHEAP_PORT_PURGE=1".into());
        // Memory the port gives comes inaccessible and is opened as used.
        flags.push("-DKHEAP_PORT_COMMIT=1".into());
        flags.push("-DKHEAP_PORT_CPU_HEADER=\"port/hosted_cpu.h\"".into());
    } else {
        // The Rust port (src/port.rs) has page hooks for set_growable.
        flags.push("-DKHEAP_PORT_PAGES=1".into());
    }
    if let Ok(extra) = env::var("KHEAP_CFLAGS") {
        flags.extend(extra.split_whitespace().map(|s| s.to_string()));
    }

    let mut sources: Vec<PathBuf> = fs::read_dir(root.join("src/core"))
        .expect("read src/core")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().map_or(false, |x| x == "c"))
        .collect();
    sources.sort();
    if std_port {
        sources.push(root.join("src/port/hosted.c"));
    }

    let mut objs = Vec::new();
    for src in &sources {
        let obj = objdir.join(format!(
            "{}.o",
            src.file_stem().expect("file name").to_string_lossy()
        ));
        run(Command::new(&cc).args(&flags).arg("-c").arg(src).arg("-o").arg(&obj));
        objs.push(obj);
    }
    let lib = out.join("libkheap_core.a");
    let _ = fs::remove_file(&lib);
    let ar = env::var("AR").unwrap_or_else(|_| "ar".into());
    run(Command::new(ar).arg("crs").arg(&lib).args(&objs));
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=kheap_core");
    if std_port {
        println!("cargo:rustc-link-lib=pthread");
    }
}

/// The fields of the C structures that src/ffi.rs mirrors, in order, with
/// their C types. Keep in step with src/ffi.rs.
const STATS: &[(&str, &str)] = &[
    ("allocated_bytes", "uint64_t"),
    ("freed_bytes", "uint64_t"),
    ("used_bytes", "size_t"),
    ("peak_bytes", "size_t"),
    ("allocation_count", "uint64_t"),
    ("free_count", "uint64_t"),
    ("heap_total", "size_t"),
    ("heap_used", "size_t"),
    ("heap_free", "size_t"),
    ("failed_count", "uint64_t"),
    ("metadata_bytes", "size_t"),
    ("slab_bytes", "size_t"),
    ("large_bytes", "size_t"),
    ("region_count", "size_t"),
    ("large_count", "size_t"),
    ("dirty_bytes", "size_t"),
    ("magazine_bytes", "size_t"),
    ("depot_bytes", "size_t"),
    ("empty_slab_bytes", "size_t"),
    ("purged_bytes", "size_t"),
    ("purged_total", "uint64_t"),
    ("decay_epochs", "uint64_t"),
    ("shrink_passes", "uint64_t"),
    ("nolock_fails", "uint64_t"),
    ("nolock_deferred", "uint64_t"),
    ("sampled_count", "uint64_t"),
    ("sampled_live", "size_t"),
    ("large_cache_bytes", "size_t"),
];
const CACHE_INFO: &[(&str, &str)] = &[
    ("name", "char[KHEAP_NAME_MAX]"),
    ("active_objs", "size_t"),
    ("num_objs", "size_t"),
    ("objsize", "size_t"),
    ("objperslab", "size_t"),
    ("pagesperslab", "size_t"),
    ("active_slabs", "size_t"),
    ("num_slabs", "size_t"),
    ("allocs", "uint64_t"),
    ("frees", "uint64_t"),
    ("cached_objs", "size_t"),
    ("cpu_hits", "uint64_t"),
    ("cpu_misses", "uint64_t"),
    ("depot_objs", "size_t"),
    ("empty_slabs", "size_t"),
    ("bulk_allocs", "uint64_t"),
    ("bulk_frees", "uint64_t"),
    ("reserve_allocs", "uint64_t"),
    ("shrink_calls", "uint64_t"),
    ("nolock_allocs", "uint64_t"),
    ("nolock_frees", "uint64_t"),
    ("nolock_fails", "uint64_t"),
    ("nolock_deferred", "uint64_t"),
    ("mag_cap", "unsigned"),
    ("depot_max", "unsigned"),
];

/// Compile (syntax only) static assertions that include/kheap.h's
/// structures have exactly the fields above, in that order, of those
/// sizes, with nothing after the last one.
fn check_layouts(cc: &str, root: &Path, out: &Path) {
    let mut c = String::from("#include <stddef.h>\n#include <stdint.h>\n#include \"kheap.h\"\n");
    for (name, fields) in [("kheap_stats", STATS), ("kheap_cache_info", CACHE_INFO)] {
        let s = format!("struct {}", name);
        for (i, (f, ty)) in fields.iter().enumerate() {
            let (base, dim) = match ty.find('[') {
                Some(k) => (&ty[..k], &ty[k..]),
                None => (*ty, ""),
            };
            c += &format!(
                "_Static_assert(sizeof(((({s} *)0)->{f})) == sizeof({base}{dim}), \"{s}.{f}: not {ty} (src/ffi.rs)\");\n",
                s = s, f = f, base = base, dim = if dim.is_empty() { "" } else { dim }, ty = ty
            );
            if i > 0 {
                let (p, _) = fields[i - 1];
                c += &format!(
                    "_Static_assert(offsetof({s}, {f}) == offsetof({s}, {p}) + sizeof((({s} *)0)->{p}), \"{s}.{f}: not right after {p} (src/ffi.rs)\");\n",
                    s = s, f = f, p = p
                );
            } else {
                c += &format!("_Static_assert(offsetof({s}, {f}) == 0, \"{s}.{f}: not first (src/ffi.rs)\");\n", s = s, f = f);
            }
        }
        let (last, _) = fields[fields.len() - 1];
        c += &format!(
            "_Static_assert(sizeof({s}) == offsetof({s}, {l}) + sizeof((({s} *)0)->{l}), \"{s}: fields after {l} that src/ffi.rs lacks\");\n",
            s = s, l = last
        );
    }
    let file = out.join("layout_check.c");
    fs::write(&file, c).expect("write layout_check.c");
    run(Command::new(cc)
        .arg("-std=c11")
        .arg("-fsyntax-only")
        .arg(format!("-I{}", root.join("include").display()))
        .arg(&file));
}

/// The C compiler for `target` (see the file's comment).
fn compiler(target: &str) -> String {
    if let Ok(cc) = env::var(format!("CC_{}", target.replace('-', "_"))) {
        return cc;
    }
    if let Ok(cc) = env::var("CC") {
        return cc;
    }
    let host = env::var("HOST").unwrap_or_default();
    let arch = target.split('-').next().unwrap_or("");
    let host_arch = host.split('-').next().unwrap_or("");
    if arch == host_arch {
        return "cc".into();
    }
    if arch.starts_with("aarch64") {
        "aarch64-linux-gnu-gcc".into()
    } else if arch.starts_with("riscv64") {
        "riscv64-linux-gnu-gcc".into()
    } else if arch.starts_with('i') && arch.ends_with("86") {
        "i686-linux-gnu-gcc".into()
    } else if arch.starts_with("thumb") || arch.starts_with("arm") {
        "arm-none-eabi-gcc".into()
    } else {
        "cc".into()
    }
}

/// The words of the Makefile's `WARN :=` line, so the crate builds the
/// core with the same warnings (and -Werror) as `make`.
fn makefile_warnings(root: &Path) -> Vec<String> {
    let text = fs::read_to_string(root.join("Makefile")).expect("read the Makefile");
    for line in text.lines() {
        let mut parts = line.splitn(2, ":=");
        let name = parts.next().unwrap_or("").trim();
        if name == "WARN" {
            if let Some(value) = parts.next() {
                return value.split_whitespace().map(|s| s.to_string()).collect();
            }
        }
    }
    panic!("no WARN := line in the Makefile");
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {}", cmd, e));
    if !status.success() {
        panic!("{:?} failed: {}", cmd, status);
    }
}
