//! The destination's schema history in the coordinator (docs/compatibility.md, "Schema
//! history"): [`CoordHistoryStore`] implements canal-core's [`HistoryStore`] over a
//! [`Coordinator`] session, writing with the running node's [`Fence`] like cursors.
//!
//! Layout under `/otter/canal/destinations/{dest}/schema`:
//! * `meta` — JSON: format version, `generation`, the source followed and the covered range.
//! * `gen-{g}/{index:08}-{chunk:03}-{chunks:03}` — record `index` of generation `g` (JSON,
//!   cut into pieces of at most [`CHUNK_BYTES`], so ZooKeeper's 1 MB node limit holds).
//!
//! Appending a record writes its node(s), then `meta`. Replacing the list (compaction below the
//! client cursors, an out-of-order insert) writes generation `g + 1` whole, switches `meta` to it,
//! then deletes the older generations, so a reader sees the old list or the new one, never a mix.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use canal_coord::{CoordError, Coordinator, Fence, path};
use canal_core::instance::SharedHistory;
use canal_core::schema::PendingSync;
use canal_core::schema::store::{
    CHUNK_BYTES, HistoryMeta, HistoryStore, HistoryStoreError, StoreFuture, StoredHistory,
    join_chunks, record_chunks,
};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tracing::{info, warn};

/// The `meta` node.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetaNode {
    generation: u64,
    #[serde(flatten)]
    meta: HistoryMeta,
}

/// One destination's schema history in the coordinator, for one ownership (one fence).
#[derive(Debug)]
pub struct CoordHistoryStore {
    coord: Arc<Coordinator>,
    dest: String,
    fence: Fence,
    /// The runtime the coordinator's sessions live on (the instance calls from its own thread).
    handle: Handle,
    generation: Mutex<u64>,
    max_chunk: usize,
}

fn unavailable(what: impl Into<String>) -> impl FnOnce(CoordError) -> HistoryStoreError {
    let what = what.into();
    move |e| match e {
        CoordError::Fenced { .. } => HistoryStoreError::Fenced { what },
        e => HistoryStoreError::Unavailable { what, source: Box::new(e) },
    }
}

fn corrupt(reason: impl Into<String>) -> HistoryStoreError {
    HistoryStoreError::Corrupt { reason: reason.into() }
}

/// `{index:08}-{chunk:03}-{chunks:03}` → its three numbers.
fn parse_name(name: &str) -> Option<(usize, usize, usize)> {
    let mut it = name.split('-').map(str::parse::<usize>);
    let (i, c, n) = (it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?);
    (it.next().is_none() && c < n).then_some((i, c, n))
}

fn gen_path(dest: &str, generation: u64) -> String {
    format!("{}/gen-{generation}", path::schema_history(dest))
}

fn meta_path(dest: &str) -> String {
    format!("{}/meta", path::schema_history(dest))
}

impl CoordHistoryStore {
    /// A store for `dest` owned under `fence`, on the current runtime.
    pub fn new(coord: Arc<Coordinator>, dest: &str, fence: Fence) -> Self {
        Self::with_chunk_size(coord, dest, fence, CHUNK_BYTES)
    }

    /// Same, with records cut into pieces of at most `max_chunk` bytes (tests).
    pub fn with_chunk_size(
        coord: Arc<Coordinator>,
        dest: &str,
        fence: Fence,
        max_chunk: usize,
    ) -> Self {
        Self {
            coord,
            dest: dest.to_owned(),
            fence,
            handle: Handle::current(),
            generation: Mutex::new(0),
            max_chunk,
        }
    }

    fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn load_inner(
        coord: Arc<Coordinator>,
        dest: String,
    ) -> Result<(u64, StoredHistory), HistoryStoreError> {
        let s = coord.session().await.map_err(unavailable("coordinator session"))?;
        let Some(node) = s.get(&meta_path(&dest)).await.map_err(unavailable("read meta"))? else {
            return Ok((0, StoredHistory::default()));
        };
        let meta: MetaNode =
            serde_json::from_slice(&node.data).map_err(|e| corrupt(format!("meta node: {e}")))?;
        let gp = gen_path(&dest, meta.generation);
        let names = s.children(&gp).await.map_err(unavailable("list records"))?;
        // index → (chunks, names by chunk)
        let mut parts: BTreeMap<usize, (usize, BTreeMap<usize, String>)> = BTreeMap::new();
        for name in names {
            let (i, c, n) = parse_name(&name)
                .ok_or_else(|| corrupt(format!("unexpected node `{gp}/{name}`")))?;
            let e = parts.entry(i).or_insert_with(|| (n, BTreeMap::new()));
            if e.0 != n {
                return Err(corrupt(format!("record {i} has pieces of two writes")));
            }
            e.1.insert(c, name);
        }
        let mut records = Vec::with_capacity(parts.len());
        let last = parts.keys().next_back().copied();
        for (expected, (i, (n, chunks))) in parts.into_iter().enumerate() {
            let complete = chunks.len() == n;
            if i != expected || !complete {
                // A crash between a record's pieces leaves the newest record torn; nothing after
                // it was stored (history writes precede the entries), so it is read again.
                if Some(i) == last && i == expected {
                    warn!(destination = %dest, index = i, "schema history: dropping a torn last record");
                    for name in chunks.values() {
                        let p = format!("{gp}/{name}");
                        if let Err(e) = s.delete(&p, None).await {
                            warn!("cannot delete torn record piece `{p}`: {e}");
                        }
                    }
                    break;
                }
                return Err(corrupt(format!(
                    "record {expected} of generation {} is missing",
                    meta.generation
                )));
            }
            let mut bytes = Vec::with_capacity(n);
            for name in chunks.values() {
                let p = format!("{gp}/{name}");
                let node = s
                    .get(&p)
                    .await
                    .map_err(unavailable(format!("read `{p}`")))?
                    .ok_or_else(|| corrupt(format!("`{p}` vanished while loading")))?;
                bytes.push(node.data);
            }
            records.push(join_chunks(&bytes)?);
        }
        Ok((meta.generation, StoredHistory { meta: Some(meta.meta), records }))
    }
}

