#include "batch/store.h"

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <system_error>

#include "tenancy/sqlite.h"

namespace llmpool::batch {

namespace sql = tenancy::sql;

namespace {

// Index i brings the schema to version i + 1. Append only.
const std::vector<const char*> kMigrations = {
    // 1: files, batches, jobs, results.
    R"sql(
    CREATE TABLE files (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      id TEXT NOT NULL UNIQUE,
      tenant TEXT NOT NULL,
      purpose TEXT NOT NULL,
      filename TEXT NOT NULL,
      bytes INTEGER NOT NULL,
      created_at INTEGER NOT NULL,
      content BLOB NOT NULL
    ) STRICT;
    CREATE INDEX files_by_tenant ON files(tenant, seq);
    CREATE TABLE batches (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      id TEXT NOT NULL UNIQUE,
      tenant TEXT NOT NULL,
      endpoint TEXT NOT NULL,
      input_file_id TEXT NOT NULL,
      completion_window TEXT NOT NULL,
      status TEXT NOT NULL,
      output_file_id TEXT,
      error_file_id TEXT,
      created_at INTEGER NOT NULL,
      in_progress_at INTEGER,
      expires_at INTEGER,
      finalizing_at INTEGER,
      completed_at INTEGER,
      failed_at INTEGER,
      expired_at INTEGER,
      cancelling_at INTEGER,
      cancelled_at INTEGER,
      total INTEGER NOT NULL,
      completed INTEGER NOT NULL,
      failed INTEGER NOT NULL,
      cancelled INTEGER NOT NULL,
      metadata TEXT NOT NULL,
      errors TEXT NOT NULL
    ) STRICT;
    CREATE INDEX batches_by_tenant ON batches(tenant, seq);
    CREATE INDEX batches_by_status ON batches(status, seq);
    CREATE TABLE jobs (
      id TEXT PRIMARY KEY NOT NULL,
      batch_id TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
      line INTEGER NOT NULL,
      custom_id TEXT NOT NULL,
      model TEXT NOT NULL,
      body TEXT NOT NULL
    ) STRICT;
    CREATE INDEX jobs_by_batch ON jobs(batch_id, line);
    CREATE TABLE results (
      job_id TEXT PRIMARY KEY NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
      status_code INTEGER NOT NULL,
      body TEXT NOT NULL,
      created_at INTEGER NOT NULL
    ) STRICT;
    )sql",
};

constexpr const char* kFileColumns = "id, tenant, purpose, filename, bytes, created_at";
// The mutable columns first (update_batch binds them in this order), then the fixed ones.
constexpr const char* kBatchColumns =
    "status, output_file_id, error_file_id, in_progress_at, expires_at, finalizing_at, completed_at, failed_at, "
    "expired_at, cancelling_at, cancelled_at, total, completed, failed, cancelled, errors, "
    "id, tenant, endpoint, input_file_id, completion_window, created_at, metadata";

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

FileRecord read_file(const sql::Statement& st) {
  return FileRecord{st.column_text(0), st.column_text(1), st.column_text(2),
                    st.column_text(3), st.column_int(4),  st.column_int(5)};
}

std::optional<int64_t> opt_int(const sql::Statement& st, int col) {
  if (st.is_null(col)) return std::nullopt;
  return st.column_int(col);
}
std::optional<std::string> opt_text(const sql::Statement& st, int col) {
  if (st.is_null(col)) return std::nullopt;
  return st.column_text(col);
}

BatchRecord read_batch(const sql::Statement& st) {
  BatchRecord b;
  b.status = st.column_text(0);
  b.output_file_id = opt_text(st, 1);
  b.error_file_id = opt_text(st, 2);
  b.in_progress_at = opt_int(st, 3);
  b.expires_at = opt_int(st, 4);
  b.finalizing_at = opt_int(st, 5);
  b.completed_at = opt_int(st, 6);
  b.failed_at = opt_int(st, 7);
  b.expired_at = opt_int(st, 8);
  b.cancelling_at = opt_int(st, 9);
  b.cancelled_at = opt_int(st, 10);
  b.total = st.column_int(11);
  b.completed = st.column_int(12);
  b.failed = st.column_int(13);
  b.cancelled = st.column_int(14);
  b.errors = st.column_text(15);
  b.id = st.column_text(16);
  b.tenant = st.column_text(17);
  b.endpoint = st.column_text(18);
  b.input_file_id = st.column_text(19);
  b.completion_window = st.column_text(20);
  b.created_at = st.column_int(21);
  b.metadata = st.column_text(22);
  return b;
}

Status bind_opt(sql::Statement& st, int index, const std::optional<std::string>& v) {
  return v ? st.bind(index, *v) : st.bind_null(index);
}

// Binds the mutable columns of kBatchColumns to parameters 1..16.
Status bind_mutable(sql::Statement& st, const BatchRecord& b) {
  RETURN_IF_ERROR(st.bind(1, b.status));
  RETURN_IF_ERROR(bind_opt(st, 2, b.output_file_id));
  RETURN_IF_ERROR(bind_opt(st, 3, b.error_file_id));
  const std::optional<int64_t>* times[] = {&b.in_progress_at, &b.expires_at,  &b.finalizing_at, &b.completed_at,
                                           &b.failed_at,      &b.expired_at,  &b.cancelling_at, &b.cancelled_at};
  int index = 4;
  for (const auto* t : times) RETURN_IF_ERROR(st.bind(index++, *t));
  for (int64_t v : {b.total, b.completed, b.failed, b.cancelled}) RETURN_IF_ERROR(st.bind(index++, v));
  return st.bind(index, b.errors);
}

bool is_success(int32_t status_code) { return status_code >= 200 && status_code < 300; }
constexpr int32_t kCancelledStatus = 499;

template <typename T, typename Read>
Result<std::vector<T>> collect(sql::Statement& st, Read read) {
  std::vector<T> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return out;
    out.push_back(read(st));
  }
}

}  // namespace

