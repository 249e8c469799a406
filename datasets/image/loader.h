// Worker threads that prepare a batch's samples in parallel, and can start on the next batch
// while the caller computes on the current one (prefetch). Each task writes only its own slot of
// the batch, so the result does not depend on the number of threads or on scheduling.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace protoquant::datasets {

class WorkerPool {
 public:
  // threads <= 0: one per hardware thread.
  explicit WorkerPool(int threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()); }

  // A set of tasks submitted together; wait() blocks until all have run.
  class Job {
   public:
    void wait();
    bool done() const { return remaining_.load() == 0; }

   private:
    friend class WorkerPool;
    std::atomic<int64_t> remaining_{0};
    std::mutex mutex_;
    std::condition_variable finished_;
  };

  // Runs task(i) for i in [0, n) on the workers and returns at once. `front` queues the tasks
  // ahead of those already waiting (a batch the caller blocks on, ahead of prefetches).
  std::shared_ptr<Job> submit(int64_t n, std::function<void(int64_t)> task, bool front = false);

 private:
  struct Item {
    std::shared_ptr<Job> job;
    std::shared_ptr<std::function<void(int64_t)>> task;
    int64_t index;
  };
  void work();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Item> queue_;
  bool stop_ = false;
};

}  // namespace protoquant::datasets
