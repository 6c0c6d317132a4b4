//! Keys of requests that already got their answer, remembered for at
//! least the reassembly timeout so late or duplicate fragments start no
//! new request. Bounded: when full, the oldest key is forgotten early and
//! counted.

use super::Key;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct AnsweredKeys {
    set: HashSet<Key>,
    order: VecDeque<(Instant, Key)>,
    capacity: usize,
    ttl: Duration,
    evicted: u64,
}

impl AnsweredKeys {
    pub fn new(capacity: usize, ttl: Duration) -> AnsweredKeys {
        AnsweredKeys {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            // Twice the timeout: a fragment can be in the network for a
            // while after the request that it belongs to expired.
            ttl: ttl * 2,
            evicted: 0,
        }
    }

    pub fn insert(&mut self, key: Key, now: Instant) {
        self.purge(now);
        if !self.set.insert(key) {
            return;
        }
        if self.set.len() > self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.set.remove(&old);
                self.evicted += 1;
            }
        }
        self.order.push_back((now + self.ttl, key));
    }

    pub fn contains(&mut self, key: &Key, now: Instant) -> bool {
        self.purge(now);
        self.set.contains(key)
    }

    pub fn purge(&mut self, now: Instant) {
        while let Some(&(until, key)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            self.set.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}
