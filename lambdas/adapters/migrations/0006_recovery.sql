-- Recovery of requests whose generation died: the user message keeps its generation options, so a
-- request can be enqueued again from PostgreSQL alone (the sweeper, resume, a repeated sendMessage),
-- and a partial index finds user messages that have no answer yet.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS options jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX IF NOT EXISTS messages_user_by_time ON messages (created_at) WHERE role = 'user';
