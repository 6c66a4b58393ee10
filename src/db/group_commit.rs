//! Group commit for SQLite's writer: the writes that arrive while one
//! transaction commits go together in the next.
//!
//! With `synchronous=FULL` every commit waits for an fsync of the WAL, and
//! one connection commits one transaction at a time, so with a transaction
//! per write the writer's rate would be the disk's fsync rate whatever the
//! load, and under a mixed load, where cached reads are nearly free, most
//! clients would end up waiting in that one queue. Here a write is queued; the
//! first write finds no batch running and starts one at once (no added wait
//! when it is quiet); writes that come while it commits form the next batch,
//! up to [`MAX_BATCH`], which costs one `BEGIN IMMEDIATE`, its statements and
//! one `COMMIT` (one fsync). No answer is sent before its batch commits, so
//! an acknowledged write is as durable as before.
//!
//! A failed statement that leaves the transaction usable is answered as
//! such: no such user, or an email taken (SQLite undoes just that
//! statement). Any other failure (disk full, I/O error) may have undone the
//! whole transaction, so the batch is rolled back and its writes run again
//! one at a time, each its own transaction, so each gets its own answer. A
//! failed `COMMIT` is not retried: it may have committed, so its writes are
//! answered 503.
//!
//! The queue lives on the writer's thread (`Rc`, no lock); it outlives a
//! restart of the actor, which hands it the new pool.

use std::cell::RefCell;
use std::rc::Rc;

use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::SimpleAsyncConnection;
use tokio::sync::oneshot;

use super::conn::{DbConn, SqliteAsyncConnection};
use super::{users, DbError};
use crate::domain::{Expected, NewUser, User, UserId, UserPatch};

/// Most writes in one transaction: a bound on how long the first of them
/// waits for the last.
pub const MAX_BATCH: usize = 128;

/// Where a write's answer goes once its batch is committed or rolled back.
pub type Reply<T> = oneshot::Sender<Result<T, DbError>>;

/// A write waiting for its batch.
#[derive(Debug)]
pub enum Write {
    Create(NewUser, Reply<User>),
    Update(UserId, UserPatch, Expected, Reply<User>),
    Delete(UserId, Expected, Reply<()>),
}

impl Write {
    async fn apply(&self, conn: &mut SqliteAsyncConnection) -> Outcome {
        let conn = DbConn::Sqlite(conn);
        match self {
            Self::Create(user, _) => Outcome::User(users::create_on(conn, user).await),
            Self::Update(id, patch, expected, _) => {
                Outcome::User(users::update_on(conn, *id, patch, expected).await)
            }
            Self::Delete(id, expected, _) => {
                Outcome::Deleted(users::delete_on(conn, *id, expected).await)
            }
        }
    }

    fn answer(self, outcome: Outcome) {
        match (self, outcome) {
            (Self::Create(_, reply) | Self::Update(_, _, _, reply), Outcome::User(result)) => {
                drop(reply.send(result))
            }
            (Self::Delete(_, _, reply), Outcome::Deleted(result)) => drop(reply.send(result)),
            (write, _) => unreachable!("{write:?} answered with another write's outcome"),
        }
    }

    fn fail(self, err: DbError) {
        match self {
            Self::Create(_, reply) | Self::Update(_, _, _, reply) => drop(reply.send(Err(err))),
            Self::Delete(_, _, reply) => drop(reply.send(Err(err))),
        }
    }
}

/// A write's result, until its transaction ends.
enum Outcome {
    User(Result<User, DbError>),
    Deleted(Result<(), DbError>),
}

impl Outcome {
    fn error(&self) -> Option<&DbError> {
        match self {
            Self::User(result) => result.as_ref().err(),
            Self::Deleted(result) => result.as_ref().err(),
        }
    }

    /// Whether it failed in a way that may have undone the transaction.
    fn spoils(&self) -> bool {
        !matches!(
            self.error(),
            None | Some(
                DbError::NotFound | DbError::EmailTaken | DbError::Changed | DbError::Rejected(_)
            )
        )
    }

    /// Whether the connection it ran on is not to be used again.
    fn spoils_connection(&self) -> bool {
        self.error().is_some_and(DbError::spoils_connection)
    }
}

/// The writer's queue of writes; cloning shares it.
#[derive(Clone)]
pub struct GroupCommit(Rc<RefCell<Queue>>);

struct Queue {
    pool: Pool<SqliteAsyncConnection>,
    pending: Vec<Write>,
    /// A task is committing batches; it takes whatever is pending next.
    draining: bool,
}

impl GroupCommit {
    pub fn new(pool: Pool<SqliteAsyncConnection>) -> Self {
        Self(Rc::new(RefCell::new(Queue {
            pool,
            pending: Vec::new(),
            draining: false,
        })))
    }

