-- Up Migration
-- The data service's tokens for notebooks (issue 11): a kernel reads datasets with the token its runtime
-- container was made with (MARKCO_DATA_TOKEN in its environment), never with the user's edge session,
-- which the browser holds HttpOnly and which would open the whole edge. Each new runtime container gets a
-- new token. A restored runtime keeps the environment of its checkpoint, and a named snapshot can be
-- restored long after, so a token stays good as long as its user: the user's row takes them along.
-- Only the SHA-256 is kept, as for sessions.
CREATE TABLE data_tokens (
  token_hash  bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX data_tokens_user ON data_tokens (user_id);

-- Down Migration
DROP TABLE data_tokens;
