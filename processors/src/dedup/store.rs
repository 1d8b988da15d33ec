//! The dedup state on local disk: RocksDB with one column family per store.
//!
//! - `dedup`: `partition (4) | key (32)` -> `ts_us (8)`: the keys seen, and
//!   the change time at which each was first seen.
//! - `expiry`: `partition | ts_us (order-preserving) | key` -> empty: the
//!   same entries by time, so a TTL sweep is a range scan (only with a TTL).
//! - `meta`: per partition, the next input offset and the stream time that
//!   the state covers (`in`), and the next changelog offset it holds (`cl`).
//!
//! Every change of state goes in one [`WriteBatch`] together with the input
//! offsets it covers ([`PartitionCommit`]): the local state is always the
//! state after some exact prefix of the input, never between two.

use super::key::Key;
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, DB,
};
use std::path::Path;
use syncline_core::{Error, Result};

const CF_DEDUP: &str = "dedup";
const CF_EXPIRY: &str = "expiry";
const CF_META: &str = "meta";

/// Where a partition's local state stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionMeta {
    /// Next input offset to process; `None`: nothing processed yet.
    pub next_input: Option<i64>,
    /// Newest change time (µs) among the input up to `next_input`.
    pub stream_time: i64,
    /// Next changelog offset not yet applied here; `None`: none applied.
    pub next_changelog: Option<i64>,
}

/// The state changes of one batch for one partition, with what they cover.
#[derive(Debug, Default)]
pub struct PartitionCommit {
    /// Keys first seen (or seen again after expiry): (key, ts, previous ts).
    pub puts: Vec<(Key, i64, Option<i64>)>,
    /// Keys expired by the TTL: (key, ts).
    pub expired: Vec<(Key, i64)>,
    pub next_input: i64,
    pub stream_time: i64,
    pub next_changelog: i64,
}

/// One change of a partition's state, as the changelog carries it
/// (its wire format is in [`super::changelog`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Seen { key: Key, ts: i64 },
    Expired { key: Key },
    Offsets { next_input: i64, stream_time: i64 },
}

pub struct Store {
    db: DB,
}

fn state_key(partition: i32, key: &Key) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..4].copy_from_slice(&partition.to_be_bytes());
    k[4..].copy_from_slice(key);
    k
}

/// `i64` as bytes that sort like the numbers.
fn ordered(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

fn expiry_key(partition: i32, ts: i64, key: &Key) -> [u8; 44] {
    let mut k = [0u8; 44];
    k[..4].copy_from_slice(&partition.to_be_bytes());
    k[4..12].copy_from_slice(&ordered(ts));
    k[12..].copy_from_slice(key);
    k
}

fn meta_key(partition: i32, what: &[u8; 2]) -> [u8; 6] {
    let mut k = [0u8; 6];
    k[..4].copy_from_slice(&partition.to_be_bytes());
    k[4..].copy_from_slice(what);
    k
}

fn i64_at(b: &[u8], at: usize) -> Result<i64> {
    b.get(at..at + 8)
        .map(|s| i64::from_be_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| Error::internal("corrupt dedup state: short value"))
}

fn db_error(what: &str) -> impl FnOnce(rocksdb::Error) -> Error + '_ {
    move |e| Error::internal(format!("dedup state: {what}: {e}"))
}

impl Store {
    /// Open (or create) the state under `path`.
    pub fn open(path: &Path) -> Result<Store> {
        std::fs::create_dir_all(path).map_err(|e| {
            Error::config(format!(
                "cannot create the state directory {}: {e} (set --state-dir or SYNCLINE_STATE_DIR to a writable place)",
                path.display()
            ))
        })?;
        // Small memtables: the state is keys of 36 bytes, and RocksDB
        // preallocates the write-ahead log at the memtable size (64 MiB by
        // default, most of the disk a small state would take).
        let cf_options = || {
            let mut o = Options::default();
            o.set_write_buffer_size(8 << 20);
            o
        };
        let mut opts = cf_options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Most lookups are of keys never seen (every distinct change is
        // one): a Bloom filter answers them without reading a data block.
        let mut dedup_options = cf_options();
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        dedup_options.set_block_based_table_factory(&table);
        let cfs = [
            ColumnFamilyDescriptor::new(CF_DEDUP, dedup_options),
            ColumnFamilyDescriptor::new(CF_EXPIRY, cf_options()),
            ColumnFamilyDescriptor::new(CF_META, cf_options()),
        ];
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            Error::config(format!(
                "cannot open the state in {}: {e} (is another instance using this directory? give each instance its own --state-dir)",
                path.display()
            ))
        })?;
        Ok(Store { db })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// When `key` was first seen in `partition` (µs), if it is held.
    pub fn seen(&self, partition: i32, key: &Key) -> Result<Option<i64>> {
        self.db
            .get_pinned_cf(self.cf(CF_DEDUP), state_key(partition, key))
            .map_err(db_error("read"))?
            .map(|v| i64_at(&v, 0))
            .transpose()
    }

