//! The aggregator behind the admin UI: it drains the data plane's telemetry events,
//! closes one sample per second from the exact counters (kept for an hour) and one
//! per minute (kept for a day), and runs the handshake-storm detector, whose storms
//! it stores in sled.
//!
//! Everything here runs on one task every 100 ms (cold path); API handlers read a
//! snapshot under a mutex that the aggregator holds only while it updates.
//!
//! # The storm detector
//! Each second it compares the handshake rate with its own baseline (an exponential
//! moving average with `baseline_half_life_secs`, frozen while a storm is on). A
//! storm starts when the rate stays above `max(baseline × factor, baseline +
//! min_excess_per_sec)` for `onset_secs` seconds in a row (none is raised in the
//! first `warmup_secs`), and ends once it has stayed below that for `end_secs`.
//!
//! Why a storm happens is read from the clients: every new handshake from an IP
//! whose previous connection closed within `reconnect_window_secs` is a reconnect,
//! classified by how that connection ended: the client aborted a body mid-way, the
//! client asked for a close after one request (connection per request), the server
//! closed after an error, or the client closed after an error (a 4xx/5xx was its
//! last answer); a handshake with no such predecessor is a new client. The storm's
//! cause is the commonest class among its handshakes. Alongside: the share of
//! handshakes that reconnect after an error, and the correlation of the handshake
//! rate with the error rate over `correlation_window_secs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::telemetry::{ClosedBy, Event, HistoSnapshot, Telemetry, GROUPS, SUITES};

/// Storm detector thresholds (`[telemetry.storm]`); see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct StormSettings {
    /// Rate must exceed `baseline × factor` ...
    pub factor: f64,
    /// ... and `baseline + min_excess_per_sec`.
    pub min_excess_per_sec: f64,
    /// Seconds in a row above the threshold that start a storm.
    pub onset_secs: u32,
    /// Seconds in a row below the threshold that end it.
    pub end_secs: u32,
    /// No storm is raised this long after start-up (the baseline is learnt).
    pub warmup_secs: u32,
    /// A handshake within this long of the same IP's previous close is a reconnect.
    pub reconnect_window_secs: u32,
    /// Half-life of the baseline's moving average.
    pub baseline_half_life_secs: u32,
    /// Window of the handshake/error correlation.
    pub correlation_window_secs: u32,
    /// Storms kept in the store (oldest removed first).
    pub retention: usize,
}

impl Default for StormSettings {
    fn default() -> Self {
        Self {
            factor: 3.0,
            min_excess_per_sec: 10.0,
            onset_secs: 3,
            end_secs: 10,
            warmup_secs: 20,
            reconnect_window_secs: 5,
            baseline_half_life_secs: 120,
            correlation_window_secs: 30,
            retention: 1000,
        }
    }
}

/// Why handshakes happen; a storm's cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The client closed after a 4xx/5xx answer.
    ClientClosedAfterError,
    /// The client went away while a body was being sent.
    AbortedMidBody,
    /// The server closed after an error.
    ServerClosedAfterError,
    /// One request per connection (`Connection: close`).
    ConnectionPerRequest,
    /// A reconnect after a connection that ended without an error.
    Reconnect,
    /// No recent connection from this IP.
    NewClients,
}

impl Cause {
    const ALL: [Cause; 6] = [
        Cause::ClientClosedAfterError,
        Cause::AbortedMidBody,
        Cause::ServerClosedAfterError,
        Cause::ConnectionPerRequest,
        Cause::Reconnect,
        Cause::NewClients,
    ];

    /// The JSON label.
    pub fn label(self) -> &'static str {
        match self {
            Cause::ClientClosedAfterError => "client_closed_after_error",
            Cause::AbortedMidBody => "aborted_mid_body",
            Cause::ServerClosedAfterError => "server_closed_after_error",
            Cause::ConnectionPerRequest => "connection_per_request",
            Cause::Reconnect => "reconnect",
            Cause::NewClients => "new_clients",
        }
    }
}

#[derive(Clone, Copy)]
struct PrevClose {
    at_ms: u64,
    closed_by: ClosedBy,
    last_status: u16,
    requests: u32,
    aborted_mid_body: bool,
}

fn classify(p: &PrevClose) -> Cause {
    if p.aborted_mid_body {
        Cause::AbortedMidBody
    } else if p.closed_by == ClosedBy::ClientRequested && p.requests <= 1 {
        Cause::ConnectionPerRequest
    } else if p.last_status >= 400 && p.closed_by == ClosedBy::Server {
        Cause::ServerClosedAfterError
    } else if p.last_status >= 400 {
        Cause::ClientClosedAfterError
    } else if p.closed_by == ClosedBy::ClientRequested
        || (p.closed_by == ClosedBy::Client && p.requests <= 1)
    {
        // One request and gone, with or without `Connection: close`.
        Cause::ConnectionPerRequest
    } else {
        Cause::Reconnect
    }
}