struct BatchStore::Impl {
  sql::Database db;

  Result<std::optional<BatchRecord>> find_batch(const std::string& id) {
    ASSIGN_OR_RETURN(sql::Statement st,
                     db.prepare(std::string("SELECT ") + kBatchColumns + " FROM batches WHERE id = ?"));
    RETURN_IF_ERROR(st.bind_all(id));
    ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return std::optional<BatchRecord>();
    return std::optional<BatchRecord>(read_batch(st));
  }

  Result<bool> update(const BatchRecord& b, const std::string& expected_status) {
    ASSIGN_OR_RETURN(sql::Statement st,
                     db.prepare("UPDATE batches SET status = ?, output_file_id = ?, error_file_id = ?, "
                                "in_progress_at = ?, expires_at = ?, finalizing_at = ?, completed_at = ?, "
                                "failed_at = ?, expired_at = ?, cancelling_at = ?, cancelled_at = ?, total = ?, "
                                "completed = ?, failed = ?, cancelled = ?, errors = ? WHERE id = ? AND status = ?"));
    RETURN_IF_ERROR(bind_mutable(st, b));
    RETURN_IF_ERROR(st.bind(17, b.id));
    RETURN_IF_ERROR(st.bind(18, expected_status));
    RETURN_IF_ERROR(st.run());
    return db.changes() == 1;
  }

  Status insert_file(const FileRecord& f, std::string_view content) {
    ASSIGN_OR_RETURN(sql::Statement st, db.prepare(std::string("INSERT INTO files (") + kFileColumns +
                                                   ", content) VALUES (?, ?, ?, ?, ?, ?, ?)"));
    RETURN_IF_ERROR(st.bind_all(f.id, f.tenant, f.purpose, f.filename, f.bytes, f.created_at,
                                sql::Blob{content}));
    Status s = st.run();
    if (!s && s.error_code() == "constraint") return Status::already_exists("file id " + f.id + " is taken", "id");
    return s;
  }
};

