-- The SQL-era lakeFS ref-store schema as it stands after migrations 000016..000031
-- (shared/spec/lakefs-refstore.md §2.3). Tests load it into a fresh database.
CREATE TABLE IF NOT EXISTS graveler_repositories
(
    id                text        NOT NULL,
    storage_namespace text        NOT NULL,
    creation_date     timestamptz NOT NULL,
    default_branch    text        NOT NULL,
    PRIMARY KEY (id)
);

CREATE TABLE IF NOT EXISTS graveler_branches
(
    repository_id text NOT NULL,
    id            text NOT NULL,
    staging_token text,
    commit_id     text,
    PRIMARY KEY (repository_id, id)
);
CREATE INDEX IF NOT EXISTS graveler_branches_idx_commit_id ON graveler_branches(commit_id);

CREATE TABLE IF NOT EXISTS graveler_commits
(
    repository_id text        NOT NULL,
    id            text        NOT NULL,
    committer     text        NOT NULL,
    message       text        NOT NULL,
    creation_date timestamptz NOT NULL,
    meta_range_id text        NOT NULL,
    metadata      jsonb,
    parents       text[],
    version       integer DEFAULT 0 NOT NULL,
    generation    INT,
    PRIMARY KEY (repository_id, id)
);

CREATE OR REPLACE FUNCTION first_parent(parents text[], version int)
RETURNS text AS
    $$
    DECLARE
        parent_switch_commit_version CONSTANT INT = 1;
    BEGIN
        RETURN CASE WHEN version < parent_switch_commit_version THEN parents[array_length(parents, 1)] ELSE parents[1] END;
    END
    $$
LANGUAGE plpgsql IMMUTABLE;
CREATE INDEX IF NOT EXISTS graveler_commits_idx_first_parent ON graveler_commits(first_parent(parents, version));

CREATE TABLE IF NOT EXISTS graveler_tags
(
    repository_id text NOT NULL,
    id            text NOT NULL,
    commit_id     text,
    PRIMARY KEY (repository_id, id)
);

CREATE TABLE IF NOT EXISTS graveler_staging_kv
(
    staging_token varchar not null,
    key bytea not null,
    identity bytea,
    data bytea
) PARTITION BY HASH (staging_token);
CREATE TABLE IF NOT EXISTS graveler_staging_kv_p0 PARTITION OF graveler_staging_kv FOR VALUES WITH (MODULUS 10, REMAINDER 0);
CREATE TABLE IF NOT EXISTS graveler_staging_kv_p1 PARTITION OF graveler_staging_kv FOR VALUES WITH (MODULUS 10, REMAINDER 1);
CREATE TABLE IF NOT EXISTS graveler_staging_kv_p2 PARTITION OF graveler_staging_kv FOR VALUES WITH (MODULUS 10, REMAINDER 2);
CREATE TABLE IF NOT EXISTS graveler_staging_kv_p3 PARTITION OF graveler_staging_kv FOR VALUES WITH (MODULUS 10, REMAINDER 3);
CREATE TABLE IF NOT EXISTS graveler_staging_kv_p4 PARTITION OF graveler_staging_kv FOR VALUES WITH (MODULUS 10, REMAINDER 4);
CREATE TABLE IF NOT EXISTS graveler_staging_kv_p5 PARTITION OF graveler_staging_kv FOR VALUES WITH (MODULUS 10, REMAINDER 5);
CREATE TABLE IF NOT EXISTS graveler_staging_kv_p6 PARTITION OF graveler_staging_kv FOR VALUES WITH (MODULUS 10, REMAINDER 6);
CREATE TABLE IF NOT EXISTS graveler_staging_kv_p7 PARTITION OF graveler_staging_kv FOR VALUES WITH (MODULUS 10, REMAINDER 7);
CREATE TABLE IF NOT EXISTS graveler_staging_kv_p8 PARTITION OF graveler_staging_kv FOR VALUES WITH (MODULUS 10, REMAINDER 8);
CREATE TABLE IF NOT EXISTS graveler_staging_kv_p9 PARTITION OF graveler_staging_kv FOR VALUES WITH (MODULUS 10, REMAINDER 9);
CREATE UNIQUE INDEX IF NOT EXISTS kv_staging_uidx ON graveler_staging_kv (staging_token ASC, key ASC);

-- golang-migrate's tracking table, at the version lakeFS v0.68 expects.
CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
INSERT INTO schema_migrations (version, dirty) VALUES (37, false) ON CONFLICT DO NOTHING;
