//! The `dealbridge` binary: everything is a subcommand of [`dealbridge::cli`].
//!
//! The binary allocates with mimalloc: a sync moves a lot of short-lived JSON between the
//! engine and the CRMs (and, in `demo` and `bench`, the in-process emulators), and glibc's
//! malloc spent about a third of a backfill's CPU time in it (`perf`; `BENCHMARKS.md`,
//! "Sync engine"). Freed memory goes back to the system at once rather than after
//! mimalloc's default delay, and arenas are committed as they are used: that keeps the
//! engine's peak resident memory under its ceiling (239 MiB at 100,000 opportunities,
//! where mimalloc's defaults reached 311 MiB and glibc 254 MiB).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_t` (`mimalloc.h`).
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (`mimalloc.h`).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn getenv(name: *const std::ffi::c_char) -> *mut std::ffi::c_char;
}

/// Sets the allocator's options before mimalloc initialises itself: mimalloc reads every
/// option once as the process loads (from a constructor of default priority), and an
/// arena made before `main` would keep the old `arena_eager_commit`; a constructor in
/// `.init_array.00100` runs before it (after std's own at 00099).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array.00100")]
static SET_ALLOCATOR_OPTIONS: extern "C" fn() = set_allocator_options;

extern "C" fn set_allocator_options() {
    set_allocator_option(MI_OPTION_PURGE_DELAY, c"MIMALLOC_PURGE_DELAY", 0);
    set_allocator_option(
        MI_OPTION_ARENA_EAGER_COMMIT,
        c"MIMALLOC_ARENA_EAGER_COMMIT",
        0,
    );
}

/// Sets a mimalloc option unless its `MIMALLOC_*` environment variable was given.
fn set_allocator_option(option: std::ffi::c_int, env: &std::ffi::CStr, value: std::ffi::c_long) {
    // SAFETY: `getenv` with a NUL-terminated name and `mi_option_set` with one of mimalloc's
    // options, both while the process has a single thread (neither is thread-safe).
    unsafe {
        if getenv(env.as_ptr()).is_null() {
            mi_option_set(option, value);
        }
    }
}

fn main() -> std::process::ExitCode {
    #[cfg(not(target_os = "linux"))]
    set_allocator_options();
    dealbridge::cli::main()
}
