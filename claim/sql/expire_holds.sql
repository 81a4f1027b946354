-- End up to $2 holds whose time is up, of pool $1 (NULL: every pool); one
-- row per pool with how many ended. See dispenser_expire_holds_v1.
SELECT pool_id, expired FROM dispenser_expire_holds_v1($1, $2)
