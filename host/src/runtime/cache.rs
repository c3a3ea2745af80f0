//! The on-disk compile cache: `<dir>/<sha256>-<engine hash>.cwasm`, written
//! atomically (temp file + rename), read with `Component::deserialize_file`.
//!
//! A cached artefact is native code that wasmtime trusts; the directory must
//! be writable only by the service. This module must never load an artefact
//! from a path that is not named by a digest it computed itself.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The cache file name for a component digest under this engine.
pub(crate) fn file_name(engine: &Engine, digest: &str) -> String {
    let mut h = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{digest}-{:016x}.cwasm", h.finish())
}

/// The cached component, if the file exists and this engine accepts it. A
/// stale or corrupt file is ignored (and recompiled over).
pub(crate) fn load(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: the file name is `<sha256 of the bytes>-<engine hash>` under
    // the service's own cache directory, written only by `store` from
    // `Engine::precompile_component`; wasmtime still checks the header and
    // engine compatibility.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component");
            None
        }
    }
}

/// Writes an artefact atomically. Every writer, in this process or another,
/// gets its own temp file, so concurrent loads of one digest never rename each
/// other's file away.
pub(crate) fn store(path: &Path, artefact: &[u8]) -> std::io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artefact"),
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(artefact)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_stores_of_one_artefact_all_succeed() {
        let dir =
            std::env::temp_dir().join(format!("dealbridge-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("digest-engine.cwasm");
        let results: Vec<std::io::Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| store(&path, b"artefact bytes")))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in &results {
            assert!(r.is_ok(), "{r:?}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"artefact bytes");
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "temp files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
