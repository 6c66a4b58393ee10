-- Every instance caches users; a change to a user, committed by any of
-- them, tells them all (LISTEN switchboard_cache) which cache entry to drop.
-- A trigger sends it, so the notice commits with the change, or not at all.
CREATE FUNCTION switchboard_notify_user_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('switchboard_cache', 'user:' || OLD.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER users_notify_change
    AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION switchboard_notify_user_change();
