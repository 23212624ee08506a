/**
 * The schema's history as a static list, so it survives `deno bundle` (no directory to scan).
 * Each migration is written once for both SQLite and PostgreSQL.
 */
import { type CreateTableBuilder, type Kysely, sql } from "kysely";
import type { Migration, MigrationProvider } from "kysely/migration";

/** The SQL dialects the migrations are written for. */
import type { DialectName as Dialect } from "./sql_dialect.ts";

/** Column types that differ between the two databases. */
function types(dialect: Dialect) {
  return {
    /** Epoch milliseconds and byte counts need 64 bits. */
    big: sql.raw(dialect === "postgres" ? "bigint" : "integer"),
    /** An auto-numbered primary key. */
    id: (table: CreateTableBuilder<string>) =>
      table.addColumn("id", sql.raw(dialect === "postgres" ? "bigserial" : "integer"), (c) => {
        const key = c.primaryKey();
        return dialect === "sqlite" ? key.autoIncrement() : key;
      }),
    /** A reference to a cart, removed with it. */
    cartRef: (table: CreateTableBuilder<string>) =>
      table.addColumn(
        "cart_id",
        sql.raw(dialect === "postgres" ? "bigint" : "integer"),
        (c) => c.notNull().references("carts.id").onDelete("cascade"),
      ),
  };
}

