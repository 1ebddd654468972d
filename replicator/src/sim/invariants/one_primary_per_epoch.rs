//! `one_primary_per_epoch`: no two nodes are ever primary in the same epoch (a voter grants
//! one vote per epoch, persisted before it answers, and a majority elects). Checked after
//! every step of a primary: the first node seen primary in an epoch owns it for the run.

use std::collections::BTreeMap;

use logship_engine::Epoch;

use super::{Check, Violation};

/// Notes that node `n` is primary in `epoch`.
///
/// # Errors
/// Another node was primary in `epoch` before.
pub fn one_primary_per_epoch(seen: &mut BTreeMap<Epoch, usize>, epoch: Epoch, n: usize) -> Check {
    match *seen.entry(epoch).or_insert(n) {
        owner if owner == n => Ok(()),
        owner => Err(Violation::new(
            "one_primary_per_epoch",
            format!("n{n} is primary in epoch {epoch}, which n{owner} was primary in"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_primary_in_an_epoch_is_caught() {
        let mut seen = BTreeMap::new();
        assert!(one_primary_per_epoch(&mut seen, Epoch(1), 0).is_ok());
        assert!(one_primary_per_epoch(&mut seen, Epoch(1), 0).is_ok());
        assert!(one_primary_per_epoch(&mut seen, Epoch(2), 1).is_ok());
        let e = one_primary_per_epoch(&mut seen, Epoch(2), 0);
        assert_eq!(e.map_err(|v| v.invariant), Err("one_primary_per_epoch"));
    }
}
