//! One host measurement: CPU, memory, load, the data volume, network counters and the size of
//! the store file. Every call here reads /proc, /sys or statvfs, so it runs on a blocking
//! thread, never on a request.

use crate::chain::Timestamp;
use crate::store::StoreProbe;
use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};

/// What one sample found. Fields are `None` when the platform cannot tell.
#[derive(Debug, Clone)]
pub struct HostSample {
    /// When it was measured.
    pub at: Timestamp,
    /// Monotonic twin of `at`, for the sample's age.
    pub taken: Instant,
    /// CPU busy percent (0–100) over `cpu_window`.
    pub cpu_percent: Option<f64>,
    /// What the CPU figure averages over: the time since the previous sample, or `None` for
    /// the first sample, which averages since boot.
    pub cpu_window: Option<Duration>,
    /// Logical CPUs.
    pub cpu_count: usize,
    /// Host memory, used (total − available) and available, in bytes.
    pub memory: Option<Memory>,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: Option<[f64; 3]>,
    /// `(available, total)` bytes of the volume holding the store.
    pub disk: Option<(u64, u64)>,
    /// Bytes received and sent over all interfaces since boot.
    pub network_totals: (u64, u64),
    /// Bytes received and sent since the previous sample (the counters' increments).
    pub network_delta: (u64, u64),
    /// Size of the store file.
    pub store_file_bytes: Option<u64>,
    /// How long the measurement took.
    pub took: Duration,
}

/// Host memory in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Installed memory.
    pub total: u64,
    /// In use: total − available.
    pub used: u64,
    /// Available to new work without swapping.
    pub available: u64,
}

/// The state sampling keeps between calls (CPU and network figures are differences).
pub struct Sampler {
    system: Option<System>,
    networks: Option<Networks>,
    /// Last seen `(received, sent)` per interface.
    last_network: HashMap<OsString, (u64, u64)>,
    last_taken: Option<Instant>,
    store: Arc<dyn StoreProbe>,
}

impl Sampler {
    /// A sampler for this host and the volume holding `store`.
    pub fn new(store: Arc<dyn StoreProbe>) -> Self {
        let system = System::new_with_specifics(RefreshKind::nothing())
            .map_err(|e| tracing::warn!(error = %e, "host CPU and memory figures unavailable"))
            .ok();
        let networks = Networks::new()
            .map_err(|e| tracing::warn!(error = %e, "host network figures unavailable"))
            .ok();
        Self {
            system,
            networks,
            last_network: HashMap::new(),
            last_taken: None,
            store,
        }
    }

    /// Measures everything once. Blocking.
    pub fn sample(&mut self) -> HostSample {
        let started = Instant::now();
        let at = crate::ledger::now();
        let (cpu_percent, cpu_count, memory) = match &mut self.system {
            Some(sys) => {
                sys.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
                sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
                let total = sys.total_memory();
                let memory = (total > 0).then(|| Memory {
                    total,
                    used: sys.used_memory(),
                    available: sys.available_memory(),
                });
                let cpus = sys.cpus().len();
                let cpu = (cpus > 0).then(|| f64::from(sys.global_cpu_usage()).clamp(0.0, 100.0));
                (cpu, cpus, memory)
            }
            None => (None, 0, None),
        };
        let load = System::load_average()
            .ok()
            .map(|l| [l.one, l.five, l.fifteen]);
        let disk = self
            .store
            .volume()
            .and_then(|v| crate::store::free_space(v).ok());
        let store_file_bytes = self.store.file_size().ok();
        let (network_totals, network_delta) = self.network();
        let cpu_window = self.last_taken.map(|t| started.duration_since(t));
        self.last_taken = Some(started);
        HostSample {
            at,
            taken: started,
            cpu_percent,
            cpu_window,
            cpu_count,
            memory,
            load,
            disk,
            network_totals,
            network_delta,
            store_file_bytes,
            took: started.elapsed(),
        }
    }

    /// Totals since boot and the increase since the last call, over all interfaces. Tracked
    /// per interface so an interface that goes away (or is re-created with fresh counters)
    /// never makes the total run backwards: the exported counter must only grow.
    fn network(&mut self) -> ((u64, u64), (u64, u64)) {
        let Some(networks) = &mut self.networks else {
            return ((0, 0), (0, 0));
        };
        networks.refresh(true);
        let mut totals = (0u64, 0u64);
        let mut delta = (0u64, 0u64);
        let mut seen = HashMap::with_capacity(networks.len());
        for (name, data) in networks.iter() {
            let now = (data.total_received(), data.total_transmitted());
            let before = self.last_network.get(name).copied().unwrap_or((0, 0));
            totals.0 = totals.0.saturating_add(now.0);
            totals.1 = totals.1.saturating_add(now.1);
            delta.0 = delta.0.saturating_add(increase(before.0, now.0));
            delta.1 = delta.1.saturating_add(increase(before.1, now.1));
            seen.insert(name.clone(), now);
        }
        self.last_network = seen;
        (totals, delta)
    }
}

/// How much a kernel counter grew; a smaller value means it was reset, so all of it is new.
fn increase(before: u64, now: u64) -> u64 {
    if now >= before { now - before } else { now }
}

#[cfg(test)]
mod tests {
    use super::increase;

    #[test]
    fn a_counter_that_went_back_counts_as_reset() {
        assert_eq!(increase(100, 150), 50);
        assert_eq!(increase(100, 30), 30);
        assert_eq!(increase(0, 0), 0);
    }
}
