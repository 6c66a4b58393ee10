//! Every users write on PostgreSQL is prepared once per connection and
//! kept, as reads are: not parsed and planned again for each request.

use switchboard::db::users;
use switchboard::domain::{Expected, UserPatch};

use crate::pg::{count_kept, create_one_by_one, id_of, kept_prepared, new_user, pipeline};

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
