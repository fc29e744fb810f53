-- Single sign-on: an account may be linked to one OpenID Connect identity (issuer + subject,
-- never the name, so a renamed person stays the same user). Linked accounts created at
-- sign-in have no local password (an empty hash, which no password matches).
ALTER TABLE users ADD COLUMN oidc_issuer TEXT;
ALTER TABLE users ADD COLUMN oidc_subject TEXT;
-- An admin allowed this local account to be taken over by the next single sign-on of
-- the same name.
ALTER TABLE users ADD COLUMN sso_link_allowed INTEGER NOT NULL DEFAULT 0 CHECK (sso_link_allowed IN (0, 1));
CREATE UNIQUE INDEX users_oidc_identity ON users (oidc_issuer, oidc_subject) WHERE oidc_subject IS NOT NULL;

-- Sign-ins under way at the provider: single use, bound to the browser that started them
-- (a cookie whose hash is kept here), dropped after ten minutes.
CREATE TABLE oidc_logins (
    state_hash    TEXT PRIMARY KEY,
    binding_hash  TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    next          TEXT NOT NULL,
    created_at    TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX oidc_logins_created ON oidc_logins (created_at);
