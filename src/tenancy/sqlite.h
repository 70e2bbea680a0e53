// Thin RAII wrappers over SQLite's C API, for the tenancy store and the
// batch store (src/batch/store.h), plus the one transaction and migration
// routine both use.
// Every statement is prepared with `?` placeholders and bound values: no
// SQL text is ever built from data.
//
// Database owns one sqlite3 connection; Statement owns one prepared
// statement of a Database that outlives it. Neither is thread-safe: the
// owner serialises use (TenantStore holds a mutex).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace llmpool::tenancy::sql {

struct DbCloser {
  void operator()(sqlite3* db) const;
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const;
};

class Statement;

// A value to bind as a BLOB rather than TEXT.
struct Blob {
  std::string_view bytes;
};

class Database {
 public:
  // Opens (creating if missing) the database file at `path`, read-write.
  // Internal (with SQLite's message) if it cannot be opened.
  static Result<Database> open(const std::string& path);

  // Runs `sql`, which takes no parameters (schema text, PRAGMAs,
  // BEGIN/COMMIT). Never pass data here.
  Status exec(const char* sql);
  // Prepares one statement.
  Result<Statement> prepare(std::string_view sql);
  // The number of rows the last INSERT/UPDATE/DELETE changed.
  int64_t changes() const;
  sqlite3* handle() const { return db_.get(); }

 private:
  explicit Database(sqlite3* db) : db_(db) {}
  std::unique_ptr<sqlite3, DbCloser> db_;
};

class Statement {
 public:
  // Binding: indexes start at 1, as in SQLite. Text and blobs are copied.
  Status bind(int index, int64_t value);
  Status bind(int index, std::string_view text);
  Status bind_blob(int index, std::string_view bytes);
  Status bind_null(int index);
  Status bind(int index, const std::optional<int64_t>& value) {
    return value ? bind(index, *value) : bind_null(index);
  }
  Status bind(int index, Blob blob) { return bind_blob(index, blob.bytes); }
  Status bind(int index, const std::string& text) { return bind(index, std::string_view(text)); }
  Status bind(int index, const char* text) { return bind(index, std::string_view(text)); }
  Status bind(int index, int value) { return bind(index, static_cast<int64_t>(value)); }
  Status bind(int index, bool value) { return bind(index, static_cast<int64_t>(value ? 1 : 0)); }

  // Binds `values` to parameters 1, 2, ... in order; the first failure wins.
  template <typename... Values>
  Status bind_all(const Values&... values) {
    Status status;
    int index = 0;
    ((status.is_ok() ? (void)(status = bind(++index, values)) : (void)0), ...);
    return status;
  }

  // Steps once: true when a row is ready, false when done. A constraint
  // violation comes back as InvalidArgument with error code
  // "constraint"; other failures as Internal.
  Result<bool> step();
  // Steps to the end (for statements that return no rows).
  Status run();
  // Makes the statement ready to run again; bindings stay until rebound.
  void reset();

  // Columns of the current row, indexes from 0.
  bool is_null(int col) const;
  int64_t column_int(int col) const;
  std::string column_text(int col) const;
  std::string column_blob(int col) const;

 private:
  friend class Database;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Status check_bind(int rc) const;
  sqlite3* db_;
  std::unique_ptr<sqlite3_stmt, StmtFinalizer> stmt_;
};

// Runs `body` (returning Status) inside BEGIN IMMEDIATE ... COMMIT; rolls
// back when it or the commit fails, and returns the first failure.
template <typename F>
Status transaction(Database& db, F&& body) {
  Status s = db.exec("BEGIN IMMEDIATE");
  if (!s) return s;
  s = body();
  if (s) s = db.exec("COMMIT");
  if (!s) {
    Status rollback = db.exec("ROLLBACK");
    (void)rollback;  // the first failure is the one to report
  }
  return s;
}

// The version in the one-row `schema_version` table; 0 when it is empty.
Result<int> schema_version(Database& db);

// Brings the schema to version migrations.size(): migration i (0-based)
// takes it to version i + 1, each in its own transaction that re-reads the
// version (another process may have migrated meanwhile). Unimplemented when
// the file's version is newer than this build knows.
Status migrate(Database& db, const std::vector<const char*>& migrations);

// Sets a freshly opened store up: a 5 s busy timeout, WAL, synchronous
// NORMAL, foreign keys on, then migrate().
Status prepare_store(Database& db, const std::vector<const char*>& migrations);

}  // namespace llmpool::tenancy::sql
