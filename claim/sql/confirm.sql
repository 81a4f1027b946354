-- Confirm a batch of reservations: pools $1, requests $2, users $3 ('' for
-- any). One row per item. See dispenser_confirm_many_v1.
SELECT ord, outcome, code_id, code, expires_at, claimed_at, held_until, reserved_at, user_id
FROM dispenser_confirm_many_v1($1, $2, $3)
