//! `InvalidatorActor`: keeps this instance's cache coherent with every
//! other instance's writes, through PostgreSQL's `LISTEN/NOTIFY`.
//!
//! A trigger on `users` (a migration) notifies `switchboard_cache` with the
//! changed user's cache key when an update or delete commits, whoever made
//! it, so the notice is sent if and only if the change committed. This actor
//! owns one connection that listens on that channel and drops each key it
//! hears from the local cache.
//!
//! Losing the channel must not mean serving stale users silently: while it
//! is not listening (at start, and whenever the connection breaks) the
//! cache is paused and reads go to the database; once it listens again, the
//! cache is cleared (what changed meanwhile was not heard) and resumed. The
//! listener reconnects with a backoff, checks the connection every few
//! seconds (a silent network would otherwise look like a quiet channel),
//! and says in the log and in `cache_invalidation_listening` when it loses
//! and regains the channel.

use std::time::Duration;

use actix::{AsyncContext, Context, Handler, Message, WrapFuture};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::cache::CacheHandle;
use super::supervision::{run_guarded, supervised_actor, Supervise, Supervision};
use super::ActorRef;
use crate::metrics::{Event, Recorder};

/// The channel the trigger notifies.
const CHANNEL: &str = "switchboard_cache";
/// How the listener's session is named in `pg_stat_activity`.
const APPLICATION_NAME: &str = "switchboard-invalidations";
/// How often a quiet listener checks that its connection still works.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Waits between attempts to listen again: doubling up to the last.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(2);

pub struct InvalidatorActor {
    url: String,
    cache: CacheHandle,
    listening: bool,
    /// Told once, the first time it listens (start-up waits for it).
    first_listen: Option<oneshot::Sender<()>>,
    metrics: Recorder,
    supervision: Supervision,
}

impl InvalidatorActor {
    /// Listens on the database at `url` for changes, for `cache`; says so
    /// on `first_listen` once it first listens.
    pub fn new(
        url: String,
        cache: CacheHandle,
        first_listen: oneshot::Sender<()>,
        supervision: Supervision,
    ) -> Self {
        Self {
            url,
            cache,
            listening: false,
            first_listen: Some(first_listen),
            metrics: supervision.metrics().clone(),
            supervision,
        }
    }
}

impl Supervise for InvalidatorActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// A restarted listener starts over: not listening, the cache paused.
    fn reset(&mut self) {
        self.listening = false;
        self.cache.pause();
    }

    fn on_start(&mut self, ctx: &mut Context<Self>) {
        let me = ActorRef::new(self.supervision.id(), ctx.address(), CHECK_EVERY);
        ctx.spawn(listen(self.url.clone(), me).into_actor(self));
    }

    fn report(&mut self) {
        let listening = self.listening;
        self.metrics.record(Event::Invalidations { listening });
    }
}

supervised_actor!(InvalidatorActor; Listening, Heard);

/// The listener's connection is up (and listening), or down.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Listening(bool);

/// A key another instance's write (or this one's) invalidated.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Heard(String);

impl Handler<Listening> for InvalidatorActor {
    type Result = ();

    fn handle(&mut self, Listening(now): Listening, ctx: &mut Context<Self>) {
        run_guarded(self, ctx, |act, _| {
            if now == act.listening {
                return;
            }
            act.listening = now;
            act.metrics.record(Event::Invalidations { listening: now });
            if now {
                act.cache.resume();
                tracing::info!("listening for other instances' writes: the cache serves again");
                if let Some(first) = act.first_listen.take() {
                    let _ = first.send(());
                }
            } else {
                act.cache.pause();
                tracing::warn!(
                    "lost the channel of other instances' writes: the cache is paused, reads go to the database"
                );
            }
        })
    }
}

impl Handler<Heard> for InvalidatorActor {
    type Result = ();

    fn handle(&mut self, Heard(key): Heard, ctx: &mut Context<Self>) {
        run_guarded(self, ctx, |act, _| {
            act.metrics.record(Event::InvalidationHeard);
            act.cache.invalidate(key);
        })
    }
}

/// Listens until the actor ends, reconnecting whenever the connection
/// breaks, and tells the actor what it hears.
async fn listen(url: String, me: ActorRef<InvalidatorActor>) {
    let mut retry = FIRST_RETRY;
    loop {
        match connect(&url).await {
            Ok(mut conn) => {
                retry = FIRST_RETRY;
                me.post(Listening(true));
                let why = hear(&mut conn, &me).await;
                tracing::warn!(reason = why, "the invalidation channel broke");
            }
            Err(err) => tracing::warn!(%err, "cannot listen for other instances' writes"),
        }
        me.post(Listening(false));
        actix_web::rt::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

async fn connect(url: &str) -> Result<AsyncPgConnection, String> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|e| e.to_string())?;
    let setup = format!("SET application_name = '{APPLICATION_NAME}'; LISTEN {CHANNEL};");
    conn.batch_execute(&setup)
        .await
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Passes on every notification until the connection fails; says why.
async fn hear(conn: &mut AsyncPgConnection, me: &ActorRef<InvalidatorActor>) -> String {
    loop {
        let heard = {
            let notifications = conn.notifications_stream();
            futures_util::pin_mut!(notifications);
            tokio::time::timeout(CHECK_EVERY, notifications.next()).await
        };
        match heard {
            Ok(Some(Ok(notification))) => me.post(Heard(notification.payload)),
            Ok(Some(Err(err))) => return err.to_string(),
            Ok(None) => return "the connection closed".into(),
            // Quiet for a while: is the connection still there?
            Err(_) => {
                if let Err(err) = diesel::sql_query("SELECT 1").execute(conn).await {
                    return err.to_string();
                }
            }
        }
    }
}