impl HistoryStore for CoordHistoryStore {
    fn load(&self) -> StoreFuture<'_, StoredHistory> {
        let (coord, dest) = (self.coord.clone(), self.dest.clone());
        Box::pin(async move {
            let (generation, history) =
                self.handle.spawn(Self::load_inner(coord, dest)).await.map_err(|e| {
                    HistoryStoreError::Unavailable { what: "load task".into(), source: Box::new(e) }
                })??;
            *self.generation.lock().unwrap_or_else(|p| p.into_inner()) = generation;
            Ok(history)
        })
    }

    fn write<'a>(
        &'a self,
        meta: &'a HistoryMeta,
        change: Option<PendingSync<'a>>,
    ) -> StoreFuture<'a, ()> {
        let old = self.generation();
        let (generation, first, records) = match change {
            None => (old, 0, &[][..]),
            Some(PendingSync::Append { first, records }) => (old, first, records),
            Some(PendingSync::Replace(records)) => (old + 1, 0, records),
        };
        // Serialized here: the write runs on the coordinator's runtime with owned data.
        let mut nodes = Vec::new();
        let gp = gen_path(&self.dest, generation);
        for (k, r) in records.iter().enumerate() {
            let chunks = record_chunks(r, self.max_chunk);
            let n = chunks.len();
            for (c, bytes) in chunks.into_iter().enumerate() {
                nodes.push((format!("{gp}/{:08}-{c:03}-{n:03}", first + k), bytes));
            }
        }
        let meta_bytes = serde_json::to_vec(&MetaNode { generation, meta: meta.clone() })
            .expect("history meta serializes");
        let (coord, dest, fence) = (self.coord.clone(), self.dest.clone(), self.fence.clone());
        let replaced = generation != old;
        Box::pin(async move {
            let task = self.handle.spawn(async move {
                let s = coord.session().await.map_err(unavailable("coordinator session"))?;
                for (p, bytes) in &nodes {
                    s.put_fenced(p, bytes, &fence)
                        .await
                        .map_err(unavailable(format!("write `{p}`")))?;
                }
                s.put_fenced(&meta_path(&dest), &meta_bytes, &fence)
                    .await
                    .map_err(unavailable("write meta"))?;
                if replaced {
                    // Older generations are garbage now (meta names the new one); a failure to
                    // delete them only leaves them for the next replacement to delete. Fenced:
                    // a deposed owner deletes nothing.
                    let root = path::schema_history(&dest);
                    let gens = match s.children(&root).await {
                        Ok(g) => g,
                        Err(e) => {
                            warn!("cannot list old schema history generations: {e}");
                            Vec::new()
                        }
                    };
                    let keep = format!("gen-{generation}");
                    for g in gens.iter().filter(|g| g.starts_with("gen-") && **g != keep) {
                        let gp = format!("{root}/{g}");
                        let children = s.children(&gp).await.unwrap_or_else(|e| {
                            warn!("cannot list `{gp}`: {e}");
                            Vec::new()
                        });
                        for c in children {
                            if let Err(e) = s.delete_fenced(&format!("{gp}/{c}"), &fence).await {
                                warn!("cannot delete `{gp}/{c}`: {e}");
                            }
                        }
                        if let Err(e) = s.delete_fenced(&gp, &fence).await {
                            warn!("cannot delete `{gp}`: {e}");
                        }
                    }
                }
                Ok::<_, HistoryStoreError>(())
            });
            task.await.map_err(|e| HistoryStoreError::Unavailable {
                what: "write task".into(),
                source: Box::new(e),
            })??;
            *self.generation.lock().unwrap_or_else(|p| p.into_inner()) = generation;
            Ok(())
        })
    }
}

/// Reads `dest`'s shared schema history for the owner holding `fence` (on ActiveEnter, before
/// the instance starts).
///
/// # Errors
/// A coordinator failure or a corrupt history: the activation fails (and is retried); an empty
/// history is never assumed in place of an unreadable one.
pub async fn load_shared_history(
    coord: &Arc<Coordinator>,
    dest: &str,
    fence: &Fence,
) -> Result<SharedHistory, HistoryStoreError> {
    let store = Arc::new(CoordHistoryStore::new(coord.clone(), dest, fence.clone()));
    let loaded = store.load().await?;
    info!(records = loaded.records.len(), meta = ?loaded.meta, "schema history loaded from the coordinator");
    Ok(SharedHistory { store, loaded: Some(loaded) })
}
