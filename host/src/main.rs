//! The `dealbridge` binary: everything is a subcommand of [`dealbridge::cli`].
//!
//! The binary allocates with mimalloc: a sync moves a lot of short-lived JSON between the
//! engine and the CRMs (and, in `demo` and `bench`, the in-process emulators), and glibc's
//! malloc spent about a third of a backfill's CPU time in it (`perf`; `BENCHMARKS.md`,
//! "Sync engine"). Freed memory goes back to the system at once rather than after
//! mimalloc's default delay, and arenas are committed as they are used: that keeps the
//! engine's peak resident memory under its ceiling (236 MiB at 100,000 opportunities,
//! where mimalloc's defaults reached 311 MiB and glibc 254 MiB).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_t` (`mimalloc.h`).
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (`mimalloc.h`).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Sets a mimalloc option unless its `MIMALLOC_*` environment variable was given (mimalloc
/// reads every option once as the process loads, so a default set later would be ignored).
fn set_allocator_option(option: std::ffi::c_int, env: &str, value: std::ffi::c_long) {
    if std::env::var_os(env).is_none() {
        // SAFETY: mimalloc's own function with one of its options; called while the
        // process has a single thread (mimalloc's option setters are not thread-safe).
        unsafe { mi_option_set(option, value) }
    }
}

fn main() -> std::process::ExitCode {
    set_allocator_option(MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0);
    set_allocator_option(
        MI_OPTION_ARENA_EAGER_COMMIT,
        "MIMALLOC_ARENA_EAGER_COMMIT",
        0,
    );
    dealbridge::cli::main()
}
