-- Up Migration
-- Sign-in (issue 7). A user can sign in with several providers; each identity is (provider, subject),
-- the provider's stable id, never the email (emails change and are reused). Accounts are linked across
-- providers only by an email the provider says is verified.
CREATE TABLE user_identities (
  provider    text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9-]{0,31}$'),
  subject     text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  email       text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (provider, subject)
);
CREATE INDEX user_identities_user_id_idx ON user_identities (user_id);

-- One row per sign-in in progress: the state sent to the provider (hashed), the PKCE verifier and the
-- nonce it must come back with, and where the user goes afterwards. Consumed once; ten minutes at most.
CREATE TABLE auth_flows (
  state_hash     bytea PRIMARY KEY CHECK (octet_length(state_hash) = 32),
  provider       text NOT NULL,
  code_verifier  text NOT NULL,
  nonce          text,
  next_path      text NOT NULL DEFAULT '/dashboard',
  created_at     timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz NOT NULL
);
CREATE INDEX auth_flows_expires_at_idx ON auth_flows (expires_at);

-- Email sign-in links: the token's hash only; one use; fifteen minutes.
CREATE TABLE magic_links (
  token_hash   bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
  email        text NOT NULL,
  next_path    text NOT NULL DEFAULT '/dashboard',
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  used_at      timestamptz
);
CREATE INDEX magic_links_email_idx ON magic_links (lower(email), created_at);

-- Down Migration
DROP TABLE magic_links;
DROP TABLE auth_flows;
DROP TABLE user_identities;
