-- Describes every object of the extension in this database, one line each,
-- for comparing an updated install with a fresh one (TAP 013): functions with
-- their signatures and properties, tables with their columns, constraints
-- and indexes, views with their columns and definitions, sequences, grants,
-- comments and what pg_dump keeps.  OIDs and names of the installing role
-- are left out; everything else that differs shows.
SELECT line FROM (
  SELECT 'function ' || p.oid::regprocedure::text
         || ' (' || pg_get_function_arguments(p.oid) || ') -> ' || pg_get_function_result(p.oid)
         || ' lang=' || l.lanname || ' vol=' || p.provolatile::text || ' par=' || p.proparallel::text
         || ' strict=' || p.proisstrict || ' secdef=' || p.prosecdef || ' rows=' || p.prorows
         || ' config=' || coalesce(p.proconfig::text, '-')
         || ' src=' || CASE WHEN l.lanname = 'c' THEN p.prosrc ELSE md5(coalesce(pg_get_functiondef(p.oid), '')) END
         || ' acl=' || coalesce(regexp_replace(p.proacl::text, '/[^,}]*', '', 'g'), 'default')
         || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-') AS line
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
   WHERE p.pronamespace = 'rmsg'::regnamespace
  UNION ALL
  SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text
         || ' options=' || coalesce(c.reloptions::text, '-')
         || ' acl=' || coalesce(regexp_replace(c.relacl::text, '/[^,}]*', '', 'g'), 'default')
         || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-')
         || CASE WHEN c.relkind = 'v' THEN ' def=' || md5(pg_get_viewdef(c.oid)) ELSE '' END
    FROM pg_class c WHERE c.relnamespace = 'rmsg'::regnamespace
  UNION ALL
  -- a column's place among the columns a query sees: an update that drops
  -- a column leaves a hole in the attribute numbers that a fresh install
  -- does not have, and that no query or dump can tell
  SELECT 'column ' || c.relname || '.'
         || lpad((row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum))::text, 2, '0')
         || ' ' || a.attname
         || ' ' || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull
         || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
         || ' identity=' || a.attidentity::text
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
   WHERE c.relnamespace = 'rmsg'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'constraint ' || c.conrelid::regclass::text || ' ' || pg_get_constraintdef(c.oid)
    FROM pg_constraint c WHERE c.connamespace = 'rmsg'::regnamespace
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
   WHERE c.relnamespace = 'rmsg'::regnamespace
  UNION ALL
  SELECT 'dumped ' || x.relname || ' ' || coalesce(x.cond, '')
    FROM pg_extension e,
         LATERAL (SELECT unnest(e.extconfig)::regclass::text AS relname,
                         unnest(e.extcondition) AS cond) x
   WHERE e.extname = 'recoverable_msg'
  UNION ALL
  SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
    FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid AND d.refclassid = 'pg_extension'::regclass
   WHERE e.extname = 'recoverable_msg' AND d.deptype = 'e'
  UNION ALL
  SELECT 'extension version=' || extversion || ' schema=' || extnamespace::regnamespace::text
    FROM pg_extension WHERE extname = 'recoverable_msg'
) described
ORDER BY line;
