//! Shared by the plugin runtime tests: one runtime per test binary, and components loaded
//! from the built guests.

use std::sync::OnceLock;

use dealbridge::runtime::{Batch, LoadedPlugin, Runtime, RuntimeConfig, fixture};

/// The test binary's runtime (a small pool: tests run a few invocations at once).
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_concurrent_instances: 16,
            ..RuntimeConfig::default()
        })
        .unwrap()
    })
}

/// Loads the component at `path` (a built guest), panicking with the refusal.
pub fn load(path: &str) -> LoadedPlugin {
    runtime()
        .load(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A batch written as a fixture's `batch` object (see the fixture format).
pub fn batch_from_fixture(batch: serde_json::Value) -> Batch {
    let text = serde_json::json!({ "batch": batch }).to_string();
    fixture::parse(&text)
        .unwrap()
        .batch
        .unwrap()
        .to_batch()
        .unwrap()
}
