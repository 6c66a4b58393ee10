//! Group commit for SQLite's writer: the writes that arrive while one
//! transaction commits go together in the next.
//!
//! With `synchronous=FULL` every commit waits for an fsync of the WAL, and
//! one connection commits one transaction at a time, so with a transaction
//! per write the writer did about 5,400 writes a second, whatever the load.
//! Under a mixed load, where switchboard's cached reads are nearly free, most
//! clients end up waiting in that one queue. Here a write is queued; the
//! first write finds no batch running and starts one at once (no added wait
//! when it is quiet); writes that come while it commits form the next batch,
//! up to [`MAX_BATCH`], which costs one `BEGIN IMMEDIATE`, its statements and
//! one `COMMIT` (one fsync). No answer is sent before its batch commits, so
//! an acknowledged write is as durable as before.
//!
//! A failed statement does not undo the others: SQLite rolls back just that
//! statement, and the expected failures (no such user, email taken) are
//! answered as such. Any other failure (disk full, I/O error) may have undone
//! the whole transaction, so the batch is rolled back: that write gets its
//! own error, and the others in the batch are answered 503 and written
//! nowhere.
//!
//! The queue lives on the writer's thread (`Rc`, no lock); it outlives a
//! restart of the actor, which hands it the new pool.

use std::cell::RefCell;
use std::rc::Rc;

use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::SimpleAsyncConnection;
use tokio::sync::oneshot;

use crate::db::pool::SqliteAsyncConnection;
use crate::db::{users, DbConn, DbError};
use crate::domain::{NewUser, User, UserId, UserPatch};

/// Most writes in one transaction: a bound on how long the first of them
/// waits for the last.
pub const MAX_BATCH: usize = 128;

/// Where a write's answer goes once its batch is committed or rolled back.
pub type Reply<T> = oneshot::Sender<Result<T, DbError>>;

/// A write waiting for its batch.
#[derive(Debug)]
pub enum Write {
    Create(NewUser, Reply<User>),
    Update(UserId, UserPatch, Reply<User>),
    Delete(UserId, Reply<()>),
}

/// A write that ran in the open transaction, and its outcome to send once
/// the transaction ends.
enum Applied {
    User(Result<User, DbError>, Reply<User>),
    Deleted(Result<(), DbError>, Reply<()>),
}

impl Write {
    async fn apply(self, conn: &mut SqliteAsyncConnection) -> Applied {
        match self {
            Self::Create(user, reply) => {
                Applied::User(users::create_on(DbConn::Sqlite(conn), &user).await, reply)
            }
            Self::Update(id, patch, reply) => Applied::User(
                users::update_on(DbConn::Sqlite(conn), id, &patch).await,
                reply,
            ),
            Self::Delete(id, reply) => {
                Applied::Deleted(users::delete_on(DbConn::Sqlite(conn), id).await, reply)
            }
        }
    }

    fn fail(self, err: DbError) {
        match self {
            Self::Create(_, reply) | Self::Update(_, _, reply) => drop(reply.send(Err(err))),
            Self::Delete(_, reply) => drop(reply.send(Err(err))),
        }
    }
}

impl Applied {
    /// A failure other than the expected ones, which may have undone the
    /// transaction.
    fn fault(&self) -> Option<String> {
        let err = match self {
            Self::User(Err(err), _) => err,
            Self::Deleted(Err(err), _) => err,
            Self::User(Ok(_), _) | Self::Deleted(Ok(_), _) => return None,
        };
        match err {
            DbError::NotFound | DbError::EmailTaken => None,
            other => Some(other.to_string()),
        }
    }

    fn send(self) {
        match self {
            Self::User(outcome, reply) => drop(reply.send(outcome)),
            Self::Deleted(outcome, reply) => drop(reply.send(outcome)),
        }
    }

    fn fail(self, err: DbError) {
        match self {
            Self::User(_, reply) => drop(reply.send(Err(err))),
            Self::Deleted(_, reply) => drop(reply.send(Err(err))),
        }
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
            actix::spawn(drain(self.clone()));
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
        for write in pending {
            write.fail(DbError::Unavailable("the writer stopped".into()));
        }
    }
}

