//! `commit_never_goes_back`: within one incarnation of the primary's replica, no level's
//! commit LSN ever decreases (the commit tracker's promise, seen from outside: waiters are
//! completed from these numbers, and a decrease would mean an acknowledgement taken back).

use logship_engine::Lsn;

use super::{Check, Violation};

/// Checks `now` against the commit LSNs last seen in this incarnation, then remembers `now`
/// (level by level, the higher).
///
/// # Errors
/// A level below what it was.
pub fn commit_never_goes_back(seen: &mut [Lsn; 4], now: [Lsn; 4]) -> Check {
    let fell = seen.iter().zip(now).position(|(s, n)| n < *s);
    if let Some(level) = fell {
        return Err(Violation::new(
            "commit_never_goes_back",
            format!(
                "level {level} went from {} to {} (all: {seen:?} -> {now:?})",
                seen[level], now[level]
            ),
        ));
    }
    *seen = now;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fall_is_caught_and_a_rise_remembered() {
        let mut seen = [Lsn(5), Lsn(4), Lsn(3), Lsn(3)];
        assert!(commit_never_goes_back(&mut seen, [Lsn(6), Lsn(4), Lsn(3), Lsn(3)]).is_ok());
        assert_eq!(seen[0], Lsn(6));
        let e = commit_never_goes_back(&mut seen, [Lsn(6), Lsn(4), Lsn(2), Lsn(3)]);
        assert_eq!(e.map_err(|v| v.invariant), Err("commit_never_goes_back"));
    }
}
