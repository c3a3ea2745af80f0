//! The deny-all WASI subset a plugin gets, and the list of imports a plugin
//! may have at all.
//!
//! A Rust `wasm32-wasip2` component imports a few WASI interfaces even when it
//! never uses them (std's stdio, environment, exit, clocks and random seed for
//! `HashMap`). Those are linked here with nothing granted: no preopened
//! directories, no environment variables, no arguments, empty stdin, and
//! stdout/stderr captured into the run report up to a cap. Filesystem,
//! sockets, HTTP and every other interface are not linked at all, so a
//! component that imports them is refused at load time, naming the import.
//! This module must never link an interface that reaches outside the sandbox.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings as wasi;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiView};

/// The WASI interfaces (any `0.2.x` version) a plugin may import. Each is
/// linked with nothing granted.
pub const ALLOWED_WASI: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// The interfaces of the contract a plugin may import (any `0.1.x` version).
pub const ALLOWED_CONTRACT: &[&str] = &[
    "dealbridge:rules/types",
    "dealbridge:rules/flat-types",
    "dealbridge:rules/crm",
    "dealbridge:rules/log",
    "dealbridge:rules/config",
];

/// Whether a component import name (e.g. `wasi:io/poll@0.2.6`) is allowed.
pub fn import_allowed(name: &str) -> bool {
    let (iface, version) = name.split_once('@').unwrap_or((name, ""));
    (ALLOWED_WASI.contains(&iface) && version.starts_with("0.2."))
        || (ALLOWED_CONTRACT.contains(&iface) && version.starts_with("0.1."))
}

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links the allowed WASI interfaces, and only those.
pub(crate) fn add_to_linker<T: WasiView + 'static>(l: &mut Linker<T>) -> wasmtime::Result<()> {
    wasi::io::error::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    wasi::io::poll::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    wasi::io::streams::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    wasi::cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    wasi::cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    wasi::cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    wasi::cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    wasi::cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    wasi::cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    wasi::cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    wasi::cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    wasi::cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    wasi::cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    wasi::clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    wasi::clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    wasi::random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    wasi::random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    wasi::random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    Ok(())
}

/// The deny-all WASI context of one invocation, built on the guest's first WASI call: a plugin
/// that never touches WASI (the default rules do not) costs no context, streams or random seed.
pub(crate) struct LazyWasi {
    stdio_cap: u64,
    built: Option<BuiltWasi>,
}

struct BuiltWasi {
    ctx: WasiCtx,
    stdout: CappedOutput,
    stderr: CappedOutput,
}

impl LazyWasi {
    /// Nothing built yet; stdout and stderr will each keep `stdio_cap` bytes.
    pub(crate) fn new(stdio_cap: u64) -> Self {
        Self {
            stdio_cap,
            built: None,
        }
    }

    /// The context, built now if this is the first WASI call: no preopens, env or args; empty
    /// stdin; stdout and stderr into capped buffers.
    pub(crate) fn ctx(&mut self) -> &mut WasiCtx {
        let cap = self.stdio_cap;
        &mut self
            .built
            .get_or_insert_with(|| {
                let stdout = CappedOutput::new(cap);
                let stderr = CappedOutput::new(cap);
                let mut b = WasiCtx::builder();
                b.stdout(stdout.clone()).stderr(stderr.clone());
                BuiltWasi {
                    ctx: b.build(),
                    stdout,
                    stderr,
                }
            })
            .ctx
    }

    /// What the guest wrote to stdout and stderr, each with the bytes dropped past the cap.
    pub(crate) fn stdio(&self) -> ((String, u64), (String, u64)) {
        match &self.built {
            Some(b) => (b.stdout.contents(), b.stderr.contents()),
            None => ((String::new(), 0), (String::new(), 0)),
        }
    }
}

#[derive(Debug, Default)]
struct Capped {
    buf: Vec<u8>,
    cap: usize,
    dropped: u64,
}

/// A stdout/stderr sink that keeps the first `cap` bytes and counts the rest.
/// It never fails a write, so a chatty guest does not trap on a full buffer.
#[derive(Debug, Clone, Default)]
pub struct CappedOutput(Arc<Mutex<Capped>>);

impl CappedOutput {
    /// A sink that keeps `cap` bytes.
    pub fn new(cap: u64) -> Self {
        Self(Arc::new(Mutex::new(Capped {
            buf: Vec::new(),
            cap: cap as usize,
            dropped: 0,
        })))
    }

    fn push(&self, bytes: &[u8]) {
        let mut c = self.0.lock();
        let room = c.cap.saturating_sub(c.buf.len());
        let keep = bytes.len().min(room);
        c.buf.extend_from_slice(&bytes[..keep]);
        c.dropped += (bytes.len() - keep) as u64;
    }

    /// What was kept, as text (lossy), and how many bytes were dropped.
    pub fn contents(&self) -> (String, u64) {
        let c = self.0.lock();
        (String::from_utf8_lossy(&c.buf).into_owned(), c.dropped)
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_imports_are_versioned() {
        assert!(import_allowed("wasi:io/poll@0.2.6"));
        assert!(import_allowed("wasi:cli/stderr@0.2.0"));
        assert!(import_allowed("dealbridge:rules/crm@0.1.0"));
        assert!(import_allowed("dealbridge:rules/log@0.1.3"));
        assert!(import_allowed("dealbridge:rules/flat-types@0.1.1"));
        assert!(!import_allowed("dealbridge:rules/flat-types@0.2.0"));
        assert!(!import_allowed("dealbridge:rules/log@0.2.0"));
        assert!(!import_allowed("wasi:filesystem/types@0.2.6"));
        assert!(!import_allowed("wasi:filesystem/preopens@0.2.6"));
        assert!(!import_allowed("wasi:sockets/tcp@0.2.6"));
        assert!(!import_allowed("wasi:http/outgoing-handler@0.2.6"));
        assert!(!import_allowed("wasi:io/poll@0.3.0"));
        assert!(!import_allowed("wasi:io/poll"));
        assert!(!import_allowed("env"));
    }

    #[test]
    fn lazy_context_is_built_once_and_captures_stdio() {
        let mut wasi = LazyWasi::new(8);
        assert_eq!(wasi.stdio(), ((String::new(), 0), (String::new(), 0)));
        wasi.ctx();
        let built = wasi.built.as_ref().unwrap();
        built
            .stdout
            .clone()
            .write(Bytes::from_static(b"out"))
            .unwrap();
        built
            .stderr
            .clone()
            .write(Bytes::from_static(b"error text"))
            .unwrap();
        wasi.ctx();
        assert_eq!(
            wasi.stdio(),
            (("out".to_string(), 0), ("error te".to_string(), 2))
        );
    }

    #[test]
    fn capped_output_keeps_the_cap_and_counts_the_rest() {
        let out = CappedOutput::new(5);
        let mut s = out.clone();
        s.write(Bytes::from_static(b"hello world")).unwrap();
        s.write(Bytes::from_static(b"!")).unwrap();
        assert_eq!(out.contents(), ("hello".to_string(), 7));
    }
}
