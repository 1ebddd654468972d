//! Newtypes that cross module boundaries: log sequence numbers and epochs.
//!
//! LSNs are dense record numbers starting at 1; `Lsn::ZERO` means "before the first record".

use std::fmt;

/// A log sequence number: the position of one record in the log. Dense, starting at 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The position before the first record; no record has this LSN.
    pub const ZERO: Lsn = Lsn(0);
    /// The first record's LSN in a new log.
    pub const FIRST: Lsn = Lsn(1);

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The LSN after this one.
    ///
    /// # Panics
    /// On overflow of `u64`, which 2^64 records cannot reach in practice.
    pub fn next(self) -> Lsn {
        Lsn(self.0.checked_add(1).expect("LSN overflow: 2^64 records"))
    }

    /// The LSN before this one, saturating at `Lsn::ZERO`.
    pub fn prev(self) -> Lsn {
        Lsn(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A leadership epoch, stamped into every record: the epoch the log wrote it in
/// ([`crate::Log::set_epoch`]). Logs written before failover hold epoch 0 only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
