//! Places in the binlog: the stored stream position, the positions that
//! identify changes, and MariaDB's GTID event (which `mysql_common` does
//! not parse: see docs/design/mysql_cdc.md).

use serde::{Deserialize, Serialize};
use syncline_core::{Error, Position, Result};

/// Where the stream resumes: the end of the last transaction whose records
/// the broker has (stored in `_syncline_cursors` once they are acknowledged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// The binlog file, e.g. `mariadb-bin.000003`.
    pub file: String,
    /// The offset in it: the end of a transaction (or of the snapshot).
    pub pos: u64,
    /// The GTID of that transaction (`domain-server-sequence`), when the
    /// server sent one: shown in logs, so a reader can find the place after a
    /// failover, where file names differ.
    #[serde(default)]
    pub gtid: Option<String>,
}

impl std::fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if let Some(g) = &self.gtid {
            write!(f, " (gtid {g})")?;
        }
        Ok(())
    }
}

/// The sequence number of a binlog file: the digits after its last `.`.
pub fn file_number(file: &str) -> Result<u64> {
    file.rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .ok_or_else(|| Error::internal(format!("binlog file `{file}` does not end in `.<number>`")))
}

/// The position of a change: (epoch, binlog file number, offset of the end
/// of its transaction's first event, index in the transaction from 1). A
/// snapshot row has index 0 at the snapshot's (file, offset). All are the
/// same on every replay of that server's binlog, and they order every
/// change by commit: transactions are written to the binlog whole, in
/// commit order.
///
/// The epoch orders binlog lineages: file numbers start again after `RESET
/// MASTER` or on another server, so a source that starts without a stored
/// position (its first start, or after `--from-scratch`) takes the next
/// epoch ([`next_epoch`]), and all its positions sort above every earlier
/// one. Epoch 0, the positions from before epochs, keeps their bytes
/// (file, offset, index); a later epoch `e` is written `(u64::MAX, e, file,
/// offset, index)`: no binlog file number reaches `u64::MAX` (MySQL's and
/// MariaDB's end below 2^32), so it sorts above all of epoch 0, and epochs
/// by number.
pub fn change_position(epoch: u64, file_no: u64, pos: u64, index: u64) -> Position {
    let b = Position::builder();
    let b = if epoch == 0 {
        b
    } else {
        b.u64(EPOCH_MARK).u64(epoch)
    };
    b.u64(file_no).u64(pos).u64(index).build()
}

/// What positions of an epoch after 0 begin with.
const EPOCH_MARK: u64 = u64::MAX;

/// The epoch to build positions with, from the stored one (`None`: never
/// stored) and whether a stream position is stored. A stored position
/// continues its lineage and its epoch (0 for state from before epochs);
/// none begins a new lineage: the next epoch, to be stored before anything
/// is published with it. Returns the epoch and whether to store it.
pub fn next_epoch(stored: Option<u64>, position_stored: bool) -> (u64, bool) {
    match (stored, position_stored) {
        (e, true) => (e.unwrap_or(0), false),
        (e, false) => (e.unwrap_or(0) + 1, true),
    }
}

/// A MariaDB GTID: replication domain, server, sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub sequence: u64,
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.sequence)
    }
}

/// MariaDB's GTID event type (`GTID_EVENT`, 162).
pub const MARIADB_GTID_EVENT: u8 = 162;
/// The GTID event's flag of a transaction with no `XID`/`COMMIT` after it
/// (DDL, a statement on a non-transactional table): it ends with its one
/// statement.
const FL_STANDALONE: u8 = 1;

/// A MariaDB GTID event's data (after the common header, without the
/// checksum): sequence number (u64), domain (u32), flags (u8), then
/// optional parts this source does not need. `server` is the event
/// header's server id. Returns the GTID and whether the transaction is
/// standalone.
pub fn parse_mariadb_gtid(data: &[u8], server: u32) -> Option<(Gtid, bool)> {
    let sequence = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    let flags = *data.get(12)?;
    Some((
        Gtid {
            domain,
            server,
            sequence,
        },
        flags & FL_STANDALONE != 0,
    ))
}

/// The binlog file named by a ROTATE event. The first one of a stream is
/// made up by the server before the checksum setting is known, so its name
/// may end in a 4-byte checksum: the file asked for wins when the name
/// starts with it, else the name is cut after the digits of its number.
pub fn rotated_file(name: &str, asked: &str) -> String {
    if !asked.is_empty() && name.starts_with(asked) {
        return asked.to_string();
    }
    match name.rfind('.') {
        Some(dot) => {
            let digits: String = name[dot + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            format!("{}.{digits}", &name[..dot])
        }
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mariadb_gtid_event_is_read_from_its_bytes() {
        // sequence 42, domain 7, flags standalone|ddl, then a commit id
        let mut data = 42u64.to_le_bytes().to_vec();
        data.extend(7u32.to_le_bytes());
        data.push(1 | 32);
        data.extend([0u8; 6]);
        let (g, standalone) = parse_mariadb_gtid(&data, 3).unwrap();
        assert_eq!(g.to_string(), "7-3-42");
        assert!(standalone);
        data[12] = 4 | 8; // transactional
        assert!(!parse_mariadb_gtid(&data, 3).unwrap().1);
        assert!(parse_mariadb_gtid(&data[..10], 3).is_none());
    }

    #[test]
    fn positions_order_changes_by_file_then_offset_then_index() {
        for epoch in [0, 1, 7] {
            let snap = change_position(epoch, 3, 1000, 0);
            assert!(change_position(epoch, 3, 1001, 1) > snap);
            assert!(change_position(epoch, 3, 999, 5) < snap);
            assert!(change_position(epoch, 4, 4, 1) > change_position(epoch, 3, u64::MAX, 9));
        }
        assert_eq!(file_number("mariadb-bin.000012").unwrap(), 12);
        assert!(file_number("nodot").is_err());
    }

    #[test]
    fn a_later_epoch_sorts_above_every_earlier_position_and_epoch_0_keeps_its_bytes() {
        // the bytes positions had before epochs
        let old = Position::builder().u64(3).u64(1000).u64(2).build();
        assert_eq!(change_position(0, 3, 1000, 2), old);
        // after RESET MASTER: file 1 again, above everything before
        let reset = change_position(1, 1, 4, 0);
        assert!(reset > change_position(0, u64::from(u32::MAX), u64::MAX, u64::MAX));
        assert!(change_position(2, 1, 4, 0) > change_position(1, 999_999, u64::MAX, 9));
        assert!(change_position(1, 1, 5, 0) > reset);
    }

    #[test]
    fn a_new_lineage_takes_the_next_epoch_and_a_stored_position_keeps_its_own() {
        // state from before epochs: a position and no epoch
        assert_eq!(next_epoch(None, true), (0, false));
        assert_eq!(next_epoch(Some(3), true), (3, false));
        // a first start, or after --from-scratch forgot the position
        assert_eq!(next_epoch(None, false), (1, true));
        assert_eq!(next_epoch(Some(3), false), (4, true));
    }

    #[test]
    fn the_first_rotate_loses_a_checksum_glued_to_its_name() {
        assert_eq!(
            rotated_file("bin.000003\u{1}\u{2}xy", "bin.000003"),
            "bin.000003"
        );
        assert_eq!(rotated_file("bin.000004", "bin.000003"), "bin.000004");
        assert_eq!(rotated_file("bin.000005abc", ""), "bin.000005");
    }
}
