-- Version 1: every table of a task hub.
--
-- Migrate runs this file inside a transaction with search_path set to the
-- hub's schema, so names are unqualified here.
--
-- Times are bigint Unix nanoseconds (0 for the zero time): the engine's Now
-- parameters are authoritative and keep their full precision, exactly as in
-- the SQLite backend. IDs are text in the "C" collation, so they order byte
-- by byte (as SQLite's BINARY collation does) whatever the database's locale.

-- One row at most: a schema holds one hub.
CREATE TABLE hub (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    name            text NOT NULL,
    partition_count integer NOT NULL,
    created_at      bigint NOT NULL,
    settings        bytea
);

-- Updated on every acquire and renew; the free space lets those updates
-- stay on their page (HOT).
CREATE TABLE partitions (
    idx              integer PRIMARY KEY,
    owner            text NOT NULL DEFAULT '',
    epoch            bigint NOT NULL DEFAULT 0,
    lease_expires_at bigint NOT NULL DEFAULT 0,
    next_owner       text NOT NULL DEFAULT ''
) WITH (fillfactor = 50);

CREATE TABLE workers (
    id           text COLLATE "C" PRIMARY KEY,
    host         text NOT NULL,
    started_at   bigint NOT NULL,
    heartbeat_at bigint NOT NULL,
    partitions   integer[],
    info         bytea
);

CREATE TABLE history (
    instance_id  text COLLATE "C" NOT NULL,
    seq          bigint NOT NULL,
    execution_id text NOT NULL,
    data         bytea,
    PRIMARY KEY (instance_id, seq)
);

CREATE TABLE instances (
    instance_id        text COLLATE "C" PRIMARY KEY,
    name               text COLLATE "C" NOT NULL,
    execution_id       text NOT NULL,
    status             text COLLATE "C" NOT NULL,
    input              bytea,
    output             bytea,
    custom_status      bytea,
    failure            bytea,
    created_at         bigint NOT NULL,
    updated_at         bigint NOT NULL,
    completed_at       bigint NOT NULL,
    scheduled_start_at bigint NOT NULL,
    parent_instance_id text NOT NULL,
    version            bigint NOT NULL
);
-- Listing pages in instance_id order, so the filter indexes end with it.
CREATE INDEX instances_status ON instances (status, instance_id);
CREATE INDEX instances_name ON instances (name, instance_id);
CREATE INDEX instances_created ON instances (created_at);

-- Receives update dequeue_count and the lock columns, none of them indexed:
-- with free space on the page those updates are HOT and touch no index.
CREATE TABLE control (
    id            text COLLATE "C" PRIMARY KEY,
    partition     integer NOT NULL,
    instance_id   text COLLATE "C" NOT NULL,
    data          bytea,
    enqueued_at   bigint NOT NULL,
    visible_at    bigint NOT NULL,
    dequeue_count integer NOT NULL DEFAULT 0,
    locked_epoch  bigint NOT NULL DEFAULT 0,
    locked_until  bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 70);
-- Receive walks a partition in ID order and stops after Max visible ones.
CREATE INDEX control_receive ON control (partition, id);
-- Finds the next delayed message (durable timers) without a scan.
CREATE INDEX control_delayed ON control (partition, visible_at);

CREATE TABLE work (
    id            text COLLATE "C" PRIMARY KEY,
    instance_id   text COLLATE "C" NOT NULL,
    data          bytea,
    enqueued_at   bigint NOT NULL,
    visible_at    bigint NOT NULL,
    dequeue_count integer NOT NULL DEFAULT 0,
    lock_token    text NOT NULL DEFAULT '',
    locked_until  bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 70);

CREATE TABLE payloads (
    key         text COLLATE "C" PRIMARY KEY,
    instance_id text COLLATE "C" NOT NULL,
    data        bytea
);
CREATE INDEX payloads_instance ON payloads (instance_id);

CREATE TABLE poison (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            text NOT NULL,
    queue         text NOT NULL,
    partition     integer NOT NULL,
    instance_id   text NOT NULL,
    data          bytea,
    dequeue_count integer NOT NULL,
    reason        text NOT NULL,
    created_at    bigint NOT NULL
);
CREATE INDEX poison_created ON poison (created_at, seq);