BatchStore::BatchStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BatchStore::~BatchStore() = default;

int BatchStore::current_schema_version() { return static_cast<int>(kMigrations.size()); }

Result<std::unique_ptr<BatchStore>> BatchStore::open(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return Status::internal("cannot create the data_dir " + data_dir + ": " + ec.message());
  std::string path = (std::filesystem::path(data_dir) / "batch.db").string();
  // Tenants' prompts and answers live here: owner only, WAL files too.
  mode_t old_mask = ::umask(077);
  Result<sql::Database> db = sql::Database::open(path);
  ::umask(old_mask);
  if (!db) return db.status();
  if (::chmod(path.c_str(), 0600) != 0) return Status::internal("cannot make " + path + " private");
  RETURN_IF_ERROR(sql::prepare_store(*db, kMigrations));
  return std::unique_ptr<BatchStore>(new BatchStore(std::make_unique<Impl>(Impl{std::move(*db)})));
}

Result<int> BatchStore::schema_version() {
  std::lock_guard lock(mu_);
  return sql::schema_version(impl_->db);
}

Status BatchStore::add_file(const FileRecord& file, std::string_view content) {
  std::lock_guard lock(mu_);
  return impl_->insert_file(file, content);
}

Result<FileRecord> BatchStore::get_file(const std::string& tenant, const std::string& id) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(sql::Statement st, impl_->db.prepare(std::string("SELECT ") + kFileColumns +
                                                        " FROM files WHERE id = ? AND tenant = ?"));
  RETURN_IF_ERROR(st.bind_all(id, tenant));
  ASSIGN_OR_RETURN(bool row, st.step());
  if (!row) return Status::not_found("No such File object: " + id, "file_id");
  return read_file(st);
}

Result<std::string> BatchStore::file_content(const std::string& tenant, const std::string& id) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(sql::Statement st, impl_->db.prepare("SELECT content FROM files WHERE id = ? AND tenant = ?"));
  RETURN_IF_ERROR(st.bind_all(id, tenant));
  ASSIGN_OR_RETURN(bool row, st.step());
  if (!row) return Status::not_found("No such File object: " + id, "file_id");
  return st.column_blob(0);
}

Result<std::vector<FileRecord>> BatchStore::list_files(const std::string& tenant, const std::string& purpose,
                                                       const Page& page) {
  std::lock_guard lock(mu_);
  // The cursor is the `after` file's seq; an unknown id lists nothing.
  const char* cmp = page.ascending ? ">" : "<";
  std::string q = std::string("SELECT ") + kFileColumns + " FROM files WHERE tenant = ?1 AND (?2 = '' OR purpose = ?2)" +
                  " AND (?3 = '' OR seq " + cmp + " (SELECT seq FROM files WHERE id = ?3 AND tenant = ?1))" +
                  " ORDER BY seq " + (page.ascending ? "ASC" : "DESC") + " LIMIT ?4";
  ASSIGN_OR_RETURN(sql::Statement st, impl_->db.prepare(q));
  RETURN_IF_ERROR(st.bind_all(tenant, purpose, page.after, page.limit + 1));
  return collect<FileRecord>(st, read_file);
}

Status BatchStore::delete_file(const std::string& tenant, const std::string& id) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(sql::Statement st, impl_->db.prepare("DELETE FROM files WHERE id = ? AND tenant = ?"));
  RETURN_IF_ERROR(st.bind_all(id, tenant));
  RETURN_IF_ERROR(st.run());
  if (impl_->db.changes() == 0) return Status::not_found("No such File object: " + id, "file_id");
  return Status::ok();
}

