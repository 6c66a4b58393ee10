//! PostgreSQL connections shared by many queries at once (pipelining), on a
//! real database: what a query answers must not depend on which queries
//! share its connection, and a connection that dies must be replaced.

use std::pin::pin;
use std::time::Duration;

use diesel::dsl::sql;
use diesel::sql_types::{Array, Integer, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::future::join_all;
use futures_util::FutureExt;
use switchboard::config::DatabaseUrl;
use switchboard::db::write_batch::{
    Create, CreateBatches, Delete, DeleteBatches, Patch, PatchBatches,
};
use switchboard::db::{
    migrate, users, Checkout, Connections, DbConn, DbError, PageCache, PoolSpec, QueryCost,
};
use switchboard::domain::{Expected, NewUser, User, UserId, UserPatch};

use crate::helpers::{eventually, spawn_app_with, Backend, TestDatabase, POSTGRES_ADMIN_URL};

/// A fresh, migrated database and a pipeline of at most `size` connections.
async fn pipeline(size: usize) -> Option<(TestDatabase, Connections)> {
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

fn new_user(n: usize) -> NewUser {
    NewUser::from_json(&serde_json::json!({
        "name": format!("User {n}"),
        "email": format!("user{n}@example.com"),
    }))
    .unwrap()
}

/// Creates users `0..count` with all their queries in flight together.
async fn create_at_once(conns: &Connections, count: usize) -> Vec<Result<User, DbError>> {
    join_all((0..count).map(|n| async move { users::create(conns, &new_user(n)).await })).await
}

/// Creates users `0..count`, each after the one before.
async fn create_one_by_one(conns: &Connections, count: usize) -> Vec<User> {
    let mut created = Vec::new();
    for n in 0..count {
        created.push(users::create(conns, &new_user(n)).await.unwrap());
    }
    created
}

fn id_of(user: &User) -> UserId {
    UserId::parse(&user.id.to_string()).unwrap()
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
    let Some(app) = spawn_app_with(Backend::Postgres, |s| s.cache_max_entries = 0).await else {
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

/// The statements a connection keeps prepared, as PostgreSQL lists them.
async fn kept_prepared(conns: &Connections) -> Vec<String> {
    use switchboard::db::conn::Lease;

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

/// A create is prepared once per connection and kept, as reads are: not
/// parsed and planned again for every new user.
#[actix_web::test]
async fn creates_reuse_their_prepared_statement() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    for n in 0..3 {
        users::create(&conns, &new_user(n)).await.unwrap();
    }
    let kept = kept_prepared(&conns).await;
    assert_eq!(count_kept(&kept, "INSERT INTO \"users\""), 1, "{kept:#?}");
}

/// How many of the kept statements begin with `prefix`.
fn count_kept(kept: &[String], prefix: &str) -> usize {
    kept.iter().filter(|s| s.starts_with(prefix)).count()
}

/// Patches and deletes are prepared once per connection as well, whatever
/// fields a patch holds: one statement for unconditional writes and one
/// for conditional ones (`If-Match`), not one per shape of patch.
#[actix_web::test]
async fn patches_and_deletes_reuse_their_prepared_statements() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    let created = create_one_by_one(&conns, 4).await;
    let patches = [
        serde_json::json!({"name": "Renamed"}),
        serde_json::json!({"email": "moved@example.com"}),
        serde_json::json!({"name": "Both", "email": "both@example.com"}),
    ];
    for (user, body) in created.iter().zip(&patches) {
        let patch = UserPatch::from_json(body).unwrap();
        let updated = users::update(&conns, id_of(user), &patch, &Expected::Any)
            .await
            .unwrap();
        let patch = UserPatch::from_json(&serde_json::json!({"name": "Again"})).unwrap();
        let expected = Expected::OneOf(vec![updated.version()]);
        users::update(&conns, id_of(user), &patch, &expected)
            .await
            .unwrap();
    }
    for user in &created[..2] {
        users::delete(&conns, id_of(user), &Expected::Any)
            .await
            .unwrap();
    }
    for user in &created[2..] {
        let current = users::get(&conns, id_of(user)).await.unwrap();
        let expected = Expected::OneOf(vec![current.version()]);
        users::delete(&conns, id_of(user), &expected).await.unwrap();
    }
    let kept = kept_prepared(&conns).await;
    assert_eq!(count_kept(&kept, "UPDATE users"), 2, "{kept:#?}");
    assert_eq!(count_kept(&kept, "DELETE FROM \"users\""), 2, "{kept:#?}");
}

fn new_user_named(name: &str, email: &str) -> NewUser {
    NewUser::from_json(&serde_json::json!({"name": name, "email": email})).unwrap()
}

/// Creates that arrive together go to PostgreSQL as one statement, and
/// each is answered as it would be alone: its row, or 409 for an email
/// taken before or by an earlier create of the same batch.
#[actix_web::test]
async fn creates_arriving_together_go_as_one_statement_each_answered_on_its_own() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    users::create(&conns, &new_user_named("Before", "taken@example.com"))
        .await
        .unwrap();
    // Each of the first ten emails comes again (another case) right after
    // its first create, and the last create's email was taken before.
    let mut all = Vec::new();
    for n in 0..30 {
        all.push((
            new_user_named("Batched", &format!("u{n}@example.com")),
            true,
        ));
        if n < 10 {
            all.push((new_user_named("Again", &format!("U{n}@Example.com")), false));
        }
    }
    all.push((new_user_named("Late", "Taken@Example.com"), false));
    let batches = CreateBatches::default();
    let answers = join_all(
        all.iter()
            .map(|(user, _)| batches.run(&conns, Create(user.clone()))),
    )
    .await;

    for ((user, first), answer) in all.iter().zip(&answers) {
        if *first {
            let created = answer.as_ref().unwrap();
            assert_eq!(created.email, user.email.as_str());
            assert_eq!(users::get(&conns, id_of(created)).await.unwrap(), *created);
        } else {
            assert!(matches!(answer, Err(DbError::EmailTaken)), "{answer:?}");
        }
    }
    let stored = users::list(&conns, 0, 100, None).await.unwrap();
    assert_eq!(stored.len(), 1 + 30);
    let kept = kept_prepared(&conns).await;
    assert_eq!(count_kept(&kept, "INSERT INTO users (name"), 1, "{kept:#?}");
}

/// A batch the database refuses as a whole (one row breaks a constraint)
/// fails no create that would have succeeded alone: each runs again alone.
#[actix_web::test]
async fn a_batch_the_database_refuses_runs_each_create_alone() {
    let Some((db, conns)) = pipeline(1).await else {
        return;
    };
    db.execute_unnoticed("ALTER TABLE users ADD CONSTRAINT not_refused CHECK (name <> 'Refused')")
        .await;
    let batch: Vec<_> = (0..10)
        .map(|n| {
            let name = if n == 5 { "Refused" } else { "Accepted" };
            new_user_named(name, &format!("r{n}@example.com"))
        })
        .collect();
    let batches = CreateBatches::default();
    let answers = join_all(
        batch
            .iter()
            .map(|user| batches.run(&conns, Create(user.clone()))),
    )
    .await;
    for (n, answer) in answers.iter().enumerate() {
        match n {
            5 => assert!(matches!(answer, Err(DbError::Rejected(_))), "{answer:?}"),
            _ => assert_eq!(answer.as_ref().unwrap().name, "Accepted"),
        }
    }
    assert_eq!(users::list(&conns, 0, 100, None).await.unwrap().len(), 9);
}

fn patch_of(body: serde_json::Value) -> UserPatch {
    UserPatch::from_json(&body).unwrap()
}

/// Patches that arrive together go to PostgreSQL as one statement, each
/// answered on its own; a second patch of one user waits for the next
/// batch, so the later one wins.
#[actix_web::test]
async fn patches_arriving_together_go_as_one_statement_each_answered_on_its_own() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    let created = create_one_by_one(&conns, 20).await;
    let mut all: Vec<(UserId, UserPatch)> = created
        .iter()
        .enumerate()
        .map(|(n, user)| {
            let body = match n % 3 {
                0 => serde_json::json!({"name": format!("Renamed {n}")}),
                1 => serde_json::json!({"email": format!("moved{n}@example.com")}),
                _ => serde_json::json!({"name": format!("Both {n}"), "email": format!("both{n}@example.com")}),
            };
            (id_of(user), patch_of(body))
        })
        .collect();
    all.push((
        UserId::parse("999999").unwrap(),
        patch_of(serde_json::json!({"name": "Nobody"})),
    ));
    all.push((
        id_of(&created[0]),
        patch_of(serde_json::json!({"name": "Later"})),
    ));
    let batches = PatchBatches::default();
    let answers = join_all(
        all.iter()
            .map(|(id, patch)| batches.run(&conns, Patch(*id, patch.clone()))),
    )
    .await;

    for (n, (user, answer)) in created.iter().zip(&answers).enumerate() {
        let patched = answer.as_ref().unwrap();
        assert_eq!(patched.id, user.id);
        let (name, email) = match n % 3 {
            0 => (format!("Renamed {n}"), user.email.clone()),
            1 => (user.name.clone(), format!("moved{n}@example.com")),
            _ => (format!("Both {n}"), format!("both{n}@example.com")),
        };
        assert_eq!((&patched.name, &patched.email), (&name, &email), "user {n}");
        assert!(patched.updated_at > user.updated_at);
    }
    assert!(
        matches!(answers[20], Err(DbError::NotFound)),
        "{:?}",
        answers[20]
    );
    assert_eq!(answers[21].as_ref().unwrap().name, "Later");
    let first = users::get(&conns, id_of(&created[0])).await.unwrap();
    assert_eq!(first.name, "Later");
    let kept = kept_prepared(&conns).await;
    assert_eq!(count_kept(&kept, "WITH locked AS"), 1, "{kept:#?}");
}

/// Deletes that arrive together go to PostgreSQL as one statement, each
/// answered on its own: its user gone, or `NotFound` for a user that was
/// not there; a second delete of one user waits for the next batch and
/// finds it gone.
#[actix_web::test]
async fn deletes_arriving_together_go_as_one_statement_each_answered_on_its_own() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    let created = create_one_by_one(&conns, 12).await;
    let untouched = &created[6..];
    let mut ids: Vec<UserId> = created[..6].iter().map(id_of).collect();
    ids.insert(2, UserId::parse("999999").unwrap());
    ids.push(id_of(&created[0]));
    let batches = DeleteBatches::default();
    let answers = join_all(ids.iter().map(|id| batches.run(&conns, Delete(*id)))).await;

    let failed: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, answer)| answer.is_err())
        .map(|(place, _)| place)
        .collect();
    assert_eq!(failed, [2, 7], "{answers:?}");
    assert!(matches!(answers[2], Err(DbError::NotFound)), "{answers:?}");
    assert!(matches!(answers[7], Err(DbError::NotFound)), "{answers:?}");
    for user in &created[..6] {
        let read = users::get(&conns, id_of(user)).await;
        assert!(matches!(read, Err(DbError::NotFound)), "{read:?}");
    }
    for user in untouched {
        assert_eq!(&users::get(&conns, id_of(user)).await.unwrap(), user);
    }
    let kept = kept_prepared(&conns).await;
    let batched = kept
        .iter()
        .filter(|s| s.starts_with("WITH locked AS") && s.contains("DELETE FROM users"))
        .count();
    assert_eq!(batched, 1, "{kept:#?}");
}

