//! Builds the guest components with a nested `cargo build` on this same workspace, converts the
//! WAT test inputs to binaries, writes the broken inputs, and hands every absolute path to
//! `src/lib.rs` as an env var.
//!
//! The example and hostile guests are built for `wasm32-wasip2`, as a tenant builds a plugin. The
//! default rules are built for `wasm32-unknown-unknown` and made a component here with
//! `wit-component` (the metadata `wit-bindgen` embeds names the world): such a component imports
//! only the contract interfaces it calls, none of the WASI interfaces every Rust `wasm32-wasip2`
//! component carries, so the host has no WASI import to link when it instantiates it.
//!
//! The nested build uses its own target directory (`<target dir>/guests`): the outer cargo
//! holds the lock on its own target directory for the whole build, so sharing it would deadlock.
//! Environment that leaks from the outer build (flags, target dir, profile settings, build-script
//! variables) is cleared so the guests build the same way whatever the outer command was.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target of tenants' plugins: the example and the hostile guests.
const WASIP2: &str = "wasm32-wasip2";
/// The target of the default rules' core module (no WASI at all).
const BARE: &str = "wasm32-unknown-unknown";

/// The default rules: package, artefact stem, env var.
const DEFAULT_RULES: (&str, &str, &str) = (
    "dealbridge-default-rules",
    "dealbridge_default_rules",
    "DEALBRIDGE_GUEST_DEFAULT_RULES",
);

/// Code generation flags of the default rules' core module:
/// - 128-bit SIMD, which wasmtime enables by default; LLVM uses it for the copies and
///   comparisons of planning (about 3% less fuel per record);
/// - a 128 KiB stack instead of Rust's 1 MiB. The stack is the start of the initial linear
///   memory, and the host's work per invocation grows with that memory (resetting the pool
///   slot scans all of it): 1 MiB less took about 0.5 µs off every invocation. Every test of the
///   suite passes with a 16 KiB stack, so 128 KiB leaves eight times that. The stack comes
///   first (`--stack-first`), so an overflow runs below address 0 and traps.
///
/// See BENCHMARKS.md for both.
const BARE_RUSTFLAGS: &str = "-C target-feature=+simd128 -C link-arg=-zstack-size=131072";

/// Guest packages built for `wasm32-wasip2` without features, with the env var naming each
/// artefact.
const GUESTS: &[(&str, &str, &str)] = &[
    (
        "dealbridge-example-owner-lookup",
        "dealbridge_example_owner_lookup",
        "DEALBRIDGE_GUEST_OWNER_LOOKUP",
    ),
    (
        "dealbridge-hostile",
        "dealbridge_hostile",
        "DEALBRIDGE_GUEST_HOSTILE",
    ),
];

/// Variants of the hostile crate, each with one forbidden import.
const HOSTILE_VARIANTS: &[(&str, &str)] = &[
    ("forbidden-fs", "DEALBRIDGE_GUEST_HOSTILE_FS"),
    ("forbidden-sockets", "DEALBRIDGE_GUEST_HOSTILE_SOCKETS"),
    ("forbidden-http", "DEALBRIDGE_GUEST_HOSTILE_HTTP"),
];