    /// The pool the next batches check their connection out of.
    pub fn replace_pool(&self, pool: Pool<SqliteAsyncConnection>) {
        self.0.borrow_mut().pool = pool;
    }

    /// Queues a write; its answer comes through its [`Reply`]. Must be
    /// called on the writer's thread (the batches run as its local tasks).
    pub fn push(&self, write: Write) {
        let mut queue = self.0.borrow_mut();
        queue.pending.push(write);
        if !queue.draining {
            queue.draining = true;
            tokio::task::spawn_local(drain(self.clone()));
        }
    }

    /// The next batch and the pool to run it on; `None` once the queue is
    /// empty, and then draining stops.
    fn next_batch(&self) -> Option<(Vec<Write>, Pool<SqliteAsyncConnection>)> {
        let mut queue = self.0.borrow_mut();
        if queue.pending.is_empty() {
            queue.draining = false;
            return None;
        }
        let take = queue.pending.len().min(MAX_BATCH);
        tracing::debug!(writes = take, "a batch of writes");
        let batch = queue.pending.drain(..take).collect();
        Some((batch, queue.pool.clone()))
    }
}

/// Commits batches until the queue is empty.
async fn drain(queue: GroupCommit) {
    let _stopped = Draining(queue.clone());
    while let Some((batch, pool)) = queue.next_batch() {
        commit(&pool, batch).await;
    }
}

/// Ends a draining task. When the queue ran empty this finds nothing to do;
/// when the task is dropped midway (a panic, or the writer's thread
/// stopping), the writes still queued are answered with an error rather than
/// left waiting, and the next write starts a new task.
struct Draining(GroupCommit);

impl Drop for Draining {
    fn drop(&mut self) {
        let pending = {
            let mut queue = (self.0).0.borrow_mut();
            queue.draining = false;
            std::mem::take(&mut queue.pending)
        };
        fail_all(pending, "the writer stopped");
    }
}

/// One transaction for the whole batch, or one per write if it fails;
/// answers every write in it.
async fn commit(pool: &Pool<SqliteAsyncConnection>, batch: Vec<Write>) {
    let mut conn = match pool.get().await {
        Ok(conn) => InTransaction(Some(conn)),
        Err(err) => return fail_all(batch, &err.to_string()),
    };
    if let Err(err) = conn.get().batch_execute("BEGIN IMMEDIATE").await {
        // A connection that cannot begin a write (the file turned read-only,
        // say) is closed: the next batch opens a fresh one.
        drop(conn);
        return fail_all(batch, &err.to_string());
    }
    let mut ran = Vec::with_capacity(batch.len());
    let mut waiting = batch.into_iter();
    while let Some(write) = waiting.next() {
        let outcome = write.apply(conn.get()).await;
        let spoiled = outcome.spoils();
        ran.push((write, outcome));
        if spoiled {
            let writes = ran.into_iter().map(|(write, _)| write).chain(waiting);
            return rerun_alone(pool, conn, writes.collect()).await;
        }
    }
    match conn.get().batch_execute("COMMIT").await {
        Ok(()) => {
            drop(conn.ended());
            for (write, outcome) in ran {
                write.answer(outcome);
            }
        }
        Err(err) => {
            // It may have committed: the writes are not run again.
            tracing::error!(%err, writes = ran.len(), "a batch of writes failed to commit");
            fail_all(
                ran.into_iter().map(|(write, _)| write).collect(),
                &err.to_string(),
            );
        }
    }
}

/// After a statement that spoiled the batch's transaction: rolls it back,
/// then runs each of the batch's writes as its own transaction.
async fn rerun_alone(
    pool: &Pool<SqliteAsyncConnection>,
    mut conn: InTransaction,
    writes: Vec<Write>,
) {
    tracing::warn!(
        writes = writes.len(),
        "a batch of writes was rolled back; running each alone"
    );
    let mut conn = match conn.get().batch_execute("ROLLBACK").await {
        Ok(()) => conn.ended(),
        Err(err) => {
            tracing::error!(%err, "rollback failed; dropping the connection");
            drop(conn);
            match pool.get().await {
                Ok(conn) => conn,
                Err(err) => return fail_all(writes, &err.to_string()),
            }
        }
    };
    let mut spoiled = false;
    for write in writes {
        let outcome = write.apply(&mut conn).await;
        spoiled |= outcome.spoils_connection();
        write.answer(outcome);
    }
    if spoiled {
        drop(Object::take(conn));
    }
}

fn fail_all(writes: Vec<Write>, reason: &str) {
    for write in writes {
        write.fail(DbError::Unavailable(reason.to_owned()));
    }
}

/// The writer's connection while a transaction may be open: unless
/// [`InTransaction::ended`] says the transaction ended, it leaves the pool
/// when dropped rather than go back with a transaction open.
struct InTransaction(Option<Object<SqliteAsyncConnection>>);

