#include "dcp/storage.h"

#include <map>
#include <mutex>

#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "dcp/memory_storage.h"
#include "dcp/thread_annotations.h"

namespace dcp {

StorageWriterWrapper::StorageWriterWrapper(std::shared_ptr<StorageWriter> target)
    : target_(std::move(target)) {
  if (!target_) throw InvalidArgumentError("StorageWriterWrapper needs a writer to wrap");
}
void StorageWriterWrapper::reset(const std::string& id) { target_->reset(id); }
void StorageWriterWrapper::set_up_storage_writer(bool c, int rank) {
  target_->set_up_storage_writer(c, rank);
}
SavePlan StorageWriterWrapper::prepare_local_plan(SavePlan p) {
  return target_->prepare_local_plan(std::move(p));
}
std::vector<SavePlan> StorageWriterWrapper::prepare_global_plan(std::vector<SavePlan> p) {
  return target_->prepare_global_plan(std::move(p));
}
std::future<std::vector<WriteResult>> StorageWriterWrapper::write_data(const SavePlan& plan,
                                                                       SavePlanner& planner) {
  return target_->write_data(plan, planner);
}
void StorageWriterWrapper::finish(Metadata& md,
                                  const std::vector<std::vector<WriteResult>>& results) {
  target_->finish(md, results);
}
bool StorageWriterWrapper::validate_checkpoint_id(const std::string& id) const {
  return target_->validate_checkpoint_id(id);
}
std::optional<StorageMeta> StorageWriterWrapper::storage_meta() const {
  return target_->storage_meta();
}
std::string StorageWriterWrapper::checkpoint_id() const { return target_->checkpoint_id(); }

StorageReaderWrapper::StorageReaderWrapper(std::shared_ptr<StorageReader> target)
    : target_(std::move(target)) {
  if (!target_) throw InvalidArgumentError("StorageReaderWrapper needs a reader to wrap");
}
void StorageReaderWrapper::reset(const std::string& id) { target_->reset(id); }
Metadata StorageReaderWrapper::read_metadata() { return target_->read_metadata(); }
void StorageReaderWrapper::set_up_storage_reader(const Metadata& md, bool c) {
  target_->set_up_storage_reader(md, c);
}
LoadPlan StorageReaderWrapper::prepare_local_plan(LoadPlan p) {
  return target_->prepare_local_plan(std::move(p));
}
std::vector<LoadPlan> StorageReaderWrapper::prepare_global_plan(std::vector<LoadPlan> p) {
  return target_->prepare_global_plan(std::move(p));
}
std::future<void> StorageReaderWrapper::read_data(const LoadPlan& plan, LoadPlanner& planner) {
  return target_->read_data(plan, planner);
}
bool StorageReaderWrapper::validate_checkpoint_id(const std::string& id) const {
  return target_->validate_checkpoint_id(id);
}
std::string StorageReaderWrapper::checkpoint_id() const { return target_->checkpoint_id(); }
std::map<std::string, std::string> StorageReaderWrapper::unreadable_keys() const {
  return target_->unreadable_keys();
}

// ---------------------------------------------------------------------------
// Registry

namespace {

struct Backend {
  WriterFactory writer;
  ReaderFactory reader;
};

struct Registry {
  Mutex mu;
  std::map<std::string, Backend> backends DCP_GUARDED_BY(mu);
};

// The built-ins are registered here, explicitly, on first use: no static
// initialisers that a static link could drop.
Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry();
    MutexLock lock(reg->mu);
    reg->backends["fs"] = Backend{[](const std::string& id) { return make_filesystem_writer(id); },
                                  [](const std::string& id) { return make_filesystem_reader(id); }};
    reg->backends["memory"] = Backend{[](const std::string& id) { return make_memory_writer(id); },
                                      [](const std::string& id) { return make_memory_reader(id); }};
    return reg;
  }();
  return *r;
}

std::pair<std::string, std::string> split_scheme(const std::string& id) {
  auto pos = id.find("://");
  if (pos == std::string::npos) return {"fs", id};
  return {id.substr(0, pos), id.substr(0, pos) == "fs" ? id.substr(pos + 3) : id};
}

// A copy: a reference into the map would outlive the lock, and a concurrent
// register_storage_backend for the same scheme replaces the entry under it.
Backend find_backend(const std::string& id) {
  auto [scheme, rest] = split_scheme(id);
  Registry& r = registry();
  MutexLock lock(r.mu);
  auto it = r.backends.find(scheme);
  if (it == r.backends.end()) {
    std::string known;
    for (const auto& kv : r.backends) known += (known.empty() ? "" : ", ") + kv.first;
    throw InvalidArgumentError("checkpoint id '" + id + "': no storage backend '" + scheme +
                               "' (known: " + known + ")");
  }
  return it->second;
}

}  // namespace

void register_storage_backend(const std::string& scheme, WriterFactory writer,
                              ReaderFactory reader) {
  if (scheme.empty() || !writer || !reader)
    throw InvalidArgumentError("register_storage_backend needs a scheme and both factories");
  Registry& r = registry();
  MutexLock lock(r.mu);
  r.backends[scheme] = Backend{std::move(writer), std::move(reader)};
}

std::shared_ptr<StorageWriter> make_storage_writer(const std::string& checkpoint_id) {
  if (checkpoint_id.empty()) throw InvalidArgumentError("no checkpoint id or storage writer given");
  return find_backend(checkpoint_id).writer(split_scheme(checkpoint_id).second);
}

std::shared_ptr<StorageReader> make_storage_reader(const std::string& checkpoint_id) {
  if (checkpoint_id.empty()) throw InvalidArgumentError("no checkpoint id or storage reader given");
  return find_backend(checkpoint_id).reader(split_scheme(checkpoint_id).second);
}

}  // namespace dcp
