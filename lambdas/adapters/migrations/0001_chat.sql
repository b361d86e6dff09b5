-- Conversations and messages: one row per message (never one item per conversation), and the usage
-- ledger: one row per answer, also for answers cut short. Usage rows outlive their conversations.
CREATE TABLE conversations (
    id            uuid PRIMARY KEY,
    tenant_id     text NOT NULL,
    user_id       text NOT NULL,
    title         text NOT NULL DEFAULT '',
    message_count int  NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_by_owner ON conversations (tenant_id, user_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id              uuid PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    tenant_id       text NOT NULL,
    seq             int  NOT NULL,
    role            text NOT NULL CHECK (role IN ('user', 'assistant')),
    content         text NOT NULL,
    request_id      uuid NOT NULL,
    finish_reason   text,
    citations       jsonb NOT NULL DEFAULT '[]'::jsonb,
    input_tokens    int,
    output_tokens   int,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, seq),
    UNIQUE (request_id, role)
);

CREATE TABLE usage_records (
    id              bigserial PRIMARY KEY,
    request_id      uuid NOT NULL UNIQUE,
    tenant_id       text NOT NULL,
    user_id         text NOT NULL,
    conversation_id uuid,
    message_id      uuid,
    model_profile   text NOT NULL,
    region          text NOT NULL,
    input_tokens    int  NOT NULL CHECK (input_tokens >= 0),
    output_tokens   int  NOT NULL CHECK (output_tokens >= 0),
    ttft_ms         int,
    duration_ms     int  NOT NULL,
    finish_reason   text NOT NULL,
    cost_usd        numeric(16, 8) NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_by_tenant_time ON usage_records (tenant_id, created_at);
CREATE INDEX usage_by_user_time ON usage_records (tenant_id, user_id, created_at);
