//! Load shedding: how many requests a worker has in flight, and how many of
//! them one client holds. Each worker owns its share of
//! `SWITCHBOARD_MAX_IN_FLIGHT` and of `SWITCHBOARD_MAX_IN_FLIGHT_PER_CLIENT`
//! in plain cells, so there is no shared counter and no lock. Past either,
//! a request is refused (503 with `Retry-After`, after a short pause that
//! holds no place: `guards::SHED_PAUSE`), never queued: one
//! client cannot take the whole cap, slow bodies and slow upstreams
//! included, and what it holds is returned as its requests end, however
//! they end.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;

/// One worker's requests in flight.
pub struct InFlight {
    count: Cell<usize>,
    max: usize,
    /// Requests in flight per client; only clients with one in flight are
    /// kept, so the map is never larger than `max`.
    by_client: RefCell<foldhash::HashMap<IpAddr, usize>>,
    max_per_client: usize,
}

/// Why a request found no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The worker is at its share of the cap.
    Worker,
    /// The client is at its share.
    Client,
}

impl InFlight {
    /// This worker's share of the process-wide caps.
    pub fn new(max: usize, max_per_client: usize, workers: usize) -> Self {
        let share = |cap: usize| cap.div_ceil(workers.max(1)).max(1);
        Self {
            count: Cell::new(0),
            max: share(max),
            by_client: RefCell::default(),
            max_per_client: share(max_per_client),
        }
    }

    pub fn count(&self) -> usize {
        self.count.get()
    }

    /// A place for a request of `client`, held until the permit is dropped.
    pub fn enter(self: &Rc<Self>, client: Option<IpAddr>) -> Result<Permit, Full> {
        if self.count.get() >= self.max {
            return Err(Full::Worker);
        }
        if let Some(client) = client {
            let mut by_client = self.by_client.borrow_mut();
            let held = by_client.entry(client).or_insert(0);
            if *held >= self.max_per_client {
                return Err(Full::Client);
            }
            *held += 1;
        }
        self.count.set(self.count.get() + 1);
        Ok(Permit {
            in_flight: Rc::clone(self),
            client,
        })
    }
}

/// A request's place among those in flight, given back when dropped (also
/// when the request is cancelled).
pub struct Permit {
    in_flight: Rc<InFlight>,
    client: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let in_flight = &self.in_flight;
        in_flight.count.set(in_flight.count.get() - 1);
        if let Some(client) = self.client {
            let mut by_client = in_flight.by_client.borrow_mut();
            if let Some(held) = by_client.get_mut(&client) {
                *held -= 1;
                if *held == 0 {
                    by_client.remove(&client);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_share_and_the_others_the_rest() {
        let in_flight = Rc::new(InFlight::new(4, 2, 1));
        let (greedy, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = in_flight.enter(Some(greedy)).unwrap();
        let _second = in_flight.enter(Some(greedy)).unwrap();
        assert_eq!(in_flight.enter(Some(greedy)).err(), Some(Full::Client));
        let _third = in_flight.enter(Some(other)).unwrap();
        let _fourth = in_flight.enter(Some(other)).unwrap();
        assert_eq!(in_flight.enter(None).err(), Some(Full::Worker));
        drop(first);
        assert_eq!(in_flight.count(), 3);
        let _again = in_flight.enter(Some(greedy)).unwrap();
        assert_eq!(in_flight.by_client.borrow().len(), 2);
    }

    #[test]
    fn a_client_with_nothing_in_flight_is_forgotten() {
        let in_flight = Rc::new(InFlight::new(4, 2, 1));
        drop(in_flight.enter(Some("10.0.0.1".parse().unwrap())).unwrap());
        assert!(in_flight.by_client.borrow().is_empty());
        assert_eq!(in_flight.count(), 0);
    }
}