Status BatchStore::add_batch(const BatchRecord& b) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(sql::Statement st, impl_->db.prepare(std::string("INSERT INTO batches (") + kBatchColumns +
                                                        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                                                        "?, ?, ?, ?, ?, ?, ?)"));
  RETURN_IF_ERROR(bind_mutable(st, b));
  int index = 17;
  for (const std::string* v : {&b.id, &b.tenant, &b.endpoint, &b.input_file_id, &b.completion_window})
    RETURN_IF_ERROR(st.bind(index++, *v));
  RETURN_IF_ERROR(st.bind(index++, b.created_at));
  RETURN_IF_ERROR(st.bind(index, b.metadata));
  Status s = st.run();
  if (!s && s.error_code() == "constraint") return Status::already_exists("batch id " + b.id + " is taken", "id");
  return s;
}

Result<BatchRecord> BatchStore::get_batch(const std::string& tenant, const std::string& id) {
  ASSIGN_OR_RETURN(BatchRecord b, get_batch(id));
  if (b.tenant != tenant) return Status::not_found("No such Batch object: " + id, "batch_id");
  return b;
}

Result<BatchRecord> BatchStore::get_batch(const std::string& id) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(std::optional<BatchRecord> b, impl_->find_batch(id));
  if (!b) return Status::not_found("No such Batch object: " + id, "batch_id");
  return std::move(*b);
}

Result<std::vector<BatchRecord>> BatchStore::list_batches(const std::string& tenant, const Page& page) {
  std::lock_guard lock(mu_);
  std::string q = std::string("SELECT ") + kBatchColumns +
                  " FROM batches WHERE tenant = ?1"
                  " AND (?2 = '' OR seq < (SELECT seq FROM batches WHERE id = ?2 AND tenant = ?1))"
                  " ORDER BY seq DESC LIMIT ?3";
  ASSIGN_OR_RETURN(sql::Statement st, impl_->db.prepare(q));
  RETURN_IF_ERROR(st.bind_all(tenant, page.after, page.limit + 1));
  return collect<BatchRecord>(st, read_batch);
}

Result<std::vector<std::string>> BatchStore::batches_with_status(const std::string& status) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(sql::Statement st, impl_->db.prepare("SELECT id FROM batches WHERE status = ? ORDER BY seq"));
  RETURN_IF_ERROR(st.bind_all(status));
  return collect<std::string>(st, [](const sql::Statement& s) { return s.column_text(0); });
}

Result<bool> BatchStore::update_batch(const BatchRecord& batch, const std::string& expected_status) {
  std::lock_guard lock(mu_);
  return impl_->update(batch, expected_status);
}

Result<bool> BatchStore::start_batch(const BatchRecord& batch, const std::vector<JobRecord>& jobs) {
  std::lock_guard lock(mu_);
  bool started = false;
  Status s = sql::transaction(impl_->db, [&]() -> Status {
    ASSIGN_OR_RETURN(started, impl_->update(batch, kValidating));
    if (!started) return Status::ok();
    ASSIGN_OR_RETURN(sql::Statement st,
                     impl_->db.prepare("INSERT OR IGNORE INTO jobs (id, batch_id, line, custom_id, model, body) "
                                       "VALUES (?, ?, ?, ?, ?, ?)"));
    for (const JobRecord& j : jobs) {
      RETURN_IF_ERROR(st.bind_all(j.id, batch.id, j.line, j.custom_id, j.model, j.body));
      RETURN_IF_ERROR(st.run());
      st.reset();
    }
    return Status::ok();
  });
  RETURN_IF_ERROR(s);
  return started;
}

Result<std::vector<JobRecord>> BatchStore::pending_jobs(const std::string& batch_id) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(sql::Statement st,
                   impl_->db.prepare("SELECT j.id, j.line, j.custom_id, j.model, j.body FROM jobs j "
                                     "LEFT JOIN results r ON r.job_id = j.id "
                                     "WHERE j.batch_id = ? AND r.job_id IS NULL ORDER BY j.line"));
  RETURN_IF_ERROR(st.bind_all(batch_id));
  return collect<JobRecord>(st, [](const sql::Statement& s) {
    return JobRecord{s.column_text(0), s.column_int(1), s.column_text(2), s.column_text(3), s.column_text(4)};
  });
}

