//! Test doubles for the server's sinks (feature `testing`, and this crate's unit tests): a
//! destination can be driven without a coordinator or a pipeline.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use canal_core::filter::FilterError;
use canal_core::position::LogPosition;

use crate::destination::{CursorSink, FilterSink};

/// A cursor sink that keeps cursors in memory only (tests).
#[derive(Debug, Default)]
pub struct MemoryCursors {
    inner: Mutex<MemoryCursorMap>,
}

/// (destination, client) → (filter, cursor).
type MemoryCursorMap = HashMap<(String, i16), (String, Option<LogPosition>)>;

impl MemoryCursors {
    fn lock(&self) -> MutexGuard<'_, MemoryCursorMap> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CursorSink for MemoryCursors {
    fn load(&self, destination: &str, client_id: i16) -> Option<LogPosition> {
        self.lock().get(&(destination.to_owned(), client_id)).and_then(|(_, c)| c.clone())
    }

    fn update(&self, destination: &str, client_id: i16, position: &LogPosition) {
        self.lock().entry((destination.to_owned(), client_id)).or_default().1 =
            Some(position.clone());
    }

    fn subscribe(&self, destination: &str, client_id: i16, filter: &str) {
        self.lock().entry((destination.to_owned(), client_id)).or_default().0 = filter.to_owned();
    }

    fn unsubscribe(&self, destination: &str, client_id: i16) {
        self.lock().remove(&(destination.to_owned(), client_id));
    }
}

/// A filter sink that only checks that filters compile (no pipeline attached).
#[derive(Debug, Default)]
pub struct CheckOnlyFilter;

impl FilterSink for CheckOnlyFilter {
    fn apply(&self, filter: &str) -> Result<(), FilterError> {
        canal_core::filter::TableFilter::white(filter).map(|_| ())
    }
}
