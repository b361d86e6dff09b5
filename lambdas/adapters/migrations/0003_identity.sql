-- Identity: API keys (stored only as a hash) and per-tenant limit overrides.

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    -- The public, recognisable part of the key ("csk_" + 12 base32 characters): the lookup id.
    prefix       text NOT NULL UNIQUE,
    -- SHA-256 (hex) of the whole key. The secret has 256 random bits, so a slow hash adds nothing.
    hash         text NOT NULL CHECK (length(hash) = 64),
    tenant_id    text NOT NULL,
    name         text NOT NULL,
    scopes       text[] NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at DESC, id DESC);

-- Only the limits a tenant's admin changed; everything else comes from the settings' defaults.
CREATE TABLE tenant_limits (
    tenant_id  text PRIMARY KEY,
    overrides  jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