    /// [`Self::seen`] of many keys at once (one batched RocksDB read), in
    /// the order given.
    pub fn seen_many<'a>(
        &self,
        keys: impl IntoIterator<Item = (i32, &'a Key)>,
    ) -> Result<Vec<Option<i64>>> {
        let keys: Vec<[u8; 36]> = keys.into_iter().map(|(p, k)| state_key(p, k)).collect();
        self.db
            .batched_multi_get_cf(self.cf(CF_DEDUP), &keys, false)
            .into_iter()
            .map(|v| {
                v.map_err(db_error("read"))?
                    .map(|v| i64_at(&v, 0))
                    .transpose()
            })
            .collect()
    }

    pub fn meta(&self, partition: i32) -> Result<PartitionMeta> {
        let cf = self.cf(CF_META);
        let mut m = PartitionMeta::default();
        if let Some(v) = self
            .db
            .get_pinned_cf(cf, meta_key(partition, b"in"))
            .map_err(db_error("read"))?
        {
            m.next_input = Some(i64_at(&v, 0)?);
            m.stream_time = i64_at(&v, 8)?;
        }
        if let Some(v) = self
            .db
            .get_pinned_cf(cf, meta_key(partition, b"cl"))
            .map_err(db_error("read"))?
        {
            m.next_changelog = Some(i64_at(&v, 0)?);
        }
        Ok(m)
    }