/// One transaction for the whole batch; answers every write in it.
async fn commit(pool: &Pool<SqliteAsyncConnection>, batch: Vec<Write>) {
    let mut conn = match pool.get().await {
        Ok(conn) => InTransaction(Some(conn)),
        Err(err) => {
            let reason = err.to_string();
            for write in batch {
                write.fail(DbError::Unavailable(reason.clone()));
            }
            return;
        }
    };
    if let Err(err) = conn.get().batch_execute("BEGIN IMMEDIATE").await {
        conn.done();
        let reason = err.to_string();
        for write in batch {
            write.fail(DbError::Unavailable(reason.clone()));
        }
        return;
    }
    let mut applied = Vec::with_capacity(batch.len());
    let mut waiting = batch.into_iter();
    let mut fault = None;
    for write in waiting.by_ref() {
        let done = write.apply(conn.get()).await;
        fault = done.fault();
        applied.push(done);
        if fault.is_some() {
            break;
        }
    }
    let committed = match fault {
        // The write that failed keeps its own error.
        Some(reason) => Err((reason, applied.pop())),
        None => match conn.get().batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            Err(err) => Err((err.to_string(), None)),
        },
    };
    match committed {
        Ok(()) => {
            conn.done();
            applied.into_iter().for_each(Applied::send);
        }
        Err((reason, culprit)) => {
            tracing::error!(
                reason,
                writes = applied.len() + waiting.len() + usize::from(culprit.is_some()),
                "a batch of writes failed and was rolled back"
            );
            match conn.get().batch_execute("ROLLBACK").await {
                Ok(()) => conn.done(),
                Err(err) => tracing::error!(%err, "rollback failed; dropping the connection"),
            }
            let rolled_back =
                || DbError::Unavailable(format!("rolled back with a batch: {reason}"));
            if let Some(culprit) = culprit {
                culprit.send();
            }
            for done in applied {
                done.fail(rolled_back());
            }
            for write in waiting {
                write.fail(rolled_back());
            }
        }
    }
}

/// The writer's connection while a transaction may be open: unless
/// [`InTransaction::done`] says the transaction ended, it leaves the pool
/// when dropped rather than go back with a transaction open.
struct InTransaction(Option<Object<SqliteAsyncConnection>>);

impl InTransaction {
    fn get(&mut self) -> &mut SqliteAsyncConnection {
        self.0.as_mut().expect("held until dropped")
    }

    fn done(mut self) {
        self.0.take();
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
    use crate::db::{migrate, DbPool};

    /// A migrated SQLite file and the writer's queue on a pool of one.
    async fn writer(dir: &tempfile::TempDir) -> (GroupCommit, DbPool) {
        let url = DatabaseUrl::Sqlite(dir.path().join("users.db"));
        migrate(&url).await.unwrap();
        let pool = DbPool::build(&url, 1).unwrap();
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
        let users = users::list(pool, 0, 100).await.unwrap();
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
        queue.push(Write::Update(id(ada.id), patch.clone(), reply));
        let (reply, missing) = oneshot::channel();
        queue.push(Write::Update(id(999), patch, reply));
        let (reply, not_deleted) = oneshot::channel();
        queue.push(Write::Delete(id(999), reply));
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
    async fn a_fault_rolls_the_whole_batch_back_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, pool) = writer(&dir).await;
        let DbPool::Sqlite(sqlite) = &pool else {
            unreachable!()
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

        assert!(matches!(
            before.await.unwrap(),
            Err(DbError::Unavailable(_))
        ));
        assert!(matches!(culprit.await.unwrap(), Err(DbError::Internal(_))));
        assert!(matches!(after.await.unwrap(), Err(DbError::Unavailable(_))));
        assert!(
            names(&pool).await.is_empty(),
            "a rolled-back write was kept"
        );

        let again = create(&queue, "Dave", "dave@example.com").await.unwrap();
        assert_eq!(again.unwrap().name, "Dave");
        assert_eq!(names(&pool).await, ["Dave"]);
    }
}
