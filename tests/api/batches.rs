//! Writes on PostgreSQL in batches, on a real database: writes that arrive
//! together go as one statement (a trigger notes the transaction that wrote
//! each row: theirs is one), each answered as it would be alone, and a
//! batch refused as a whole runs each write alone.

use std::time::Duration;

use diesel::dsl::sql;
use diesel::sql_types::Integer;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::future::join_all;
use switchboard::config::DatabaseUrl;
use switchboard::db::postgres::Statements;
use switchboard::db::{users, BatchQueue, Connections, DbError, PageCache, PoolSpec, Write};
use switchboard::domain::{Expected, NewUser, UserId, UserPatch, Version};

use crate::pg::{
    count_kept, create_one_by_one, id_of, kept_prepared, note_writers, pipeline, shared, writers_of,
};

/// A worker's queue of writes on `conns`.
fn queue(conns: &Connections) -> BatchQueue<Statements> {
    BatchQueue::new(Statements(shared(conns)))
}

fn create(user: &NewUser) -> Write {
    Write::Create(user.clone())
}

fn patch(id: UserId, patch: &UserPatch) -> Write {
    Write::Patch {
        id,
        patch: patch.clone(),
        expected: Expected::Any,
    }
}

fn new_user_named(name: &str, email: &str) -> NewUser {
    NewUser::from_json(&serde_json::json!({"name": name, "email": email})).unwrap()
}