/// A batch of patches that fails as a whole (one takes another user's
/// email) fails no patch that would have succeeded alone.
#[actix_web::test]
async fn a_batch_of_patches_with_a_taken_email_runs_each_alone() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    let created = create_one_by_one(&conns, 6).await;
    let batches = PatchBatches::default();
    let answers = join_all(created.iter().enumerate().map(|(n, user)| {
        let body = match n {
            3 => serde_json::json!({"email": "USER0@example.com"}),
            _ => serde_json::json!({"name": format!("Renamed {n}")}),
        };
        batches.run(&conns, Patch(id_of(user), patch_of(body)))
    }))
    .await;
    for (n, answer) in answers.iter().enumerate() {
        match n {
            3 => assert!(matches!(answer, Err(DbError::EmailTaken)), "{answer:?}"),
            _ => assert_eq!(answer.as_ref().unwrap().name, format!("Renamed {n}")),
        }
    }
}

/// Two workers' batches patching the same five users in opposite orders
/// do not deadlock: rows are locked in id order. A session holds the middle
/// user locked until both batches wait, so both are in flight together;
/// with deadlock_timeout at 10 s for the database, a deadlock holds them
/// that long before PostgreSQL breaks it (as it did when each batch locked
/// its users in the order it listed them), where they otherwise finish at
/// once when the lock goes.
#[actix_web::test]
async fn two_batches_of_patches_over_the_same_users_do_not_deadlock() {
    let Some((db, _conns)) = pipeline(1).await else {
        return;
    };
    let url = db.url();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let mut admin = AsyncPgConnection::establish(&url).await.unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET deadlock_timeout = '10s'; \
             INSERT INTO users (name, email, email_key, created_at, updated_at) \
             SELECT 'User ' || n, 'user' || n || '@example.com', 'user' || n || '@example.com', \
             now(), now() FROM generate_series(1, 10000) AS n; ANALYZE users"
        ))
        .await
        .unwrap();
    // Each worker has connections of its own, opened after the setting.
    let spec = || PoolSpec {
        url: DatabaseUrl::parse(&url).unwrap(),
        size: 1,
        page_cache: PageCache::Default,
    };
    let (conns, other_conns) = (
        Connections::new(spec().build()),
        Connections::new(spec().build()),
    );
    let ids: Vec<UserId> = (1..=10_000)
        .step_by(2000)
        .map(|n| UserId::parse(&n.to_string()).unwrap())
        .collect();
    let middle = ids[ids.len() / 2].get();
    let mut locker = AsyncPgConnection::establish(&url).await.unwrap();
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT id FROM users WHERE id = {middle} FOR UPDATE"
        ))
        .await
        .unwrap();

    let patch = |id: &UserId, worker: &str| {
        Patch(
            *id,
            patch_of(serde_json::json!({ "name": format!("By {worker}") })),
        )
    };
    let (worker_a, worker_b) = (PatchBatches::default(), PatchBatches::default());
    let forward = join_all(ids.iter().map(|id| worker_a.run(&conns, patch(id, "a"))));
    let backward = join_all(
        ids.iter()
            .rev()
            .map(|id| worker_b.run(&other_conns, patch(id, "b"))),
    );
    let release = async {
        let waiting = "SELECT count(*)::int FROM pg_stat_activity \
                       WHERE datname = current_database() AND wait_event_type = 'Lock'";
        while sql_count(&mut admin, waiting).await < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        locker.batch_execute("COMMIT").await.unwrap();
        std::time::Instant::now()
    };
    let (a, b, released) = futures_util::join!(forward, backward, release);
    let took = released.elapsed();
    for answer in a.iter().chain(&b) {
        assert!(answer.is_ok(), "{answer:?}");
    }
    assert!(
        took < Duration::from_secs(5),
        "the batches took {took:?} after the lock went"
    );
}

async fn sql_count(conn: &mut AsyncPgConnection, query: &str) -> i32 {
    diesel::select(sql::<Integer>(&format!("({query})")))
        .get_result(conn)
        .await
        .unwrap()
}
