//! One worker's rate-limit checks on their way to the limiter shards.
//!
//! A message per check would cost every request an envelope, a reply
//! channel, a timer for the call timeout and, for the clients whose shard
//! lives on another worker, two thread hops. So a request leaves its check
//! in its worker's outbox, under the shard that owns the client; the first
//! check for a shard in a turn of the event loop starts one send, a task
//! that runs after the requests already ready in that turn have added
//! their own checks, then carries them all in one [`CheckMany`] (a lone
//! check goes as a plain [`Check`]) and hands each request its answer.
//! Requests still wait only for their own shard's answer, and a shard sees
//! each client's checks in the order they were made.
//!
//! The outbox belongs to one worker's thread (it lives in that worker's
//! guard state), so it needs no lock, and a batch's answers reach its
//! requests through one shared, single-threaded slot rather than a
//! thread-safe channel per request. If the shard cannot answer, every
//! check of the batch fails, and the guard lets those requests through.

use std::cell::RefCell;
use std::future::poll_fn;
use std::mem;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::{Check, CheckMany, LimiterFailed, RateLimiterActor, RateLimiterShards};
use crate::actors::ActorRef;
use crate::rate_limit::{Decision, RateKey};
use crate::traces::spans;
use tracing::Instrument;

type Answer = Result<Decision, LimiterFailed>;

/// Where one batch's answers land, for the requests waiting on them.
#[derive(Default)]
struct Answers {
    /// One answer per check, in order, once the shard has answered.
    answers: RefCell<Option<Result<Vec<Answer>, LimiterFailed>>>,
    /// The waiting requests, by their check's place in the batch.
    waiting: RefCell<Vec<Option<Waker>>>,
}

impl Answers {
    /// Keeps the answers and wakes every request still waiting.
    fn deliver(&self, answers: Result<Vec<Answer>, LimiterFailed>) {
        *self.answers.borrow_mut() = Some(answers);
        for waker in mem::take(&mut *self.waiting.borrow_mut())
            .into_iter()
            .flatten()
        {
            waker.wake();
        }
    }

    /// The answer to the check at `place`, once there is one.
    async fn answer(&self, place: usize) -> Answer {
        poll_fn(|cx| match &*self.answers.borrow() {
            Some(Ok(answers)) => Poll::Ready(answers.get(place).cloned().unwrap_or_else(|| {
                Err(LimiterFailed(
                    "the rate limiter left a check unanswered".into(),
                ))
            })),
            Some(Err(failed)) => Poll::Ready(Err(failed.clone())),
            None => {
                self.waiting.borrow_mut()[place] = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// The checks bound for one shard, in the order requests made them.
#[derive(Default)]
struct Batch {
    checks: Vec<Check>,
    answers: Rc<Answers>,
}

impl Batch {
    async fn send(self, shard: ActorRef<RateLimiterActor>) {
        let Batch {
            mut checks,
            answers,
        } = self;
        // Answered even if this task is dropped before the shard answers.
        let delivery = Delivery(answers);
        let answers = if checks.len() == 1 {
            let check = checks.pop().expect("one check");
            let answer = shard.ask(check).await.map_err(LimiterFailed::from);
            answer.map(|answer| vec![answer])
        } else {
            shard.call(CheckMany(checks)).await
        };
        delivery.0.deliver(answers);
    }
}

/// A batch on its way: its requests get an answer whatever happens to it.
struct Delivery(Rc<Answers>);

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.0.answers.borrow().is_none() {
            self.0.deliver(Err(LimiterFailed(
                "the rate limiter dropped the check".into(),
            )));
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
    pub async fn check(self: &Rc<Self>, limiter: &RateLimiterShards, key: RateKey) -> Answer {
        let shard = limiter.shard_of(&key);
        let (answers, place) = {
            let mut pending = self.pending.borrow_mut();
            if pending.len() < limiter.shards().len() {
                pending.resize_with(limiter.shards().len(), Batch::default);
            }
            let batch = &mut pending[shard];
            batch.checks.push(Check::one(key));
            batch.answers.waiting.borrow_mut().push(None);
            (Rc::clone(&batch.answers), batch.checks.len() - 1)
        };
        let first_of_batch = place == 0;
        if first_of_batch {
            let (outbox, actor) = (Rc::clone(self), limiter.shards()[shard].clone());
            // A new task runs after the tasks already queued: the other
            // requests ready in this turn add their checks first.
            // Traced, if at all, as part of the request that opened it.
            let sender = spans::sender();
            actix_web::rt::spawn(
                async move {
                    let batch = mem::take(&mut outbox.pending.borrow_mut()[shard]);
                    batch.send(actor).await;
                }
                .instrument(sender),
            );
        }
        answers.answer(place).await
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::Context;
    use std::time::Duration;

    use futures_util::task::{waker, ArcWake};

    use super::*;

    /// A waker that notes it was woken, as the runtime would reschedule.
    #[derive(Default)]
    struct Woken(AtomicBool);

    impl ArcWake for Woken {
        fn wake_by_ref(woken: &Arc<Self>) {
            woken.0.store(true, Ordering::SeqCst);
        }
    }

    fn allowed(remaining: u32) -> Answer {
        Ok(Decision::Allowed {
            remaining,
            reset: Duration::from_secs(1),
        })
    }

    fn waiting_for(checks: usize) -> Rc<Answers> {
        let answers = Rc::new(Answers::default());
        answers.waiting.borrow_mut().resize(checks, None);
        answers
    }

    /// Polls `request` once with a waker of its own.
    fn poll_once(
        request: Pin<&mut impl Future<Output = Answer>>,
        woken: &Arc<Woken>,
    ) -> Poll<Answer> {
        request.poll(&mut Context::from_waker(&waker(Arc::clone(woken))))
    }

    #[test]
    fn each_waiting_request_is_woken_with_the_answer_to_its_own_check() {
        let answers = waiting_for(2);
        let (first_woken, second_woken) = (Arc::default(), Arc::default());
        let mut first = pin!(answers.answer(0));
        let mut second = pin!(answers.answer(1));
        assert!(poll_once(first.as_mut(), &first_woken).is_pending());
        assert!(poll_once(second.as_mut(), &second_woken).is_pending());

        answers.deliver(Ok(vec![allowed(7), allowed(6)]));
        assert!(first_woken.0.load(Ordering::SeqCst));
        assert!(second_woken.0.load(Ordering::SeqCst));
        assert!(matches!(
            poll_once(second, &second_woken),
            Poll::Ready(Ok(Decision::Allowed { remaining: 6, .. }))
        ));
        assert!(matches!(
            poll_once(first, &first_woken),
            Poll::Ready(Ok(Decision::Allowed { remaining: 7, .. }))
        ));
    }

    #[test]
    fn a_batch_dropped_unanswered_wakes_and_fails_its_checks() {
        let answers = waiting_for(2);
        let delivery = Delivery(Rc::clone(&answers));
        let woken = Arc::default();
        let mut first = pin!(answers.answer(0));
        assert!(poll_once(first.as_mut(), &woken).is_pending());

        drop(delivery);
        assert!(woken.0.load(Ordering::SeqCst));
        let Poll::Ready(Err(failed)) = poll_once(first, &woken) else {
            panic!("a dropped batch left its request without a failure")
        };
        assert_eq!(failed.0, "the rate limiter dropped the check");
        assert!(matches!(
            poll_once(pin!(answers.answer(1)), &woken),
            Poll::Ready(Err(_))
        ));
    }
}