/// Creates that arrive together go to PostgreSQL as one statement, and
/// each is answered as it would be alone: its row, or 409 for an email
/// taken before or by an earlier create of the same batch.
#[actix_web::test]
async fn creates_arriving_together_go_as_one_statement_each_answered_on_its_own() {
    let Some((db, conns)) = pipeline(1).await else {
        return;
    };
    note_writers(&db).await;
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
    let batches = queue(&conns);
    let answers = join_all(all.iter().map(|(user, _)| batches.submit(create(user)))).await;

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
    let created: Vec<i64> = answers.iter().flatten().map(|user| user.id).collect();
    assert_eq!(
        writers_of(&db, &created).await,
        1,
        "one transaction wrote them all"
    );
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
    let batches = queue(&conns);
    let answers = join_all(batch.iter().map(|user| batches.submit(create(user)))).await;
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
    let Some((db, conns)) = pipeline(1).await else {
        return;
    };
    let created = create_one_by_one(&conns, 20).await;
    note_writers(&db).await;
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
    let batches = queue(&conns);
    let answers = join_all(
        all.iter()
            .map(|(id, body)| batches.submit(patch(*id, body))),
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
    let patched: Vec<i64> = created.iter().map(|user| user.id).collect();
    assert_eq!(
        writers_of(&db, &patched[1..]).await,
        1,
        "one transaction patched them"
    );
    assert_eq!(
        writers_of(&db, &patched).await,
        2,
        "and the later patch another"
    );
    let kept = kept_prepared(&conns).await;
    assert_eq!(count_kept(&kept, "WITH locked AS"), 1, "{kept:#?}");
}

/// Deletes that arrive together go to PostgreSQL as one statement, each
/// answered on its own: its user gone, or `NotFound` for a user that was
/// not there; a second delete of one user waits for the next batch and
/// finds it gone.
#[actix_web::test]
async fn deletes_arriving_together_go_as_one_statement_each_answered_on_its_own() {
    let Some((db, conns)) = pipeline(1).await else {
        return;
    };
    let created = create_one_by_one(&conns, 12).await;
    note_writers(&db).await;
    let untouched = &created[6..];
    let mut ids: Vec<UserId> = created[..6].iter().map(id_of).collect();
    ids.insert(2, UserId::parse("999999").unwrap());
    ids.push(id_of(&created[0]));
    let batches = queue(&conns);
    let answers = join_all(ids.iter().map(|id| {
        batches.submit(Write::Delete {
            id: *id,
            expected: Expected::Any,
        })
    }))
    .await;

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
    let deleted: Vec<i64> = created[..6].iter().map(|user| user.id).collect();
    assert_eq!(
        writers_of(&db, &deleted).await,
        1,
        "one transaction deleted them"
    );
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
    let batches = queue(&conns);
    let answers = join_all(created.iter().enumerate().map(|(n, user)| {
        let body = match n {
            3 => serde_json::json!({"email": "USER0@example.com"}),
            _ => serde_json::json!({"name": format!("Renamed {n}")}),
        };
        batches.submit(patch(id_of(user), &patch_of(body)))
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

    let by = |id: &UserId, worker: &str| {
        let body = serde_json::json!({ "name": format!("By {worker}") });
        patch(*id, &patch_of(body))
    };
    let (worker_a, worker_b) = (queue(&conns), queue(&other_conns));
    let forward = join_all(ids.iter().map(|id| worker_a.submit(by(id, "a"))));
    let backward = join_all(ids.iter().rev().map(|id| worker_b.submit(by(id, "b"))));
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

/// Patches and deletes that expect a version (`If-Match`) share a batch
/// with those that do not, and each is answered as it would be alone: its
/// user if it was at the version expected, `Changed` if it was not,
/// `NotFound` if it is gone.
#[actix_web::test]
async fn conditional_writes_in_a_batch_are_each_answered_on_its_own() {
    let Some((_db, conns)) = pipeline(1).await else {
        return;
    };
    let created = create_one_by_one(&conns, 8).await;
    let current = |n: usize| Expected::OneOf(vec![created[n].version()]);
    let stale = || Expected::OneOf(vec![Version(chrono::Utc::now())]);
    let renamed = |n: usize| patch_of(serde_json::json!({ "name": format!("Renamed {n}") }));
    let missing = UserId::parse("999999").unwrap();
    let conditional_patch = |id, patch, expected| Write::Patch {
        id,
        patch,
        expected,
    };
    let writes = vec![
        conditional_patch(id_of(&created[0]), renamed(0), current(0)),
        conditional_patch(id_of(&created[1]), renamed(1), stale()),
        conditional_patch(id_of(&created[2]), renamed(2), Expected::Any),
        conditional_patch(missing, renamed(9), current(0)),
    ];
    let batches = queue(&conns);
    let answers = join_all(writes.into_iter().map(|write| batches.submit(write))).await;
    assert_eq!(answers[0].as_ref().unwrap().name, "Renamed 0");
    assert!(matches!(answers[1], Err(DbError::Changed)), "{answers:?}");
    assert_eq!(answers[2].as_ref().unwrap().name, "Renamed 2");
    assert!(matches!(answers[3], Err(DbError::NotFound)), "{answers:?}");
    let untouched = users::get(&conns, id_of(&created[1])).await.unwrap();
    assert_eq!(untouched, created[1], "a stale patch changes nothing");

    let delete = |n: usize, expected| Write::Delete {
        id: id_of(&created[n]),
        expected,
    };
    let writes = vec![
        delete(3, current(3)),
        delete(4, stale()),
        delete(5, Expected::Any),
        Write::Delete {
            id: missing,
            expected: current(3),
        },
    ];
    let answers = join_all(writes.into_iter().map(|write| batches.submit(write))).await;
    assert_eq!(answers[0].as_ref().unwrap(), &created[3]);
    assert!(matches!(answers[1], Err(DbError::Changed)), "{answers:?}");
    assert_eq!(answers[2].as_ref().unwrap(), &created[5]);
    assert!(matches!(answers[3], Err(DbError::NotFound)), "{answers:?}");
    for (n, kept) in [(3, false), (4, true), (5, false)] {
        let read = users::get(&conns, id_of(&created[n])).await;
        assert_eq!(read.is_ok(), kept, "user {n}: {read:?}");
    }
}
