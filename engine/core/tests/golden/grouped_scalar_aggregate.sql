-- query: SELECT count(*) AS n, max(v) AS hi FROM a

-- general, phase populate
WITH __pgt_ins AS (INSERT INTO public.st (n, hi, __pgt_row_id) SELECT count(*) AS n, max(v) AS hi, 0::BIGINT AS __pgt_row_id FROM a RETURNING 1) SELECT '0', (SELECT pg_catalog.count(*) FROM __pgt_ins)::text, '0', pg_catalog.pg_current_snapshot()::text;

-- general, phase full_recompute
WITH __pgt_del AS (DELETE FROM public.st RETURNING 1), __pgt_ins AS (INSERT INTO public.st (n, hi, __pgt_row_id) SELECT count(*) AS n, max(v) AS hi, 0::BIGINT AS __pgt_row_id FROM a RETURNING 1) SELECT (SELECT pg_catalog.count(*) FROM __pgt_del)::text, (SELECT pg_catalog.count(*) FROM __pgt_ins)::text, '0', pg_catalog.pg_current_snapshot()::text;

-- general, phase affected_groups
WITH __pgt_d0(k, v, s, __pgt_m) AS MATERIALIZED (SELECT k, v, s, __pgt_n FROM (SELECT i.*, (pg_catalog.sum(i.__pgt_m) OVER __pgt_w)::bigint AS __pgt_n, pg_catalog.row_number() OVER __pgt_w AS __pgt_r FROM (SELECT b.__n1, b.__n2, b.__n3, 1::bigint FROM pgtrickle_changes.changes_1 b WHERE b.op <> 'D' AND (CASE WHEN b.xid = $2::xid8 THEN b.change_id > $3::bigint ELSE NOT pg_catalog.pg_visible_in_snapshot(b.xid, $1::pg_snapshot) END) UNION ALL SELECT b.__o1, b.__o2, b.__o3, -1::bigint FROM pgtrickle_changes.changes_1 b WHERE b.op <> 'I' AND (CASE WHEN b.xid = $2::xid8 THEN b.change_id > $3::bigint ELSE NOT pg_catalog.pg_visible_in_snapshot(b.xid, $1::pg_snapshot) END)) i(k, v, s, __pgt_m) WINDOW __pgt_w AS (PARTITION BY ROW(i.k, i.v, i.s)::pg_catalog.text)) n WHERE n.__pgt_r < 2 AND n.__pgt_n <> 0),
 __pgt_o0(k, v, s, __pgt_m) AS NOT MATERIALIZED (SELECT t.k, t.v, t.s, 1::bigint FROM public.a t UNION ALL SELECT k, v, s, -__pgt_m FROM __pgt_d0),
 __pgt_keys(__pgt_one) AS MATERIALIZED (SELECT DISTINCT * FROM ((SELECT 1 FROM __pgt_d0 AS "a")) k),
 __pgt_kh(__pgt_rid) AS MATERIALIZED (SELECT 0::bigint FROM __pgt_keys k)
SELECT * FROM __pgt_keys;

-- general, phase group_recompute
WITH __pgt_d0(k, v, s, __pgt_m) AS MATERIALIZED (SELECT k, v, s, __pgt_n FROM (SELECT i.*, (pg_catalog.sum(i.__pgt_m) OVER __pgt_w)::bigint AS __pgt_n, pg_catalog.row_number() OVER __pgt_w AS __pgt_r FROM (SELECT b.__n1, b.__n2, b.__n3, 1::bigint FROM pgtrickle_changes.changes_1 b WHERE b.op <> 'D' AND (CASE WHEN b.xid = $2::xid8 THEN b.change_id > $3::bigint ELSE NOT pg_catalog.pg_visible_in_snapshot(b.xid, $1::pg_snapshot) END) UNION ALL SELECT b.__o1, b.__o2, b.__o3, -1::bigint FROM pgtrickle_changes.changes_1 b WHERE b.op <> 'I' AND (CASE WHEN b.xid = $2::xid8 THEN b.change_id > $3::bigint ELSE NOT pg_catalog.pg_visible_in_snapshot(b.xid, $1::pg_snapshot) END)) i(k, v, s, __pgt_m) WINDOW __pgt_w AS (PARTITION BY ROW(i.k, i.v, i.s)::pg_catalog.text)) n WHERE n.__pgt_r < 2 AND n.__pgt_n <> 0),
 __pgt_o0(k, v, s, __pgt_m) AS NOT MATERIALIZED (SELECT t.k, t.v, t.s, 1::bigint FROM public.a t UNION ALL SELECT k, v, s, -__pgt_m FROM __pgt_d0),
 __pgt_keys(__pgt_one) AS MATERIALIZED (SELECT DISTINCT * FROM ((SELECT 1 FROM __pgt_d0 AS "a")) k),
 __pgt_kh(__pgt_rid) AS MATERIALIZED (SELECT 0::bigint FROM __pgt_keys k),
 __pgt_new(n, hi, __pgt_row_id) AS MATERIALIZED (SELECT * FROM (SELECT count(*) AS n, max(v) AS hi, 0::BIGINT AS __pgt_row_id FROM a) r WHERE EXISTS (SELECT 1 FROM __pgt_keys))