    /// The entries of `partition` first seen before `cutoff` (µs), oldest
    /// first, at most `limit`.
    pub fn older_than(&self, partition: i32, cutoff: i64, limit: usize) -> Result<Vec<(Key, i64)>> {
        let start = expiry_key(partition, i64::MIN, &[0; 32]);
        let end = expiry_key(partition, cutoff, &[0; 32]);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_EXPIRY),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, _) = item.map_err(db_error("scan"))?;
            if k.as_ref() >= &end[..] || out.len() >= limit {
                break;
            }
            let ts = (u64::from_be_bytes(k[4..12].try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
            let key: Key = k[12..44].try_into().expect("32 bytes");
            out.push((key, ts));
        }
        Ok(out)
    }

    fn put_entry(
        &self,
        b: &mut WriteBatch,
        partition: i32,
        key: &Key,
        ts: i64,
        old: Option<i64>,
        ttl: bool,
    ) {
        b.put_cf(
            self.cf(CF_DEDUP),
            state_key(partition, key),
            ts.to_be_bytes(),
        );
        if ttl {
            if let Some(old) = old {
                b.delete_cf(self.cf(CF_EXPIRY), expiry_key(partition, old, key));
            }
            b.put_cf(self.cf(CF_EXPIRY), expiry_key(partition, ts, key), []);
        }
    }

    fn delete_entry(&self, b: &mut WriteBatch, partition: i32, key: &Key, ts: i64) {
        b.delete_cf(self.cf(CF_DEDUP), state_key(partition, key));
        b.delete_cf(self.cf(CF_EXPIRY), expiry_key(partition, ts, key));
    }

    fn put_input(&self, b: &mut WriteBatch, partition: i32, next_input: i64, stream_time: i64) {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&next_input.to_be_bytes());
        v[8..].copy_from_slice(&stream_time.to_be_bytes());
        b.put_cf(self.cf(CF_META), meta_key(partition, b"in"), v);
    }

    fn put_changelog(&self, b: &mut WriteBatch, partition: i32, next: i64) {
        b.put_cf(
            self.cf(CF_META),
            meta_key(partition, b"cl"),
            next.to_be_bytes(),
        );
    }

    /// Store one batch's state changes and offsets, atomically.
    pub fn commit(&self, partition: i32, c: &PartitionCommit, ttl: bool) -> Result<()> {
        let mut b = WriteBatch::default();
        for (key, ts) in &c.expired {
            self.delete_entry(&mut b, partition, key, *ts);
        }
        for (key, ts, old) in &c.puts {
            self.put_entry(&mut b, partition, key, *ts, *old, ttl);
        }
        self.put_input(&mut b, partition, c.next_input, c.stream_time);
        self.put_changelog(&mut b, partition, c.next_changelog);
        self.db.write(b).map_err(db_error("write"))
    }

    /// Apply changelog records (restore), atomically with the changelog
    /// offset they bring the partition to.
    pub fn apply_changelog(
        &self,
        partition: i32,
        records: &[Entry],
        next_changelog: i64,
        ttl: bool,
    ) -> Result<()> {
        let mut b = WriteBatch::default();
        // Entries changed earlier in this same slice are not in the db yet.
        let mut pending: std::collections::HashMap<Key, Option<i64>> = Default::default();
        for r in records {
            match r {
                Entry::Seen { key, ts } => {
                    let old = match pending.get(key) {
                        Some(v) => *v,
                        None => self.seen(partition, key)?,
                    };
                    self.put_entry(&mut b, partition, key, *ts, old, ttl);
                    pending.insert(*key, Some(*ts));
                }
                Entry::Expired { key } => {
                    let old = match pending.get(key) {
                        Some(v) => *v,
                        None => self.seen(partition, key)?,
                    };
                    if let Some(ts) = old {
                        self.delete_entry(&mut b, partition, key, ts);
                    }
                    pending.insert(*key, None);
                }
                Entry::Offsets {
                    next_input,
                    stream_time,
                } => self.put_input(&mut b, partition, *next_input, *stream_time),
            }
        }
        self.put_changelog(&mut b, partition, next_changelog);
        self.db.write(b).map_err(db_error("write"))
    }

    /// Forget everything held for `partition` (before a restore from the
    /// start of the changelog).
    pub fn clear(&self, partition: i32) -> Result<()> {
        let from = partition.to_be_bytes();
        let to = partition.saturating_add(1).to_be_bytes();
        let mut b = WriteBatch::default();
        for cf in [CF_DEDUP, CF_EXPIRY, CF_META] {
            b.delete_range_cf(self.cf(cf), from, to);
        }
        self.db.write(b).map_err(db_error("clear"))
    }

    /// (estimated keys, estimated live bytes) of the dedup store.
    pub fn size(&self) -> (u64, u64) {
        let prop = |name: &str| {
            self.db
                .property_int_value_cf(self.cf(CF_DEDUP), name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        (
            prop("rocksdb.estimate-num-keys"),
            prop("rocksdb.estimate-live-data-size") + prop("rocksdb.cur-size-all-mem-tables"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("syncline-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn a_commit_holds_keys_and_offsets_together_and_survives_reopen() {
        let dir = temp("commit");
        {
            let s = Store::open(&dir).unwrap();
            assert_eq!(s.meta(0).unwrap(), PartitionMeta::default());
            let c = PartitionCommit {
                puts: vec![([1; 32], 100, None), ([2; 32], 200, None)],
                expired: vec![],
                next_input: 10,
                stream_time: 200,
                next_changelog: 3,
            };
            s.commit(0, &c, true).unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.seen(0, &[1; 32]).unwrap(), Some(100));
        assert_eq!(
            s.seen(1, &[1; 32]).unwrap(),
            None,
            "partitions are separate"
        );
        assert_eq!(
            s.meta(0).unwrap(),
            PartitionMeta {
                next_input: Some(10),
                stream_time: 200,
                next_changelog: Some(3)
            }
        );
        assert_eq!(s.older_than(0, 150, 10).unwrap(), vec![([1; 32], 100)]);
        let c = PartitionCommit {
            puts: vec![([1; 32], 300, Some(100))],
            expired: vec![([2; 32], 200)],
            next_input: 12,
            stream_time: 300,
            next_changelog: 6,
        };
        s.commit(0, &c, true).unwrap();
        assert_eq!(s.seen(0, &[2; 32]).unwrap(), None);
        assert_eq!(s.older_than(0, 1000, 10).unwrap(), vec![([1; 32], 300)]);
        s.clear(0).unwrap();
        assert_eq!(s.seen(0, &[1; 32]).unwrap(), None);
        assert_eq!(s.meta(0).unwrap(), PartitionMeta::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn negative_times_sort_before_positive_ones() {
        assert!(ordered(-5) < ordered(0));
        assert!(ordered(0) < ordered(7));
        assert!(ordered(i64::MIN) < ordered(i64::MAX));
    }
}
