#include "tenancy/sqlite.h"

#include <sqlite3.h>

namespace llmpool::tenancy::sql {

void DbCloser::operator()(sqlite3* db) const { sqlite3_close_v2(db); }
void StmtFinalizer::operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }

Result<Database> Database::open(const std::string& path) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  Database db(raw);  // closes `raw` on every path, also when open failed
  if (rc != SQLITE_OK) {
    return Status::internal("cannot open the database " + path + ": " +
                            (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  sqlite3_extended_result_codes(raw, 1);
  return db;
}

Status Database::exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return Status::internal("database: " + msg);
  }
  return Status::ok();
}

Result<Statement> Database::prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_.get(), sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return Status::internal(std::string("database: cannot prepare a statement: ") + sqlite3_errmsg(db_.get()));
  }
  return Statement(db_.get(), stmt);
}

int64_t Database::changes() const { return sqlite3_changes64(db_.get()); }

Status Statement::check_bind(int rc) const {
  if (rc == SQLITE_OK) return Status::ok();
  return Status::internal(std::string("database: cannot bind a value: ") + sqlite3_errmsg(db_));
}

Status Statement::bind(int index, int64_t value) {
  return check_bind(sqlite3_bind_int64(stmt_.get(), index, value));
}
// SQLite binds NULL for a null pointer, and an empty string_view may have
// one: bind an empty value instead.
Status Statement::bind(int index, std::string_view text) {
  return check_bind(sqlite3_bind_text64(stmt_.get(), index, text.data() ? text.data() : "", text.size(),
                                        SQLITE_TRANSIENT, SQLITE_UTF8));
}
Status Statement::bind_blob(int index, std::string_view bytes) {
  return check_bind(sqlite3_bind_blob64(stmt_.get(), index, bytes.data() ? bytes.data() : "", bytes.size(),
                                        SQLITE_TRANSIENT));
}
Status Statement::bind_null(int index) { return check_bind(sqlite3_bind_null(stmt_.get(), index)); }

Result<bool> Statement::step() {
  int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    return Status::invalid_argument(std::string("database constraint: ") + sqlite3_errmsg(db_), {},
                                    "constraint");
  }
  return Status::internal(std::string("database: ") + sqlite3_errmsg(db_));
}

Status Statement::run() {
  while (true) {
    Result<bool> r = step();
    if (!r) return r.status();
    if (!*r) return Status::ok();
  }
}

void Statement::reset() { sqlite3_reset(stmt_.get()); }

bool Statement::is_null(int col) const { return sqlite3_column_type(stmt_.get(), col) == SQLITE_NULL; }
int64_t Statement::column_int(int col) const { return sqlite3_column_int64(stmt_.get(), col); }
std::string Statement::column_text(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_.get(), col);
  int n = sqlite3_column_bytes(stmt_.get(), col);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}
std::string Statement::column_blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_.get(), col);
  int n = sqlite3_column_bytes(stmt_.get(), col);
  return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

Result<int> schema_version(Database& db) {
  Result<Statement> st = db.prepare("SELECT version FROM schema_version");
  if (!st) return st.status();
  Result<bool> row = st->step();
  if (!row) return row.status();
  return *row ? static_cast<int>(st->column_int(0)) : 0;
}

Status migrate(Database& db, const std::vector<const char*>& migrations) {
  const int latest = static_cast<int>(migrations.size());
  for (int target = 1; target <= latest; ++target) {
    Status s = transaction(db, [&]() -> Status {
      RETURN_IF_ERROR(db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"));
      // Read inside the transaction: another process may have migrated
      // while this one waited for the write lock.
      ASSIGN_OR_RETURN(int v, schema_version(db));
      if (v > latest) {
        return Status::unimplemented("the database's schema version " + std::to_string(v) +
                                     " is newer than this build's " + std::to_string(latest));
      }
      if (v >= target) return Status::ok();
      RETURN_IF_ERROR(db.exec(migrations[static_cast<size_t>(target - 1)]));
      RETURN_IF_ERROR(db.exec("DELETE FROM schema_version"));
      ASSIGN_OR_RETURN(Statement set, db.prepare("INSERT INTO schema_version (version) VALUES (?)"));
      RETURN_IF_ERROR(set.bind_all(target));
      return set.run();
    });
    RETURN_IF_ERROR(s);
  }
  return Status::ok();
}

Status prepare_store(Database& db, const std::vector<const char*>& migrations) {
  // busy_timeout first, so that switching to WAL waits for other users.
  const char* pragmas[] = {"PRAGMA busy_timeout = 5000", "PRAGMA journal_mode = WAL",
                           "PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = ON"};
  for (const char* p : pragmas) RETURN_IF_ERROR(db.exec(p));
  return migrate(db, migrations);
}

}  // namespace llmpool::tenancy::sql
