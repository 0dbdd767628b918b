-- pg_trickle 0.38.0 -> 0.39.0
-- Run by ALTER EXTENSION pg_trickle UPDATE (search_path is the extension's schema).
-- Every object here is created exactly as the 0.39.0 install script creates it;
-- the upgrade tests compare an upgraded catalog with a fresh install.

-- explain_stream_table(name, format): the operator tree as json, text or dot.
CREATE FUNCTION "explain_stream_table"(
	"name" TEXT,
	"format" TEXT
) RETURNS TEXT
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'explain_stream_table_as_wrapper';

-- stream_table_sql(name): every generated SQL fragment, one row per phase,
-- with the parameter values the next refresh would bind.
CREATE FUNCTION "stream_table_sql"(
	"name" TEXT
) RETURNS TABLE (
	"phase" TEXT,
	"sql" TEXT,
	"hash" TEXT,
	"parameterized" bool,
	"writes" bool,
	"parameters" TEXT[]
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'stream_table_sql_wrapper';