function initial(dialect: Dialect): Migration {
  const { big, id, cartRef } = types(dialect);
  return {
    async up(db: Kysely<unknown>) {
      await id(db.schema.createTable("carts"))
        .addColumn("uid", "text", (c) => c.notNull())
        .addColumn("fingerprint", "text", (c) => c.notNull())
        .addColumn("bundle", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("message", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("file_count", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("created_at", big, (c) => c.notNull())
        .addColumn("used_at", big, (c) => c.notNull())
        .addColumn("ready_at", big)
        .addColumn("deleted_at", big)
        .execute();
      // One live cart per uid; deleted rows stay for the record.
      await sql`create unique index carts_live_uid on carts (uid) where deleted_at is null`
        .execute(db);

      await cartRef(id(db.schema.createTable("files")))
        .addColumn("seq", "integer", (c) => c.notNull())
        .addColumn("archive_id", "text", (c) => c.notNull())
        .addColumn("path", "text", (c) => c.notNull())
        .addColumn("hash_type", "text", (c) => c.notNull())
        .addColumn("hash_sum", "text", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("size", big)
        .addColumn("mtime", big)
        .addColumn("bytes_pulled", big, (c) => c.notNull().defaultTo(0))
        .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("polls", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("failures", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("error", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("verified", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("owner", "text")
        .addColumn("lease_until", big)
        .addColumn("next_try_at", big, (c) => c.notNull().defaultTo(0))
        .addColumn("stage_requested_at", big)
        .addColumn("updated_at", big, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("files_cart").on("files").columns(["cart_id", "seq"]).execute();
      await db.schema.createIndex("files_due").on("files").columns(["state", "next_try_at"])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable("files").execute();
      await db.schema.dropTable("carts").execute();
    },
  };
}

/** Space accounting: reservations, deferred removal of deleted carts, running downloads. */
function space(dialect: Dialect): Migration {
  const { big, id, cartRef } = types(dialect);
  return {
    async up(db: Kysely<unknown>) {
      // When the cart became ready or failed (its lifetime counts from there).
      await db.schema.alterTable("carts").addColumn("finished_at", big).execute();
      // When its files left the volume; a deleted cart keeps them while downloads run.
      await db.schema.alterTable("carts").addColumn("removed_at", big).execute();
      await db.schema.alterTable("carts").addColumn("delete_reason", "text").execute();
      await sql`update carts set finished_at = coalesce(ready_at, used_at) where status != 'staging'`
        .execute(db);
      await sql`update carts set removed_at = deleted_at where deleted_at is not null`.execute(db);
      // Bytes this file holds reserved on the volume while it is pulled.
      await db.schema.alterTable("files")
        .addColumn("reserved", big, (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.alterTable("files").addColumn("space_wait_since", big).execute();
      await cartRef(id(db.schema.createTable("downloads")))
        .addColumn("owner", "text", (c) => c.notNull())
        .addColumn("lease_until", big, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("downloads_cart").on("downloads").column("cart_id").execute();
      await db.schema.createIndex("carts_used").on("carts").columns(["deleted_at", "used_at"])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable("downloads").execute();
      for (const column of ["reserved", "space_wait_since"]) {
        await db.schema.alterTable("files").dropColumn(column).execute();
      }
      for (const column of ["finished_at", "removed_at", "delete_reason"]) {
        await db.schema.alterTable("carts").dropColumn(column).execute();
      }
    },
  };
}

/** Drafts (carts still receiving their files) do not hold their uid. */
function drafts(): Migration {
  return {
    async up(db: Kysely<unknown>) {
      await sql`drop index carts_live_uid`.execute(db);
      await sql`create unique index carts_live_uid on carts (uid)
        where deleted_at is null and status != 'creating'`.execute(db);
    },
    async down(db: Kysely<unknown>) {
      await sql`drop index carts_live_uid`.execute(db);
      await sql`create unique index carts_live_uid on carts (uid) where deleted_at is null`
        .execute(db);
    },
  };
}

/**
 * A running total of each cart's verified bytes, and an index of the files holding space, so a
 * reservation costs O(carts) rather than a scan of every file; per-cart indexes and a turn
 * marker so work is claimed fairly and cheaply across carts of any size.
 */
function accounting(dialect: Dialect): Migration {
  const { big } = types(dialect);
  return {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("carts")
        .addColumn("bytes", big, (c) => c.notNull().defaultTo(0)).execute();
      await sql`update carts set bytes = (select coalesce(sum(size), 0) from files
        where files.cart_id = carts.id and files.state = 'ready')`.execute(db);
      await sql`create index files_reserved on files (lease_until) where reserved > 0`.execute(db);
      await sql`create index carts_on_volume on carts (id) where removed_at is null`.execute(db);
      // A cart's files by state and due time: claiming or settling within a cart of 100 000
      // files must not walk all of them.
      await sql`create index files_cart_state on files (cart_id, state, next_try_at)`.execute(db);
      // When a worker last took work from the cart: carts take turns.
      await db.schema.alterTable("carts")
        .addColumn("claimed_at", big, (c) => c.notNull().defaultTo(0)).execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable("carts").dropColumn("claimed_at").execute();
      await sql`drop index files_cart_state`.execute(db);
      await sql`drop index carts_on_volume`.execute(db);
      await sql`drop index files_reserved`.execute(db);
      await db.schema.alterTable("carts").dropColumn("bytes").execute();
    },
  };
}

/** Since when a file has been waiting out an archive outage, if it is. */
function outages(dialect: Dialect): Migration {
  const { big } = types(dialect);
  return {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("files").addColumn("outage_since", big).execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable("files").dropColumn("outage_since").execute();
    },
  };
}

/** Who created each cart (the name of the token it was created with), when access control is on. */
function owners(): Migration {
  return {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("carts").addColumn("owner", "text").execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable("carts").dropColumn("owner").execute();
    },
  };
}

/** Cart events waiting for their receivers (the notification outbox). */
function notifications(dialect: Dialect): Migration {
  const { big, id, cartRef } = types(dialect);
  return {
    async up(db: Kysely<unknown>) {
      await cartRef(id(db.schema.createTable("notifications")))
        .addColumn("event_id", "text", (c) => c.notNull())
        .addColumn("url", "text", (c) => c.notNull())
        .addColumn("type", "text", (c) => c.notNull())
        .addColumn("data", "text", (c) => c.notNull())
        .addColumn("created_at", big, (c) => c.notNull())
        .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("next_try_at", big, (c) => c.notNull())
        .addColumn("owner", "text")
        .addColumn("lease_until", big)
        .addColumn("last_error", "text", (c) => c.notNull().defaultTo(""))
        .execute();
      await db.schema.createIndex("notifications_due").on("notifications")
        .columns(["next_try_at", "id"]).execute();
      await db.schema.createIndex("notifications_order").on("notifications")
        .columns(["cart_id", "url", "id"]).execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable("notifications").execute();
    },
  };
}

/**
 * The shared cache: verified files held once on the volume (`blobs`), which carts' files refer to.
 * Files staged before it join it here, each as its own entry, not yet linked into the cache folder
 * (`key` null: their one copy is their cart's; cartd links them in when it next starts).
 */
function cache(dialect: Dialect): Migration {
  const { big, id } = types(dialect);
  return {
    async up(db: Kysely<unknown>) {
      await id(db.schema.createTable("blobs"))
        .addColumn("key", "text", (c) => c.unique())
        .addColumn("archive_id", "text", (c) => c.notNull())
        .addColumn("hash_type", "text", (c) => c.notNull())
        .addColumn("hash_sum", "text", (c) => c.notNull())
        .addColumn("verified", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("size", big, (c) => c.notNull())
        .addColumn("mtime", big)
        .addColumn("origin_file_id", big)
        .addColumn("created_at", big, (c) => c.notNull())
        .addColumn("used_at", big, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("blobs_identity").on("blobs")
        .columns(["archive_id", "hash_type", "hash_sum"]).execute();
      // Which file pulls each file identity now: a second cart's file waits for it.
      await db.schema.createTable("pulls")
        .addColumn("identity", "text", (c) => c.primaryKey())
        .addColumn("file_id", big, (c) => c.notNull())
        .addColumn("created_at", big, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("pulls_file").on("pulls").column("file_id").execute();
      // The files of an archive id, to wake those waiting for its pull when it ends.
      await db.schema.createIndex("files_archive_id").on("files").columns(["archive_id", "state"])
        .execute();
      await db.schema.createIndex("blobs_used").on("blobs").column("used_at").execute();
      await db.schema.alterTable("files").addColumn("blob_id", big).execute();
      await db.schema.alterTable("files")
        .addColumn("from_cache", "integer", (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.createIndex("files_blob").on("files").column("blob_id").execute();
      await sql`insert into blobs (archive_id, hash_type, hash_sum, verified, size, mtime,
          origin_file_id, created_at, used_at)
        select f.archive_id, f.hash_type, lower(f.hash_sum), f.verified, f.size, f.mtime, f.id,
          c.used_at, c.used_at
        from files f join carts c on c.id = f.cart_id
        where f.state = 'ready' and c.removed_at is null and f.size is not null`.execute(db);
      // The bytes of every blob, kept as blobs come and go: a reservation reads it under the
      // site-wide lock, where summing a million rows would hold every other pull.
      await db.schema.createTable("cache_totals")
        .addColumn("id", "integer", (c) => c.primaryKey())
        .addColumn("bytes", big, (c) => c.notNull())
        .execute();
      await sql`insert into cache_totals (id, bytes)
        select 1, coalesce(sum(size), 0) from blobs`.execute(db);
      // Indexed first: the update below looks up one blob per ready file.
      await db.schema.createIndex("blobs_origin").on("blobs").column("origin_file_id").execute();
      await sql`update files set blob_id = (select b.id from blobs b
        where b.origin_file_id = files.id) where state = 'ready'`.execute(db);
    },
    async down(db: Kysely<unknown>) {
      await sql`drop index files_archive_id`.execute(db);
      await db.schema.dropTable("cache_totals").execute();
      await db.schema.dropTable("pulls").execute();
      await sql`drop index files_blob`.execute(db);
      await db.schema.alterTable("files").dropColumn("from_cache").execute();
      await db.schema.alterTable("files").dropColumn("blob_id").execute();
      await db.schema.dropTable("blobs").execute();
    },
  };
}

/**
 * Whole-cart admission: a cart's first pull promises it the bytes of every file it still needs
 * (`carts.promised_bytes`, each such file's share in `files.promised`), so carts that do not fit
 * together never stage part of the way each and then wait on each other.
 */
function admission(dialect: Dialect): Migration {
  const { big } = types(dialect);
  return {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("carts")
        .addColumn("promised_bytes", big, (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.alterTable("carts").addColumn("admitted_at", big).execute();
      // Carts already under way were admitted as they went.
      await sql`update carts set admitted_at = created_at`.execute(db);
      await db.schema.alterTable("files")
        .addColumn("promised", big, (c) => c.notNull().defaultTo(0)).execute();
      // Every reservation sums the promises of the few carts that hold one, and looks for the
      // files of its cart that became known and are not promised yet.
      await sql`create index carts_promised on carts (id) where promised_bytes > 0`.execute(db);
      await sql`create index files_unpromised on files (cart_id)
        where promised = 0 and size is not null and blob_id is null`.execute(db);
    },
    async down(db: Kysely<unknown>) {
      await sql`drop index files_unpromised`.execute(db);
      await sql`drop index carts_promised`.execute(db);
      await db.schema.alterTable("files").dropColumn("promised").execute();
      await db.schema.alterTable("carts").dropColumn("admitted_at").execute();
      await db.schema.alterTable("carts").dropColumn("promised_bytes").execute();
    },
  };
}

/**
 * Delivery beyond the tar: each verified file's CRC-32 (computed as it is pulled, for zips). (A
 * file is looked up by its path through its cart's rows: an index of paths would double the time
 * a cart of 100 000 files takes to be created.)
 */
function delivery(): Migration {
  return {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("files").addColumn("crc32", "bigint").execute();
      await db.schema.alterTable("blobs").addColumn("crc32", "bigint").execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable("blobs").dropColumn("crc32").execute();
      await db.schema.alterTable("files").dropColumn("crc32").execute();
    },
  };
}

/** Kysely's migration provider over the static list. */
export function migrationProvider(dialect: Dialect): MigrationProvider {
  return {
    getMigrations: () =>
      Promise.resolve({
        "0001_initial": initial(dialect),
        "0002_space": space(dialect),
        "0003_drafts": drafts(),
        "0004_accounting": accounting(dialect),
        "0005_outages": outages(dialect),
        "0006_owners": owners(),
        "0007_notifications": notifications(dialect),
        "0008_cache": cache(dialect),
        "0009_admission": admission(dialect),
        "0010_delivery": delivery(),
      }),
  };
}
