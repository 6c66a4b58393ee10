//! PostgreSQL connections shared by many queries at once (pipelining), on a
//! real database: what a query answers must not depend on which queries
//! share its connection, and a connection that dies must be replaced.

use std::pin::pin;
use std::time::Duration;

use diesel::dsl::sql;
use diesel::sql_types::{Array, Integer};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::future::join_all;
use futures_util::FutureExt;
use switchboard::db::{users, Checkout, Connections, DbError, QueryCost};
use switchboard::domain::{Expected, User, UserId, UserPatch};

use crate::helpers::{eventually, spawn_app_with, Backend, TestDatabase, POSTGRES_ADMIN_URL};
use crate::pg::{id_of, new_user, pipeline};

/// Creates users `0..count` with all their queries in flight together.
async fn create_at_once(conns: &Connections, count: usize) -> Vec<Result<User, DbError>> {
    join_all((0..count).map(|n| async move { users::create(conns, &new_user(n)).await })).await
}

#[actix_web::test]
async fn queries_sharing_one_connection_each_get_their_own_answer() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    let created: Vec<User> = create_at_once(&conns, 50)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let read = join_all(created.iter().map(|user| users::get(&conns, id_of(user)))).await;
    for (user, read) in created.iter().zip(read) {
        let read = read.unwrap();
        assert_eq!((read.id, &read.email), (user.id, &user.email));
    }
    let status = conns.status();
    assert_eq!(
        (status.size, status.idle),
        (1, 1),
        "one connection carried them all"
    );
}

#[actix_web::test]
async fn a_connection_carries_eight_one_row_queries_or_two_pages_at_once() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    // A share held here stands for a query in flight on the connection.
    let first = conns.get(QueryCost::Page).await.unwrap();
    let second = conns.get(QueryCost::Page).await.unwrap();
    let mut third = pin!(conns.get(QueryCost::Page));
    assert!(
        third.as_mut().now_or_never().is_none(),
        "a third page waits"
    );
    assert_eq!(conns.status().waiting, 1);
    drop(first);
    let third = third.await.unwrap();
    drop((second, third));

    let mut rows = Vec::new();
    for _ in 0..8 {
        rows.push(conns.get(QueryCost::Row).await.unwrap());
    }
    let status = conns.status();
    assert_eq!((status.size, status.idle), (1, 0), "all on one connection");
    let mut ninth = pin!(conns.get(QueryCost::Row));
    assert!(ninth.as_mut().now_or_never().is_none(), "a ninth row waits");
    rows.pop();
    rows.push(ninth.await.unwrap());
    drop(rows);

    let status = conns.status();
    assert_eq!((status.size, status.idle, status.waiting), (1, 1, 0));
}

#[actix_web::test]
async fn a_failing_query_fails_alone_among_those_sharing_its_connection() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    let first = users::create(&conns, &new_user(1)).await.unwrap();
    let missing = UserId::parse("424242").unwrap();
    let patch = UserPatch::from_json(&serde_json::json!({ "name": "Renamed" })).unwrap();

    let (again, other) = (new_user(1), new_user(2));
    let (taken, absent, renamed, second) = futures_util::join!(
        users::create(&conns, &again),
        users::get(&conns, missing),
        users::update(&conns, id_of(&first), &patch, &Expected::Any),
        users::create(&conns, &other),
    );
    assert!(matches!(taken, Err(DbError::EmailTaken)), "{taken:?}");
    assert!(matches!(absent, Err(DbError::NotFound)), "{absent:?}");
    assert_eq!(renamed.unwrap().name, "Renamed");
    assert_eq!(second.unwrap().email, "user2@example.com");
    assert_eq!(users::list(&conns, 0, 10, None).await.unwrap().len(), 2);
}

#[actix_web::test]
async fn more_queries_than_connections_at_start_all_get_answers() {
    let Some((_db, conns)) = pipeline(2).await else {
        return;
    };
    // The first queries find no connection open; most wait for the two
    // being opened rather than fail.
    let created = create_at_once(&conns, 40).await;
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    assert_eq!(conns.status().size, 2);
}

