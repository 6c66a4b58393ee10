//! PostgreSQL fixtures the pipelining, prepared-statement and batching
//! tests share: a fresh database with a worker's connections on it, users
//! made for them, and the statements a connection keeps prepared.

use diesel::dsl::sql;
use diesel::sql_types::{Array, Text};
use diesel_async::RunQueryDsl;
use switchboard::config::DatabaseUrl;
use switchboard::db::conn::Lease;
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
