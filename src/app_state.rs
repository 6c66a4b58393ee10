//! What every handler shares: the actors' handles and the start time. No
//! pools, maps or locks: state lives inside the actors.

use std::time::Instant;

use crate::actors::db::DbActor;
use crate::actors::supervision::ActorStatus;
use crate::actors::ActorRef;

pub struct AppState {
    pub db: ActorRef<DbActor>,
    pub started_at: Instant,
}

impl AppState {
    /// Every actor's own account of its health.
    pub async fn actor_statuses(&self) -> Vec<ActorStatus> {
        vec![self.db.status().await]
    }
}
