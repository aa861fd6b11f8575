// Fixed thread pool behind parallel_for. Workers sleep on a condition variable between jobs;
// the submitting thread runs chunk 0 itself so small jobs cost one wake-up at most.
#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln {
namespace {

int configured_threads() {
  if (const char* env = std::getenv("KILN_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1 && n <= 1024) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : int(hc);
}

class ThreadPool {
 public:
  explicit ThreadPool(int threads) : size_(threads) {
    for (int i = 1; i < size_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  }
  // The pool lives for the whole process (leaked on purpose): joining threads from a static
  // destructor during exit can deadlock with the loader lock.

  int size() const { return size_; }

  void run(int chunks, const std::function<void(int)>& task) {
    std::unique_lock<std::mutex> submit(submit_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      chunks_ = chunks;
      next_chunk_.store(1);
      pending_ = chunks - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    run_chunk(task, 0);
    int chunk;
    while ((chunk = next_chunk_.fetch_add(1)) < chunks) {
      run_chunk(task, chunk);
      finish_one();
    }
    std::unique_lock<std::mutex> lock(mutex_);
    // Wait for the chunks and for every worker that joined this job to leave it, so no worker
    // can touch next_chunk_ of the next job with this job's task.
    done_.wait(lock, [this] { return pending_ == 0 && active_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_chunk(const std::function<void(int)>& task, int chunk) {
    try {
      task(chunk);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }

  void finish_one() {
    std::lock_guard<std::mutex> lock(mutex_);
  if (--pending_ == 0) done_.notify_all();
  }

  void worker_loop(int) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* task;
      int chunks;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        task = task_;
        chunks = chunks_;
        if (task) ++active_;
      }
      if (!task) continue;
      int chunk;
      while ((chunk = next_chunk_.fetch_add(1)) < chunks) {
        run_chunk(*task, chunk);
        finish_one();
      }
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_all();
    }
  }

  int size_;
  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int)>* task_ = nullptr;
  int chunks_ = 0;
  std::atomic<int> next_chunk_{0};
  int pending_ = 0;
  int active_ = 0;
  uint64_t generation_ = 0;
  std::exception_ptr error_;
};

ThreadPool& pool() {
  static ThreadPool* instance = new ThreadPool(configured_threads());
  return *instance;
}

thread_local bool inside_parallel_for = false;

}  // namespace

int num_threads() { return pool().size(); }

void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (end <= begin) return;
  int64_t n = end - begin;
  grain = std::max<int64_t>(grain, 1);
  int64_t max_chunks = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (max_chunks <= 1 || inside_parallel_for) {
    body(begin, end);
    return;
  }
  int chunks = int(max_chunks);
  pool().run(chunks, [&](int chunk) {
    bool was_inside = inside_parallel_for;
    inside_parallel_for = true;
    int64_t lo = begin + n * chunk / chunks;
    int64_t hi = begin + n * (chunk + 1) / chunks;
    try {
      if (lo < hi) body(lo, hi);
    } catch (...) {
      inside_parallel_for = was_inside;
      throw;
    }
    inside_parallel_for = was_inside;
  });
}

}  // namespace kiln