/// WAT inputs converted to binaries.
const WAT_INPUTS: &[(&str, &str)] = &[
    ("core-module", "DEALBRIDGE_INPUT_CORE_MODULE"),
    ("wrong-version", "DEALBRIDGE_INPUT_WRONG_VERSION"),
    ("wrong-world", "DEALBRIDGE_INPUT_WRONG_WORLD"),
    ("spin-at-start", "DEALBRIDGE_INPUT_SPIN_AT_START"),
    ("copy-loop-at-start", "DEALBRIDGE_INPUT_COPY_LOOP_AT_START"),
    ("wrong-signatures", "DEALBRIDGE_INPUT_WRONG_SIGNATURES"),
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists");
    // Beside the outer build's artefacts (CI keeps its target directory outside
    // the clone), never inside them: the outer cargo holds a lock on its own profile dirs.
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let guests_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                workspace.join(dir)
            }
        })
        .unwrap_or_else(|| workspace.join("target"))
        .join("guests");
    let out = guests_dir.join("artifacts");
    fs::create_dir_all(&out).unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));

    for p in [
        "wit",
        "Cargo.lock",
        "rules-wasm/default-rules/src",
        "rules-wasm/default-rules/Cargo.toml",
        "rules-wasm/examples/owner-lookup/src",
        "rules-wasm/examples/owner-lookup/Cargo.toml",
        "rules-wasm/hostile/src",
        "rules-wasm/hostile/wit",
        "rules-wasm/hostile/inputs",
        "rules-wasm/hostile/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(p).display());
    }
    // The root manifest holds the workspace dependencies and profiles the guests use.
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.toml").display()
    );

    check_target_installed(WASIP2);
    check_target_installed(BARE);

    for (feature, var) in HOSTILE_VARIANTS {
        cargo_build(
            &workspace,
            &guests_dir,
            WASIP2,
            &["-p", "dealbridge-hostile", "--features", feature],
        );
        let name = format!("dealbridge_hostile_{}.wasm", feature.replace('-', "_"));
        export(
            var,
            &copy_artifact(&guests_dir, "dealbridge_hostile", &out, &name),
        );
    }
    let mut args = Vec::new();
    for (pkg, _, _) in GUESTS {
        args.push("-p");
        args.push(pkg);
    }
    cargo_build(&workspace, &guests_dir, WASIP2, &args);
    for (_, stem, var) in GUESTS {
        export(
            var,
            &copy_artifact(&guests_dir, stem, &out, &format!("{stem}.wasm")),
        );
    }
    let (pkg, stem, var) = DEFAULT_RULES;
    cargo_build(&workspace, &guests_dir, BARE, &["-p", pkg]);
    export(var, &componentize(&guests_dir, stem, &out, stem));
    // The bench's floor variant, in its own target directory so that the two feature sets do
    // not overwrite each other's module.
    let floor_dir = guests_dir.join("bench-floor");
    cargo_build(
        &workspace,
        &floor_dir,
        BARE,
        &["-p", pkg, "--features", "bench-floor"],
    );
    export(
        "DEALBRIDGE_GUEST_DEFAULT_RULES_FLOOR",
        &componentize(&floor_dir, stem, &out, &format!("{stem}_floor")),
    );

    let inputs = workspace.join("rules-wasm/hostile/inputs");
    for (stem, var) in WAT_INPUTS {
        let src = inputs.join(format!("{stem}.wat"));
        let bytes = wat::parse_file(&src)
            .unwrap_or_else(|e| panic!("cannot assemble {}: {e}", src.display()));
        export(
            var,
            &write_if_changed(&out.join(format!("{stem}.wasm")), &bytes),
        );
    }
    export(
        "DEALBRIDGE_INPUT_WRONG_FLAT_SIGNATURE",
        &write_if_changed(
            &out.join("wrong-flat-signature.wasm"),
            &wrong_flat_signature(&workspace.join("wit")),
        ),
    );
    export(
        "DEALBRIDGE_INPUT_EMPTY",
        &write_if_changed(&out.join("empty.wasm"), &[]),
    );
    // A real component cut short: valid header, truncated sections.
    let rules = fs::read(out.join("dealbridge_default_rules.wasm")).expect("just built");
    let cut = &rules[..rules.len().min(4096) / 2];
    export(
        "DEALBRIDGE_INPUT_TRUNCATED",
        &write_if_changed(&out.join("truncated.wasm"), cut),
    );
    // The component-model magic and version, then bytes that are no section at all.
    let mut garbage = b"\0asm\x0d\x00\x01\x00".to_vec();
    garbage.extend((0u32..512).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    export(
        "DEALBRIDGE_INPUT_CORRUPT",
        &write_if_changed(&out.join("corrupt.wasm"), &garbage),
    );
    export(
        "DEALBRIDGE_INPUT_NOT_WASM",
        &write_if_changed(
            &out.join("not-wasm.wasm"),
            b"#!/bin/sh\necho this is not WebAssembly\n",
        ),
    );
}

/// A component of the `flat-plugin` world whose exports all have the contract's types but one:
/// `flat-rules.plan` returns a `u32`. Its functions are stubs that trap (nothing must ever call
/// them). It is made from the contract itself, so the `rules` exports and the imports stay
/// right whenever the contract changes.
fn wrong_flat_signature(wit: &Path) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(wit)
        .unwrap_or_else(|e| panic!("cannot parse {}: {e:#}", wit.display()));
    let world = resolve
        .select_world(&[package], Some("flat-plugin"))
        .unwrap_or_else(|e| panic!("the contract has no `flat-plugin` world: {e:#}"));
    let flat_rules = resolve
        .interfaces
        .iter()
        .find(|(_, i)| i.package == Some(package) && i.name.as_deref() == Some("flat-rules"))
        .map(|(id, _)| id)
        .expect("the contract has a `flat-rules` interface");
    resolve.interfaces[flat_rules]
        .functions
        .get_mut("plan")
        .expect("`flat-rules` has a `plan` function")
        .result = Some(wit_parser::Type::U32);
    let mut module = wit_component::dummy_module(
        &resolve,
        world,
        wit_parser::ManglingAndAbi::Legacy(wit_parser::LiftLowerAbi::Sync),
    );
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("the stub module takes the world's metadata");
    encode_component(&module, "the wrong-flat-signature stub")
}

