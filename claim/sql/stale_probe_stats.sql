-- Of the tables named in $2 (resolved through the search path), those that
-- now hold at least $1 pages, four times or more the pages their planner
-- statistics last counted: analyzed while (nearly) empty, or never.
SELECT t.name
FROM unnest($2::text[]) WITH ORDINALITY AS t(name, ord)
JOIN pg_class c ON c.oid = to_regclass(t.name)
CROSS JOIN LATERAL (SELECT pg_relation_size(c.oid) / current_setting('block_size')::bigint AS pages) s
WHERE s.pages >= $1 AND s.pages >= 4 * c.relpages::bigint
ORDER BY t.ord