impl InTransaction {
    fn get(&mut self) -> &mut SqliteAsyncConnection {
        self.0.as_mut().expect("held until ended or dropped")
    }

    fn ended(mut self) -> Object<SqliteAsyncConnection> {
        self.0.take().expect("held until ended or dropped")
    }
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::DatabaseUrl;
    use crate::db::{migrate, DbPool, PageCache, PoolSpec};

    /// A migrated SQLite file and the writer's queue on a pool of one.
    async fn writer(dir: &tempfile::TempDir) -> (GroupCommit, DbPool) {
        let url = DatabaseUrl::Sqlite(dir.path().join("users.db"));
        migrate(&url).await.unwrap();
        let pool = PoolSpec {
            url,
            size: 1,
            page_cache: PageCache::Default,
        }
        .build();
        let DbPool::Sqlite(sqlite) = &pool else {
            unreachable!("a SQLite url builds a SQLite pool")
        };
        (GroupCommit::new(sqlite.clone()), pool)
    }

    fn new_user(name: &str, email: &str) -> NewUser {
        NewUser::from_json(&json!({"name": name, "email": email})).unwrap()
    }

    fn id(raw: i64) -> UserId {
        UserId::parse(&raw.to_string()).unwrap()
    }

    /// Queues a create; the receiver gets its answer.
    fn create(
        queue: &GroupCommit,
        name: &str,
        email: &str,
    ) -> oneshot::Receiver<Result<User, DbError>> {
        let (reply, answer) = oneshot::channel();
        queue.push(Write::Create(new_user(name, email), reply));
        answer
    }

    async fn names(pool: &DbPool) -> Vec<String> {
        let users = users::list(pool, 0, 100, None).await.unwrap();
        users.into_iter().map(|user| user.name).collect()
    }

    // Writes queued without yielding in between are all pending when the
    // draining task first runs, so each test's writes share one batch.

    #[actix::test]
    async fn one_batch_answers_each_write_and_an_expected_failure_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, pool) = writer(&dir).await;
        let ada = create(&queue, "Ada", "ada@example.com")
            .await
            .unwrap()
            .unwrap();

        let bob = create(&queue, "Bob", "bob@example.com");
        let taken = create(&queue, "Ada again", "ADA@example.com");
        let (reply, renamed) = oneshot::channel();
        let patch = UserPatch::from_json(&json!({"name": "Ada King"})).unwrap();
        queue.push(Write::Update(
            id(ada.id),
            patch.clone(),
            Expected::Any,
            reply,
        ));
        let (reply, missing) = oneshot::channel();
        queue.push(Write::Update(id(999), patch, Expected::Any, reply));
        let (reply, not_deleted) = oneshot::channel();
        queue.push(Write::Delete(id(999), Expected::Any, reply));
        let carol = create(&queue, "Carol", "carol@example.com");

        assert_eq!(bob.await.unwrap().unwrap().email, "bob@example.com");
        assert!(matches!(taken.await.unwrap(), Err(DbError::EmailTaken)));
        assert_eq!(renamed.await.unwrap().unwrap().name, "Ada King");
        assert!(matches!(missing.await.unwrap(), Err(DbError::NotFound)));
        assert!(matches!(not_deleted.await.unwrap(), Err(DbError::NotFound)));
        assert_eq!(carol.await.unwrap().unwrap().name, "Carol");
        assert_eq!(names(&pool).await, ["Ada King", "Bob", "Carol"]);
    }

    #[actix::test]
    async fn a_spoiled_batch_is_rolled_back_and_its_writes_run_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, pool) = writer(&dir).await;
        let DbPool::Sqlite(sqlite) = &pool else {
            unreachable!("a SQLite url builds a SQLite pool")
        };
        sqlite
            .get()
            .await
            .unwrap()
            .batch_execute(
                "CREATE TRIGGER refuse_boom BEFORE INSERT ON users WHEN NEW.name = 'Boom' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .await
            .unwrap();

        let before = create(&queue, "Dave", "dave@example.com");
        let culprit = create(&queue, "Boom", "boom@example.com");
        let after = create(&queue, "Erin", "erin@example.com");

        // Dave's first insert was rolled back with the batch: he is there
        // once, from the rerun, as is Erin; the failing write keeps its error.
        assert_eq!(before.await.unwrap().unwrap().name, "Dave");
        assert!(matches!(culprit.await.unwrap(), Err(DbError::Internal(_))));
        assert_eq!(after.await.unwrap().unwrap().name, "Erin");
        assert_eq!(names(&pool).await, ["Dave", "Erin"]);

        let next = create(&queue, "Frank", "frank@example.com").await.unwrap();
        assert_eq!(next.unwrap().name, "Frank", "the writer goes on");
    }
}
