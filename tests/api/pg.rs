//! PostgreSQL fixtures the pipelining, prepared-statement and batching
//! tests share: a fresh database with a worker's connections on it, users
//! made for them, and the statements a connection keeps prepared.

use diesel::dsl::sql;
use diesel::sql_types::{Array, Text};
use diesel_async::RunQueryDsl;
use switchboard::config::DatabaseUrl;
use switchboard::db::conn::Lease;
use switchboard::db::postgres::Pipeline;
use switchboard::db::{
    migrate, users, Checkout, Connections, DbConn, PageCache, PoolSpec, QueryCost,
};
use switchboard::domain::{NewUser, User, UserId};

use crate::helpers::{Backend, TestDatabase};

/// A fresh, migrated database and a pipeline of at most `size` connections.
pub async fn pipeline(size: usize) -> Option<(TestDatabase, Connections)> {
    let db = TestDatabase::create(Backend::Postgres).await?;
    let url = DatabaseUrl::parse(&db.url()).unwrap();
    migrate(&url).await.unwrap();
    let pool = PoolSpec {
        url,
        size,
        page_cache: PageCache::Default,
    };
    let conns = Connections::new(pool.build());
    Some((db, conns))
}

/// The PostgreSQL pipeline of `conns`, for a strategy of batches to run on.
pub fn shared(conns: &Connections) -> std::rc::Rc<Pipeline> {
    let Connections::Postgres(pipeline) = conns else {
        unreachable!("a PostgreSQL pipeline")
    };
    pipeline.clone()
}

pub fn new_user(n: usize) -> NewUser {
    NewUser::from_json(&serde_json::json!({
        "name": format!("User {n}"),
        "email": format!("user{n}@example.com"),
    }))
    .unwrap()
}

/// Creates users `0..count`, each after the one before.
pub async fn create_one_by_one(conns: &Connections, count: usize) -> Vec<User> {
    let mut created = Vec::new();
    for n in 0..count {
        created.push(users::create(conns, &new_user(n)).await.unwrap());
    }
    created
}

pub fn id_of(user: &User) -> UserId {
    UserId::parse(&user.id.to_string()).unwrap()
}

/// The statements a connection keeps prepared, as PostgreSQL lists them.
pub async fn kept_prepared(conns: &Connections) -> Vec<String> {
    let mut lease = conns.get(QueryCost::Row).await.unwrap();
    let DbConn::Postgres(mut conn) = lease.conn() else {
        unreachable!("a PostgreSQL pipeline")
    };
    diesel::select(sql::<Array<Text>>(
        "ARRAY(SELECT statement FROM pg_prepared_statements)",
    ))
    .get_result(&mut conn)
    .await
    .unwrap()
}

/// How many of the kept statements begin with `prefix`.
pub fn count_kept(kept: &[String], prefix: &str) -> usize {
    kept.iter().filter(|s| s.starts_with(prefix)).count()
}

/// From now on, notes which transaction wrote each row of `users` (insert,
/// update or delete): writes that went as one statement share one.
pub async fn note_writers(db: &TestDatabase) {
    db.execute_unnoticed(
        "CREATE TABLE written_by (id BIGINT NOT NULL, xid BIGINT NOT NULL);
         CREATE FUNCTION note_writer() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO written_by VALUES (COALESCE(NEW.id, OLD.id), txid_current());
             RETURN NULL;
         END $$;
         CREATE TRIGGER note_writer AFTER INSERT OR UPDATE OR DELETE ON users
             FOR EACH ROW EXECUTE FUNCTION note_writer();",
    )
    .await;
}

/// How many transactions wrote the users `ids` since [`note_writers`].
pub async fn writers_of(db: &TestDatabase, ids: &[i64]) -> i64 {
    use diesel::sql_types::BigInt;
    use diesel_async::{AsyncConnection, AsyncPgConnection};
    #[derive(diesel::QueryableByName)]
    struct Writers {
        #[diesel(sql_type = BigInt)]
        writers: i64,
    }
    let mut conn = AsyncPgConnection::establish(&db.url()).await.unwrap();
    let counted: Writers = diesel::sql_query(
        "SELECT count(DISTINCT xid) AS writers FROM written_by WHERE id = ANY($1)",
    )
    .bind::<Array<BigInt>, _>(ids)
    .get_result(&mut conn)
    .await
    .unwrap();
    counted.writers
}
