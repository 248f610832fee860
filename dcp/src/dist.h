// The collective rounds of the protocol and its error discipline.
//
// Every step runs under `run_step`: an exception becomes a RankFailure, and
// the failures are what every rank throws as one CheckpointError. In one
// process (no process group) the rounds are direct calls.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "dcp/error.h"

namespace dcp {

class DistWrapper {
 public:
  // A single process: rank 0 of 1, which is also the coordinator.
  DistWrapper(std::string operation, int coordinator_rank);

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_coordinator() const { return rank_ == coordinator_rank_; }

  // local() on every rank; the results gathered on the coordinator go
  // through global(), whose i-th output goes back to rank i.
  template <typename T>
  T reduce_scatter(const std::string& step, const std::function<T()>& local,
                   const std::function<std::vector<T>(std::vector<T>)>& global) {
    T mine = run_step(step + ":local", local);
    std::vector<T> all;
    all.push_back(std::move(mine));
    std::vector<T> out = run_step(step + ":global", [&] { return global(std::move(all)); });
    if (out.size() != static_cast<size_t>(world_size_))
      fail(step + ":global", ErrorCode::kInternal,
           "global step returned a plan per rank count " + std::to_string(out.size()));
    return std::move(out[static_cast<size_t>(rank_)]);
  }

  // local() on every rank; the results gathered on the coordinator go
  // through global(), whose result every rank returns.
  template <typename T, typename R>
  R all_reduce(const std::string& step, const std::function<T()>& local,
               const std::function<R(std::vector<T>)>& global) {
    T mine = run_step(step + ":local", local);
    std::vector<T> all;
    all.push_back(std::move(mine));
    return run_step(step + ":global", [&] { return global(std::move(all)); });
  }

  // fn() on the coordinator; every rank returns its result.
  template <typename T>
  T broadcast(const std::string& step, const std::function<T()>& fn) {
    return run_step(step, fn);
  }

 private:
  template <typename Fn>
  auto run_step(const std::string& step, const Fn& fn) -> decltype(fn()) {
    try {
      return fn();
    } catch (const CheckpointError&) {
      throw;
    } catch (const Error& e) {
      fail(step, e.code(), e.what());
    } catch (const std::exception& e) {
      fail(step, ErrorCode::kInternal, e.what());
    }
  }
  [[noreturn]] void fail(const std::string& step, ErrorCode code, const std::string& message);

  std::string operation_;
  int rank_ = 0;
  int world_size_ = 1;
  int coordinator_rank_ = 0;
};

}  // namespace dcp
