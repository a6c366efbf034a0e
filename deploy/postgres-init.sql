-- Cronpilot's PostgreSQL, prepared once: the postgres image runs this file (mounted into
-- /docker-entrypoint-initdb.d) with psql as the superuser on the first start of an EMPTY data
-- volume, never again. Changing a password later means ALTER ROLE by hand (or a new volume).
--
-- Two roles, each owning only its own databases:
--   cronpilot  owns  cronpilot                       (the app; `cronpilot migrate` fills it)
--   temporal   owns  temporal, temporal_visibility   (temporalio/auto-setup fills them)
-- Passwords come from the container's environment (APP_DB_PASSWORD, TEMPORAL_DB_PASSWORD),
-- read with psql's \getenv (psql 15 or newer; the postgres:16 image has it).

\set ON_ERROR_STOP on
\getenv app_password APP_DB_PASSWORD
\getenv temporal_password TEMPORAL_DB_PASSWORD

CREATE ROLE cronpilot LOGIN PASSWORD :'app_password';
CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';

CREATE DATABASE cronpilot OWNER cronpilot;
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;

REVOKE CONNECT ON DATABASE cronpilot FROM PUBLIC;
REVOKE CONNECT ON DATABASE temporal FROM PUBLIC;
REVOKE CONNECT ON DATABASE temporal_visibility FROM PUBLIC;

-- Temporal's visibility schema (postgres12) indexes with btree_gin; create it as the superuser
-- so the schema tool finds it in place.
\connect temporal_visibility
CREATE EXTENSION IF NOT EXISTS btree_gin;
