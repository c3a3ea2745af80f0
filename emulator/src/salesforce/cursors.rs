//! Open SOQL query cursors (`nextRecordsUrl` locators), kept apart from the
//! org so that paging through a result never takes the org's lock for writing.
//!
//! A cursor holds its result rows as shared snapshots; it lives until it has
//! been idle for [`CURSOR_IDLE_EXPIRY`] or until [`MAX_CURSORS`] newer ones push
//! it out. Cursors of an org that has since been replaced or purged are
//! refused by the store (see [`super::store::Cursor`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::errors::ApiError;
use super::ids;
use super::store::Cursor;

/// At most this many cursors stay open; the oldest go first.
pub const MAX_CURSORS: usize = 2000;
/// Salesforce expires a query locator after 15 minutes without use.
pub const CURSOR_IDLE_EXPIRY: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
struct Open {
    by_locator: HashMap<String, (Cursor, Instant)>,
    order: VecDeque<String>,
    seq: u64,
}

/// The open cursors of one emulator.
#[derive(Default)]
pub struct QueryCursors {
    open: Mutex<Open>,
}

/// The error Salesforce gives for an unknown, expired or out-of-range locator.
pub fn invalid_locator() -> ApiError {
    ApiError::bad("INVALID_QUERY_LOCATOR", "invalid query locator")
}

impl QueryCursors {
    /// Stores `cursor` and returns its new locator.
    pub fn open(&self, cursor: Cursor) -> String {
        let now = Instant::now();
        let mut open = self.open.lock();
        open.seq += 1;
        let locator = ids::make_id("01g", open.seq)[..15].to_string();
        open.by_locator.insert(locator.clone(), (cursor, now));
        open.order.push_back(locator.clone());
        while open.order.len() > MAX_CURSORS {
            if let Some(old) = open.order.pop_front() {
                open.by_locator.remove(&old);
            }
        }
        open.by_locator
            .retain(|_, (_, used)| now.duration_since(*used) < CURSOR_IDLE_EXPIRY);
        let Open {
            by_locator, order, ..
        } = &mut *open;
        order.retain(|l| by_locator.contains_key(l));
        locator
    }

    /// Looks up `<locator>-<position>` (the last path segment of a
    /// `nextRecordsUrl`) and returns the cursor, its locator and the position.
    pub fn resume(&self, locator_and_pos: &str) -> Result<(Cursor, String, usize), ApiError> {
        let (locator, pos) = locator_and_pos
            .rsplit_once('-')
            .ok_or_else(invalid_locator)?;
        let pos: usize = pos
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(invalid_locator)?;
        let now = Instant::now();
        let mut open = self.open.lock();
        let (cursor, used) = open
            .by_locator
            .get_mut(locator)
            .filter(|(_, used)| now.duration_since(*used) < CURSOR_IDLE_EXPIRY)
            .ok_or_else(invalid_locator)?;
        *used = now;
        Ok((cursor.clone(), locator.to_string(), pos))
    }
}
