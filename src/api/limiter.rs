//! The rate limiter: fixed-window request counters per client address (IPv4 by address, IPv6
//! by /64) in a bounded map that forgets the least recently seen client in O(1), plus one
//! counter per API key.

use crate::config::{Cidr, RateLimitConfig};
use prometheus::{IntCounter, IntGauge};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// What the limiter counts an address as: an IPv4 address, or the /64 network of an IPv6 one
/// (one host commonly holds a whole /64, so per-address buckets would let it walk past the
/// limit by changing its interface id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 address (IPv4-mapped IPv6 addresses count as IPv4).
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
}

impl ClientKey {
    /// The bucket `ip` counts against.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => Self::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Requests counted in one window.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    window: u64,
    count: u32,
}

impl Bucket {
    /// Counts one request in `window` if `limit` allows it.
    fn take(&mut self, window: u64, limit: u32) -> bool {
        if self.window != window {
            *self = Bucket { window, count: 0 };
        }
        if self.count >= limit {
            return false;
        }
        self.count += 1;
        true
    }
}

/// No slot: the end of the recency list.
const NIL: u32 = u32::MAX;

struct Slot {
    key: ClientKey,
    bucket: Bucket,
    /// Towards the most recently seen.
    prev: u32,
    /// Towards the least recently seen.
    next: u32,
}

/// Buckets in least-recently-used order: a hash map to slots of a slab, the slots chained in
/// a doubly linked list by index. Lookup, touch, insert and eviction are O(1); nothing ever
/// scans the map.
struct Lru {
    map: HashMap<ClientKey, u32>,
    slots: Vec<Slot>,
    /// Most recently seen.
    head: u32,
    /// Least recently seen: the next to go.
    tail: u32,
    cap: usize,
}

impl Lru {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            cap: cap.clamp(1, NIL as usize - 1),
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        match old {
            NIL => self.tail = i,
            o => self.slots[o as usize].prev = i,
        }
        self.head = i;
    }

    /// The bucket of `key`, now the most recently seen, and whether another client was
    /// forgotten to make room for it.
    fn touch(&mut self, key: ClientKey) -> (&mut Bucket, bool) {
        if let Some(&i) = self.map.get(&key) {
            self.unlink(i);
            self.push_front(i);
            return (&mut self.slots[i as usize].bucket, false);
        }
        let fresh = Bucket::default();
        let (i, evicted) = if self.map.len() >= self.cap && self.tail != NIL {
            // Full: the least recently seen client's slot is reused for this one.
            let i = self.tail;
            self.unlink(i);
            let old = std::mem::replace(&mut self.slots[i as usize].key, key);
            self.map.remove(&old);
            self.slots[i as usize].bucket = fresh;
            (i, true)
        } else {
            let i = u32::try_from(self.slots.len()).expect("slots stay below the cap");
            self.slots.push(Slot {
                key,
                bucket: fresh,
                prev: NIL,
                next: NIL,
            });
            (i, false)
        };
        self.map.insert(key, i);
        self.push_front(i);
        (&mut self.slots[i as usize].bucket, evicted)
    }
}

/// Which configured key a request carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyId {
    /// `security.api_key`.
    Write,
    /// `security.read_api_key`.
    Read,
}

/// Fixed-window counters per client address and per API key.
pub struct RateLimiter {
    enabled: bool,
    limit: u32,
    per_key: u32,
    window_secs: u64,
    epoch: Instant,
    clients: Mutex<Lru>,
    keys: Mutex<[Bucket; 2]>,
    buckets: IntGauge,
    evictions: IntCounter,
    trusted: Vec<Cidr>,
}

impl RateLimiter {
    /// A limiter per `rate_limits`, reporting its size into `buckets` and the clients it had
    /// to forget into `evictions`.
    pub fn new(cfg: &RateLimitConfig, buckets: IntGauge, evictions: IntCounter) -> Self {
        Self {
            enabled: cfg.enabled,
            limit: cfg.requests.max(1),
            per_key: cfg.per_key_requests,
            window_secs: cfg.window_seconds.max(1),
            epoch: Instant::now(),
            clients: Mutex::new(Lru::new(cfg.max_clients)),
            keys: Mutex::new([Bucket::default(); 2]),
            buckets,
            evictions,
            trusted: Vec::new(),
        }
    }

    /// The same limiter, believing forwarding headers from `proxies` (`api.trusted_proxies`).
    pub fn trusting(mut self, proxies: Vec<Cidr>) -> Self {
        self.trusted = proxies;
        self
    }

    /// The peers whose forwarding headers name the client.
    pub fn trusted_proxies(&self) -> &[Cidr] {
        &self.trusted
    }

    /// The current window's number and the seconds until the next one starts.
    fn window(&self) -> (u64, u64) {
        let elapsed = self.epoch.elapsed().as_secs();
        let window = elapsed / self.window_secs;
        let next = (window + 1) * self.window_secs;
        (window, next.saturating_sub(elapsed).max(1))
    }