/// The /24 (IPv4) or /48 (IPv6) network of `ip`.
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return network_of(IpAddr::V4(v4));
            }
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// Keys kept per tally; later new keys are counted under "(other)".
const TALLY_KEYS: usize = 512;

#[derive(Default, Clone)]
struct Tally<K: std::hash::Hash + Eq> {
    counts: HashMap<K, u64>,
    other: u64,
}

impl<K: std::hash::Hash + Eq + Clone + Ord> Tally<K> {
    fn add(&mut self, k: K, n: u64) {
        if let Some(c) = self.counts.get_mut(&k) {
            *c += n;
        } else if self.counts.len() < TALLY_KEYS {
            self.counts.insert(k, n);
        } else {
            self.other += n;
        }
    }
    fn merge(&mut self, other: &Tally<K>) {
        for (k, n) in &other.counts {
            self.add(k.clone(), *n);
        }
        self.other += other.other;
    }
    fn top(&self, n: usize) -> Vec<(K, u64)> {
        let mut v: Vec<(K, u64)> = self.counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

/// What one second's events say (beyond the counters).
#[derive(Default, Clone)]
struct EventAgg {
    status: Tally<u16>,
    prefixes: Tally<String>,
    networks: Tally<String>,
    user_agents: Tally<String>,
    causes: [u64; 6],
    handshakes: u64,
    reconnects_after_error: u64,
}

impl EventAgg {
    fn merge(&mut self, o: &EventAgg) {
        self.status.merge(&o.status);
        self.prefixes.merge(&o.prefixes);
        self.networks.merge(&o.networks);
        self.user_agents.merge(&o.user_agents);
        for (a, b) in self.causes.iter_mut().zip(o.causes.iter()) {
            *a += b;
        }
        self.handshakes += o.handshakes;
        self.reconnects_after_error += o.reconnects_after_error;
    }
}

/// A handshake storm, as stored and served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Storm {
    /// Its id: the start time in ms.
    pub id: u64,
    /// First second above the threshold (unix ms).
    pub start_ms: u64,
    /// First second of the calm that ended it; `None` while it lasts.
    pub end_ms: Option<u64>,
    /// Last time the record was written.
    pub updated_ms: u64,
    /// Highest handshake rate (per second).
    pub peak_rate: f64,
    /// The baseline rate it was measured against.
    pub baseline_rate: f64,
    /// Handshakes above the baseline during the storm.
    pub excess_handshakes: u64,
    /// All handshakes during the storm.
    pub handshakes: u64,
    /// The commonest cause.
    pub cause: String,
    /// Handshakes by cause.
    pub causes: BTreeMap<String, u64>,
    /// Error statuses answered during the storm, commonest first.
    pub top_status: Vec<(u16, u64)>,
    /// Path prefixes of those errors.
    pub top_prefixes: Vec<(String, u64)>,
    /// Client networks (/24, /48) of the storm's handshakes.
    pub top_networks: Vec<(String, u64)>,
    /// User agents of the errors.
    pub top_user_agents: Vec<(String, u64)>,
    /// Share of the storm's handshakes that reconnect after an error.
    pub reconnect_after_error_share: f64,
    /// Correlation of handshake rate and error rate (latest window).
    pub correlation: f64,
}

struct ActiveStorm {
    storm: Storm,
    agg: EventAgg,
    calm_secs: u32,
    first_calm_ms: u64,
}

#[derive(Clone, Copy, Default)]
struct Totals {
    bytes: u64,
    requests: u64,
    hs_full: u64,
    hs_resumed: u64,
    hs_failed: u64,
    s4xx: u64,
    s5xx: u64,
    modes: [u64; 3],
    cache_hits: u64,
    cache_misses: u64,
    hs_latency: HistoSnapshot,
}

fn read_totals(t: &Telemetry) -> Totals {
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    let mut requests = 0;
    let (mut s4, mut s5) = (0, 0);
    for route in &t.responses {
        for (c, a) in route.iter().enumerate() {
            let n = ld(a);
            requests += n;
            if c == 3 {
                s4 += n;
            } else if c == 4 {
                s5 += n;
            }
        }
    }
    Totals {
        bytes: ld(&t.body_bytes),
        requests,
        hs_full: ld(&t.handshakes_full),
        hs_resumed: ld(&t.handshakes_resumed),
        hs_failed: t.failures.iter().map(ld).sum(),
        s4xx: s4,
        s5xx: s5,
        modes: std::array::from_fn(|i| ld(&t.modes[i])),
        cache_hits: ld(&t.cache_hits),
        cache_misses: ld(&t.cache_misses),
        hs_latency: t.handshake_latency.snapshot(),
    }
}

/// One interval (a second or a minute) of the series.
#[derive(Clone, Default)]
struct Sample {
    t: u64,
    bytes: u64,
    requests: u64,
    hs_full: u64,
    hs_resumed: u64,
    hs_failed: u64,
    s4xx: u64,
    s5xx: u64,
    conns_open: i64,
    modes: [u64; 3],
    cache_hits: u64,
    cache_misses: u64,
    hs_latency: HistoSnapshot,
    reconnects_after_error: u64,
}

impl Sample {
    fn add(&mut self, o: &Sample) {
        self.bytes += o.bytes;
        self.requests += o.requests;
        self.hs_full += o.hs_full;
        self.hs_resumed += o.hs_resumed;
        self.hs_failed += o.hs_failed;
        self.s4xx += o.s4xx;
        self.s5xx += o.s5xx;
        self.conns_open = o.conns_open;
        for (a, b) in self.modes.iter_mut().zip(o.modes.iter()) {
            *a += b;
        }
        self.cache_hits += o.cache_hits;
        self.cache_misses += o.cache_misses;
        self.hs_latency.add(&o.hs_latency);
        self.reconnects_after_error += o.reconnects_after_error;
    }
}

const SECONDS_KEPT: usize = 3600;
const MINUTES_KEPT: usize = 1440;

struct State {
    settings: StormSettings,
    last: Totals,
    second: u64,
    cur: EventAgg,
    seconds: VecDeque<Sample>,
    minutes: VecDeque<Sample>,
    minute_acc: Option<Sample>,
    prev_close: HashMap<IpAddr, PrevClose>,
    /// The last `onset_secs` seconds' events, while the rate is above threshold.
    pending: VecDeque<(u64, u64, EventAgg)>,
    baseline: Option<f64>,
    correlation: VecDeque<(f64, f64)>,
    active: Option<ActiveStorm>,
    storms: VecDeque<Storm>,
    started_s: u64,
}

/// The admin plane's view of the data plane: series, TLS mix and storms.
pub struct Dashboard {
    telemetry: Arc<Telemetry>,
    state: Mutex<State>,
    tree: Option<sled::Tree>,
    _db: Option<sled::Db>,
}

/// Opening the storm store failed.
#[derive(Debug, thiserror::Error)]
#[error("telemetry store {path}: {source}")]
pub struct StoreError {
    path: String,
    source: sled::Error,
}

impl Dashboard {
    /// A dashboard over `telemetry`, storing storms in a sled database at `store`
    /// (`None`: in memory only). Storms left open by a crash are closed at the time
    /// they were last written.
    pub fn open(
        telemetry: Arc<Telemetry>,
        settings: StormSettings,
        store: Option<&std::path::Path>,
    ) -> Result<Self, StoreError> {
        let (db, tree) = match store {
            Some(p) => {
                let err = |source| StoreError {
                    path: p.display().to_string(),
                    source,
                };
                let db = sled::open(p).map_err(err)?;
                let tree = db.open_tree("storms").map_err(err)?;
                (Some(db), Some(tree))
            }
            None => (None, None),
        };
        let mut storms = VecDeque::new();
        if let Some(tree) = &tree {
            for (_, v) in tree.iter().rev().flatten() {
                if storms.len() >= settings.retention {
                    break;
                }
                let Ok(mut s) = serde_json::from_slice::<Storm>(&v) else {
                    continue;
                };
                if s.end_ms.is_none() {
                    s.end_ms = Some(s.updated_ms);
                    if let Ok(bytes) = serde_json::to_vec(&s) {
                        let _ = tree.insert(s.id.to_be_bytes(), bytes);
                    }
                }
                storms.push_back(s);
            }
        }
        let now_s = telemetry.now_ms() / 1000;
        let last = read_totals(&telemetry);
        Ok(Self {
            state: Mutex::new(State {
                settings,
                last,
                second: now_s,
                cur: EventAgg::default(),
                seconds: VecDeque::with_capacity(SECONDS_KEPT),
                minutes: VecDeque::with_capacity(MINUTES_KEPT),
                minute_acc: None,
                prev_close: HashMap::new(),
                pending: VecDeque::new(),
                baseline: None,
                correlation: VecDeque::new(),
                active: None,
                storms,
                started_s: now_s,
            }),
            telemetry,
            tree,
            _db: db,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the detector's thresholds (a reload); a running storm goes on.
    pub fn set_settings(&self, settings: StormSettings) {
        self.lock().settings = settings;
    }

    /// The telemetry sink this dashboard reads.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Runs the aggregator every 100 ms until `shutdown`; an open storm is written
    /// out on the way out.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now_ms = self.telemetry.tick_clock();
            self.step(now_ms);
        }
        let st = self.lock();
        if let Some(a) = &st.active {
            self.persist(&a.storm);
        }
        if let Some(t) = &self.tree {
            let _ = t.flush();
        }
    }

    /// Drains events and closes every second up to `now_ms`.
    pub fn step(&self, now_ms: u64) {
        let mut st = self.lock();
        let window_ms = u64::from(st.settings.reconnect_window_secs) * 1000;
        // Bounded: at most a queue's worth per step.
        for _ in 0..crate::telemetry::EVENT_QUEUE_CAPACITY {
            let Some(e) = self.telemetry.pop() else { break };
            st.on_event(e, window_ms);
        }
        let now_s = now_ms / 1000;
        if now_s > st.second {
            // Counters are read once per closed second; if the task was late, the
            // whole gap is booked on the last second.
            let totals = read_totals(&self.telemetry);
            let open = self.telemetry.open.load(Relaxed);
            while st.second + 1 < now_s {
                let t = st.second;
                st.second += 1;
                self.close_second(&mut st, t, None, open);
            }
            let t = st.second;
            st.second = now_s;
            self.close_second(&mut st, t, Some(totals), open);
        }
    }

    fn close_second(&self, st: &mut State, t: u64, totals: Option<Totals>, open: i64) {
        let mut sample = Sample {
            t,
            conns_open: open,
            ..Sample::default()
        };
        if let Some(now) = totals {
            let l = st.last;
            sample.bytes = now.bytes - l.bytes;
            sample.requests = now.requests - l.requests;
            sample.hs_full = now.hs_full - l.hs_full;
            sample.hs_resumed = now.hs_resumed - l.hs_resumed;
            sample.hs_failed = now.hs_failed - l.hs_failed;
            sample.s4xx = now.s4xx - l.s4xx;
            sample.s5xx = now.s5xx - l.s5xx;
            sample.modes = std::array::from_fn(|i| now.modes[i] - l.modes[i]);
            sample.cache_hits = now.cache_hits - l.cache_hits;
            sample.cache_misses = now.cache_misses - l.cache_misses;
            sample.hs_latency = now.hs_latency.since(&l.hs_latency);
            st.last = now;
        }
        let agg = std::mem::take(&mut st.cur);
        sample.reconnects_after_error = agg.reconnects_after_error;
        if st.seconds.len() == SECONDS_KEPT {
            st.seconds.pop_front();
        }
        st.seconds.push_back(sample.clone());
        let minute = t / 60 * 60;
        match &mut st.minute_acc {
            Some(m) if m.t == minute => m.add(&sample),
            _ => {
                if let Some(done) = st.minute_acc.take() {
                    if st.minutes.len() == MINUTES_KEPT {
                        st.minutes.pop_front();
                    }
                    st.minutes.push_back(done);
                }
                let mut m = sample.clone();
                m.t = minute;
                st.minute_acc = Some(m);
            }
        }
        let hs = sample.hs_full + sample.hs_resumed;
        self.detect(st, t, hs, sample.s4xx + sample.s5xx, agg);
        // Forget closes too old to match a reconnect.
        let keep_after =
            (t * 1000).saturating_sub(2 * u64::from(st.settings.reconnect_window_secs) * 1000);
        if st.prev_close.len() > 1024 || t % 10 == 0 {
            st.prev_close.retain(|_, p| p.at_ms >= keep_after);
        }
    }

    fn detect(&self, st: &mut State, t: u64, hs: u64, errors: u64, agg: EventAgg) {
        let s = st.settings.clone();
        st.correlation.push_back((hs as f64, errors as f64));
        while st.correlation.len() > s.correlation_window_secs.max(2) as usize {
            st.correlation.pop_front();
        }
        let corr = pearson(&st.correlation);
        let rate = hs as f64;
        let alpha = 1.0 - 0.5f64.powf(1.0 / f64::from(s.baseline_half_life_secs.max(1)));
        let baseline = st.baseline.unwrap_or(rate);
        let threshold = (baseline * s.factor).max(baseline + s.min_excess_per_sec);
        let t_ms = t * 1000;
        if let Some(active) = &mut st.active {
            let storm = &mut active.storm;
            active.agg.merge(&agg);
            storm.handshakes += hs;
            storm.excess_handshakes += (rate - storm.baseline_rate).max(0.0).round() as u64;
            storm.peak_rate = storm.peak_rate.max(rate);
            storm.correlation = corr;
            if rate <= threshold {
                if active.calm_secs == 0 {
                    active.first_calm_ms = t_ms;
                }
                active.calm_secs += 1;
            } else {
                active.calm_secs = 0;
            }
            let ended = active.calm_secs >= s.end_secs;
            if ended {
                storm.end_ms = Some(active.first_calm_ms);
            }
            fill_storm(storm, &active.agg);
            storm.updated_ms = t_ms;
            if ended || t % 5 == 0 {
                self.persist(storm);
            }
            if ended {
                let done = storm.clone();
                st.active = None;
                tracing::info!(
                    peak_rate = done.peak_rate,
                    excess_handshakes = done.excess_handshakes,
                    cause = %done.cause,
                    "handshake storm ended"
                );
                st.push_storm(done, self.tree.as_ref());
            }
            return;
        }
        let warm = t >= st.started_s + u64::from(s.warmup_secs);
        if warm && rate > threshold && st.baseline.is_some() {
            st.pending.push_back((t, hs, agg));
            if st.pending.len() >= s.onset_secs.max(1) as usize {
                let start = st.pending.front().map_or(t, |p| p.0) * 1000;
                let mut all = EventAgg::default();
                let mut handshakes = 0;
                let mut excess = 0.0;
                let mut peak = 0f64;
                for (_, h, a) in st.pending.drain(..) {
                    all.merge(&a);
                    handshakes += h;
                    excess += (h as f64 - baseline).max(0.0);
                    peak = peak.max(h as f64);
                }
                let mut storm = Storm {
                    id: start,
                    start_ms: start,
                    end_ms: None,
                    updated_ms: t_ms,
                    peak_rate: peak,
                    baseline_rate: baseline,
                    excess_handshakes: excess.round() as u64,
                    handshakes,
                    cause: String::new(),
                    causes: BTreeMap::new(),
                    top_status: Vec::new(),
                    top_prefixes: Vec::new(),
                    top_networks: Vec::new(),
                    top_user_agents: Vec::new(),
                    reconnect_after_error_share: 0.0,
                    correlation: corr,
                };
                fill_storm(&mut storm, &all);
                self.persist(&storm);
                tracing::warn!(
                    peak_rate = storm.peak_rate,
                    baseline = format!("{baseline:.1}"),
                    cause = %storm.cause,
                    "handshake storm started"
                );
                st.active = Some(ActiveStorm {
                    storm,
                    agg: all,
                    calm_secs: 0,
                    first_calm_ms: 0,
                });
            }
            return;
        }
        // A calm second (or one during warm-up): it teaches the baseline.
        for (_, h, _) in st.pending.drain(..) {
            let b = st.baseline.unwrap_or(h as f64);
            st.baseline = Some(b + alpha * (h as f64 - b));
        }
        st.baseline = Some(match st.baseline {
            None => rate,
            Some(b) if !warm => b + (rate - b) * alpha.max(0.2),
            Some(b) => b + alpha * (rate - b),
        });
    }

    fn persist(&self, storm: &Storm) {
        if let Some(tree) = &self.tree {
            if let Ok(bytes) = serde_json::to_vec(storm) {
                if let Err(e) = tree.insert(storm.id.to_be_bytes(), bytes) {
                    tracing::warn!(error = %e, "writing a storm to the telemetry store failed");
                }
            }
        }
    }

    /// `GET /api/overview`.
    pub fn overview(&self) -> Value {
        let st = self.lock();
        let last: Vec<&Sample> = st.seconds.iter().rev().take(10).collect();
        let n = last.len().max(1) as f64;
        let sum = |f: fn(&Sample) -> u64| last.iter().map(|s| f(s)).sum::<u64>() as f64;
        let modes: [f64; 3] =
            std::array::from_fn(|i| last.iter().map(|s| s.modes[i]).sum::<u64>() as f64);
        let t = &self.telemetry;
        let all_modes: [u64; 3] = std::array::from_fn(|i| t.modes[i].load(Relaxed));
        let tls = (all_modes[1] + all_modes[2]) as f64;
        let ktls_share = if modes[1] + modes[2] > 0.0 {
            modes[2] / (modes[1] + modes[2])
        } else if tls > 0.0 {
            all_modes[2] as f64 / tls
        } else {
            0.0
        };
        let hits = t.cache_hits.load(Relaxed) as f64;
        let misses = t.cache_misses.load(Relaxed) as f64;
        let hit_ratio = (t.has_cache.load(Relaxed) || hits + misses > 0.0).then(|| {
            if hits + misses > 0.0 {
                hits / (hits + misses)
            } else {
                0.0
            }
        });
        let now_ms = t.now_ms();
        json!({
            "now_ms": now_ms,
            "uptime_s": (now_ms / 1000).saturating_sub(st.started_s),
            "throughput_bytes_per_s": sum(|s| s.bytes) / n,
            "requests_per_s": sum(|s| s.requests) / n,
            "connections_open": t.open.load(Relaxed),
            "ktls_share": ktls_share,
            "cache_hit_ratio": hit_ratio,
            "handshakes_per_s": sum(|s| s.hs_full + s.hs_resumed) / n,
            "errors_per_s": sum(|s| s.s4xx + s.s5xx) / n,
            "storm_active": st.active.is_some(),
            "telemetry_enabled": t.enabled(),
        })
    }

    /// `GET /api/series?res=s|m`.
    pub fn series(&self, per_minute: bool) -> Value {
        let st = self.lock();
        let samples: Vec<&Sample> = if per_minute {
            st.minutes.iter().chain(st.minute_acc.iter()).collect()
        } else {
            st.seconds.iter().collect()
        };
        let col = |f: &dyn Fn(&Sample) -> Value| samples.iter().map(|s| f(s)).collect::<Vec<_>>();
        let ratio = |a: u64, b: u64| {
            if a + b > 0 {
                json!(b as f64 / (a + b) as f64)
            } else {
                Value::Null
            }
        };
        let q = |s: &Sample, p: f64| {
            s.hs_latency
                .quantile_ms(p)
                .map_or(Value::Null, |v| json!(v))
        };
        json!({
            "res": if per_minute { "m" } else { "s" },
            "t": col(&|s| json!(s.t)),
            "bytes": col(&|s| json!(s.bytes)),
            "requests": col(&|s| json!(s.requests)),
            "handshakes_full": col(&|s| json!(s.hs_full)),
            "handshakes_resumed": col(&|s| json!(s.hs_resumed)),
            "handshake_failures": col(&|s| json!(s.hs_failed)),
            "status_4xx": col(&|s| json!(s.s4xx)),
            "status_5xx": col(&|s| json!(s.s5xx)),
            "connections_open": col(&|s| json!(s.conns_open)),
            "ktls_share": col(&|s| ratio(s.modes[1], s.modes[2])),
            "cache_hit_ratio": col(&|s| ratio(s.cache_misses, s.cache_hits)),
            "hs_p50_ms": col(&|s| q(s, 0.5)),
            "hs_p95_ms": col(&|s| q(s, 0.95)),
            "hs_p99_ms": col(&|s| q(s, 0.99)),
            "reconnects_after_error": col(&|s| json!(s.reconnects_after_error)),
        })
    }

    /// `GET /api/tls`.
    pub fn tls(&self) -> Value {
        let t = &self.telemetry;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        let named = |table: &[(u16, &str)], slots: &[std::sync::atomic::AtomicU64]| {
            let mut m = serde_json::Map::new();
            for (i, a) in slots.iter().enumerate() {
                let n = ld(a);
                if n > 0 {
                    let name = table.get(i).map_or("other", |(_, n)| n);
                    m.insert(name.to_string(), json!(n));
                }
            }
            Value::Object(m)
        };
        let lat = t.handshake_latency.snapshot();
        let q = |p| lat.quantile_ms(p).map_or(Value::Null, |v| json!(v));
        let failures: serde_json::Map<String, Value> = crate::telemetry::HandshakeFailure::ALL
            .iter()
            .zip(t.failures.iter())
            .map(|(f, a)| (f.label().to_string(), json!(ld(a))))
            .collect();
        json!({
            "handshakes_full": ld(&t.handshakes_full),
            "handshakes_resumed": ld(&t.handshakes_resumed),
            "failures": failures,
            "latency_ms": {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99)},
            "versions": named(&[(0x0303, "TLSv1_2"), (0x0304, "TLSv1_3")], &t.versions),
            "ciphers": named(&SUITES, &t.suites),
            "groups": named(&GROUPS, &t.groups),
            "sni": {"absent": ld(&t.sni[0]), "name": ld(&t.sni[1]), "ip_literal": ld(&crate::telemetry::SNI_IP_LITERAL)},
            "alpn": {"http/1.1": ld(&t.alpn_http11), "none": ld(&t.alpn_none)},
        })
    }

