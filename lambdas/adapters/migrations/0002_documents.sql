-- Documents for retrieval-augmented answers and their chunks with embeddings (all-MiniLM-L6-v2,
-- 384 dimensions). Documents are always here; chunks are here when the vector store is pgvector.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE documents (
    id              uuid PRIMARY KEY,
    tenant_id       text NOT NULL,
    source          text NOT NULL,
    title           text NOT NULL,
    content_hash    text NOT NULL,
    mime            text NOT NULL,
    embedding_model text NOT NULL,
    chunk_count     int  NOT NULL DEFAULT 0,
    byte_size       bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, source)
);
CREATE INDEX documents_by_hash ON documents (tenant_id, content_hash);
CREATE INDEX documents_by_tenant_time ON documents (tenant_id, updated_at DESC, id DESC);

CREATE TABLE chunks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    tenant_id   text NOT NULL,
    ordinal     int  NOT NULL CHECK (ordinal >= 0),
    text        text NOT NULL,
    tokens      int  NOT NULL CHECK (tokens > 0),
    embedding   vector(384) NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    UNIQUE (document_id, ordinal)
);
-- Cosine distance, matching the unit vectors the embedders return.
CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)
    WITH (m = 16, ef_construction = 64);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
-- Lets the planner scan a small tenant exactly instead of walking the whole graph.
CREATE INDEX chunks_by_tenant ON chunks (tenant_id);
