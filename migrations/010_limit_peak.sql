-- A pool's per-user limit may be lowered while users hold more claims than
-- the new limit: they keep them, and only new claims are refused. So the
-- audit cannot count a user over the limit against the limit as it is now.
-- per_user_limit_peak is the highest limit the pool has had, kept by a
-- trigger so that every writer of pools (a replica of an older version
-- during a rolling deploy too) keeps it; the audit counts users holding
-- more claims than that.
ALTER TABLE pools ADD COLUMN per_user_limit_peak integer;
UPDATE pools SET per_user_limit_peak = per_user_limit;
ALTER TABLE pools ALTER COLUMN per_user_limit_peak SET NOT NULL;

CREATE FUNCTION dispenser_limit_peak_v1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.per_user_limit_peak := NEW.per_user_limit;
    ELSE
        NEW.per_user_limit_peak := greatest(OLD.per_user_limit_peak, NEW.per_user_limit);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER pools_limit_peak BEFORE INSERT OR UPDATE ON pools
    FOR EACH ROW EXECUTE FUNCTION dispenser_limit_peak_v1();