    /// Counts one request from `ip`; `Err(seconds)` when over the limit, with when to retry.
    pub fn hit(&self, ip: IpAddr) -> Result<(), u64> {
        if !self.enabled {
            return Ok(());
        }
        let (window, retry) = self.window();
        let mut clients = self.clients.lock().expect("rate limiter lock");
        let (bucket, evicted) = clients.touch(ClientKey::of(ip));
        let allowed = bucket.take(window, self.limit);
        if evicted {
            self.evictions.inc();
        } else {
            self.buckets.set(clients.len() as i64);
        }
        if allowed { Ok(()) } else { Err(retry) }
    }

    /// Counts one request made with a valid key; unlimited when `per_key_requests` is 0.
    pub fn hit_key(&self, key: KeyId) -> Result<(), u64> {
        if !self.enabled || self.per_key == 0 {
            return Ok(());
        }
        let (window, retry) = self.window();
        let mut keys = self.keys.lock().expect("rate limiter lock");
        let bucket = &mut keys[key as usize];
        if bucket.take(window, self.per_key) {
            Ok(())
        } else {
            Err(retry)
        }
    }

    /// Clients tracked now.
    pub fn len(&self) -> usize {
        self.clients.lock().expect("rate limiter lock").len()
    }

    /// Whether no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: u32, max_clients: usize) -> (RateLimiter, IntGauge, IntCounter) {
        let cfg = RateLimitConfig {
            requests,
            max_clients,
            per_key_requests: 2,
            ..RateLimitConfig::default()
        };
        let gauge = IntGauge::new("b", "b").unwrap();
        let evictions = IntCounter::new("e_total", "e").unwrap();
        (
            RateLimiter::new(&cfg, gauge.clone(), evictions.clone()),
            gauge,
            evictions,
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_past_the_limit_with_a_retry_time_per_client() {
        let (l, _, _) = limiter(2, 100);
        let a = ip("127.0.0.1");
        assert!(l.hit(a).is_ok() && l.hit(a).is_ok());
        let retry = l.hit(a).unwrap_err();
        assert!((1..=60).contains(&retry));
        assert!(l.hit(ip("127.0.0.2")).is_ok(), "limits are per client");
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64_bit_network() {
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientKey::of(ip("::ffff:192.0.2.7")),
            ClientKey::of(ip("192.0.2.7")),
            "IPv4-mapped peers count as their IPv4 address"
        );
        assert_ne!(ClientKey::of(ip("10.0.0.1")), ClientKey::of(ip("10.0.0.2")));
        let (l, _, _) = limiter(1, 100);
        assert!(l.hit(ip("2001:db8::1")).is_ok());
        assert!(
            l.hit(ip("2001:db8::2")).is_err(),
            "another address in the same /64 shares the bucket"
        );
        assert!(l.hit(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn buckets_are_bounded_and_the_least_recently_seen_goes_first() {
        let (l, gauge, evictions) = limiter(1, 3);
        for c in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            assert!(l.hit(ip(c)).is_ok());
        }
        assert_eq!((l.len(), gauge.get(), evictions.get()), (3, 3, 0));
        // Seeing .1 again makes .2 the oldest; a fourth client pushes .2 out.
        assert!(l.hit(ip("10.0.0.1")).is_err());
        assert!(l.hit(ip("10.0.0.4")).is_ok());
        assert_eq!((l.len(), gauge.get(), evictions.get()), (3, 3, 1));
        assert!(
            l.hit(ip("10.0.0.2")).is_ok(),
            ".2 was forgotten: fresh bucket"
        );
        assert!(l.hit(ip("10.0.0.1")).is_err(), ".1 was kept");
        assert_eq!(evictions.get(), 2, ".3 made room for .2");
        assert!(l.hit(ip("10.0.0.3")).is_ok(), ".3 was forgotten");
    }

    #[test]
    fn the_recency_list_stays_consistent_under_churn() {
        let (l, _, _) = limiter(1_000_000, 64);
        for i in 0..10_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(i % 97 + (i % 7) * 1000));
            assert!(l.hit(a).is_ok());
        }
        let lru = l.clients.lock().unwrap();
        assert_eq!(lru.len(), 64);
        assert_eq!(
            lru.slots.len(),
            64,
            "slots are reused, never grown past the cap"
        );
        let (mut n, mut i, mut last) = (0, lru.head, NIL);
        while i != NIL {
            let s = &lru.slots[i as usize];
            assert_eq!(s.prev, last);
            assert_eq!(lru.map[&s.key], i);
            last = i;
            i = s.next;
            n += 1;
        }
        assert_eq!((n, last), (64, lru.tail));
    }

    #[test]
    fn keys_have_their_own_limit_and_zero_means_unlimited() {
        let (l, _, _) = limiter(1, 10);
        assert!(l.hit_key(KeyId::Read).is_ok() && l.hit_key(KeyId::Read).is_ok());
        assert!(l.hit_key(KeyId::Read).is_err());
        assert!(
            l.hit_key(KeyId::Write).is_ok(),
            "each key has its own bucket"
        );
        let unlimited = RateLimiter::new(
            &RateLimitConfig::default(),
            IntGauge::new("b", "b").unwrap(),
            IntCounter::new("e_total", "e").unwrap(),
        );
        for _ in 0..10_000 {
            assert!(unlimited.hit_key(KeyId::Write).is_ok());
        }
    }
}