    /// The running storm and the stored ones, newest first.
    pub fn storms(&self) -> (Option<Storm>, Vec<Storm>) {
        let st = self.lock();
        let active = st.active.as_ref().map(|a| a.storm.clone());
        (active, st.storms.iter().cloned().collect())
    }

    /// `GET /api/storms`.
    pub fn storms_json(&self) -> Value {
        let (active, storms) = self.storms();
        let mut list: Vec<Storm> = active.iter().cloned().collect();
        list.extend(storms);
        json!({ "active": active, "storms": list })
    }

    /// `GET /api/storms/ID`: the storm and its per-second series (± 60 s).
    pub fn storm_json(&self, id: u64) -> Option<Value> {
        let (active, storms) = self.storms();
        let storm = active.into_iter().chain(storms).find(|s| s.id == id)?;
        let st = self.lock();
        let from = storm.start_ms / 1000 - 60;
        let to = storm.end_ms.map_or(u64::MAX, |e| e / 1000 + 60);
        let picked: Vec<&Sample> = st
            .seconds
            .iter()
            .filter(|s| s.t >= from && s.t <= to)
            .collect();
        let mut v = serde_json::to_value(&storm).ok()?;
        v["series"] = json!({
            "t": picked.iter().map(|s| s.t).collect::<Vec<_>>(),
            "handshakes": picked.iter().map(|s| s.hs_full + s.hs_resumed).collect::<Vec<_>>(),
            "status_4xx": picked.iter().map(|s| s.s4xx).collect::<Vec<_>>(),
            "status_5xx": picked.iter().map(|s| s.s5xx).collect::<Vec<_>>(),
        });
        Some(v)
    }
}

impl State {
    fn on_event(&mut self, e: Event, window_ms: u64) {
        match e {
            Event::Handshake { at_ms, ip, .. } => {
                let cause = match self.prev_close.remove(&ip) {
                    Some(p) if at_ms.saturating_sub(p.at_ms) <= window_ms => {
                        if p.last_status >= 400 {
                            self.cur.reconnects_after_error += 1;
                        }
                        classify(&p)
                    }
                    _ => Cause::NewClients,
                };
                let i = Cause::ALL.iter().position(|c| *c == cause).unwrap_or(5);
                self.cur.causes[i] += 1;
                self.cur.handshakes += 1;
                self.cur.networks.add(network_of(ip), 1);
            }
            Event::ErrorResponse {
                status,
                prefix,
                user_agent,
                ..
            } => {
                self.cur.status.add(status, 1);
                self.cur.prefixes.add(prefix.as_string(), 1);
                self.cur.user_agents.add(user_agent.as_string(), 1);
            }
            Event::Close {
                at_ms,
                ip,
                closed_by,
                last_status,
                requests,
                aborted_mid_body,
            } => {
                self.prev_close.insert(
                    ip,
                    PrevClose {
                        at_ms,
                        closed_by,
                        last_status,
                        requests,
                        aborted_mid_body,
                    },
                );
            }
        }
    }