Result<ResultStored> BatchStore::put_result(const JobResult& result) {
  std::lock_guard lock(mu_);
  ResultStored out;
  Status s = sql::transaction(impl_->db, [&]() -> Status {
    out = ResultStored{};
    ASSIGN_OR_RETURN(sql::Statement job, impl_->db.prepare("SELECT batch_id FROM jobs WHERE id = ?"));
    RETURN_IF_ERROR(job.bind_all(result.id));
    ASSIGN_OR_RETURN(bool known, job.step());
    if (!known) return Status::ok();
    out.batch_id = job.column_text(0);
    ASSIGN_OR_RETURN(std::optional<BatchRecord> b, impl_->find_batch(out.batch_id));
    if (!b || (b->status != kInProgress && b->status != kCancelling)) return Status::ok();
    ASSIGN_OR_RETURN(sql::Statement ins,
                     impl_->db.prepare("INSERT OR IGNORE INTO results (job_id, status_code, body, created_at) "
                                       "VALUES (?, ?, ?, ?)"));
    RETURN_IF_ERROR(ins.bind_all(result.id, result.status_code, result.body, unix_now()));
    RETURN_IF_ERROR(ins.run());
    if (impl_->db.changes() == 0) {
      out.batch_done = b->done() >= b->total;
      return Status::ok();
    }
    out.stored = true;
    if (result.status_code == kCancelledStatus)
      ++b->cancelled;
    else if (is_success(result.status_code))
      ++b->completed;
    else
      ++b->failed;
    ASSIGN_OR_RETURN(bool updated, impl_->update(*b, b->status));
    if (!updated) return Status::internal("database: a batch changed inside a transaction");
    out.batch_done = b->done() >= b->total;
    return Status::ok();
  });
  RETURN_IF_ERROR(s);
  return out;
}

Result<bool> BatchStore::finalize(const std::string& batch_id, const std::string& expected_status,
                                  const Builder& build) {
  std::lock_guard lock(mu_);
  bool done = false;
  Status s = sql::transaction(impl_->db, [&]() -> Status {
    ASSIGN_OR_RETURN(std::optional<BatchRecord> b, impl_->find_batch(batch_id));
    if (!b || b->status != expected_status) return Status::ok();
    ASSIGN_OR_RETURN(sql::Statement st,
                     impl_->db.prepare("SELECT j.id, j.line, j.custom_id, j.model, j.body, r.status_code, r.body "
                                       "FROM jobs j LEFT JOIN results r ON r.job_id = j.id "
                                       "WHERE j.batch_id = ? ORDER BY j.line"));
    RETURN_IF_ERROR(st.bind_all(batch_id));
    ASSIGN_OR_RETURN(std::vector<LineOutcome> lines, collect<LineOutcome>(st, [](const sql::Statement& r) {
                       LineOutcome o{JobRecord{r.column_text(0), r.column_int(1), r.column_text(2),
                                               r.column_text(3), r.column_text(4)},
                                     std::nullopt};
                       if (!r.is_null(5))
                         o.result = JobResult{o.job.id, static_cast<int32_t>(r.column_int(5)), r.column_text(6)};
                       return o;
                     }));
    ASSIGN_OR_RETURN(Finalized files, build(*b, lines));
    for (const std::optional<NewFile>* f : {&files.output, &files.errors})
      if (*f) RETURN_IF_ERROR(impl_->insert_file((*f)->record, (*f)->content));
    ASSIGN_OR_RETURN(done, impl_->update(*b, expected_status));
    return Status::ok();
  });
  RETURN_IF_ERROR(s);
  return done;
}

}  // namespace llmpool::batch
