// dcp++ built as a subproject (tests/subproject/CMakeLists.txt): a save and a
// load, a storage writer of the program's own over the library's wrapper, a
// CheckpointManager, and errors thrown by the libraries caught by type here
// (their typeinfo is exported: dcp/export.h).
#include <ATen/ATen.h>
#include <dcp/dcp.h>
#include <dcp/manager/manager.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>

static_assert(__cplusplus >= 202002L, "the parent's C++ standard (20) applies");

namespace {

int fail(const char* what) {
  std::fprintf(stderr, "subproject consumer: %s\n", what);
  return 1;
}

// A Stateful of the program's own: the library calls it through its vtable.
struct Weights : dcp::Stateful {
  at::Tensor w = at::arange(4, at::kFloat);
  dcp::StateDict state_dict() override { return {{"w", w}}; }
  void load_state_dict(const dcp::StateDict&) override {}
};

// A subclass of a library class with out-of-line virtual functions: needs its
// exported vtable and typeinfo.
struct CountingWriter : dcp::StorageWriterWrapper {
  using StorageWriterWrapper::StorageWriterWrapper;
  std::future<std::vector<dcp::WriteResult>> write_data(const dcp::SavePlan& plan,
                                                        dcp::SavePlanner& planner) override {
    ++writes;
    return StorageWriterWrapper::write_data(plan, planner);
  }
  std::atomic<int> writes{0};
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return fail("usage: consumer <dir>");
  const std::string dir = argv[1];

  // save / load_all, through a writer of our own.
  auto writer = std::make_shared<CountingWriter>(dcp::make_filesystem_writer(dir + "/plain"));
  dcp::SaveOptions so;
  so.checkpoint_id = dir + "/plain";
  so.storage_writer = writer;
  dcp::save({{"w", at::ones({3})}, {"step", 7}}, so);
  if (writer->writes != 1) return fail("our writer's write_data was not called");
  dcp::StateDict back = dcp::load_all(dir + "/plain");
  if (!at::equal(back["w"].tensor(), at::ones({3})) || back["step"].to_int() != 7)
    return fail("load_all did not return what was saved");

  // A failing load: the CheckpointError thrown in libdcp_core is caught by
  // its own type and by its base class.
  try {
    dcp::load_all(dir + "/missing");
    return fail("loading a missing checkpoint did not throw");
  } catch (const dcp::CheckpointError& e) {
    if (e.root_code() != dcp::ErrorCode::kNotFound) return fail("not a kNotFound failure");
  }
  try {
    dcp::load_all(dir + "/missing");
  } catch (const dcp::Error& e) {
    if (!dynamic_cast<const dcp::CheckpointError*>(&e)) return fail("dynamic_cast failed");
  }
  // A ConfigError (a class of dcp::core) thrown by libdcp_manager.
  try {
    dcp::manager::parse_manager_options("checkpoint: {keep: {last: -1}}", "consumer");
    return fail("a bad config was accepted");
  } catch (const dcp::ConfigError&) {
  }

  // The manager: one save, committed.
  auto opts = dcp::manager::parse_manager_options(
      "checkpoint: {dir: '" + dir + "/managed', async: {enabled: false}}", "consumer");
  dcp::manager::CheckpointManager manager(opts);
  manager.register_stateful("model", std::make_shared<Weights>());
  manager.save(5);
  if (manager.committed().size() != 1 || manager.committed()[0].step != 5)
    return fail("the manager did not commit step 5");
  manager.close();
  std::puts("subproject consumer: saved, loaded, caught, managed");
  return 0;
}
