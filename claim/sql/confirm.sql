-- Confirm the reservation of pool $1, request $2 (user $3, or '' for any).
-- See dispenser_confirm_v1.
SELECT outcome, code_id, code, expires_at, claimed_at, held_until, reserved_at, user_id
FROM dispenser_confirm_v1($1, $2, $3)
