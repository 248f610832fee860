// The storage protocol, as in PyTorch DCP (torch/distributed/checkpoint/storage.py).
//
// A StorageWriter writes the items of a save plan and, on the coordinator,
// the metadata (last: its appearance is the commit point). A StorageReader
// reads the metadata and the items of a load plan. Implementations are
// created by factories (filesystem.h, memory_storage.h) or by checkpoint id
// through the registry below.
#pragma once

#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dcp/export.h"
#include "dcp/metadata.h"
#include "dcp/planner.h"

namespace dcp {

struct DCP_CORE_EXPORT WriteResult {
  MetadataIndex index;
  int64_t size_in_bytes = 0;
  StorageInfo storage_data;
};

// Call sequence of one save:
//   0. reset(checkpoint_id)                          all ranks
//   1. set_up_storage_writer(is_coordinator, rank)   all ranks
//   2. prepare_local_plan(plan)                      all ranks
//   3. prepare_global_plan(plans)                    coordinator
//   4. write_data(plan, planner)                     all ranks
//   5. finish(metadata, results)                     coordinator
// A writer is reusable: reset() starts a new checkpoint.
class DCP_CORE_EXPORT StorageWriter {
 public:
  StorageWriter() = default;
  StorageWriter(const StorageWriter&) = delete;
  StorageWriter& operator=(const StorageWriter&) = delete;
  virtual ~StorageWriter() = default;

  // Starts a new checkpoint; an empty id keeps the current one.
  virtual void reset(const std::string& checkpoint_id) = 0;
  virtual void set_up_storage_writer(bool is_coordinator, int rank) = 0;
  virtual SavePlan prepare_local_plan(SavePlan plan) = 0;
  virtual std::vector<SavePlan> prepare_global_plan(std::vector<SavePlan> plans) = 0;
  // Writes every item of `plan`, asking planner.resolve_data() for the data
  // lazily. The future holds one WriteResult per item, or the error.
  virtual std::future<std::vector<WriteResult>> write_data(const SavePlan& plan,
                                                           SavePlanner& planner) = 0;
  // Folds every rank's results into metadata.storage_data (and sets
  // metadata.storage_meta), writes the metadata and commits. save() returns
  // the metadata as finish() left it.
  virtual void finish(Metadata& metadata, const std::vector<std::vector<WriteResult>>& results) = 0;
  // Whether this writer can write to `checkpoint_id`.
  virtual bool validate_checkpoint_id(const std::string& checkpoint_id) const = 0;
  virtual std::optional<StorageMeta> storage_meta() const { return std::nullopt; }
  // The id of the checkpoint being written ("" before reset()).
  virtual std::string checkpoint_id() const = 0;
};

// Call sequence of one load:
//   0. reset(checkpoint_id)                         all ranks
//   1. read_metadata()                              all ranks (or coordinator + broadcast)
//   2. set_up_storage_reader(metadata, is_coord)    all ranks
//   3. prepare_local_plan(plan)                     all ranks
//   4. prepare_global_plan(plans)                   coordinator
//   5. read_data(plan, planner)                     all ranks
class DCP_CORE_EXPORT StorageReader {
 public:
  StorageReader() = default;
  StorageReader(const StorageReader&) = delete;
  StorageReader& operator=(const StorageReader&) = delete;
  virtual ~StorageReader() = default;