/// Makes a core module that carries its world's metadata a component (validated).
fn encode_component(module: &[u8], what: &str) -> Vec<u8> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|encoder| encoder.validate(true).encode())
        .unwrap_or_else(|e| panic!("cannot make {what} a component: {e:#}"))
}

fn export(var: &str, path: &Path) {
    println!("cargo:rustc-env={var}={}", path.display());
}

/// Fails early, with the fix, when the standard library of `target` is not installed.
fn check_target_installed(target: &str) {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string()));
    let has_std = libdir.as_deref().is_some_and(|d| {
        fs::read_dir(d).is_ok_and(|mut it| {
            it.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
        })
    });
    if !has_std {
        panic!(
            "\n\nThe Rust target `{target}` is not installed, so the rules components cannot be built.\n\
             Fix: run `rustup target add {WASIP2} {BARE}` and build again.\n\n"
        );
    }
}

/// Runs `cargo build --release --target TARGET ARGS` on the workspace with a clean env.
fn cargo_build(workspace: &Path, target_dir: &Path, target: &str, args: &[&str]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--target", target, "--target-dir"])
        .arg(target_dir)
        .args(args);
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leaks = matches!(
            key,
            "RUSTFLAGS"
                | "CARGO_ENCODED_RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "CARGO_ENCODED_RUSTDOCFLAGS"
                | "CARGO_TARGET_DIR"
                | "CARGO_BUILD_TARGET_DIR"
                | "CARGO_BUILD_TARGET"
                | "CARGO_INCREMENTAL"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "RUSTC_WRAPPER"
                | "OUT_DIR"
                | "TARGET"
                | "HOST"
                | "PROFILE"
                | "OPT_LEVEL"
                | "DEBUG"
                | "NUM_JOBS"
                | "RUSTC_LINKER"
                | "LLVM_PROFILE_FILE"
        ) || key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_TARGET_")
            || key.starts_with("CARGO_LLVM_COV")
            || key.starts_with("DEP_");
        if leaks {
            cmd.env_remove(key);
        }
    }
    cmd.env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "false");
    if target == BARE {
        cmd.env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
            BARE_RUSTFLAGS,
        );
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run the nested cargo build of the guests: {e}"));
    if !status.success() {
        panic!(
            "the nested build of the guest components failed ({status}): \
             cargo build --release --target {target} {} (see its output above)",
            args.join(" ")
        );
    }
}

/// Copies a freshly built `wasm32-wasip2` component into the artefact folder (only when it
/// changed).
fn copy_artifact(guests_dir: &Path, stem: &str, out: &Path, name: &str) -> PathBuf {
    let built = built_path(guests_dir, WASIP2, stem);
    let bytes = fs::read(&built).unwrap_or_else(|e| panic!("missing {}: {e}", built.display()));
    write_if_changed(&out.join(name), &bytes)
}

/// Makes the freshly built `wasm32-unknown-unknown` core module `stem` a component, from the
/// world `wit-bindgen` embedded in it, into the artefact folder as `<name>.wasm`.
fn componentize(guests_dir: &Path, stem: &str, out: &Path, name: &str) -> PathBuf {
    let built = built_path(guests_dir, BARE, stem);
    let module = fs::read(&built).unwrap_or_else(|e| panic!("missing {}: {e}", built.display()));
    let component = encode_component(&module, &built.display().to_string());
    write_if_changed(&out.join(format!("{name}.wasm")), &component)
}

fn built_path(guests_dir: &Path, target: &str, stem: &str) -> PathBuf {
    guests_dir
        .join(target)
        .join("release")
        .join(format!("{stem}.wasm"))
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> PathBuf {
    if fs::read(path).ok().as_deref() != Some(bytes) {
        fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    path.to_path_buf()
}
