DROP TRIGGER users_notify_change ON users;
DROP FUNCTION switchboard_notify_user_change();
