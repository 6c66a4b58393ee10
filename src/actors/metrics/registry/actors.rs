//! The actor families: restarts, messages handled and state, per actor
//! instance (name and shard), each instance's series created at zero on
//! its first report.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{counter, gauge};

/// The `state` label of `actor_state`.
const ACTOR_STATES: [&str; 3] = ["running", "backing_off", "given_up"];

/// One actor instance's series.
struct ActorSeries {
    restarts: IntCounter,
    messages: IntCounter,
    /// In [`ACTOR_STATES`]' order.
    states: [IntGauge; 3],
}

pub struct ActorMetrics {
    pub restarts: IntCounterVec,
    messages: IntCounterVec,
    state: IntGaugeVec,
    actors: foldhash::HashMap<(&'static str, usize), ActorSeries>,
}

impl ActorMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            restarts: counter(
                registry,
                "actor_restarts_total",
                "Actor restarts after a failure",
                &["actor", "shard"],
            ),
            messages: counter(
                registry,
                "actor_messages_total",
                "Messages handled by each actor",
                &["actor", "shard"],
            ),
            state: gauge(
                registry,
                "actor_state",
                "1 for each actor's current state (running, backing_off, given_up), else 0",
                &["actor", "shard", "state"],
            ),
            actors: foldhash::HashMap::default(),
        }
    }

    pub fn restarted(&mut self, actor: &'static str, shard: usize) {
        self.series(actor, shard).restarts.inc();
    }

    pub fn handled(&mut self, actor: &'static str, shard: usize, count: u64) {
        self.series(actor, shard).messages.inc_by(count);
    }

    pub fn state(&mut self, actor: &'static str, shard: usize, state: &str) {
        for (gauge, name) in self.series(actor, shard).states.iter().zip(ACTOR_STATES) {
            gauge.set(i64::from(name == state));
        }
    }

    /// An actor instance's series, created at zero on first sight.
    fn series(&mut self, actor: &'static str, shard: usize) -> &ActorSeries {
        let (restarts, messages, states) = (&self.restarts, &self.messages, &self.state);
        self.actors.entry((actor, shard)).or_insert_with(|| {
            let shard = shard.to_string();
            let labels = [actor, shard.as_str()];
            ActorSeries {
                restarts: restarts.with_label_values(&labels),
                messages: messages.with_label_values(&labels),
                states: ACTOR_STATES
                    .map(|state| states.with_label_values(&[actor, shard.as_str(), state])),
            }
        })
    }
}