  virtual void reset(const std::string& checkpoint_id) = 0;
  // Throws NotFoundError when there is no checkpoint at the id, and
  // CorruptionError when its metadata is damaged.
  virtual Metadata read_metadata() = 0;
  virtual void set_up_storage_reader(const Metadata& metadata, bool is_coordinator) = 0;
  virtual LoadPlan prepare_local_plan(LoadPlan plan) = 0;
  virtual std::vector<LoadPlan> prepare_global_plan(std::vector<LoadPlan> plans) = 0;
  // `metadata` stays alive and unchanged until read_data() has returned.
  // Reads every item of `plan` into the tensors planner.resolve_tensor()
  // gives (then commit_tensor()), and passes bytes items to load_bytes().
  virtual std::future<void> read_data(const LoadPlan& plan, LoadPlanner& planner) = 0;
  virtual bool validate_checkpoint_id(const std::string& checkpoint_id) const = 0;
  virtual std::string checkpoint_id() const = 0;
  // Keys of the checkpoint whose values this reader cannot give, each with
  // the reason: in checkpoints of other formats, a Python object of a class
  // dcp++ does not read, or an int beyond 64 bits (docs/INTEROP.md). Known
  // after set_up_storage_reader(); none for dcp++'s own checkpoints.
  // load() skips them when LoadOptions::skip_unreadable_values is set.
  virtual std::map<std::string, std::string> unreadable_keys() const { return {}; }
};

// Forwarding wrappers: every call goes to the wrapped object, so a subclass
// overrides only what it changes (timing, fault injection, prefixing).
class DCP_CORE_EXPORT StorageWriterWrapper : public StorageWriter {
 public:
  explicit StorageWriterWrapper(std::shared_ptr<StorageWriter> target);
  StorageWriter& target() const { return *target_; }

  void reset(const std::string& checkpoint_id) override;
  void set_up_storage_writer(bool is_coordinator, int rank) override;
  SavePlan prepare_local_plan(SavePlan plan) override;
  std::vector<SavePlan> prepare_global_plan(std::vector<SavePlan> plans) override;
  std::future<std::vector<WriteResult>> write_data(const SavePlan& plan,
                                                   SavePlanner& planner) override;
  void finish(Metadata& metadata, const std::vector<std::vector<WriteResult>>& results) override;
  bool validate_checkpoint_id(const std::string& checkpoint_id) const override;
  std::optional<StorageMeta> storage_meta() const override;
  std::string checkpoint_id() const override;

 private:
  std::shared_ptr<StorageWriter> target_;
};

class DCP_CORE_EXPORT StorageReaderWrapper : public StorageReader {
 public:
  explicit StorageReaderWrapper(std::shared_ptr<StorageReader> target);
  StorageReader& target() const { return *target_; }

  void reset(const std::string& checkpoint_id) override;
  Metadata read_metadata() override;
  void set_up_storage_reader(const Metadata& metadata, bool is_coordinator) override;
  LoadPlan prepare_local_plan(LoadPlan plan) override;
  std::vector<LoadPlan> prepare_global_plan(std::vector<LoadPlan> plans) override;
  std::future<void> read_data(const LoadPlan& plan, LoadPlanner& planner) override;
  bool validate_checkpoint_id(const std::string& checkpoint_id) const override;
  std::string checkpoint_id() const override;
  std::map<std::string, std::string> unreadable_keys() const override;

 private:
  std::shared_ptr<StorageReader> target_;
};

// Backends by id. A checkpoint id "scheme://rest" picks the backend
// registered under "scheme"; an id without a scheme is a file-system path
// ("fs"). Built-in backends: "fs" (filesystem.h) and "memory"
// (memory_storage.h). Registration is explicit and thread-safe.
using WriterFactory = std::function<std::shared_ptr<StorageWriter>(const std::string& id)>;
using ReaderFactory = std::function<std::shared_ptr<StorageReader>(const std::string& id)>;
DCP_CORE_EXPORT void register_storage_backend(const std::string& scheme, WriterFactory writer,
                                              ReaderFactory reader);
// Throws InvalidArgumentError for an unknown scheme, naming the known ones.
DCP_CORE_EXPORT std::shared_ptr<StorageWriter> make_storage_writer(
    const std::string& checkpoint_id);
DCP_CORE_EXPORT std::shared_ptr<StorageReader> make_storage_reader(
    const std::string& checkpoint_id);

}  // namespace dcp
