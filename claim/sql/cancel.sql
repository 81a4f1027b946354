-- Cancel the reservation of pool $1, request $2 (user $3, or '' for any).
-- See dispenser_cancel_v1.
SELECT outcome, held_until, reserved_at, user_id
FROM dispenser_cancel_v1($1, $2, $3)
