#include "queue.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "error.h"

namespace kiln {
namespace {

class Worker {
 public:
  Worker() : thread_([this] { loop(); }) {}

  void push(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return;
      tasks_.push_back(std::move(task));
    }
    wake_.notify_one();
  }

  void push_barrier(std::function<void(const TaskError&)> on_done) {
    push([this, on_done = std::move(on_done)] {
      TaskError error;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        std::swap(error, error_);
      }
      on_done(error);
    });
  }

  void wait_idle() {
    std::unique_lock<std::mutex> lock(mutex_);
    idle_.wait(lock, [this] { return tasks_.empty() && !busy_; });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  uint64_t executed() {
    std::lock_guard<std::mutex> lock(mutex_);
    return executed_;
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;  // stopping and drained
        task = std::move(tasks_.front());
        tasks_.pop_front();
        busy_ = true;
      }
      TaskError failure;
      try {
        task();
      } catch (const KilnException& e) {
        failure = {e.code(), e.what()};
      } catch (const std::exception& e) {
        failure = {"ERR_INTERNAL", e.what()};
      } catch (...) {
        failure = {"ERR_INTERNAL", "unknown error in a queued op"};
      }
      task = nullptr;  // release captured storages before reporting idle
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!failure.code.empty() && error_.code.empty()) error_ = failure;
        busy_ = false;
        ++executed_;
        if (tasks_.empty()) idle_.notify_all();
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<std::function<void()>> tasks_;
  TaskError error_;
  bool busy_ = false;
  bool stopping_ = false;
  uint64_t executed_ = 0;
  std::thread thread_;
};

Worker& worker() {
  static Worker* instance = new Worker();  // stopped by shutdown_queue, never destroyed
  return *instance;
}

}  // namespace

void enqueue(std::function<void()> task) { worker().push(std::move(task)); }
void enqueue_barrier(std::function<void(const TaskError&)> on_done) { worker().push_barrier(std::move(on_done)); }
void wait_idle() { worker().wait_idle(); }
void shutdown_queue() { worker().stop(); }
uint64_t tasks_executed() { return worker().executed(); }

}  // namespace kiln
