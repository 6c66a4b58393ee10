//! One worker's rate-limit checks on their way to the limiter shards.
//!
//! A check used to be one actor message per request: an envelope, a reply
//! channel, a timer for the call timeout and, for the clients whose shard
//! lives on the other worker, two thread hops. Now a request leaves its
//! check in its worker's outbox, under the shard that owns the client; the
//! first check for a shard in a turn of the event loop starts one send, a
//! task that runs after the requests already ready in that turn have added
//! their own checks, then carries them all in one [`CheckMany`] (a lone
//! check goes as a plain [`Check`]) and hands each request its answer.
//! Requests still wait only for their own shard's answer, and a shard sees
//! each client's checks in the order they were made.
//!
//! The outbox belongs to one worker's thread (it lives in that worker's
//! guard state), so it needs no lock. If the shard cannot answer, every
//! check of the batch fails, and the guard lets those requests through.

use std::cell::RefCell;
use std::mem;
use std::net::IpAddr;
use std::rc::Rc;

use tokio::sync::oneshot;

use crate::actors::rate_limiter::{
    Check, CheckMany, Decision, LimiterFailed, RateLimiterActor, RateLimiterShards,
};
use crate::actors::ActorRef;

type Answer = Result<Decision, LimiterFailed>;

/// The checks bound for one shard, in the order requests made them.
#[derive(Default)]
struct Batch {
    checks: Vec<Check>,
    replies: Vec<oneshot::Sender<Answer>>,
}

impl Batch {
    async fn send(self, shard: ActorRef<RateLimiterActor>) {
        let Batch { checks, replies } = self;
        let answers = if let [check] = checks[..] {
            shard.ask(check).await.map(|answer| Ok(vec![answer]))
        } else {
            shard.ask(CheckMany(checks)).await
        };
        let answers = answers.unwrap_or_else(|err| Err(LimiterFailed(err.to_string())));
        match answers {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // The request may have gone (client left, deadline).
                    let _ = reply.send(answer);
                }
            }
            Err(failed) => {
                for reply in replies {
                    let _ = reply.send(Err(failed.clone()));
                }
            }
        }
    }
}

/// One worker's checks waiting to be sent, per shard.
#[derive(Default)]
pub struct LimiterOutbox {
    pending: RefCell<Vec<Batch>>,
}

impl LimiterOutbox {
    /// The limiter's decision for one request of this client.
    pub async fn check(self: &Rc<Self>, limiter: &RateLimiterShards, key: IpAddr) -> Answer {
        let shard = limiter.shard_of(&key);
        let (reply, answer) = oneshot::channel();
        let first_of_batch = {
            let mut pending = self.pending.borrow_mut();
            if pending.len() < limiter.shards().len() {
                pending.resize_with(limiter.shards().len(), Batch::default);
            }
            let batch = &mut pending[shard];
            batch.checks.push(Check::one(key));
            batch.replies.push(reply);
            batch.checks.len() == 1
        };
        if first_of_batch {
            let (outbox, actor) = (Rc::clone(self), limiter.shards()[shard].clone());
            // A new task runs after the tasks already queued: the other
            // requests ready in this turn add their checks first.
            actix_web::rt::spawn(async move {
                let batch = mem::take(&mut outbox.pending.borrow_mut()[shard]);
                batch.send(actor).await;
            });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(LimiterFailed("the rate limiter dropped the check".into())))
    }
}