SELECT * FROM __pgt_new;

-- general, phase differential
WITH __pgt_d0(k, v, s, __pgt_m) AS MATERIALIZED (SELECT k, v, s, __pgt_n FROM (SELECT i.*, (pg_catalog.sum(i.__pgt_m) OVER __pgt_w)::bigint AS __pgt_n, pg_catalog.row_number() OVER __pgt_w AS __pgt_r FROM (SELECT b.__n1, b.__n2, b.__n3, 1::bigint FROM pgtrickle_changes.changes_1 b WHERE b.op <> 'D' AND (CASE WHEN b.xid = $2::xid8 THEN b.change_id > $3::bigint ELSE NOT pg_catalog.pg_visible_in_snapshot(b.xid, $1::pg_snapshot) END) UNION ALL SELECT b.__o1, b.__o2, b.__o3, -1::bigint FROM pgtrickle_changes.changes_1 b WHERE b.op <> 'I' AND (CASE WHEN b.xid = $2::xid8 THEN b.change_id > $3::bigint ELSE NOT pg_catalog.pg_visible_in_snapshot(b.xid, $1::pg_snapshot) END)) i(k, v, s, __pgt_m) WINDOW __pgt_w AS (PARTITION BY ROW(i.k, i.v, i.s)::pg_catalog.text)) n WHERE n.__pgt_r < 2 AND n.__pgt_n <> 0),
 __pgt_o0(k, v, s, __pgt_m) AS NOT MATERIALIZED (SELECT t.k, t.v, t.s, 1::bigint FROM public.a t UNION ALL SELECT k, v, s, -__pgt_m FROM __pgt_d0),
 __pgt_keys(__pgt_one) AS MATERIALIZED (SELECT DISTINCT * FROM ((SELECT 1 FROM __pgt_d0 AS "a")) k),
 __pgt_kh(__pgt_rid) AS MATERIALIZED (SELECT 0::bigint FROM __pgt_keys k),
 __pgt_new(n, hi, __pgt_row_id) AS MATERIALIZED (SELECT * FROM (SELECT count(*) AS n, max(v) AS hi, 0::BIGINT AS __pgt_row_id FROM a) r WHERE EXISTS (SELECT 1 FROM __pgt_keys)),
 __pgt_del AS (DELETE FROM public.st s WHERE s.__pgt_row_id = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_kh)) AND NOT EXISTS (SELECT 1 FROM __pgt_new n WHERE n.__pgt_row_id = s.__pgt_row_id AND ROW(n.n, n.hi)::text IS NOT DISTINCT FROM ROW(s.n, s.hi)::text) RETURNING 1),
 __pgt_ins AS (INSERT INTO public.st (n, hi, __pgt_row_id) SELECT n.n, n.hi, n.__pgt_row_id FROM __pgt_new n WHERE NOT EXISTS (SELECT 1 FROM public.st s WHERE s.__pgt_row_id = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_kh)) AND n.__pgt_row_id = s.__pgt_row_id AND ROW(n.n, n.hi)::text IS NOT DISTINCT FROM ROW(s.n, s.hi)::text) RETURNING 1)
SELECT (SELECT pg_catalog.count(*) FROM __pgt_del)::text, (SELECT pg_catalog.count(*) FROM __pgt_ins)::text, (SELECT pg_catalog.count(*) FROM __pgt_del)::text, pg_catalog.pg_current_snapshot()::text;

