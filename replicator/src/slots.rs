//! Connection slots, bounded in all and per remote address: the client port and the HTTP port
//! take one per connection, so that no one address can take every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// Why a connection gets no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// Its address holds as many slots as one address may.
    Address,
    /// Every slot is taken.
    Full,
}

impl NoSlot {
    /// For log lines.
    pub fn reason(self) -> &'static str {
        match self {
            NoSlot::Address => "too many connections from this address",
            NoSlot::Full => "every connection slot is taken",
        }
    }
}

/// The slots of one port.
#[derive(Debug)]
pub struct Slots {
    max_total: usize,
    max_per_address: usize,
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Slots {
    /// At most `max_total` connections, `max_per_address` of them from one address.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Mutex<Slots>> {
        Arc::new(Mutex::new(Slots {
            max_total,
            max_per_address,
            total: 0,
            by_address: HashMap::new(),
        }))
    }

    /// A slot for a connection from `ip` (the address bound is checked first), or why there
    /// is none.
    ///
    /// # Errors
    /// [`NoSlot`].
    pub fn take(slots: &Arc<Mutex<Slots>>, ip: IpAddr) -> Result<Slot, NoSlot> {
        let mut s = slots.lock();
        if s.by_address.get(&ip).copied().unwrap_or(0) >= s.max_per_address {
            return Err(NoSlot::Address);
        }
        if s.total >= s.max_total {
            return Err(NoSlot::Full);
        }
        s.total += 1;
        *s.by_address.entry(ip).or_default() += 1;
        Ok(Slot {
            slots: Arc::clone(slots),
            ip,
        })
    }

    /// Slots taken, in all and by how many addresses.
    pub fn taken(&self) -> (usize, usize) {
        (self.total, self.by_address.len())
    }
}

/// One connection's slot, given back when dropped (also when the connection's thread could not
/// be started).
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Mutex<Slots>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.by_address.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: usize) -> IpAddr {
        IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8])
    }

    #[test]
    fn slots_are_bounded_per_address_and_in_all_and_given_back() {
        let slots = Slots::new(6, 2);
        let first = Slots::take(&slots, ip(0)).expect("first");
        let _second = Slots::take(&slots, ip(0)).expect("second");
        assert_eq!(Slots::take(&slots, ip(0)).err(), Some(NoSlot::Address));
        let others: Vec<Slot> = (1..5)
            .map(|i| Slots::take(&slots, ip(i)).expect("room"))
            .collect();
        assert_eq!(Slots::take(&slots, ip(9)).err(), Some(NoSlot::Full));
        // A full port still says "address" to an address at its own bound.
        assert_eq!(Slots::take(&slots, ip(0)).err(), Some(NoSlot::Address));
        drop(first);
        let _again = Slots::take(&slots, ip(9)).expect("a slot given back serves another address");
        drop(others);
        assert_eq!(slots.lock().taken(), (2, 2));
    }
}
