-- What to send for leased deliveries: the prize, its code, its pool's webhook.
SELECT v.id, v.pool_id, v.user_id, v.external_id, v.code, v.assigned_at, w.webhook_url, w.webhook_secret
FROM prize_details v JOIN pools w ON w.id = v.pool_id
WHERE v.id = ANY($1)
