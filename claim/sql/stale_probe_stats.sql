-- Of the tables named in $2 (resolved through the search path), those that
-- now hold at least $1 pages, four times or more the pages their planner
-- statistics last counted: analyzed while (nearly) empty. A table never
-- analyzed nor vacuumed (reltuples -1) is left alone: the planner then
-- reckons with its size on disk, at least ten pages, and probes each key
-- through its own index (claim/plan_test.go), so an ANALYZE in the middle
-- of a sale (and the plans of every session it drops) would buy nothing.
SELECT t.name
FROM unnest($2::text[]) WITH ORDINALITY AS t(name, ord)
JOIN pg_class c ON c.oid = to_regclass(t.name)
CROSS JOIN LATERAL (SELECT pg_relation_size(c.oid) / current_setting('block_size')::bigint AS pages) s
WHERE s.pages >= $1 AND s.pages >= 4 * c.relpages::bigint AND c.reltuples >= 0
ORDER BY t.ord
