//! Point reads on PostgreSQL in batches, on a real database: reads that
//! arrive while one is in flight go as one statement, each answered on its
//! own (its row or none), a user asked for twice is looked up once, and a
//! read sent after a write was acknowledged sees it.

use std::time::Duration;

use diesel::dsl::sql;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::future::join_all;
use serde_json::{json, Value};
use switchboard::db::postgres::Lookups;
use switchboard::db::read::Read;
use switchboard::db::{BatchQueue, Connections};
use switchboard::domain::UserId;

use crate::helpers::{eventually, spawn_app_with, Backend, TestDatabase};
use crate::pg::{create_one_by_one, id_of, pipeline, shared};

fn lookups(conns: &Connections) -> BatchQueue<Lookups> {
    BatchQueue::new(Lookups(shared(conns)))
}

/// Statements of the database's clients, but `LOCK`s, waiting for a lock,
/// and of those how many look users up in a batch.
async fn waiting(db: &TestDatabase) -> (i64, i64) {
    let admin = &mut AsyncPgConnection::establish(&db.url()).await.unwrap();
    let count = |filter: &str| {
        format!(
            "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query NOT LIKE '%LOCK TABLE%' {filter})"
        )
    };
    let all: i64 = diesel::select(sql::<BigInt>(&count("")))
        .get_result(admin)
        .await
        .unwrap();
    let batched: i64 = diesel::select(sql::<BigInt>(&count("AND query LIKE '%= ANY(%'")))
        .get_result(admin)
        .await
        .unwrap();
    (all, batched)
}

async fn locked(db: &TestDatabase) -> AsyncPgConnection {
    let mut conn = AsyncPgConnection::establish(&db.url()).await.unwrap();
    conn.batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    conn
}

/// The table is locked while one read waits for it; 40 more arrive, on a
/// pipeline that would spread them over five connections or more if each
/// went alone. They wait in the worker's queue, not at the server; once the
/// first is answered they go as one statement (seen waiting behind a second
/// lock, alone), and each is answered on its own: its row, twice for a user
/// asked for twice, or none.
#[actix_web::test]
async fn reads_arriving_while_one_is_in_flight_go_as_one_statement() {
    let Some((db, conns)) = pipeline(8).await else {
        return;
    };
    let users = create_one_by_one(&conns, 20).await;
    let reads = lookups(&conns);
    // Both statements prepared first: a statement parsed while the table
    // is locked would take the lock twice, and queue behind the second.
    let alone = reads.submit(Read::Id(id_of(&users[0]))).await;
    assert!(alone.unwrap().is_some());
    let together = join_all((0..3).map(|_| reads.submit(Read::Id(id_of(&users[0]))))).await;
    assert!(together.iter().all(|read| read.as_ref().unwrap().is_some()));
    let mut first_lock = locked(&db).await;

    let first = tokio::task::spawn_local({
        let (reads, id) = (reads.clone(), id_of(&users[0]));
        async move { reads.submit(Read::Id(id)).await }
    });
    assert!(
        eventually(Duration::from_secs(5), || async {
            waiting(&db).await == (1, 0)
        })
        .await,
        "the first read waits for the lock, alone"
    );
    // A second lock, queued behind the first read: the batch will wait
    // for it, where it can be seen.
    let second_lock = tokio::task::spawn_local({
        let url = db.url();
        async move {
            let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
            conn.batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                .await
                .unwrap();
            conn
        }
    });
    // Each of the 20 users twice, and 10 ids no user has.
    let mut ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    ids.extend(users.iter().map(|u| u.id));
    ids.extend(1_000_000..1_000_010);
    let rest = tokio::task::spawn_local({
        let (reads, ids) = (reads.clone(), ids.clone());
        async move {
            let reads = ids
                .iter()
                .map(|id| reads.submit(Read::Id(UserId::parse(&id.to_string()).unwrap())));
            join_all(reads).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        waiting(&db).await,
        (1, 0),
        "the 40 wait in the queue, not at the server"
    );

    first_lock.batch_execute("COMMIT").await.unwrap();
    assert_eq!(first.await.unwrap().unwrap(), Some(users[0].clone()));
    assert!(
        eventually(Duration::from_secs(5), || async {
            waiting(&db).await == (1, 1)
        })
        .await,
        "the 40 wait for the second lock as one statement"
    );
    let mut second_lock = second_lock.await.unwrap();
    second_lock.batch_execute("COMMIT").await.unwrap();
    let answers = rest.await.unwrap();
    for (id, answer) in ids.iter().zip(answers) {
        let expected = users.iter().find(|u| u.id == *id).cloned();
        assert_eq!(answer.unwrap(), expected, "user {id}");
    }
}

/// Reads by id and by email, many at once through the API, on a worker
/// with no cache: each gets its own user or 404, and a read sent after a
/// write was acknowledged sees that write.
#[actix_web::test]
async fn batched_reads_answer_each_on_its_own_and_see_acknowledged_writes() {
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.server.workers = 1;
        s.cache.max_entries = 0;
    })
    .await
    else {
        return;
    };
    let mut users = Vec::new();
    for n in 0..30 {
        users.push(
            app.create_user(&format!("Reader {n}"), &format!("reader{n}@example.com"))
                .await,
        );
    }
    let by_id = users.iter().map(|u| format!("/users/{}", u["id"]));
    let missing = (0..10).map(|n| format!("/users/{}", 2_000_000 + n));
    let by_email = users.iter().map(|u| {
        format!(
            "/users?email={}",
            u["email"].as_str().unwrap().to_uppercase()
        )
    });
    let paths: Vec<String> = by_id.chain(missing).chain(by_email).collect();
    let answers = join_all(paths.iter().map(|path| app.get(path))).await;
    for (n, (path, answer)) in paths.iter().zip(answers).enumerate() {
        match n {
            0..30 => {
                assert_eq!(answer.status(), 200, "{path}");
                assert_eq!(answer.json::<Value>().await.unwrap(), users[n], "{path}");
            }
            30..40 => assert_eq!(answer.status(), 404, "{path}"),
            _ => {
                assert_eq!(answer.status(), 200, "{path}");
                let page: Value = answer.json().await.unwrap();
                assert_eq!(page, json!([users[n - 40]]), "{path}");
            }
        }
    }

    // Reads of a user racing its renames: each read sent after a rename
    // was answered sees that rename or a later one.
    let path = format!("/users/{}", users[0]["id"]);
    for round in 0..20 {
        let name = format!("Renamed {round}");
        let renamed = app.patch_json(&path, &json!({ "name": name })).await;
        assert_eq!(renamed.status(), 200);
        let readers = join_all((0..16).map(|_| app.get(&path))).await;
        for read in readers {
            let seen: Value = read.json().await.unwrap();
            assert_eq!(
                seen["name"],
                name.as_str(),
                "read after the rename was acknowledged"
            );
        }
    }
}
