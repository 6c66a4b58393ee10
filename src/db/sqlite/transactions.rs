//! SQLite's way to run a batch of writes ([`crate::db::batch`]): one
//! transaction per batch, on the writer's one connection.
//!
//! With `synchronous=FULL` every commit waits for an fsync of the WAL, and
//! one connection commits one transaction at a time, so with a transaction
//! per write the writer's rate would be the disk's fsync rate whatever the
//! load. A batch costs one `BEGIN IMMEDIATE`, its statements and one
//! `COMMIT` (one fsync). Every write has the same shape: creates, patches
//! and deletes, conditional or not, share a transaction, each statement
//! run in turn.
//!
//! A statement that fails in a way that leaves the transaction usable is
//! answered as such (no such user, an email taken, a changed version, a
//! refused value: SQLite undoes just that statement). Any other failure
//! (disk full, I/O error) may have undone the whole transaction, so the
//! batch is rolled back and refused, and its writes run alone. A failed
//! `COMMIT` may have committed: its writes are not run again.

use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::SimpleAsyncConnection;

use crate::db::batch::{Batching, Together};
use crate::db::conn::{DbConn, SqliteAsyncConnection};
use crate::db::write::{Write, Written};
use crate::db::DbError;
use crate::domain::{User, UserId};

/// Runs the writer's batches on its pool of one connection.
#[derive(Clone)]
pub struct Transactions(pub Pool<SqliteAsyncConnection>);

/// The one shape of SQLite's writes: any may share a transaction.
#[derive(Debug, PartialEq, Eq)]
pub struct AnyWrite;

impl Batching for Transactions {
    type Query = Write;
    type Output = User;
    const MAX_BATCH: usize = 128;
    type Shape = AnyWrite;

    fn shape(_: &Write) -> Option<AnyWrite> {
        Some(AnyWrite)
    }

    fn orders(write: &Write) -> Option<UserId> {
        write.user()
    }

    async fn together(&self, _: &AnyWrite, batch: &[Write]) -> Together<Self> {
        let mut conn = match self.0.get().await {
            Ok(conn) => InTransaction(Some(conn)),
            Err(err) => return Together::Failed(err.into()),
        };
        if let Err(err) = conn.get().batch_execute("BEGIN IMMEDIATE").await {
            // A connection that cannot begin a write (the file turned
            // read-only, say) is closed: the next batch opens a fresh one.
            return Together::Failed(err.into());
        }
        let mut answers = Vec::with_capacity(batch.len());
        for write in batch {
            let answer = write.on(DbConn::Sqlite(conn.get())).await;
            match answer {
                Err(err) if spoils_transaction(&err) => return roll_back(conn, err).await,
                answer => answers.push(answer),
            }
        }
        match conn.get().batch_execute("COMMIT").await {
            Ok(()) => {
                drop(conn.ended());
                Together::Answered(answers)
            }
            Err(err) => Together::Failed(DbError::Unavailable(err.to_string())),
        }
    }

    async fn alone(&self, write: &Write) -> Written {
        write.alone(&self.0).await
    }
}

/// Whether a statement's failure may have undone the whole transaction.
fn spoils_transaction(err: &DbError) -> bool {
    !matches!(
        err,
        DbError::NotFound | DbError::EmailTaken | DbError::Changed | DbError::Rejected(_)
    )
}

/// Rolls the batch's transaction back after a statement spoiled it; the
/// connection is dropped if even that fails.
async fn roll_back(mut conn: InTransaction, cause: DbError) -> Together<Transactions> {
    match conn.get().batch_execute("ROLLBACK").await {
        Ok(()) => drop(conn.ended()),
        Err(err) => tracing::error!(%err, "rollback failed; dropping the connection"),
    }
    Together::Refused(cause)
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
    use diesel_async::SimpleAsyncConnection;
    use serde_json::json;

    use super::*;
    use crate::db::batch::BatchQueue;
    use crate::db::DatabaseUrl;
    use crate::db::{migrate, users, DbPool, PageCache, PoolSpec};
    use crate::domain::{Expected, NewUser, User, UserId, UserPatch};

    /// A migrated SQLite file and the writer's queue on a pool of one.
    async fn writer(dir: &tempfile::TempDir) -> (BatchQueue<Transactions>, DbPool) {
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
        (BatchQueue::new(Transactions(sqlite.clone())), pool)
    }

    fn create(name: &str, email: &str) -> Write {
        Write::Create(NewUser::from_json(&json!({"name": name, "email": email})).unwrap())
    }

    fn id(raw: i64) -> UserId {
        UserId::parse(&raw.to_string()).unwrap()
    }

    /// Submits writes in order, without yielding in between, so that all
    /// are pending when the queue's task first runs and share a batch
    /// where the rules let them.
    async fn submit_all(queue: &BatchQueue<Transactions>, writes: Vec<Write>) -> Vec<Written> {
        let submitted = writes.into_iter().map(|write| {
            let queue = queue.clone();
            tokio::task::spawn_local(async move { queue.submit(write).await })
        });
        let handles: Vec<_> = submitted.collect();
        let mut answers = Vec::new();
        for handle in handles {
            answers.push(handle.await.unwrap());
        }
        answers
    }

    async fn names(pool: &DbPool) -> Vec<String> {
        let users = users::list(pool, 0, 100, None).await.unwrap();
        users.into_iter().map(|user: User| user.name).collect()
    }

    #[actix::test]
    async fn one_batch_answers_each_write_and_an_expected_failure_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, pool) = writer(&dir).await;
        let ada = queue
            .submit(create("Ada", "ada@example.com"))
            .await
            .unwrap();
        let patch = UserPatch::from_json(&json!({"name": "Ada King"})).unwrap();

        let answers = submit_all(
            &queue,
            vec![
                create("Bob", "bob@example.com"),
                create("Ada again", "ADA@example.com"),
                Write::Patch {
                    id: id(ada.id),
                    patch: patch.clone(),
                    expected: Expected::Any,
                },
                Write::Patch {
                    id: id(999),
                    patch,
                    expected: Expected::Any,
                },
                Write::Delete {
                    id: id(998),
                    expected: Expected::Any,
                },
                create("Carol", "carol@example.com"),
            ],
        )
        .await;

        assert_eq!(answers[0].as_ref().unwrap().email, "bob@example.com");
        assert!(matches!(answers[1], Err(DbError::EmailTaken)));
        assert_eq!(answers[2].as_ref().unwrap().name, "Ada King");
        assert!(matches!(answers[3], Err(DbError::NotFound)));
        assert!(matches!(answers[4], Err(DbError::NotFound)));
        assert_eq!(answers[5].as_ref().unwrap().name, "Carol");
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

        let answers = submit_all(
            &queue,
            vec![
                create("Dave", "dave@example.com"),
                create("Boom", "boom@example.com"),
                create("Erin", "erin@example.com"),
            ],
        )
        .await;

        // Dave's first insert was rolled back with the batch: he is there
        // once, from the rerun, as is Erin; the failing write keeps its error.
        assert_eq!(answers[0].as_ref().unwrap().name, "Dave");
        assert!(matches!(answers[1], Err(DbError::Internal(_))));
        assert_eq!(answers[2].as_ref().unwrap().name, "Erin");
        assert_eq!(names(&pool).await, ["Dave", "Erin"]);

        let next = queue.submit(create("Frank", "frank@example.com")).await;
        assert_eq!(next.unwrap().name, "Frank", "the writer goes on");
    }
}