#[actix_web::test]
async fn a_query_dropped_while_its_connection_opens_leaves_nothing_behind() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    let first = new_user(1);
    let mut dropped = Box::pin(users::create(&conns, &first));
    // Opening a connection takes round trips, so the first poll waits.
    assert!(futures_util::poll!(dropped.as_mut()).is_pending());
    drop(dropped);

    // The one connection the pool allows can still be opened and used.
    let created =
        tokio::time::timeout(Duration::from_secs(10), users::create(&conns, &new_user(2)))
            .await
            .expect("a query waited for a connection that no one is opening");
    assert_eq!(created.unwrap().email, "user2@example.com");
    assert_eq!(conns.status().waiting, 0);
}

#[actix_web::test]
async fn a_connection_the_server_ended_is_replaced() {
    let Some((db, conns)) = pipeline(1).await else {
        return;
    };
    let user = users::create(&conns, &new_user(1)).await.unwrap();
    let TestDatabase::Postgres { name } = &db else {
        unreachable!()
    };
    let mut admin = AsyncPgConnection::establish(POSTGRES_ADMIN_URL)
        .await
        .unwrap();
    let ended = backends(&mut admin, name).await;
    assert_eq!(ended.len(), 1);
    admin
        .batch_execute(&format!("SELECT pg_terminate_backend({})", ended[0]))
        .await
        .unwrap();

    // A read sent before the connection's end is seen fails on it, and is
    // sent once more on a new connection: the caller gets its answer.
    let read = users::get(&conns, id_of(&user)).await.unwrap();
    assert_eq!(read.id, user.id);
    let now = backends(&mut admin, name).await;
    assert!(now.len() == 1 && now != ended, "{ended:?} then {now:?}");
    assert_eq!(conns.status().size, 1);
}

#[actix_web::test]
async fn a_read_in_flight_when_the_database_ends_its_sessions_is_answered() {
    let Some(app) = spawn_app_with(Backend::Postgres, |s| s.cache.max_entries = 0).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;
    // The read waits for this lock, so it is in flight when the sessions
    // end.
    let locker = app.database().lock_users().await;
    let read = actix_web::rt::spawn(
        app.client
            .get(app.url(&format!("/users/{}", user["id"])))
            .send(),
    );
    let waiting = "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let watched = tokio::sync::Mutex::new(locker);
    assert!(
        eventually(Duration::from_secs(10), || async {
            !sql_pids(&mut *watched.lock().await, waiting)
                .await
                .is_empty()
        })
        .await,
        "the read never reached the database"
    );
    let mut locker = watched.into_inner();
    let others = "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()";
    for pid in sql_pids(&mut locker, others).await {
        locker
            .batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
            .await
            .unwrap();
    }
    locker.batch_execute("COMMIT").await.unwrap();

    let response = read.await.unwrap().expect("GET");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!((&body["id"], &body["email"]), (&user["id"], &user["email"]));
}

/// The process ids a query of `pg_stat_activity` selects.
pub async fn sql_pids(conn: &mut AsyncPgConnection, query: &str) -> Vec<i32> {
    let pids = format!("ARRAY({query})");
    diesel::select(sql::<Array<Integer>>(&pids))
        .get_result(conn)
        .await
        .unwrap()
}

/// The server processes connected to database `name`.
async fn backends(admin: &mut AsyncPgConnection, name: &str) -> Vec<i32> {
    let query = format!("SELECT pid FROM pg_stat_activity WHERE datname = '{name}'");
    sql_pids(admin, &query).await
}

#[actix_web::test]
async fn a_closed_pipeline_answers_unavailable() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    users::create(&conns, &new_user(1)).await.unwrap();
    conns.close();
    let after = users::get(&conns, UserId::parse("1").unwrap()).await;
    assert!(matches!(after, Err(DbError::Unavailable(_))), "{after:?}");
}
