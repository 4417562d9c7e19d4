//! The standard process metrics under the names every Prometheus client library exports and
//! generic dashboards and alerts expect (`process_cpu_seconds_total`, ...), read from /proc at
//! scrape time: in-memory files, so a scrape never waits on a disk.

use prometheus::core::{Collector, Desc};
use prometheus::{Counter, Gauge, IntGauge, Opts, proto};
use std::sync::Mutex;

/// Collector of this process's CPU time, memory, file descriptors, threads and start time.
pub struct ProcessMetrics {
    descs: Vec<Desc>,
    cpu: Counter,
    resident: IntGauge,
    virtual_bytes: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    threads: IntGauge,
    /// Scrapes may run at once; the CPU counter is moved to the kernel's figure under this so
    /// two of them never add the same increase twice.
    update: Mutex<()>,
    ticks_per_second: f64,
}

impl ProcessMetrics {
    /// The collector, with the start time read once (it never changes).
    pub fn new() -> Self {
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))
        .expect("static metric");
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help)).expect("static metric")
        };
        let resident = gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        );
        let virtual_bytes = gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        );
        let open_fds = gauge("process_open_fds", "Number of open file descriptors.");
        let max_fds = gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        );
        let threads = gauge("process_threads", "Number of OS threads in the process.");
        let start_time = Gauge::with_opts(Opts::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        ))
        .expect("static metric");
        let ticks_per_second = procfs::ticks_per_second().max(1) as f64;
        if let (Ok(boot), Ok(stat)) = (
            procfs::boot_time_secs(),
            procfs::process::Process::myself().and_then(|p| p.stat()),
        ) {
            start_time.set(boot as f64 + stat.starttime as f64 / ticks_per_second);
        }
        let mut descs = Vec::new();
        for c in [&resident, &virtual_bytes, &open_fds, &max_fds, &threads] {
            descs.extend(c.desc().into_iter().cloned());
        }
        descs.extend(cpu.desc().into_iter().cloned());
        descs.extend(start_time.desc().into_iter().cloned());
        Self {
            descs,
            cpu,
            resident,
            virtual_bytes,
            open_fds,
            max_fds,
            start_time,
            threads,
            update: Mutex::new(()),
            ticks_per_second,
        }
    }

    /// Reads /proc/self into the handles; a figure that cannot be read keeps its last value.
    fn refresh(&self) {
        let Ok(p) = procfs::process::Process::myself() else {
            return;
        };
        if let Ok(n) = p.fd_count() {
            self.open_fds.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Ok(limits) = p.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            self.max_fds.set(i64::try_from(max).unwrap_or(i64::MAX));
        }
        if let Ok(stat) = p.stat() {
            let page = procfs::page_size();
            self.virtual_bytes
                .set(i64::try_from(stat.vsize).unwrap_or(i64::MAX));
            self.resident
                .set(i64::try_from(stat.rss.saturating_mul(page)).unwrap_or(i64::MAX));
            self.threads.set(stat.num_threads);
            // Clock ticks (1/100 s on Linux), not whole seconds: rate() over a short window of
            // a mostly idle service would otherwise read 0 or 1 CPU.
            let total = (stat.utime + stat.stime) as f64 / self.ticks_per_second;
            let _one_at_a_time = self.update.lock().unwrap_or_else(|e| e.into_inner());
            let grown = total - self.cpu.get();
            if grown > 0.0 {
                self.cpu.inc_by(grown);
            }
        }
    }
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        self.refresh();
        let mut out = Vec::with_capacity(7);
        out.extend(self.cpu.collect());
        for g in [
            &self.resident,
            &self.virtual_bytes,
            &self.open_fds,
            &self.max_fds,
            &self.threads,
        ] {
            out.extend(g.collect());
        }
        out.extend(self.start_time.collect());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's figure for this process, in seconds.
    fn kernel_cpu(ticks: f64) -> f64 {
        let stat = procfs::process::Process::myself().unwrap().stat().unwrap();
        (stat.utime + stat.stime) as f64 / ticks
    }

    #[test]
    fn cpu_time_is_the_kernels_figure_to_the_tick() {
        let m = ProcessMetrics::new();
        let mut x = 1u64;
        for _ in 0..3 {
            // Other tests run in this process at the same time, so compare with the kernel's
            // figure read just before and just after rather than with a fixed amount.
            let before = kernel_cpu(m.ticks_per_second);
            m.refresh();
            let after = kernel_cpu(m.ticks_per_second);
            let got = m.cpu.get();
            assert!(
                got >= before - 1e-9 && got <= after + 1e-9,
                "{before} <= {got} <= {after}: not rounded to whole seconds"
            );
            let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
            while std::time::Instant::now() < until {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        assert!(m.resident.get() > 0 && m.virtual_bytes.get() >= m.resident.get());
        assert!(m.open_fds.get() >= 3 && m.max_fds.get() >= m.open_fds.get());
        assert!(m.threads.get() >= 1 && m.start_time.get() > 1.6e9);
    }
}