    fn push_storm(&mut self, storm: Storm, tree: Option<&sled::Tree>) {
        self.storms.push_front(storm);
        while self.storms.len() > self.settings.retention {
            if let (Some(old), Some(tree)) = (self.storms.pop_back(), tree) {
                let _ = tree.remove(old.id.to_be_bytes());
            }
        }
    }
}

fn fill_storm(storm: &mut Storm, agg: &EventAgg) {
    storm.causes = Cause::ALL
        .iter()
        .zip(agg.causes.iter())
        .map(|(c, n)| (c.label().to_string(), *n))
        .collect();
    // The cause: the commonest reconnect class; new clients only when nothing
    // reconnects.
    let reconnect = Cause::ALL
        .iter()
        .zip(agg.causes.iter())
        .filter(|(c, _)| **c != Cause::NewClients)
        .max_by_key(|(_, n)| **n)
        .filter(|(_, n)| **n > 0);
    storm.cause = reconnect
        .map_or(Cause::NewClients, |(c, _)| *c)
        .label()
        .to_string();
    storm.top_status = agg.status.top(10);
    storm.top_prefixes = agg.prefixes.top(10);
    storm.top_networks = agg.networks.top(10);
    storm.top_user_agents = agg.user_agents.top(10);
    storm.reconnect_after_error_share = if agg.handshakes > 0 {
        agg.reconnects_after_error as f64 / agg.handshakes as f64
    } else {
        0.0
    };
}

/// Pearson correlation of the pairs (0 when undefined).
fn pearson(xy: &VecDeque<(f64, f64)>) -> f64 {
    let n = xy.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = xy
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xy {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx.sqrt() * syy.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{HandshakeInfo, RouteClass};

    fn info(resumed: bool) -> HandshakeInfo {
        HandshakeInfo {
            version: 0x0304,
            suite: 0x1301,
            group: 0x001d,
            resumed,
            micros: 900,
            sni: 1,
            alpn_http11: true,
        }
    }

    /// Drives the detector second by second with a synthetic population.
    #[test]
    fn detector_raises_and_ends_a_storm_with_its_cause() {
        let dir = std::env::temp_dir().join(format!("edge-dash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tel = Arc::new(Telemetry::new(true));
        let settings = StormSettings {
            warmup_secs: 5,
            ..StormSettings::default()
        };
        let d = Dashboard::open(tel.clone(), settings.clone(), Some(&dir)).unwrap();
        let t0 = 1_800_000_000_000u64;
        d.lock().second = t0 / 1000;
        d.lock().started_s = t0 / 1000;
        let ip = |i: u32| IpAddr::from([10, 1, (i / 200) as u8, (i % 200) as u8]);
        // 30 calm seconds: 2 new clients a second, each fetching a segment.
        let mut now = t0;
        let mut n = 0;
        for _ in 0..30 {
            for _ in 0..2 {
                tel.handshake(ip(n), &info(false));
                tel.response(
                    ip(n),
                    200,
                    RouteClass::Segment,
                    1000,
                    500,
                    None,
                    b"/v/a.ts",
                    b"ua",
                );
                n += 1;
            }
            now += 1000;
            d.step(now);
        }
        assert!(d.storms().0.is_none(), "no storm while calm");
        // 8 s of 404 then drop then reconnect, 60 clients.
        for _ in 0..8 {
            for c in 0..60 {
                tel.response(
                    ip(5000 + c),
                    404,
                    RouteClass::Segment,
                    0,
                    300,
                    None,
                    b"/missing/x/7.ts?t=1",
                    b"sim/1",
                );
                tel.closed(ip(5000 + c), ClosedBy::Client, 404, 3, false);
            }
            d.step(now + 100);
            for c in 0..60 {
                tel.handshake(ip(5000 + c), &info(true));
            }
            now += 1000;
            d.step(now);
        }
        let (active, _) = d.storms();
        let s = active.expect("a storm is on");
        assert_eq!(s.cause, "client_closed_after_error", "{s:?}");
        assert_eq!(s.top_status[0].0, 404);
        assert_eq!(s.top_prefixes[0].0, "/missing/x/");
        assert_eq!(s.top_user_agents[0].0, "sim/1");
        assert_eq!(s.top_networks[0].0, "10.1.25.0/24");
        assert!(s.reconnect_after_error_share > 0.9, "{s:?}");
        // Calm again: it ends and is stored.
        for _ in 0..15 {
            now += 1000;
            d.step(now);
        }
        let (active, stored) = d.storms();
        assert!(active.is_none());
        assert_eq!(stored.len(), 1);
        assert!(stored[0].end_ms.is_some());
        assert!(stored[0].excess_handshakes >= 400, "{:?}", stored[0]);
        drop(d);
        // Reopened from sled.
        let d = Dashboard::open(tel, settings, Some(&dir)).unwrap();
        assert_eq!(d.storms().1.len(), 1);
        assert!(d.storm_json(stored[0].id).is_some());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn classification() {
        let p = |closed_by, last_status, requests, aborted_mid_body| PrevClose {
            at_ms: 0,
            closed_by,
            last_status,
            requests,
            aborted_mid_body,
        };
        assert_eq!(
            classify(&p(ClosedBy::Client, 200, 9, true)),
            Cause::AbortedMidBody
        );
        assert_eq!(
            classify(&p(ClosedBy::ClientRequested, 404, 1, false)),
            Cause::ConnectionPerRequest
        );
        assert_eq!(
            classify(&p(ClosedBy::Server, 404, 5, false)),
            Cause::ServerClosedAfterError
        );
        assert_eq!(
            classify(&p(ClosedBy::Client, 410, 5, false)),
            Cause::ClientClosedAfterError
        );
        assert_eq!(
            classify(&p(ClosedBy::Timeout, 200, 5, false)),
            Cause::Reconnect
        );
        assert_eq!(
            network_of("2001:db8:1:2::3".parse().unwrap()),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn pearson_works() {
        let v: VecDeque<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        assert!((pearson(&v) - 1.0).abs() < 1e-9);
    }
}