-- specialised to changes in [], differential statement
WITH __pgt_keys(__pgt_one) AS MATERIALIZED (SELECT DISTINCT * FROM ((SELECT 1 FROM a WHERE false)) k),
 __pgt_kh(__pgt_rid) AS MATERIALIZED (SELECT 0::bigint FROM __pgt_keys k),
 __pgt_new(n, hi, __pgt_row_id) AS MATERIALIZED (SELECT * FROM (SELECT count(*) AS n, max(v) AS hi, 0::BIGINT AS __pgt_row_id FROM a) r WHERE EXISTS (SELECT 1 FROM __pgt_keys)),
 __pgt_del AS (DELETE FROM public.st s WHERE s.__pgt_row_id = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_kh)) AND NOT EXISTS (SELECT 1 FROM __pgt_new n WHERE n.__pgt_row_id = s.__pgt_row_id AND ROW(n.n, n.hi)::text IS NOT DISTINCT FROM ROW(s.n, s.hi)::text) RETURNING 1),
 __pgt_ins AS (INSERT INTO public.st (n, hi, __pgt_row_id) SELECT n.n, n.hi, n.__pgt_row_id FROM __pgt_new n WHERE NOT EXISTS (SELECT 1 FROM public.st s WHERE s.__pgt_row_id = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_kh)) AND n.__pgt_row_id = s.__pgt_row_id AND ROW(n.n, n.hi)::text IS NOT DISTINCT FROM ROW(s.n, s.hi)::text) RETURNING 1)
SELECT (SELECT pg_catalog.count(*) FROM __pgt_del)::text, (SELECT pg_catalog.count(*) FROM __pgt_ins)::text, (SELECT pg_catalog.count(*) FROM __pgt_del)::text, pg_catalog.pg_current_snapshot()::text, (EXISTS (SELECT 1 FROM pgtrickle_changes.changes_1 b WHERE (CASE WHEN b.xid = $2::xid8 THEN b.change_id > $3::bigint ELSE NOT pg_catalog.pg_visible_in_snapshot(b.xid, $1::pg_snapshot) END)))::text;

-- specialised to changes in [a], differential statement
WITH __pgt_d0(k, v, s, __pgt_m) AS MATERIALIZED (SELECT k, v, s, __pgt_n FROM (SELECT i.*, (pg_catalog.sum(i.__pgt_m) OVER __pgt_w)::bigint AS __pgt_n, pg_catalog.row_number() OVER __pgt_w AS __pgt_r FROM (SELECT b.__n1, b.__n2, b.__n3, 1::bigint FROM pgtrickle_changes.changes_1 b WHERE b.op <> 'D' AND (CASE WHEN b.xid = $2::xid8 THEN b.change_id > $3::bigint ELSE NOT pg_catalog.pg_visible_in_snapshot(b.xid, $1::pg_snapshot) END) UNION ALL SELECT b.__o1, b.__o2, b.__o3, -1::bigint FROM pgtrickle_changes.changes_1 b WHERE b.op <> 'I' AND (CASE WHEN b.xid = $2::xid8 THEN b.change_id > $3::bigint ELSE NOT pg_catalog.pg_visible_in_snapshot(b.xid, $1::pg_snapshot) END)) i(k, v, s, __pgt_m) WINDOW __pgt_w AS (PARTITION BY ROW(i.k, i.v, i.s)::pg_catalog.text)) n WHERE n.__pgt_r < 2 AND n.__pgt_n <> 0),
 __pgt_keys(__pgt_one) AS MATERIALIZED (SELECT DISTINCT * FROM ((SELECT 1 FROM __pgt_d0 AS "a")) k),
 __pgt_kh(__pgt_rid) AS MATERIALIZED (SELECT 0::bigint FROM __pgt_keys k),
 __pgt_new(n, hi, __pgt_row_id) AS MATERIALIZED (SELECT * FROM (SELECT count(*) AS n, max(v) AS hi, 0::BIGINT AS __pgt_row_id FROM a) r WHERE EXISTS (SELECT 1 FROM __pgt_keys)),
 __pgt_del AS (DELETE FROM public.st s WHERE s.__pgt_row_id = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_kh)) AND NOT EXISTS (SELECT 1 FROM __pgt_new n WHERE n.__pgt_row_id = s.__pgt_row_id AND ROW(n.n, n.hi)::text IS NOT DISTINCT FROM ROW(s.n, s.hi)::text) RETURNING 1),
 __pgt_ins AS (INSERT INTO public.st (n, hi, __pgt_row_id) SELECT n.n, n.hi, n.__pgt_row_id FROM __pgt_new n WHERE NOT EXISTS (SELECT 1 FROM public.st s WHERE s.__pgt_row_id = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_kh)) AND n.__pgt_row_id = s.__pgt_row_id AND ROW(n.n, n.hi)::text IS NOT DISTINCT FROM ROW(s.n, s.hi)::text) RETURNING 1)
SELECT (SELECT pg_catalog.count(*) FROM __pgt_del)::text, (SELECT pg_catalog.count(*) FROM __pgt_ins)::text, (SELECT pg_catalog.count(*) FROM __pgt_del)::text, pg_catalog.pg_current_snapshot()::text, 'false';
