#include "loader.h"

#include <opencv2/core.hpp>

#include "protoquant/process.h"

namespace protoquant::datasets {

WorkerPool::WorkerPool(int threads) {
  const int64_t count = resolve_threads(threads);
  workers_.reserve(static_cast<size_t>(count));
  for (int64_t t = 0; t < count; ++t) workers_.emplace_back([this] { work(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  ready_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void WorkerPool::Job::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  finished_.wait(lock, [this] { return remaining_.load() == 0; });
}

std::shared_ptr<WorkerPool::Job> WorkerPool::submit(int64_t n, std::function<void(int64_t)> task, bool front) {
  auto job = std::make_shared<Job>();
  job->remaining_ = n;
  if (n == 0) return job;
  auto shared_task = std::make_shared<std::function<void(int64_t)>>(std::move(task));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (front) {
      for (int64_t i = n - 1; i >= 0; --i) queue_.push_front({job, shared_task, i});
    } else {
      for (int64_t i = 0; i < n; ++i) queue_.push_back({job, shared_task, i});
    }
  }
  ready_.notify_all();
  return job;
}

void WorkerPool::work() {
  // One decoding thread per worker: OpenCV's own thread pool inside resize/warp would
  // oversubscribe the cores the workers already fill.
  cv::setNumThreads(0);
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    (*item.task)(item.index);
    if (item.job->remaining_.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(item.job->mutex_);
      item.job->finished_.notify_all();
    }
  }
}

}  // namespace protoquant::datasets
